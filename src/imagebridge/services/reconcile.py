"""Reconcile imported (outside) instances to local patient identity (issue 6).

For each instance received from a source:

1. Already imported from this source (same original SOP Instance UID)? Nothing changes.
2. Its study already has a case (an earlier instance of it): follow that case's decision.
3. Otherwise match its patient: deterministic first (an identifier from a configured issuer in
   Other Patient IDs Sequence; a qualified Patient ID already linked; the same qualified Patient
   ID as a local patient), then the weighted scorecard over local candidates. Above the match
   threshold: link; in the uncertain band: the review queue; below: a new local patient
   (the source's qualified Patient ID).
4. The bytes as received are kept as a blob of their own (``imported_instances.original_blob``).
   Linked and new-patient instances are coerced (``reconcile.coerce``) and stored through
   :class:`Ingest`; instances waiting for review stay out of the main index (quarantine) until
   a reviewer accepts the suggestion, links another patient or creates a new one.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from imagebridge.audit import log as audit
from imagebridge.audit.store import AuditStore
from imagebridge.config import Settings
from imagebridge.errors import Conflict, InvalidInput, MissingAttribute, NotDicom, NotFound
from imagebridge.fhir.index import fhir_id
from imagebridge.index.catalog import Catalog
from imagebridge.index.lookup import Target
from imagebridge.reconcile import coerce, score
from imagebridge.reconcile.coerce import Identity
from imagebridge.reconcile.patients import LocalPatient
from imagebridge.reconcile.records import (
    DECIDING,
    LINKED,
    NEW_PATIENT,
    PENDING,
    QUARANTINED,
    STORED,
    Case,
    OutsideStudy,
    Records,
    Source,
    now,
)
from imagebridge.reconcile.sources import Sources
from imagebridge.services import importer
from imagebridge.services.archive import Archive
from imagebridge.services.delete import delete
from imagebridge.services.ingest import Ingest, release
from imagebridge.storage.base import BlobStore, Spool

log = logging.getLogger(__name__)

Decision = Literal["accept", "link", "new-patient"]


class Received(enum.Enum):
    STORED = "stored"
    ALREADY_IMPORTED = "already imported"
    QUARANTINED = "waiting for review"


@dataclass(frozen=True)
class Receipt:
    outcome: Received
    study_uid: str
    case: Case


class Reconciler:
    """Imports from one source, and review decisions on its (or any source's) cases."""

    def __init__(
        self, settings: Settings, records: Records, blobs: BlobStore, catalog: Catalog, ingest: Ingest
    ) -> None:
        self.settings = settings
        self.records = records
        self.blobs = blobs
        self.catalog = catalog
        self.ingest = ingest
        self.card = settings.reconciliation.scorecard()

    # --- import ----------------------------------------------------------------------------
    def receive(self, source: Source, spool: Spool) -> Receipt:
        """Reconcile and store one spooled instance; the spool is consumed whatever happens."""
        try:
            return self._receive(source, spool)
        finally:
            spool.discard()

    def _receive(self, source: Source, spool: Spool) -> Receipt:
        """The spool stays until the record naming its blob (the bytes as received) is filed,
        and the blob is then checked to be in place (``BlobStore.ensure``)."""
        spool.flush()
        ds = _read(spool.path)
        sop_uid, study_uid = _uid(ds, "SOPInstanceUID"), _uid(ds, "StudyInstanceUID")
        state = self.records.imported_state(source.name, sop_uid)
        if state is not None and not self._deleted_since(state, source, sop_uid, study_uid):
            case = self.records.case_for(source.name, study_uid)
            if case is not None:
                return Receipt(Received.ALREADY_IMPORTED, study_uid, case)
        who = coerce.incoming(ds, source.issuer)
        if not who.patient_id:
            raise MissingAttribute("the instance has no Patient ID (0010,0020); it cannot be reconciled")
        case = self.records.case_for(source.name, study_uid) or self._open_case(source, who, study_uid)
        if (case.source_patient_id, case.source_issuer) != (who.patient_id, who.issuer):
            raise Conflict(
                f"study {study_uid} from '{source.name}' was filed for patient '{case.source_patient_id}'; "
                f"this instance names patient '{who.patient_id}'"
            )
        if case.state not in (PENDING, DECIDING):
            self._refuse_local_study(study_uid)
        original = self.blobs.put(spool)
        if case.state in (PENDING, DECIDING):
            self.records.add_instance(source.name, sop_uid, study_uid, case.pk, original, QUARANTINED)
            self.blobs.ensure(spool)
            case = self.records.case(case.pk)
            if case.state in (PENDING, DECIDING):  # else decided meanwhile: release it here
                return Receipt(Received.QUARANTINED, study_uid, case)
            self._release_quarantine(case, self._identity(case), source)
            return Receipt(Received.STORED, study_uid, case)
        marked = self.records.outside(study_uid) is not None
        if not marked or self.catalog.stored_blob(sop_uid) is None:  # else stored before a crash
            self._store(ds, self._identity(case), source, case)
        added = self.records.add_instance(source.name, sop_uid, study_uid, case.pk, original, STORED)
        self.blobs.ensure(spool)
        if not added:
            return Receipt(Received.ALREADY_IMPORTED, study_uid, case)
        if not marked:
            self.records.mark_outside(study_uid, source.name)
        return Receipt(Received.STORED, study_uid, case)

    def _deleted_since(self, state: str, source: Source, sop_uid: str, study_uid: str) -> bool:
        """An instance imported before and deleted from the index since (DICOMweb DELETE, say):
        forget it, so that importing it again brings it back."""
        if state != STORED or self.catalog.stored_blob(sop_uid) is not None:
            return False
        if self.records.patients.study_in_index(study_uid):
            unused = self.records.forget_instance(source.name, sop_uid)
        else:
            unused = self.records.forget_outside(study_uid)
        for key, original_sop_uid in unused:
            release(self.blobs, self.catalog, key, original_sop_uid)
        return True

    def _refuse_local_study(self, study_uid: str) -> None:
        """A study that is in the index and not from outside is local: imports never touch it."""
        if self.records.patients.study_in_index(study_uid) and self.records.outside(study_uid) is None:
            raise Conflict(f"study {study_uid} is already in the archive as a local study; not imported")

    def _open_case(self, source: Source, who: coerce.Incoming, study_uid: str) -> Case:
        method, found, result = self._match(who)
        values: dict[str, object] = {
            "source": source.name,
            "study_uid": study_uid,
            "source_patient_id": who.patient_id,
            "source_issuer": who.issuer,
            "incoming": json.dumps(_incoming_json(who)),
            "method": method,
            "score": result.total if result else None,
            "breakdown": json.dumps(result.breakdown() if result else []),
            "candidate_patient_id": found.identity.patient_id if found else None,
            "candidate_issuer": found.identity.issuer if found else None,
        }
        verdict = score.verdict(result.total, self.card) if result else None
        if found is not None and verdict in (None, score.Verdict.MATCH):
            values.update(
                state=LINKED, patient_id=found.identity.patient_id, patient_issuer=found.identity.issuer
            )
        elif found is not None and verdict is score.Verdict.REVIEW:
            values.update(state=PENDING)
        else:
            values.update(state=NEW_PATIENT, patient_id=who.patient_id, patient_issuer=who.issuer)
        case = self.records.open_case(values)
        if case.patient is not None:
            self.records.link((who.patient_id, who.issuer), Identity(*case.patient))
        log.info("case %s: study %s from %s -> %s (%s)", case.pk, study_uid, source.name, case.state, method)
        return case

    def _match(self, who: coerce.Incoming) -> tuple[str, LocalPatient | None, score.Score | None]:
        """(method, best local patient or None, scorecard result or None for a deterministic match)."""
        for value, issuer in who.other_ids:
            if issuer and issuer in self.settings.reconciliation.deterministic_issuers:
                found = self.records.patients.with_identifier(value, issuer)
                if len(found) == 1:
                    return f"identifier {issuer}", found[0], None
        linked = self.records.linked(who.issuer, who.patient_id)
        if linked is not None and (patient := self.records.patients.get(*linked)) is not None:
            return "linked before", patient, None
        same = self.records.patients.get(who.patient_id, who.issuer)
        if same is not None:
            return "same qualified Patient ID", same, None
        return self._scorecard(who)

    def _scorecard(self, who: coerce.Incoming) -> tuple[str, LocalPatient | None, score.Score | None]:
        mine = score.Demographics.from_dicom(who.name, who.birth_date, who.sex, who.address)
        family = who.name.split("=")[0].split("^")[0].upper()
        best: tuple[LocalPatient, score.Score] | None = None
        for patient in self.records.patients.candidates(family, _birth_date_variants(mine.birth_date)):
            theirs = score.Demographics.from_dicom(
                patient.identity.name,
                patient.identity.birth_date,
                patient.identity.sex,
                self.records.patients.address(patient.pk) if mine.postcode else "",
            )
            result = score.score(mine, theirs, self.card)
            if best is None or result.total > best[1].total:
                best = (patient, result)
        if best is None:
            return "scorecard: no local candidate", None, None
        if score.verdict(best[1].total, self.card) is score.Verdict.DIFFERENT:
            return "scorecard", None, best[1]
        return "scorecard", best[0], best[1]

    def _identity(self, case: Case) -> Identity:
        assert case.patient is not None
        local = self.records.patients.get(*case.patient)
        if local is not None:
            return local.identity
        if case.patient == (case.source_patient_id, case.source_issuer):
            i = case.incoming
            return Identity(case.source_patient_id, case.source_issuer, i["name"], i["birth_date"], i["sex"])
        raise Conflict(
            f"patient '{case.patient[0]}' (issuer '{case.patient[1]}') of case {case.pk} is no longer in the archive"
        )

    def _store(self, ds: Dataset, identity: Identity, source: Source, case: Case) -> None:
        coerce.coerce(
            ds,
            identity,
            source_name=source.name,
            source_patient=(case.source_patient_id, case.source_issuer),
            accession_prefix=source.accession_prefix or coerce.default_prefix(source.name),
            modifying_system=self.settings.reconciliation.modifying_system,
            now=now(),
        )
        buffer = io.BytesIO()
        ds.save_as(buffer)
        spool = self.ingest.spool()
        spool.write(buffer.getbuffer())
        self.ingest.store(spool)

    # --- review ----------------------------------------------------------------------------
    def decide(
        self, case_pk: int, decision: Decision, actor: str, patient: tuple[str, str] | None = None
    ) -> Case:
        """Apply a reviewer's decision to a pending case and store its quarantined instances."""
        case = self.records.claim(case_pk)
        try:
            target = self._target(case, decision, patient)
            source = self._source_of(case)
            released = self._release_quarantine(case, target, source)
        except BaseException:
            self.records.release(case_pk)
            raise
        state = NEW_PATIENT if decision == "new-patient" else LINKED
        self.records.close_case(
            case_pk, state=state, method=f"review: {decision}", patient=target, actor=actor
        )
        self.records.link((case.source_patient_id, case.source_issuer), target)
        released += self._release_quarantine(case, target, source)  # instances that arrived while deciding
        store = AuditStore.of(self.records.engine)  # durable from the CLI too, not only in a request
        audit.record(
            "success",
            f"reconciliation case {case_pk}: {decision}",
            store=store,
            action="reconcile",
            **audit.actor_fields(actor),
            patient=fhir_id(target.patient_id, target.issuer),
            study=case.study_uid,
            case=case_pk,
            source=case.source,
            source_patient=f"{case.source_issuer}|{case.source_patient_id}",
            local_patient=f"{target.issuer}|{target.patient_id}",
            score=case.score,
        )
        filed = importer.Summary(stored=released)
        filed.outcomes[(case.study_uid, importer.STORED)] = released
        importer.audit_import(
            self.records.engine,
            filed,
            actor=actor,
            origin="review",
            medium=f"reconciliation case {case_pk}",
            source=case.source,
            decisions={
                case.study_uid: f"review: {decision}, filed under {target.patient_id} (issuer {target.issuer})"
            },
            case=case_pk,
        )
        return self.records.case(case_pk)

    def _target(self, case: Case, decision: Decision, patient: tuple[str, str] | None) -> Identity:
        if decision == "accept":
            if case.candidate is None:
                raise InvalidInput(
                    f"case {case.pk} has no suggested patient; link one or create a new patient"
                )
            found = self.records.patients.get(*case.candidate)
            if found is None:
                raise NotFound(f"the suggested patient '{case.candidate[0]}' is no longer in the archive")
            return found.identity
        if decision == "link":
            if patient is None or not patient[0]:
                raise InvalidInput("say which patient to link: a Patient ID and its issuer")
            found = self.records.patients.get(*patient)
            if found is None:
                raise NotFound(f"no local patient '{patient[0]}' with issuer '{patient[1]}'")
            return found.identity
        i = case.incoming
        return Identity(case.source_patient_id, case.source_issuer, i["name"], i["birth_date"], i["sex"])

    def _source_of(self, case: Case) -> Source:
        try:
            return Sources(self.records, self.settings).get(case.source)
        except NotFound:  # the source was removed since: keep its name, its own prefix
            return Source(case.source, case.source_issuer, None)

    def _release_quarantine(self, case: Case, target: Identity, source: Source) -> int:
        """Store a case's quarantined instances under ``target``; how many were released."""
        self._refuse_local_study(case.study_uid)
        released = 0
        for pk, sop_uid, blob in self.records.quarantined(case.pk):
            if self.catalog.stored_blob(sop_uid) is None:
                with self.blobs.open(blob) as fh:
                    ds = _read(fh)
                self._store(ds, target, source, case)
            self.records.mark_stored(pk)
            released += 1
        self.records.mark_outside(case.study_uid, case.source)
        return released

    # --- retention -------------------------------------------------------------------------
    def purge_outside(self, older_than: timedelta, *, dry_run: bool = False) -> list[OutsideStudy]:
        """Delete outside studies imported before ``now - older_than``; local studies are never listed."""
        due = self.records.outside_before(now() - older_than)
        if dry_run:
            return due
        for study in due:
            with contextlib.suppress(NotFound):  # deleted by hand already: drop the mark all the same
                delete(Target(study.study_uid), self.catalog, self.blobs)
            for key, sop_uid in self.records.forget_outside(study.study_uid):
                release(self.blobs, self.catalog, key, sop_uid)
            audit.record(
                "success",
                f"outside study from {study.source} past retention",
                action="delete",
                client_id="purge-outside",
                study=study.study_uid,
                source=study.source,
            )
        return due


def _read(source: Path | BinaryIO) -> Dataset:
    """The whole dataset (pixel data too: the coerced copy is written from it)."""
    try:
        ds = dcmread(source)
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise NotDicom(f"not a readable DICOM file: {exc}") from exc
    if not ds.file_meta.get("TransferSyntaxUID"):
        raise NotDicom("the File Meta Information has no Transfer Syntax UID (0002,0010)")
    return ds


def _uid(ds: Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "")).strip()
    if not value:
        raise MissingAttribute(f"the instance has no {keyword}")
    return value


