"""A deterministic zip archive laid out before a byte is produced, streamed in any byte range.

Every entry is STORED (DICOM files do not shrink much and byte ranges must map to files). Sizes
and offsets are fixed by the plan, so the total length is known for Content-Length and any range
can be produced on its own (a resumed download). The CRC-32 of an entry is computed just before
its local header is needed, by reading the entry once, and kept for the central directory.
ZIP64 records (APPNOTE 6.3.10 §4.3.14, §4.5.3) are written only where a size, an offset or the
entry count does not fit the classic fields, so ordinary archives stay readable by old tools.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

ZIP64_LIMIT = 0xFFFFFFFF
"""Sizes and offsets at or above this go to ZIP64 extra fields (tests lower it)."""
ZIP64_COUNT = 0xFFFF
READ_CHUNK = 1024 * 1024
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01: a fixed timestamp keeps the archive deterministic
_DOS_TIME = 0


@dataclass(frozen=True)
class Entry:
    """One file of the archive: in-memory ``data``, or ``size`` bytes read through ``opener``
    (preceded by ``prefix``, e.g. a Part 10 preamble a stored blob lacks)."""

    name: str
    size: int
    data: bytes | None = None
    opener: Callable[[], BinaryIO] | None = None
    prefix: bytes = b""
    path: Path | None = None
    """The local file behind ``opener``, when there is one (ISO images add it by name)."""

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.size if end is None else end
        if self.data is not None:
            if start < end:
                yield self.data[start:end]
            return
        if start < len(self.prefix):
            yield self.prefix[start:end]
        assert self.opener is not None
        position = max(start, len(self.prefix)) - len(self.prefix)
        remaining = end - len(self.prefix) - position
        if remaining <= 0:
            return
        with self.opener() as source:
            source.seek(position)
            while remaining > 0:
                data = source.read(min(READ_CHUNK, remaining))
                if not data:
                    raise OSError(f"{self.name}: the stored file is shorter than indexed")
                remaining -= len(data)
                yield data


@dataclass(frozen=True)
class _Placed:
    entry: Entry
    offset: int  # of the local header
    header_size: int

    @property
    def data_offset(self) -> int:
        return self.offset + self.header_size

    @property
    def local_zip64(self) -> bool:
        return self.entry.size >= ZIP64_LIMIT

    @property
    def central_fields(self) -> list[int]:
        """ZIP64 extra values of the central header, in APPNOTE order."""
        fields = [self.entry.size, self.entry.size] if self.entry.size >= ZIP64_LIMIT else []
        return fields + ([self.offset] if self.offset >= ZIP64_LIMIT else [])


class ZipLayout:
    """The entries placed one after another, then the central directory and its end records."""

    def __init__(self, entries: list[Entry]) -> None:
        self.placed: list[_Placed] = []
        offset = 0
        for entry in entries:
            name = entry.name.encode("ascii")
            header = 30 + len(name) + (20 if entry.size >= ZIP64_LIMIT else 0)
            self.placed.append(_Placed(entry, offset, header))
            offset += header + entry.size
        self.central_offset = offset
        self.central_size = sum(
            46 + len(p.entry.name) + (4 + 8 * len(p.central_fields) if p.central_fields else 0)
            for p in self.placed
        )
        self.zip64_end = (
            len(entries) >= ZIP64_COUNT
            or self.central_offset >= ZIP64_LIMIT
            or self.central_size >= ZIP64_LIMIT
        )
        self.size = self.central_offset + self.central_size + (56 + 20 if self.zip64_end else 0) + 22
        self._crcs: dict[int, int] = {}

    def crc(self, index: int) -> int:
        if index not in self._crcs:
            value = 0
            for data in self.placed[index].entry.chunks():
                value = zlib.crc32(data, value)
            self._crcs[index] = value
        return self._crcs[index]

    def _local_header(self, index: int) -> bytes:
        placed = self.placed[index]
        name = placed.entry.name.encode("ascii")
        size = placed.entry.size
        extra = struct.pack("<HHQQ", 1, 16, size, size) if placed.local_zip64 else b""
        stored = 0xFFFFFFFF if placed.local_zip64 else size
        version = 45 if placed.local_zip64 else 20
        return (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                version,
                0,
                0,
                _DOS_TIME,
                _DOS_DATE,
                self.crc(index),
                stored,
                stored,
                len(name),
                len(extra),
            )
            + name
            + extra
        )

    def _central_header(self, index: int) -> bytes:
        placed = self.placed[index]
        name = placed.entry.name.encode("ascii")
        fields = placed.central_fields
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        size = 0xFFFFFFFF if placed.entry.size >= ZIP64_LIMIT else placed.entry.size
        offset = 0xFFFFFFFF if placed.offset >= ZIP64_LIMIT else placed.offset
        version = 45 if fields else 20
        return (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                version,
                version,
                0,
                0,
                _DOS_TIME,
                _DOS_DATE,
                self.crc(index),
                size,
                size,
                len(name),
                len(extra),
                0,
                0,
                0,
                0,
                offset,
            )
            + name
            + extra
        )

    def _end_records(self) -> bytes:
        count = len(self.placed)
        out = b""
        if self.zip64_end:
            end64 = self.central_offset + self.central_size
            out += struct.pack(
                "<IQHHIIQQQQ",
                0x06064B50,
                44,
                45,
                45,
                0,
                0,
                count,
                count,
                self.central_size,
                self.central_offset,
            )
            out += struct.pack("<IIQI", 0x07064B50, 0, end64, 1)
        return out + struct.pack(
            "<IHHHHIIH",
            0x06054B50,
            0,
            0,
            min(count, 0xFFFF),
            min(count, 0xFFFF),
            min(self.central_size, 0xFFFFFFFF),
            min(self.central_offset, 0xFFFFFFFF),
            0,
        )

    def _segments(self) -> Iterator[tuple[int, int, Callable[[int, int], Iterator[bytes]]]]:
        """(offset, length, producer of [a, b) relative to the segment) in archive order."""
        for index, placed in enumerate(self.placed):
            yield placed.offset, placed.header_size, _sliced(lambda i=index: self._local_header(i))  # type: ignore[misc]
            yield placed.data_offset, placed.entry.size, placed.entry.chunks
        yield self.central_offset, self.central_size, self._central_chunks
        tail = self.central_offset + self.central_size
        yield tail, self.size - tail, _sliced(self._end_records)

    def _central_chunks(self, start: int, end: int) -> Iterator[bytes]:
        position = 0
        for index in range(len(self.placed)):
            header = self._central_header(index)
            if position + len(header) > start and position < end:
                yield header[max(start - position, 0) : end - position]
            position += len(header)

    def iter_bytes(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the archive (``end`` None: to the end)."""
        end = self.size if end is None else min(end, self.size)
        if start < 0 or start > end:
            raise ValueError(f"invalid byte range {start}-{end} of {self.size}")
        for offset, length, produce in self._segments():
            if offset + length <= start or length == 0:
                continue
            if offset >= end:
                break
            for data in produce(max(start - offset, 0), min(end - offset, length)):
                if data:
                    yield data


def _sliced(build: Callable[[], bytes]) -> Callable[[int, int], Iterator[bytes]]:
    def produce(start: int, end: int) -> Iterator[bytes]:
        yield build()[start:end]

    return produce
