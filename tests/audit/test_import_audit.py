"""Imports are in the access log: the CLI, upload imports and review decisions record one ``import``
event per study (patient, study, source, counts, outcome), read back as FHIR AuditEvent and as the
patient's plain-language "who saw my images"."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from imagebridge.audit.plain import describe_all
from imagebridge.audit.store import AuditRecord, AuditStore
from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.tokens import Grant
from imagebridge.config import Settings
from imagebridge.fhir.index import fhir_id
from imagebridge.services.archive import Archive, open_archive
from imagebridge.services.reconcile import reconciler_for
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.factory import make_instance, part10
from tests.media.test_cli import run_cli
from tests.reconcile.helpers import SOURCE, add_source, outside, store_local

JOHN = {"PatientName": "Smith^John", "PatientBirthDate": "19800512", "PatientSex": "M"}
LOCAL_JOHN = fhir_id("L-1", "HOSP")


def _write(folder: Path, datasets: list[Dataset]) -> Path:
    folder.mkdir(parents=True)
    for number, ds in enumerate(datasets):
        (folder / f"IM{number:04d}").write_bytes(part10(ds))
    return folder


def _imports(archive: Archive) -> list[AuditRecord]:
    store = AuditStore.of(archive.engine)
    store.flush()
    return [e for e in store.search(limit=1000) if e.action == "import"]


def _by_study(events: list[AuditRecord]) -> dict[str, list[AuditRecord]]:
    found: dict[str, list[AuditRecord]] = {}
    for event in reversed(events):  # oldest first
        found.setdefault(event.study_uid or "", []).append(event)
    return found


def test_cli_imports_and_review_decisions_are_audited_per_study(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    archive = open_archive(settings)
    store_local(archive, PatientID="L-1", IssuerOfPatientID="HOSP", AccessionNumber="A9", **JOHN)
    add_source(archive)
    archive.close()

    plain_study = generate_uid()
    plain = _write(
        tmp_path / "plain",
        [make_instance(study=plain_study, PatientID="MRN-9", PatientName="Nine^Pat") for _ in range(3)],
    )
    for _ in range(2):  # the second run finds everything already present
        assert run_cli("import", str(plain), "--data-dir", str(settings.data_dir)).returncode == 0

    linked, uncertain = generate_uid(), generate_uid()
    disc = _write(
        tmp_path / "disc",
        [
            outside(study=linked, PatientName="SMYTH^JOHN", PatientBirthDate="19800512", PatientSex="M"),
            outside(study=linked, PatientName="SMYTH^JOHN", PatientBirthDate="19800512", PatientSex="M"),
            outside(
                study=uncertain,
                PatientID="N-5",
                PatientName="Smith^John",
                PatientBirthDate="19801205",
                PatientSex="M",
            ),
        ],
    )
    done = run_cli("import", str(disc), "--source", SOURCE, "--data-dir", str(settings.data_dir))
    assert done.returncode == 0, done.stdout

    archive = open_archive(settings)
    try:
        events = _by_study(_imports(archive))
        first, second = events[plain_study]
        assert first.outcome == "success" and first.patient == fhir_id("MRN-9", "")
        assert (first.detail["stored"], first.detail["already_present"]) == (3, 0)
        assert (second.detail["stored"], second.detail["already_present"]) == (0, 3)
        assert first.client_id == "imagebridge-cli" and first.detail["origin"] == "cli"
        assert first.detail["os_user"] and first.detail["medium"] == str(plain)
        assert "source" not in first.detail

        [john] = events[linked]
        assert john.patient == LOCAL_JOHN and john.detail["source"] == SOURCE
        assert john.detail["stored"] == 2 and john.detail["decision"].startswith("linked to L-1")
        [held] = events[uncertain]
        assert held.patient is None  # nobody's yet: not in any patient's log
        assert held.detail["waiting_review"] == 1 and held.detail["stored"] == 0

        reconciler = reconciler_for(archive)
        [case] = reconciler.records.cases()
        reconciler.decide(case.pk, "accept", "user:admin")
        reviewed = _by_study(_imports(archive))[uncertain][-1]
        assert reviewed.detail["origin"] == "review" and reviewed.user == "admin"
        assert reviewed.patient == LOCAL_JOHN and reviewed.detail["stored"] == 1
        assert reviewed.detail["case"] == case.pk and reviewed.detail["source"] == SOURCE

        store = AuditStore.of(archive.engine)
        store.flush()
        mine = [e for e in store.search(limit=100, patient=LOCAL_JOHN) if e.action == "import"]
        sentences = describe_all(archive.engine, mine)
        assert any(
            s.startswith("Imaging staff imported your CT")
            and "from a disc or file (outside images from north, 2 new images)" in s
            for s in sentences
        ), sentences
        assert any(
            s.startswith("admin imported your CT")
            and "after staff checked whose images they are (outside images from north, 1 new image)" in s
            for s in sentences
        ), sentences
    finally:
        archive.close()


def _token(app: Any, scope: str, *, patient: str | None = None, subject: str | None = None) -> dict[str, str]:
    grant = Grant(
        "test-client", scope, patient=patient, subject=subject, data={"policy": AccessGrant().to_json()}
    )
    token, _ = app.state.authorization.tokens.issue("access", grant, 600)
    return {"Authorization": f"Bearer {token}"}


def test_upload_imports_are_audited_and_the_patient_reads_them(archive: Archive) -> None:
    me = fhir_id("MRN-7", "HOSP")
    study = generate_uid()
    mine = [
        make_instance(study=study, PatientID="MRN-7", IssuerOfPatientID="HOSP", PatientName="Seven^Pat")
        for _ in range(2)
    ]
    stranger = make_instance(PatientID="OTHER-1", IssuerOfPatientID="ELSEWHERE", PatientName="Else^Who")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for number, ds in enumerate([*mine, stranger]):
            zf.writestr(f"IM{number}", part10(ds))
    data = buffer.getvalue()
    app = create_app(archive)
    running = BackgroundServer(app).start()
    try:
        patient = _token(app, "patient/ImagingStudy.c patient/AuditEvent.rs", patient=me)
        with httpx.Client(base_url=running.url, timeout=30) as client:
            upload_id = client.post(
                "/api/uploads", json={"name": "my cd.zip", "size": len(data)}, headers=patient
            ).json()["id"]
            client.patch(f"/api/uploads/{upload_id}", content=data, headers={**patient, "Upload-Offset": "0"})
            assert (
                client.post(f"/api/uploads/{upload_id}/import", headers=patient).json()["state"] == "review"
            )

            events = _by_study(_imports(archive))
            [own] = events[mine[0].StudyInstanceUID]
            assert own.patient == me and own.token_patient == me and own.detail["origin"] == "upload"
            assert own.detail["stored"] == 2 and own.detail["medium"] == "my cd.zip"
            assert own.detail["upload"] == upload_id and own.detail["uploader"] == f"patient:{me}"
            [waiting] = events[stranger.StudyInstanceUID]
            assert waiting.patient is None and waiting.detail["waiting_review"] == 1
            assert waiting.detail["decision"].startswith("waiting for staff review")

            bundle = client.get("/fhir/AuditEvent", params={"patient": me}, headers=patient).json()
            imports = [
                e["resource"]
                for e in bundle.get("entry", [])
                if {"system": "urn:imagebridge:audit-action", "code": "import"} in e["resource"]["subtype"]
            ]
            [event] = imports
            assert event["type"]["code"] == "110107" and event["action"] == "C" and event["outcome"] == "0"
            entities = [x.get("what", {}).get("reference") for x in event["entity"]]
            assert f"ImagingStudy/{mine[0].StudyInstanceUID}" in entities and f"Patient/{me}" in entities

            staff_app = _token(app, "system/ImagingStudy.c system/*.rs")
            filed = client.post(f"/api/uploads/{upload_id}/import", headers=staff_app)
            assert filed.status_code == 200 and filed.json()["state"] == "imported"
        events = _by_study(_imports(archive))
        later = events[stranger.StudyInstanceUID][-1]
        assert later.client_id == "test-client" and later.patient == fhir_id("OTHER-1", "ELSEWHERE")
        assert later.detail["stored"] == 1 and later.detail["uploader"] == f"patient:{me}"
        assert events[mine[0].StudyInstanceUID][-1].detail["already_present"] == 2

        store = AuditStore.of(archive.engine)
        sentences = describe_all(
            archive.engine, [e for e in store.search(patient=me) if e.action == "import"]
        )
        assert any(
            s.startswith("You imported your CT") and "from an upload (2 new images)" in s for s in sentences
        ), sentences
        assert any(
            s.startswith("The app test-client imported your CT") and "(2 already here)" in s
            for s in sentences
        )
    finally:
        running.stop()
