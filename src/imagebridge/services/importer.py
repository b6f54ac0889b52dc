"""Import files, folders (recursively) and zip archives through the ingest path.

Every candidate ends in exactly one bucket of the :class:`Summary`: stored,
already present, refused (DICOM we would not store, with the reason) or skipped
(not DICOM, unreadable, unsafe). Nothing is written outside the data directory.
"""

from __future__ import annotations

import functools
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from imagebridge.errors import ImageBridgeError, NotDicom
from imagebridge.index.catalog import Outcome
from imagebridge.services.ingest import Ingest
from imagebridge.storage.base import Spool

if TYPE_CHECKING:
    from imagebridge.services.reconcile import SourceImport

MAX_MEMBER_BYTES = 8 * 1024**3
MAX_RATIO = 200
"""A zip member that inflates more than this many times its stored size is treated as a bomb."""


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

    @property
    def total(self) -> int:
        return (
            self.stored + self.already_present + self.waiting_review + len(self.refused) + len(self.skipped)
        )


def discover(paths: list[Path], skipped: list[tuple[str, str]]) -> Iterator[Candidate]:
    """Files under ``paths``; what cannot be read is noted in ``skipped``."""
    for path in paths:
        if not path.exists():
            skipped.append((str(path), "no such file or folder"))
        elif path.is_dir():
            yield from _walk(path, path.resolve(), skipped)
        else:
            yield from _file(path, skipped)


def _walk(folder: Path, root: Path, skipped: list[tuple[str, str]]) -> Iterator[Candidate]:
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            skipped.append((str(path), "symbolic link pointing outside the folder"))
        elif path.is_file():
            yield from _file(path, skipped)


def _file(path: Path, skipped: list[tuple[str, str]]) -> Iterator[Candidate]:
    if zipfile.is_zipfile(path):
        yield from _zip_members(path, skipped)
        return
    try:
        size = path.stat().st_size
    except OSError as exc:
        skipped.append((str(path), f"unreadable: {exc.strerror}"))
        return
    yield Candidate(str(path), size, lambda: path.open("rb"))


def _zip_members(path: Path, skipped: list[tuple[str, str]]) -> Iterator[Candidate]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        skipped.append((str(path), f"damaged zip archive: {exc}"))
        return
    # The archive stays open while its members are imported (they may be listed first).
    for info in archive.infolist():
        name = f"{path}!{info.filename}"
        if info.is_dir():
            continue
        if (
            info.file_size > MAX_MEMBER_BYTES
            or info.file_size > MAX_RATIO * max(info.compress_size, 1) + 1024**2
        ):
            skipped.append((name, "refused: inflates far beyond its compressed size (zip bomb?)"))
            continue
        yield Candidate(name, info.file_size, functools.partial(archive.open, info))  # type: ignore[arg-type]


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
    else:
        summary.stored += 1


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
    elif receipt.outcome is Received.QUARANTINED:
        summary.waiting_review += 1
    else:
        summary.stored += 1
