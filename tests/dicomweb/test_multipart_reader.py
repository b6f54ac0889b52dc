"""The streaming multipart/related reader finds every part whatever the chunking of the body.

STOW-RS hands a chunk that holds no delimiter to the part writer as a view of itself and holds
back only the bytes a delimiter could start in, so delimiters split across chunks (at every
position), parts that look almost like a delimiter, and one-byte chunks are all exercised here."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from imagebridge.dicomweb import multipart
from imagebridge.errors import InvalidInput

BOUNDARY = "b0und"


class _Collect(multipart.PartWriter):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts, self.data = parts, bytearray()

    async def write(self, data: bytes | memoryview) -> None:
        self.data += data

    async def close(self) -> None:
        self.parts.append(bytes(self.data))

    async def abort(self) -> None:
        self.parts.append(b"<aborted>")


def _body(parts: list[bytes]) -> bytes:
    body = b"preamble\r\n"
    for data in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def _read(body: bytes, sizes: list[int]) -> list[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        position, turn = 0, 0
        while position < len(body):
            size = sizes[turn % len(sizes)]
            yield body[position : position + size]
            position, turn = position + size, turn + 1

    parts: list[bytes] = []

    async def open_part(headers: dict[str, str]) -> multipart.PartWriter:
        return _Collect(parts)

    async def main() -> None:
        await multipart.read_parts(chunks(), BOUNDARY, open_part)

    # A thread of its own: a browser test earlier in this process may have left an event loop
    # running in the main thread (Playwright's sync API), where anyio.run would refuse to start.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, main).result()
    return parts


TRICKY = [
    b"",
    b"x",
    b"\r\n--b0un",  # a delimiter that stops one byte short
    b"--b0und",  # the boundary without the CRLF before it
    b"\r\n-",
    bytes(range(256)) * 40,
]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 10, 11, 64, 1000, 1 << 20])
def test_every_part_survives_every_chunk_size(size: int) -> None:
    assert _read(_body(TRICKY), [size]) == TRICKY


def test_random_bodies_and_random_chunkings() -> None:
    rng = random.Random(7)
    for _ in range(200):
        parts = [
            bytes(rng.choice(b"\r\n-b0undx") for _ in range(rng.randrange(0, 60)))
            for _ in range(rng.randrange(1, 5))
        ]
        sizes = [rng.randrange(1, 40) for _ in range(rng.randrange(1, 6))]
        assert _read(_body(parts), sizes) == parts


def test_a_delimiter_split_at_every_position_of_a_large_part() -> None:
    data = bytes(range(256)) * 300
    body = _body([data, b"second"])
    end = body.index(b"\r\n--" + BOUNDARY.encode(), 100)
    for split in range(end - 3, end + 12):
        assert _read(body, [split, len(body)]) == [data, b"second"]


def test_a_body_cut_inside_a_part_aborts_it() -> None:
    body = _body([b"a" * 5000])
    with pytest.raises(InvalidInput, match="closing boundary missing"):
        _read(body[:3000], [700])
