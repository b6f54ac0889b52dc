"""Resumable uploads of media from a browser, and their import.

An upload is declared first (name, size), then its bytes arrive in chunks, each at the offset the
server already holds (the tus "core protocol" idea, with plain HTTP headers), so an interrupted
upload resumes where it stopped. Bytes go to ``uploads/<id>.part`` in the data directory, nowhere
else. A chunk holds the file's lock while it writes (``flock``: one writer per upload across worker
processes) and the offset is committed after the bytes are on disk, so a crash loses at most the
chunk in flight and never records bytes that are not there.

The import reads the finished file as media (``media.sources``: a zip, an ISO image or one DICOM
file), then stores it through ``services.importer``. From a patient, only the studies that name
the uploader exactly (the Patient ID and Issuer of their record here) are filed; every other study
waits for staff, who import the upload later (usually naming a source, so reconciliation decides
whose it is). So a patient's upload is only ever linked to that patient, or left for review.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from imagebridge.errors import Conflict, ImageBridgeError, InvalidInput, NotFound
from imagebridge.fhir.index import fhir_id
from imagebridge.identifiers import public_id
from imagebridge.index.schema import media_uploads
from imagebridge.media import batch, preview, sources
from imagebridge.services import importer
from imagebridge.services.archive import Archive

log = logging.getLogger(__name__)
MAX_UPLOAD_BYTES = 32 * 1024**3
MAX_CHUNK_BYTES = 256 * 1024**2
ABANDONED_AFTER = timedelta(days=7)
RECEIVING, COMPLETE, IMPORTING, IMPORTED, REVIEW, FAILED = (
    "receiving",
    "complete",
    "importing",
    "imported",
    "review",
    "failed",
)


@dataclass(frozen=True)
class Upload:
    upload_id: str
    owner: str
    patient: str | None
    name: str
    size: int
    received: int
    state: str
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @property
    def complete(self) -> bool:
        return self.received == self.size

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.upload_id,
            "name": self.name,
            "size": self.size,
            "offset": self.received,
            "state": self.state,
            "patient": self.patient,
            "created": self.created_at.isoformat(),
            "updated": self.updated_at.isoformat(),
            "result": self.result,
        }


class Busy(Conflict):
    """Another request is writing a chunk of this upload right now."""


class OffsetMismatch(Conflict):
    def __init__(self, expected: int) -> None:
        super().__init__(
            f"the upload holds {expected} bytes; send the chunk that starts at offset {expected}"
        )
        self.expected = expected


class Uploads:
    """The uploads table and the ``uploads/`` folder of one data directory."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine = engine
        self.folder = data_dir / "uploads"

    def path(self, upload_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", upload_id):
            raise NotFound("no such upload")
        return self.folder / f"{upload_id}.part"

    def create(self, owner: str, patient: str | None, name: str, size: int) -> Upload:
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise InvalidInput("declare the upload's size in bytes (a positive whole number)")
        if size > MAX_UPLOAD_BYTES:
            raise InvalidInput(
                f"an upload may hold at most {MAX_UPLOAD_BYTES} bytes; this one declares {size}"
            )
        clean = _clean_name(name)
        self.purge_abandoned()
        upload_id = public_id(18)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path(upload_id).touch(exist_ok=False)
        stamp = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                insert(media_uploads).values(
                    upload_id=upload_id,
                    owner=owner,
                    patient=patient,
                    name=clean,
                    size=size,
                    received=0,
                    state=RECEIVING,
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
        return self.get(upload_id)

    def purge_abandoned(self, older_than: timedelta = ABANDONED_AFTER) -> int:
        """Remove uploads still receiving bytes that nobody touched for ``older_than`` (a closed
        tab that never came back), so the data directory does not fill with halves."""
        cutoff = datetime.now(UTC) - older_than
        query = select(media_uploads.c.upload_id).where(
            media_uploads.c.state == RECEIVING, media_uploads.c.updated_at < cutoff
        )
        with self.engine.connect() as conn:
            stale = [row.upload_id for row in conn.execute(query)]
        for upload_id in stale:
            self.delete(upload_id)
        return len(stale)

    def get(self, upload_id: str) -> Upload:
        with self.engine.connect() as conn:
            row = conn.execute(select(media_uploads).where(media_uploads.c.upload_id == upload_id)).first()
        if row is None:
            raise NotFound("no such upload")
        return _upload(row)

    def list(self, owner: str | None = None) -> list[Upload]:
        query = select(media_uploads).order_by(media_uploads.c.updated_at.desc())
        if owner is not None:
            query = query.where(media_uploads.c.owner == owner)
        with self.engine.connect() as conn:
            return [_upload(row) for row in conn.execute(query.limit(200))]

    def append(self, upload_id: str, offset: int, chunks: Iterable[bytes]) -> Upload:
        """Write ``chunks`` at ``offset`` (which must be what the upload holds); returns the new state."""
        with self.chunk(upload_id, offset) as writer:
            for data in chunks:
                writer.write(data)
        return writer.upload

    def chunk(self, upload_id: str, offset: int) -> ChunkWriter:
        """A writer for one chunk at ``offset``, holding the upload's lock until closed."""
        upload = self.get(upload_id)
        if upload.state != RECEIVING:
            raise Conflict(f"the upload is {upload.state}; it takes no more bytes")
        return ChunkWriter(self, upload_id, offset)

    def delete(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)
        with self.engine.begin() as conn:
            conn.execute(delete(media_uploads).where(media_uploads.c.upload_id == upload_id))

    def update(self, upload_id: str, **values: Any) -> Upload:
        """Set columns of one upload (``result`` as JSON) and its ``updated_at``."""
        if "result" in values and values["result"] is not None:
            values["result"] = json.dumps(values["result"])
        with self.engine.begin() as conn:
            conn.execute(
                update(media_uploads)
                .where(media_uploads.c.upload_id == upload_id)
                .values(updated_at=datetime.now(UTC), **values)
            )
        return self.get(upload_id)

    def claim(self, upload_id: str) -> Upload:
        """Move a complete upload (or one waiting for review) to ``importing``; one import at a time."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(media_uploads)
                .where(media_uploads.c.upload_id == upload_id)
                .where(media_uploads.c.state.in_([COMPLETE, REVIEW, FAILED]))
                .where(media_uploads.c.received == media_uploads.c.size)
                .values(state=IMPORTING, updated_at=datetime.now(UTC))
            ).rowcount
        upload = self.get(upload_id)
        if not done:
            if upload.state == RECEIVING:
                raise Conflict(
                    f"the upload is not complete: {upload.received} of {upload.size} bytes received"
                )
            raise Conflict(f"the upload is {upload.state}")
        return upload


class ChunkWriter:
    """One chunk being written: the file locked, positioned at the offset the upload holds.
    Closing commits the bytes written so far, even when the body broke off (the client resumes
    after them); a chunk that runs past the declared size is cut there and refused."""

    def __init__(self, uploads: Uploads, upload_id: str, offset: int) -> None:
        self.uploads, self.upload_id, self.offset = uploads, upload_id, offset
        self.written = 0
        self._fp = uploads.path(upload_id).open("r+b")
        try:
            fcntl.flock(self._fp.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._fp.close()
            raise Busy("another chunk of this upload is being written; retry in a moment") from exc
        self.upload = uploads.get(upload_id)  # re-read under the lock
        if offset != self.upload.received:
            self._fp.close()
            raise OffsetMismatch(self.upload.received)
        self._room = self.upload.size - offset
        self._fp.seek(offset)
        self._fp.truncate()

    def write(self, data: bytes) -> None:
        if self.written + len(data) > self._room:
            self._fp.write(data[: self._room - self.written])
            self.written = self._room
            raise InvalidInput("the chunk runs past the declared size of the upload")
        self._fp.write(data)
        self.written += len(data)

    def close(self) -> Upload:
        try:
            self._fp.flush()
            os.fsync(self._fp.fileno())
        finally:
            self._fp.close()
        end = self.offset + self.written
        self.upload = self.uploads.update(
            self.upload_id, received=end, state=COMPLETE if end == self.upload.size else RECEIVING
        )
        return self.upload

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean_name(name: object) -> str:
    text = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable())[:200].strip()
    return text or "upload"


def _upload(row: Any) -> Upload:
    return Upload(
        upload_id=row.upload_id,
        owner=row.owner,
        patient=row.patient,
        name=row.name,
        size=row.size,
        received=row.received,
        state=row.state,
        result=json.loads(row.result) if row.result else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- import -----------------------------------------------------------------------------------


def run_import(
    archive: Archive,
    uploads: Uploads,
    upload_id: str,
    *,
    staff: bool,
    source: str | None,
    actor: str | None = None,
) -> Upload:
    """Import a complete upload; a patient's own upload (``staff`` False) only waits for review.

    ``actor`` (``user:NAME``, ``client:ID``, ``patient:ID``; default: the uploader) is who runs
    the import, for the ``import`` audit record of each study."""
    before = uploads.get(upload_id).state
    upload = uploads.claim(upload_id)
    try:
        result = _import(
            archive, uploads.path(upload_id), upload, staff=staff, source=source, actor=actor or upload.owner
        )
    except ImageBridgeError:
        uploads.update(upload_id, state=before)
        raise
    except Exception as exc:
        uploads.update(upload_id, state=FAILED, result={"error": f"{type(exc).__name__}: {exc}"})
        raise
    state = IMPORTED if result["imported"] else REVIEW
    done = uploads.update(upload_id, state=state, result=result)
    if state == IMPORTED:
        uploads.path(upload_id).unlink(missing_ok=True)
    return done


def _import(
    archive: Archive, path: Path, upload: Upload, *, staff: bool, source: str | None, actor: str
) -> dict[str, Any]:
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    candidates = list(sources.discover([path], skipped, notes))
    seen = preview.preview(candidates, preview.Preview(skipped=[]))
    summary = importer.Summary(skipped=skipped + seen.skipped)
    if staff:
        reconciling = _source_import(archive, source) if source else None
        readable = [c for p in seen.patients.values() for s in p.studies.values() for c in s.candidates]
        batch.import_all(archive.ingest, readable, summary, source=reconciling)
        decided = {uid: summary.decisions.get(uid) or AS_RECEIVED for uid in _study_uids(seen)}
        _audit(archive, upload, summary, actor, source, decided, {})
        return _result(upload, path, seen, summary, decided, notes)
    own = _own_studies(archive, seen, upload.patient)
    batch.import_all(archive.ingest, [c for s in own for c in s.candidates], summary)
    decided = {uid: SELF if uid in {s.study_uid for s in own} else REVIEW_WAIT for uid in _study_uids(seen)}
    held = {
        study.study_uid: study.instances
        for person in seen.patients.values()
        for study in person.studies.values()
        if decided[study.study_uid] == REVIEW_WAIT
    }
    _audit(archive, upload, summary, actor, None, decided, held)
    return _result(upload, path, seen, summary, decided, notes)


def _audit(
    archive: Archive,
    upload: Upload,
    summary: importer.Summary,
    actor: str,
    source: str | None,
    decided: dict[str, str],
    held: dict[str, int],
) -> None:
    """Record the import in the access log; a failure there is logged, never turned into a
    failed upload (the studies are already in)."""
    try:
        importer.audit_import(
            archive.engine,
            summary,
            actor=actor,
            origin="upload",
            medium=upload.name or "an upload",
            source=source,
            decisions={uid: text for uid, text in decided.items() if uid not in held},
            held=held,
            upload=upload.upload_id,
            uploader=upload.owner,
        )
    except Exception:
        log.exception("the import of upload %s was not recorded in the access log", upload.upload_id)


AS_RECEIVED = "filed as received (no source named, so no reconciliation)"
SELF = "filed under your record (the disc names you by this hospital's Patient ID)"
REVIEW_WAIT = "waiting for staff review"


def _study_uids(seen: preview.Preview) -> list[str]:
    return [uid for patient in seen.patients.values() for uid in patient.studies]


def _own_studies(archive: Archive, seen: preview.Preview, patient: str | None) -> list[preview.StudyPreview]:
    """The studies of a patient's upload that name the uploader exactly: the same Patient ID and
    Issuer as their record here (its FHIR id is derived from that pair). Only these may be filed
    without review, and only where a stored instance can never be replaced by an upload."""
    if patient is None or archive.settings.replace_on_conflict:
        return []
    return [
        study
        for person in seen.patients.values()
        if person.patient_id and fhir_id(person.patient_id, person.issuer) == patient
        for study in person.studies.values()
    ]


def _source_import(archive: Archive, name: str) -> Any:
    from imagebridge.services.reconcile import SourceImport, Sources, reconciler_for

    reconciler = reconciler_for(archive)
    return SourceImport(reconciler, Sources(reconciler.records, archive.settings).get(name))


def _result(
    upload: Upload,
    path: Path,
    seen: preview.Preview,
    summary: importer.Summary,
    decided: dict[str, str],
    notes: list[str],
) -> dict[str, Any]:
    def shown(name: str) -> str:
        return name.replace(str(path), upload.name, 1)

    studies = [
        {
            "study_uid": study.study_uid,
            "patient_id": patient.patient_id,
            "issuer": patient.issuer,
            "patient_name": patient.name,
            "birth_date": patient.birth_date,
            "date": study.date,
            "description": study.description,
            "accession": study.accession,
            "modalities": sorted(study.modalities),
            "series": len(study.series),
            "instances": study.instances,
            "decision": decided[study.study_uid],
        }
        for patient in seen.patients.values()
        for study in patient.studies.values()
    ]
    waiting = sum(
        study.instances
        for patient in seen.patients.values()
        for study in patient.studies.values()
        if decided[study.study_uid] == REVIEW_WAIT
    )
    return {
        "imported": waiting == 0,
        "studies": studies,
        "stored": summary.stored,
        "already_present": summary.already_present,
        "waiting_review": summary.waiting_review + waiting,
        "refused": [{"name": shown(n), "reason": r} for n, r in summary.refused],
        "skipped": [{"name": shown(n), "reason": r} for n, r in summary.skipped],
        "skipped_by_reason": dict(Counter(sources.skip_kind(r) for _, r in summary.skipped)),
        "notes": [shown(n) for n in notes],
    }