def _incoming_json(who: coerce.Incoming) -> dict[str, object]:
    return {
        "patient_id": who.patient_id,
        "issuer": who.issuer,
        "name": who.name,
        "birth_date": who.birth_date,
        "sex": who.sex,
        "address": who.address,
        "other_ids": [list(pair) for pair in who.other_ids],
    }


def _birth_date_variants(date: str) -> set[str]:
    """The birth dates the scorecard gives credit for: exact, day and month swapped, one digit off."""
    if len(date) != 8:
        return set()
    variants = {date, date[:4] + date[6:8] + date[4:6]}
    for i in range(8):
        variants.update(date[:i] + d + date[i + 1 :] for d in "0123456789")
    return variants


def parse_age(text: str) -> timedelta:
    """``90d``, ``12w``, ``6m`` (30 days) or ``1y`` (365 days) as a duration."""
    units = {"d": 1, "w": 7, "m": 30, "y": 365}
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise InvalidInput(f"'{text}' is not an age like 90d, 12w, 6m or 1y")
    return timedelta(days=int(text[:-1]) * units[text[-1]])


def reconciler_for(archive: Archive) -> Reconciler:
    """The reconciler over an archive's index, blob store and ingest path."""
    return Reconciler(
        archive.settings, Records(archive.engine), archive.blobs, archive.catalog, archive.ingest
    )


@dataclass(frozen=True)
class SourceImport:
    """What ``importer.import_candidate`` needs to reconcile the files of one import."""

    reconciler: Reconciler
    source: Source

    def receive(self, spool: Spool) -> Receipt:
        return self.reconciler.receive(self.source, spool)
