"""Ingest: the one path every instance takes into the archive (STOW-RS, C-STORE, import).

Order of events, so that the index never points at bytes that are not durable:
spool (hash as bytes arrive) → parse → decide → fsync + link into the blob
store → commit the index row → check the blob is still in place (a delete running meanwhile
may have taken it; the spool still holds the bytes). A failure before the commit leaves no
index row; a blob written for a refused or lost race is removed again unless the index names it.

Deciding: while no blob has the received digest (new bytes: almost always), the filing
transaction itself tells stored from already stored or conflicting, and the bytes are put
first as for any new instance. When a blob with that digest exists already (the same bytes
again, or bytes an import keeps as received), the index is asked before anything is written:
an instance stored again is not written over, so a delete running meanwhile cannot leave a
row filed after it without its blob, and a refusal never removes a blob that was there before.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imagebridge.dicom.parse import ParsedInstance, parse_file
from imagebridge.errors import StudyMismatch
from imagebridge.index.catalog import Catalog, Outcome, instance_conflict
from imagebridge.storage.base import BlobStore, Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    """What happened to one instance that was accepted."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    outcome: Outcome
    transfer_syntax: str


class Ingest:
    def __init__(
        self, blobs: BlobStore, catalog: Catalog, *, replace: bool = False, bulk_threshold: int = 1024
    ):
        self.blobs = blobs
        self.catalog = catalog
        self.replace = replace
        self.bulk_threshold = bulk_threshold

    def spool(self) -> Spool:
        return self.blobs.spool()

    def store(
        self,
        spool: Spool,
        *,
        study_uid: str | None = None,
        admit: Callable[[ParsedInstance], None] | None = None,
        head: bytes | None = None,
    ) -> Stored:
        """Store the spooled object; the spool is consumed whatever happens.

        ``admit`` sees the parsed instance before anything is written and raises to refuse it
        (STOW-RS asks the access policy there, on the same parse ingest uses). ``head``, the
        object's first bytes when the caller still holds them, spares the parse a read."""
        try:
            spool.flush()
            parsed = parse_file(
                spool.path,
                bulk_threshold=self.bulk_threshold,
                head=head,
                size=spool.size if head is not None else None,
            )
            if study_uid is not None and parsed.study_uid != study_uid:
                raise StudyMismatch(
                    f"the instance belongs to study {parsed.study_uid}, not to study {study_uid} named in the request"
                )
            if admit is not None:
                admit(parsed)
            if self.blobs.exists(spool.digest):
                existing = self.catalog.stored_blob(parsed.sop_uid)
                if existing == spool.digest:
                    return _stored(parsed, Outcome.ALREADY_STORED)
                if existing is not None and not self.replace:
                    raise instance_conflict(parsed.sop_uid)
            return self._commit(spool, parsed)
        finally:
            spool.discard()

    def store_stream(self, source: BinaryIO, *, study_uid: str | None = None) -> Stored:
        spool = self.spool()
        shutil.copyfileobj(source, spool, 1024 * 1024)
        return self.store(spool, study_uid=study_uid)

    def store_file(self, path: Path, *, study_uid: str | None = None) -> Stored:
        with path.open("rb") as source:
            return self.store_stream(source, study_uid=study_uid)

    def _commit(self, spool: Spool, parsed: ParsedInstance) -> Stored:
        size = spool.size
        key = self.blobs.put(spool)
        try:
            filed = self.catalog.file(parsed, key, size, replace=self.replace)
        except BaseException:
            release(self.blobs, self.catalog, key, parsed.sop_uid)
            raise
        self.blobs.ensure(spool)
        if filed.replaced_blob and filed.replaced_blob != key:
            release(self.blobs, self.catalog, filed.replaced_blob, parsed.sop_uid)
        log.info("%s %s (study %s)", filed.outcome.value, parsed.sop_uid, parsed.study_uid)
        return _stored(parsed, filed.outcome)


def release(blobs: BlobStore, catalog: Catalog, key: str, sop_uid: str) -> bool:
    """Remove blob ``key`` (bytes of instance ``sop_uid``) unless the index still names it;
    returns whether it went. Every removal of a blob goes through here (storage/fs.py says why
    asking the index is left to the moment the blob is out of reach)."""
    return blobs.remove(key, lambda: catalog.blob_in_use(key, sop_uid))


def _stored(parsed: ParsedInstance, outcome: Outcome) -> Stored:
    return Stored(
        sop_class_uid=parsed.sop_class_uid,
        sop_uid=parsed.sop_uid,
        study_uid=parsed.study_uid,
        series_uid=parsed.series_uid,
        outcome=outcome,
        transfer_syntax=parsed.transfer_syntax,
    )
