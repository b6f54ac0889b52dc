"""Retrieve frames (PS3.18 §10.4.1.1.3): which frames, and their bytes as stored or decoded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imagebridge.dicom import pixels, syntaxes
from imagebridge.errors import InvalidInput, NotFound, StorageFailure
from imagebridge.index.lookup import StoredInstance
from imagebridge.storage.base import BlobStore

MAX_FRAMES_PER_REQUEST = 10_000


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` as numbers; PS3.18 §10.4.1.1.3 frame numbers start at 1."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdecimal() or int(item) < 1:
            raise InvalidInput(
                f"frame list {text!r} is malformed: give frame numbers from 1 up, separated by commas "
                "(e.g. frames/1,3,5)"
            )
        numbers.append(int(item))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_FRAMES_PER_REQUEST} frames can be asked for at once")
    return numbers


def frame_count(instance: StoredInstance) -> int:
    """The number of frames; NotFound for an instance without pixel data."""
    if instance.number_of_frames is None:
        raise NotFound(f"instance {instance.sop_uid} has no pixel data, so it has no frames")
    return instance.number_of_frames


def check_frames(instance: StoredInstance, numbers: list[int]) -> None:
    count = frame_count(instance)
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise NotFound(
            f"instance {instance.sop_uid} has {count} frame{'s' if count != 1 else ''}; "
            f"frame {beyond[0]} does not exist"
        )


@dataclass(frozen=True)
class FrameSource:
    """Where one instance's frames come from: the stored bytes (by the frame index, or split
    by pydicom when no index could be computed at ingest), or pydicom decoding."""

    instance: StoredInstance
    path: Path
    decode: bool
    bits_allocated: int

    def frame(self, number: int) -> bytes:
        index = self.instance.frame_index
        if self.decode:
            return pixels.native_frame(self.path, number, self.bits_allocated)
        if index is None:
            return pixels.encapsulated_frame(self.path, number, frame_count(self.instance))
        with self.path.open("rb") as fp:
            return pixels.read_stored_frame(fp, index, number)

    def frames(self, numbers: list[int]) -> Iterator[bytes]:
        for number in numbers:
            yield self.frame(number)


def source(blobs: BlobStore, instance: StoredInstance, *, decode: bool) -> FrameSource:
    """Decide how frames are produced; decoding needs a plugin, checked now (406 before any body).

    Native frames are decoded too when the stored layout is not little endian bytes at fixed
    offsets (big endian, bit-packed, deflated)."""
    path = blobs.path(instance.blob_key)
    if path is None:
        raise StorageFailure("this blob store cannot read frames in place")
    stored = instance.transfer_syntax
    compressed = stored in syntaxes.FRAME_MEDIA_TYPES
    must_decode = decode or (not compressed and instance.frame_index is None)
    must_decode = must_decode or stored == "1.2.840.10008.1.2.2"
    bits = 8
    if must_decode:
        pixels.require_decoder(stored)
        bits = int(pixels.read_header(path).get("BitsAllocated", 8) or 8)
    return FrameSource(instance, path, must_decode, bits)
