"""Where each frame of an instance lies in its stored file (PS3.5 §8.2, Annex A.4).

Computed once at ingest so that frame retrieval reads only the bytes of the
frames asked for, never decoding or even reading the whole instance.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

_ITEM = 0xFFFEE000
_SEQ_DELIMITER = 0xFFFEE0DD
_JPEG_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class Fragment:
    offset: int
    length: int


@dataclass(frozen=True)
class FrameIndex:
    """Native frames: ``offset + i * frame_length``; encapsulated: a list of fragments per frame."""

    count: int
    native_offset: int | None = None
    frame_length: int | None = None
    fragments: tuple[tuple[Fragment, ...], ...] | None = None

    def locate(self, number: int) -> tuple[Fragment, ...]:
        """The byte ranges of frame ``number`` (1-based), as stored."""
        if not 1 <= number <= self.count:
            raise IndexError(number)
        if self.fragments is not None:
            return self.fragments[number - 1]
        assert self.native_offset is not None and self.frame_length is not None
        return (Fragment(self.native_offset + (number - 1) * self.frame_length, self.frame_length),)

    def to_json(self) -> dict[str, object]:
        if self.fragments is not None:
            return {
                "count": self.count,
                "frames": [[[f.offset, f.length] for f in fr] for fr in self.fragments],
            }
        return {"count": self.count, "offset": self.native_offset, "length": self.frame_length}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> FrameIndex:
        count = int(data["count"])  # type: ignore[call-overload]
        frames = data.get("frames")
        if frames is not None:
            return cls(
                count=count,
                fragments=tuple(tuple(Fragment(o, n) for o, n in fr) for fr in frames),  # type: ignore[attr-defined]
            )
        return cls(count=count, native_offset=int(data["offset"]), frame_length=int(data["length"]))  # type: ignore[call-overload]


def native_index(value_offset: int, value_length: int, frame_length: int, count: int) -> FrameIndex | None:
    """Frames of uncompressed pixel data, or None when the value is shorter than it should be."""
    if frame_length <= 0 or count <= 0 or value_length < frame_length * count:
        return None
    return FrameIndex(count=count, native_offset=value_offset, frame_length=frame_length)


def encapsulated_index(fp: BinaryIO, value_offset: int, count: int) -> FrameIndex | None:
    """Frames of encapsulated pixel data; None when the layout cannot be worked out cheaply."""
    fp.seek(value_offset)
    return index_of_items(fp, _read_items(fp), count)


def index_of_items(fp: BinaryIO, items: list[Fragment], count: int) -> FrameIndex | None:
    """Frames of encapsulated pixel data whose items (the Basic Offset Table first) were already
    read; ``fp`` is read only for the offset table or the end of each JPEG fragment."""
    if not items:
        return None
    offset_table, fragments = items[0], items[1:]
    if not fragments:
        return None
    frames = _group_fragments(fp, offset_table, fragments, count)
    if frames is None or len(frames) != count:
        return None
    return FrameIndex(count=count, fragments=tuple(tuple(fr) for fr in frames))


def _read_items(fp: BinaryIO) -> list[Fragment]:
    items: list[Fragment] = []
    while True:
        header = fp.read(8)
        if len(header) < 8:
            return items
        group, element, length = struct.unpack("<HHL", header)
        tag = group << 16 | element
        if tag == _SEQ_DELIMITER:
            return items
        if tag != _ITEM:
            return []
        start = fp.tell()
        items.append(Fragment(start, length))
        fp.seek(start + length)


def _group_fragments(
    fp: BinaryIO, offset_table: Fragment, fragments: list[Fragment], count: int
) -> list[list[Fragment]] | None:
    if count == 1:
        return [fragments]
    if len(fragments) == count:
        return [[f] for f in fragments]
    if offset_table.length >= 4 * count:
        fp.seek(offset_table.offset)
        offsets = struct.unpack(f"<{count}L", fp.read(4 * count))
        return _split_by_offsets(fragments, offsets)
    return _split_by_end_of_image(fp, fragments)


def _split_by_offsets(fragments: list[Fragment], offsets: tuple[int, ...]) -> list[list[Fragment]] | None:
    first = fragments[0].offset - 8
    frames: list[list[Fragment]] = [[] for _ in offsets]
    for fragment in fragments:
        position = fragment.offset - 8 - first
        index = max(i for i, start in enumerate(offsets) if start <= position)
        frames[index].append(fragment)
    return frames if all(frames) else None


def _split_by_end_of_image(fp: BinaryIO, fragments: list[Fragment]) -> list[list[Fragment]] | None:
    """JPEG family without an offset table: a frame ends with the fragment that ends in EOI."""
    frames: list[list[Fragment]] = [[]]
    for fragment in fragments:
        frames[-1].append(fragment)
        fp.seek(fragment.offset + max(fragment.length - 3, 0))
        if _JPEG_EOI in fp.read(3):
            frames.append([])
    if frames[-1]:
        return None
    return frames[:-1]
