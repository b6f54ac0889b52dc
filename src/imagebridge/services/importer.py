"""Import files, folders (recursively), discs, zip archives and ISO images through the ingest path.

Every candidate ends in exactly one bucket of the :class:`Summary`: stored,
already present, refused (DICOM we would not store, with the reason) or skipped
(not DICOM, unreadable, unsafe). Nothing is written outside the data directory.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import Engine

from imagebridge.errors import ImageBridgeError, NotDicom
from imagebridge.index.catalog import Outcome
from imagebridge.services.ingest import Ingest
from imagebridge.storage.base import Spool

if TYPE_CHECKING:
    from imagebridge.services.reconcile import SourceImport


STORED, ALREADY_PRESENT, WAITING_REVIEW = "stored", "already_present", "waiting_review"
HELD = "waiting for staff review (not filed under any patient yet)"


@dataclass(frozen=True)
class Candidate:
    name: str
    size: int
    opener: Callable[[], AbstractContextManager[BinaryIO]]


@dataclass
class Summary:
    stored: int = 0
    already_present: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    studies: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    waiting_review: int = 0
    """Instances held out of the index until a reviewer decides their patient (import with a source)."""
    decisions: dict[str, str] = field(default_factory=dict)
    """Study Instance UID -> how its patient was reconciled (import with a source)."""
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(Study Instance UID, ``stored`` | ``already_present`` | ``waiting_review``) -> instances."""

    @property
    def total(self) -> int:
        return (
            self.stored + self.already_present + self.waiting_review + len(self.refused) + len(self.skipped)
        )


def discover(
    paths: list[Path], skipped: list[tuple[str, str]], notes: list[str] | None = None
) -> Iterator[Candidate]:
    """Candidates under ``paths`` (folders, discs with a DICOMDIR, zips, ISO images); what is left
    out is noted in ``skipped`` with its reason. The media rules live in ``media/sources.py``."""
    from imagebridge.media.sources import discover as discover_media

    return discover_media(paths, skipped, notes)


def looks_like_dicom(head: bytes) -> bool:
    """PS3.10 §7.1: a 128-byte preamble, then the magic 'DICM'."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def import_candidate(
    ingest: Ingest, candidate: Candidate, summary: Summary, *, source: SourceImport | None = None
) -> None:
    """Spool one candidate and store it; with a ``source``, reconcile its patient first
    (``services/reconcile.py``: coerced to the local identity, or held for review)."""
    try:
        with candidate.opener() as stream:
            head = stream.read(132)
            if not looks_like_dicom(head):
                summary.skipped.append((candidate.name, "not a DICOM file (no DICM prefix)"))
                return
            spool = ingest.spool()
            spool.write(head)
            while data := stream.read(1024 * 1024):
                spool.write(data)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        summary.skipped.append((candidate.name, f"unreadable: {exc}"))
        return
    summary.bytes += spool.size
    if source is not None:
        _reconcile(source, spool, candidate, summary)
        return
    try:
        stored = ingest.store(spool)
    except NotDicom as exc:
        summary.skipped.append((candidate.name, exc.reason))
        return
    except ImageBridgeError as exc:
        summary.refused.append((candidate.name, exc.reason))
        return
    summary.studies[stored.study_uid] += 1
    if stored.outcome is Outcome.ALREADY_STORED:
        summary.already_present += 1
        summary.outcomes[(stored.study_uid, ALREADY_PRESENT)] += 1
    else:
        summary.stored += 1
        summary.outcomes[(stored.study_uid, STORED)] += 1


def _reconcile(source: SourceImport, spool: Spool, candidate: Candidate, summary: Summary) -> None:
    from imagebridge.services.reconcile import Received

    try:
        receipt = source.receive(spool)
    except NotDicom as exc:
        summary.skipped.append((candidate.name, exc.reason))
        return
    except ImageBridgeError as exc:
        summary.refused.append((candidate.name, exc.reason))
        return
    summary.studies[receipt.study_uid] += 1
    summary.decisions[receipt.study_uid] = receipt.case.summary()
    if receipt.outcome is Received.ALREADY_IMPORTED:
        summary.already_present += 1
        summary.outcomes[(receipt.study_uid, ALREADY_PRESENT)] += 1
    elif receipt.outcome is Received.QUARANTINED:
        summary.waiting_review += 1
        summary.outcomes[(receipt.study_uid, WAITING_REVIEW)] += 1
    else:
        summary.stored += 1
        summary.outcomes[(receipt.study_uid, STORED)] += 1


def audit_import(
    engine: Engine,
    summary: Summary,
    *,
    actor: str,
    origin: str,
    medium: str,
    source: str | None = None,
    decisions: dict[str, str] | None = None,
    held: dict[str, int] | None = None,
    **extra: Any,
) -> list[dict[str, Any]]:
    """One ``import`` audit record per study of an import (and one for refused files, if any).

    ``actor`` is ``user:NAME``, ``client:ID``, ``patient:ID`` or ``cli:OSUSER``; ``origin`` is
    ``cli``, ``upload`` or ``review``; ``medium`` what was read (paths, the upload's name);
    ``held``: studies left for staff review without being imported (Study UID -> instances).
    Each record names the study, its patient once it is in the index (never for held studies),
    the source, the counts and the decision; it goes to the index's own audit store."""
    from imagebridge.audit import log as audit
    from imagebridge.audit.store import AuditStore

    medium = medium if len(medium) <= 200 else medium[:199] + "…"
    counts: dict[str, Counter[str]] = {}
    for (uid, kind), number in summary.outcomes.items():
        counts.setdefault(uid, Counter())[kind] += number
    for uid, number in (held or {}).items():
        counts.setdefault(uid, Counter())[WAITING_REVIEW] += number
    patients = _patients_of(engine, [uid for uid in counts if uid not in (held or {})])
    store = AuditStore.of(engine)
    who = audit.actor_fields(actor)
    made = []
    for uid, tally in counts.items():
        decision = (decisions or {}).get(uid) or (HELD if uid in (held or {}) else None)
        parts = [f"{tally[STORED]} stored", f"{tally[ALREADY_PRESENT]} already present"]
        if tally[WAITING_REVIEW]:
            parts.append(f"{tally[WAITING_REVIEW]} waiting for review")
        reason = f"import of {medium}: " + ", ".join(parts) + (f"; {decision}" if decision else "")
        made.append(
            audit.record(
                "success",
                reason,
                store=store,
                action="import",
                **who,
                patient=patients.get(uid),
                study=uid,
                source=source,
                origin=origin,
                medium=medium,
                stored=tally[STORED],
                already_present=tally[ALREADY_PRESENT],
                waiting_review=tally[WAITING_REVIEW],
                decision=decision,
                **extra,
            )
        )
    if summary.refused:
        first_reason = summary.refused[0][1]
        made.append(
            audit.record(
                "failure",
                f"import of {medium}: {len(summary.refused)} files refused (first: {first_reason})",
                store=store,
                action="import",
                **who,
                source=source,
                origin=origin,
                medium=medium,
                refused=len(summary.refused),
                **extra,
            )
        )
    return made


def _patients_of(engine: Engine, study_uids: list[str]) -> dict[str, str]:
    """Study Instance UID -> FHIR Patient id, for the studies that are in the index."""
    from imagebridge.fhir.index import FhirIndex
    from imagebridge.index.schema import studies

    found: dict[str, str] = {}
    index = FhirIndex(engine)
    for start in range(0, len(study_uids), 500):
        chunk = study_uids[start : start + 500]
        for row in index.studies([studies.c.study_uid.in_(chunk)]):
            found[row.uid] = row.patient.fhir_id
    return found
