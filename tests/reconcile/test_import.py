"""Imports from a source on SQLite and PostgreSQL: link, review, new patient, idempotence, purge."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from imagebridge.config import Settings
from imagebridge.errors import Conflict, NotFound
from imagebridge.index.schema import imported_instances, instances, patients, studies
from imagebridge.reconcile.records import Records, now
from imagebridge.services.archive import Archive
from imagebridge.services.reconcile import reconciler_for
from tests.factory import part10
from tests.reconcile.helpers import (
    HEALTH_CARD,
    SOURCE,
    SOURCE_ISSUER,
    add_source,
    health_card,
    import_all,
    outside,
    store_local,
)

JOHN = {"PatientName": "Smith^John", "PatientBirthDate": "19800512", "PatientSex": "M"}


def stored(archive: Archive, sop_uid: str) -> object:
    """The dataset the main index serves for ``sop_uid`` (None if it is not there)."""
    key = archive.catalog.stored_blob(sop_uid)
    if key is None:
        return None
    with archive.blobs.open(key) as fh:
        return dcmread(fh)


def only(decisions: dict[str, str]) -> str:
    [decision] = decisions.values()
    return decision


def count(archive: Archive, table: object) -> int:
    with archive.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


@pytest.fixture
def local(archive: Archive) -> object:
    store_local(archive, PatientID="L-1", IssuerOfPatientID="HOSP", AccessionNumber="A1001", **JOHN)
    add_source(archive)
    return archive


def test_a_match_is_linked_with_the_local_identity_and_the_original_kept(local: Archive) -> None:
    study = generate_uid()
    disc = [
        outside(
            study=study,
            PatientName="SMYTH^JOHN",
            PatientBirthDate="19800512",
            PatientSex="M",
            InstanceNumber=n,
        )
        for n in (1, 2)
    ]
    summary = import_all(local, disc)
    assert (summary.stored, summary.waiting_review, summary.refused) == (2, 0, [])
    assert summary.decisions[study].startswith("linked to L-1 (issuer HOSP); scorecard, score 83.8")
    ds = stored(local, disc[0].SOPInstanceUID)
    assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName), ds.PatientSex) == (
        "L-1",
        "HOSP",
        "Smith^John",
        "M",
    )
    assert ds.AccessionNumber == "NORT-A1001"  # the local study's A1001 cannot collide with it
    assert [i.LocalNamespaceEntityID for i in ds.IssuerOfAccessionNumberSequence] == [SOURCE]
    assert ds.SOPInstanceUID == disc[0].SOPInstanceUID and ds.StudyInstanceUID == study
    before = ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert (before.PatientID, str(before.PatientName), before.AccessionNumber) == (
        "N-778",
        "SMYTH^JOHN",
        "A1001",
    )
    assert "IssuerOfAccessionNumberSequence" in before and len(before.IssuerOfAccessionNumberSequence) == 0
    assert ds.OriginalAttributesSequence[0].ReasonForTheAttributeModification == "COERCE"
    assert [(i.PatientID, i.IssuerOfPatientID) for i in ds.OtherPatientIDsSequence] == [
        ("N-778", SOURCE_ISSUER)
    ]
    with local.engine.connect() as conn:
        original = conn.scalar(
            select(imported_instances.c.original_blob).where(
                imported_instances.c.original_sop_uid == disc[0].SOPInstanceUID
            )
        )
        assert conn.scalar(select(func.count()).select_from(patients)) == 1
    with local.blobs.open(original) as fh:
        assert fh.read() == part10(disc[0])  # the bytes as received, untouched


def test_importing_the_same_disc_again_changes_nothing(local: Archive) -> None:
    study = generate_uid()
    disc = [outside(study=study, InstanceNumber=n, **JOHN) for n in (1, 2, 3)]
    first = import_all(local, disc)
    keys = [local.catalog.stored_blob(ds.SOPInstanceUID) for ds in disc]
    counts = (count(local, instances), count(local, imported_instances), count(local, patients))
    again = import_all(local, disc)
    assert (first.stored, again.stored, again.already_present, again.refused) == (3, 0, 3, [])
    assert [local.catalog.stored_blob(ds.SOPInstanceUID) for ds in disc] == keys
    assert (count(local, instances), count(local, imported_instances), count(local, patients)) == counts
    assert again.decisions[study] == first.decisions[study]


@pytest.mark.filterwarnings("ignore:The value length")  # a disc from a non-conformant system
def test_a_long_accession_number_is_shortened_with_a_hash(local: Archive) -> None:
    source = reconciler_for(local)
    from imagebridge.services.reconcile import Sources

    Sources(source.records, local.settings).add("east", "EAST-HOSP", "E-")
    ds = outside(AccessionNumber="RAD-2026-00001234", **JOHN)
    import_all(local, [ds], source="east")
    accession = stored(local, ds.SOPInstanceUID).AccessionNumber
    assert len(accession) == 16 and accession.startswith("E-") and accession != "E-RAD-2026-00001"
    assert (
        stored(local, ds.SOPInstanceUID)
        .OriginalAttributesSequence[0]
        .ModifiedAttributesSequence[0]
        .AccessionNumber
        == "RAD-2026-00001234"
    )


def test_an_uncertain_match_waits_in_quarantine_and_accept_links_it(local: Archive) -> None:
    study = generate_uid()
    disc = [
        outside(
            study=study,
            InstanceNumber=n,
            PatientName="Smith^John",
            PatientBirthDate="19801205",
            PatientSex="M",
        )
        for n in (1, 2)
    ]
    summary = import_all(local, disc)
    assert (summary.stored, summary.waiting_review) == (0, 2)
    assert all(stored(local, ds.SOPInstanceUID) is None for ds in disc)  # not in the main index
    with local.engine.connect() as conn:
        assert conn.scalar(select(studies.c.pk).where(studies.c.study_uid == study)) is None
    again = import_all(local, disc)
    assert (again.waiting_review, again.already_present) == (0, 2)
    reconciler = reconciler_for(local)
    [case] = reconciler.records.cases()
    assert (case.score, case.candidate, case.state) == (68.8, ("L-1", "HOSP"), "pending")
    assert {b["field"]: b["outcome"] for b in case.breakdown}["birth_date"] == "swapped"
    decided = reconciler.decide(case.pk, "accept", "user:admin")
    assert (decided.state, decided.patient, decided.decided_by) == ("linked", ("L-1", "HOSP"), "user:admin")
    ds = stored(local, disc[1].SOPInstanceUID)
    assert (ds.PatientID, ds.PatientBirthDate) == ("L-1", "19800512")
    assert ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].PatientBirthDate == "19801205"
    assert reconciler.records.cases() == []
    with pytest.raises(Conflict):
        reconciler.decide(case.pk, "new-patient", "user:admin")
    later = import_all(
        local,
        [outside(InstanceNumber=9, PatientName="Smith^John", PatientBirthDate="19801205", PatientSex="M")],
    )
    assert only(later.decisions).startswith("linked to L-1 (issuer HOSP); linked before")


def test_link_to_another_patient_and_new_patient(local: Archive) -> None:
    store_local(
        local,
        PatientID="L-2",
        IssuerOfPatientID="HOSP",
        PatientName="Smith^John",
        PatientBirthDate="19801205",
        PatientSex="F",
    )
    reconciler = reconciler_for(local)
    first = outside(PatientID="N-1", PatientName="Smith^John", PatientBirthDate="19801205", PatientSex="M")
    second = outside(PatientID="N-2", PatientName="Smith^John", PatientBirthDate="19800612", PatientSex="M")
    import_all(local, [first, second])
    pending = {c.source_patient_id: c for c in reconciler.records.cases()}
    assert set(pending) == {"N-1", "N-2"}
    with pytest.raises(NotFound):
        reconciler.decide(pending["N-1"].pk, "link", "user:admin", ("NOPE", "HOSP"))
    assert reconciler.records.case(pending["N-1"].pk).state == "pending"  # a failed decision changes nothing
    reconciler.decide(pending["N-1"].pk, "link", "user:admin", ("L-2", "HOSP"))
    assert stored(local, first.SOPInstanceUID).PatientID == "L-2"
    reconciler.decide(pending["N-2"].pk, "new-patient", "user:admin")
    ds = stored(local, second.SOPInstanceUID)
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.PatientBirthDate) == ("N-2", SOURCE_ISSUER, "19800612")
    assert "OtherPatientIDsSequence" not in ds  # its own ID is the local one now


def test_below_the_threshold_a_new_patient_is_created(local: Archive) -> None:
    ds = outside(PatientID="N-5", PatientName="Smith^John", PatientBirthDate="19621103", PatientSex="M")
    summary = import_all(local, [ds])
    assert only(summary.decisions) == "new patient N-5 (issuer NORTH-HOSP); scorecard, score 44"
    copy = stored(local, ds.SOPInstanceUID)
    assert (copy.PatientID, copy.IssuerOfPatientID) == ("N-5", SOURCE_ISSUER)
    assert Records(local.engine).patients.get("L-1", "HOSP") is not None
    assert count(local, patients) == 2


def test_a_health_card_number_links_whatever_the_demographics_say(
    tmp_path: object, database_url: str
) -> None:
    from tests.conftest import make_archive

    archive = make_archive(tmp_path, database_url, reconciliation={"deterministic_issuers": [HEALTH_CARD]})  # type: ignore[arg-type]
    try:
        store_local(
            archive,
            PatientID="L-9",
            IssuerOfPatientID="HOSP",
            PatientName="Jones^Mary",
            PatientBirthDate="19700101",
            PatientSex="F",
            OtherPatientIDsSequence=health_card("1234-567-890"),
        )
        add_source(archive)
        ds = outside(
            PatientID="N-44",
            PatientName="Brown^Mary",
            PatientBirthDate="19700110",
            PatientSex="F",
            OtherPatientIDsSequence=health_card("1234-567-890"),
        )
        summary = import_all(archive, [ds])
        assert only(summary.decisions) == f"linked to L-9 (issuer HOSP); identifier {HEALTH_CARD}"
        copy = stored(archive, ds.SOPInstanceUID)
        assert copy.PatientID == "L-9"
        assert [(i.PatientID, i.IssuerOfPatientID) for i in copy.OtherPatientIDsSequence] == [
            ("1234-567-890", HEALTH_CARD),
            ("N-44", SOURCE_ISSUER),
        ]
    finally:
        archive.close()


def test_a_local_study_is_never_touched_by_an_import(local: Archive) -> None:
    mine = store_local(local, PatientID="L-3", PatientName="Other^Person")
    summary = import_all(local, [outside(study=mine.StudyInstanceUID, **JOHN)])
    assert summary.stored == 0 and "already in the archive as a local study" in summary.refused[0][1]


def test_purge_deletes_old_outside_studies_only(local: Archive) -> None:
    local_study = store_local(local, PatientID="L-1", IssuerOfPatientID="HOSP", **JOHN)
    old, recent = outside(**JOHN), outside(PatientID="N-8", **JOHN)
    import_all(local, [old, recent])
    records = Records(local.engine)
    records.stamp_outside(old.StudyInstanceUID, now() - timedelta(days=120))
    reconciler = reconciler_for(local)
    before = count(local, instances)
    due = reconciler.purge_outside(timedelta(days=90), dry_run=True)
    assert [s.study_uid for s in due] == [old.StudyInstanceUID] and count(local, instances) == before
    original = local.catalog.stored_blob(old.SOPInstanceUID)
    reconciler.purge_outside(timedelta(days=90))
    assert stored(local, old.SOPInstanceUID) is None and not local.blobs.exists(original)
    assert stored(local, recent.SOPInstanceUID) is not None
    assert stored(local, local_study.SOPInstanceUID) is not None
    assert records.outside(old.StudyInstanceUID) is None
    assert count(local, imported_instances) == 1
    reconciler.purge_outside(timedelta(0))  # every outside study
    assert stored(local, recent.SOPInstanceUID) is None
    assert stored(local, local_study.SOPInstanceUID) is not None  # local studies stay, whatever the age


def test_an_unknown_source_is_a_clear_error(archive: Archive) -> None:
    from imagebridge.services.reconcile import Sources

    with pytest.raises(NotFound, match="no import source named 'x'"):
        Sources(Records(archive.engine), archive.settings).get("x")


def test_sources_from_settings_are_listed_and_protected(tmp_path: object, database_url: str) -> None:
    from imagebridge.services.reconcile import Sources

    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,  # type: ignore[arg-type]
        import_sources={"west": {"issuer": "WEST", "accession_prefix": "W-"}},
    )
    from imagebridge.services.archive import open_archive

    archive = open_archive(settings)
    try:
        sources = Sources(Records(archive.engine), settings)
        sources.add("north", "NORTH-HOSP")
        assert [(s.name, s.configured) for s in sources.all()] == [("west", True), ("north", False)]
        with pytest.raises(Conflict):
            sources.remove("west")
        with pytest.raises(Conflict):
            sources.add("north", "AGAIN")
        sources.remove("north")
        assert [s.name for s in sources.all()] == ["west"]
    finally:
        archive.close()


def test_an_instance_arriving_while_its_case_is_decided_waits_and_follows(local: Archive) -> None:
    study = generate_uid()
    uncertain = {"PatientName": "Smith^John", "PatientBirthDate": "19801205", "PatientSex": "M"}
    import_all(local, [outside(study=study, **uncertain)])
    records = Records(local.engine)
    [case] = records.cases()
    records.claim(case.pk)  # a reviewer is deciding right now
    late = outside(study=study, InstanceNumber=2, **uncertain)
    assert import_all(local, [late]).waiting_review == 1
    records.release(case.pk)
    reconciler_for(local).decide(case.pk, "accept", "user:admin")
    assert stored(local, late.SOPInstanceUID).PatientID == "L-1"
    assert records.quarantined(case.pk) == []


def test_a_study_deleted_since_comes_back_when_imported_again(local: Archive) -> None:
    from imagebridge.index.lookup import Target
    from imagebridge.services.delete import delete

    disc = [outside(study=(study := generate_uid()), InstanceNumber=1, **JOHN)]
    disc.append(outside(study=study, InstanceNumber=2, **JOHN))
    import_all(local, disc)
    delete(Target(study, disc[1].SeriesInstanceUID, disc[1].SOPInstanceUID), local.catalog, local.blobs)
    one_back = import_all(local, disc)
    assert (one_back.stored, one_back.already_present) == (1, 1)
    delete(Target(study), local.catalog, local.blobs)
    assert Records(local.engine).outside(study) is not None
    all_back = import_all(local, disc)
    assert (all_back.stored, all_back.already_present) == (2, 0)
    assert all(stored(local, ds.SOPInstanceUID).PatientID == "L-1" for ds in disc)
    assert count(local, imported_instances) == 2


def test_each_decision_is_audited(local: Archive, caplog: pytest.LogCaptureFixture) -> None:
    import json

    import_all(local, [outside(PatientName="Smith^John", PatientBirthDate="19801205", PatientSex="M")])
    [case] = Records(local.engine).cases()
    with caplog.at_level("INFO", logger="imagebridge.audit"):
        reconciler_for(local).decide(case.pk, "accept", "user:admin")
    entry, filed = [json.loads(r.getMessage()) for r in caplog.records if r.name == "imagebridge.audit"]
    assert (entry["action"], entry["outcome"], entry["user"]) == ("reconcile", "success", "admin")
    assert (filed["action"], filed["origin"], filed["user"], filed["study"]) == (
        "import",
        "review",
        "admin",
        case.study_uid,
    )
    assert (filed["stored"], filed["source"], filed["case"]) == (1, SOURCE, case.pk)
    assert (entry["study"], entry["local_patient"], entry["source_patient"]) == (
        case.study_uid,
        "HOSP|L-1",
        f"{SOURCE_ISSUER}|N-778",
    )
    assert entry["score"] == 68.8 and entry["reason"] == f"reconciliation case {case.pk}: accept"


def test_bad_files_from_a_source_are_skipped_or_refused_with_a_reason(local: Archive) -> None:
    from io import BytesIO

    from imagebridge.services import importer
    from imagebridge.services.reconcile import SourceImport, Sources
    from tests.reconcile.helpers import candidate

    reconciler = reconciler_for(local)
    source = SourceImport(reconciler, Sources(reconciler.records, local.settings).get(SOURCE))
    summary = importer.Summary()
    truncated = importer.Candidate("disc/BROKEN", 200, lambda: BytesIO(b"\0" * 128 + b"DICM" + b"\x02\x00"))
    importer.import_candidate(local.ingest, truncated, summary, source=source)
    importer.import_candidate(
        local.ingest, candidate(outside(PatientID=None, **JOHN), "disc/NOID"), summary, source=source
    )
    assert summary.stored == 0 and [name for name, _ in summary.skipped] == ["disc/BROKEN"]
    assert summary.refused == [
        ("disc/NOID", "the instance has no Patient ID (0010,0020); it cannot be reconciled")
    ]
    assert count(local, imported_instances) == 0
