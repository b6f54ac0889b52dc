"""Retrieve: the instances under a study/series/instance and their bytes, as stored or transcoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from imagebridge.dicom import pixels, syntaxes, transcode
from imagebridge.errors import CannotTranscode, StorageFailure
from imagebridge.index.lookup import StoredInstance
from imagebridge.storage.base import BlobStore

CHUNK = 1024 * 1024

ANY_SYNTAX = "*"


@dataclass(frozen=True)
class Rendition:
    """One instance as it will be sent: stored bytes, or converted to ``transfer_syntax``."""

    instance: StoredInstance
    transfer_syntax: str

    @property
    def as_stored(self) -> bool:
        return self.transfer_syntax == self.instance.transfer_syntax


def plan(blobs: BlobStore, instances: list[StoredInstance], wanted: Sequence[str | None]) -> list[Rendition]:
    """Each instance's transfer syntax: the first of ``wanted`` (best first) it can be sent in.

    ``*`` keeps the stored syntax; None (no parameter) means Explicit VR Little Endian
    (PS3.18 §8.7.3.5.2). Whether a conversion can be done is decided here, before any byte of
    the response is sent; an instance that fits none raises CannotTranscode (406).
    """
    targets = [syntaxes.DEFAULT_SYNTAX if w is None else w for w in wanted] or [syntaxes.DEFAULT_SYNTAX]
    return [_rendition(blobs, instance, targets) for instance in instances]


def _rendition(blobs: BlobStore, instance: StoredInstance, targets: list[str]) -> Rendition:
    header: Dataset | None = None
    reasons = []
    for target in targets:
        syntax = instance.transfer_syntax if target == ANY_SYNTAX else target
        if header is None and instance.number_of_frames is not None and syntax != instance.transfer_syntax:
            header = _header(blobs, instance)
        reason = transcode.obstacle(instance.transfer_syntax, syntax, header)
        if reason is None:
            return Rendition(instance, syntax)
        reasons.append(reason)
    raise CannotTranscode(
        f"instance {instance.sop_uid} cannot be sent in the transfer syntax asked for: {'; '.join(reasons)}. "
        'Ask with transfer-syntax=* (multipart/related; type="application/dicom"; transfer-syntax=*) '
        "for the stored bytes"
    )


def _header(blobs: BlobStore, instance: StoredInstance) -> Dataset:
    path = blobs.path(instance.blob_key)
    if path is None:
        raise StorageFailure("this blob store cannot transcode in place")
    return pixels.read_header(path)


def rendition_bytes(blobs: BlobStore, rendition: Rendition) -> bytes:
    """The whole converted instance (conversion needs the dataset in memory anyway)."""
    path = blobs.path(rendition.instance.blob_key)
    if path is None:
        raise StorageFailure("this blob store cannot transcode in place")
    return transcode.transcode(path, rendition.transfer_syntax)
