"""Retrieve: the instances under a study/series/instance and their bytes, as stored or transcoded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from imagebridge.dicom import syntaxes, transcode
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


def plan(instances: list[StoredInstance], requested: str | None) -> list[Rendition]:
    """Decide each instance's transfer syntax: ``*`` keeps the stored one; none asked means
    Explicit VR Little Endian (PS3.18 §8.7.3.5.2)."""
    wanted = requested or syntaxes.DEFAULT_SYNTAX
    renditions = []
    for instance in instances:
        target = instance.transfer_syntax if wanted == ANY_SYNTAX else wanted
        if target != instance.transfer_syntax and not syntaxes.is_known(target):
            raise CannotTranscode(f"transfer syntax {target} is not known to this server")
        renditions.append(Rendition(instance, target))
    return renditions


def stored_chunks(blobs: BlobStore, instance: StoredInstance, chunk: int = CHUNK) -> Iterator[bytes]:
    with blobs.open(instance.blob_key) as fh:
        while data := fh.read(chunk):
            yield data


def rendition_bytes(blobs: BlobStore, rendition: Rendition) -> bytes:
    """The whole converted instance (conversion needs the dataset in memory anyway)."""
    path = blobs.path(rendition.instance.blob_key)
    if path is None:
        raise StorageFailure("this blob store cannot transcode in place")
    return transcode.transcode(path, rendition.transfer_syntax)
