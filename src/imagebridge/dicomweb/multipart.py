"""multipart/related (RFC 2387) as DICOMweb uses it: a streaming reader for STOW-RS
and the framing for WADO-RS responses."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from imagebridge.errors import InvalidInput, UnsupportedMediaType

CRLF = b"\r\n"


def new_boundary() -> str:
    return "ib-" + secrets.token_hex(16)


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def content_type(boundary: str, part_type: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


@dataclass(frozen=True)
class RequestType:
    boundary: str
    part_type: str | None


def parse_request_type(header: str | None) -> RequestType:
    """Read ``Content-Type: multipart/related; type="application/dicom"; boundary=...``."""
    if not header:
        raise UnsupportedMediaType(
            'a STOW-RS request needs Content-Type: multipart/related; type="application/dicom"'
        )
    media, *params = (p.strip() for p in header.split(";"))
    if media.lower() != "multipart/related":
        raise UnsupportedMediaType(
            f'Content-Type {media} is not accepted; send multipart/related; type="application/dicom"'
        )
    values = {}
    for param in params:
        name, _, value = param.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    boundary = values.get("boundary")
    if not boundary:
        raise InvalidInput("the multipart/related Content-Type has no boundary parameter")
    part_type = values.get("type")
    if part_type is not None and part_type.lower() not in ("application/dicom",):
        raise UnsupportedMediaType(
            f"type={part_type} is not accepted; this server stores application/dicom parts"
        )
    return RequestType(boundary, part_type.lower() if part_type else None)


PartSink = Callable[[dict[str, str]], Awaitable["PartWriter"]]


class PartWriter:
    """Receives one part's body in chunks; ``close`` is called once the part ends."""

    async def write(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def abort(self) -> None:
        raise NotImplementedError


async def read_parts(chunks: AsyncIterator[bytes], boundary: str, open_part: PartSink) -> int:
    """Stream the body through ``open_part``; returns the number of complete parts.

    Memory stays bounded by the chunk size whatever the body size. A body that
    ends inside a part raises InvalidInput after aborting that part.
    """
    delimiter = b"--" + boundary.encode("latin-1")
    buffer = bytearray()
    source = chunks.__aiter__()

    async def next_chunk() -> bytes | None:
        try:
            return await source.__anext__()
        except StopAsyncIteration:
            return None

    async def fill() -> bool:
        chunk = await next_chunk()
        if chunk is None:
            return False
        buffer.extend(chunk)
        return True

    # Preamble: everything before the first delimiter.
    while (start := buffer.find(delimiter)) < 0:
        if len(buffer) > len(delimiter):
            del buffer[: len(buffer) - len(delimiter)]
        if not await fill():
            raise InvalidInput("the multipart body does not contain its boundary")
    del buffer[: start + len(delimiter)]
    count = 0
    while True:
        while len(buffer) < 2 and await fill():
            pass
        if buffer[:2] == b"--" or await _ends_here(buffer, fill):
            return count
        headers = await _read_headers(buffer, fill)
        writer = await open_part(headers)
        try:
            await _read_body(buffer, next_chunk, CRLF + delimiter, writer)
        except BaseException:
            await writer.abort()
            raise
        await writer.close()
        count += 1


async def _ends_here(buffer: bytearray, fill: Callable[[], Awaitable[bool]]) -> bool:
    """Whether the body ends after a delimiter with only whitespace: a sender that forgot the
    closing ``--`` (tolerant on read); every complete part has been received."""
    while not buffer.strip(b" \t\r\n"):
        if not await fill():
            return True
    return False


async def _read_headers(buffer: bytearray, fill: Callable[[], Awaitable[bool]]) -> dict[str, str]:
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > 64 * 1024:
            raise InvalidInput("a multipart part has more than 64 KiB of headers")
        if not await fill():
            raise InvalidInput("the multipart body ends inside a part's headers")
    block = bytes(buffer[:end]).decode("latin-1")
    del buffer[: end + 4]
    headers: dict[str, str] = {}
    for line in block.split("\r\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


async def _read_body(
    buffer: bytearray,
    next_chunk: Callable[[], Awaitable[bytes | None]],
    delimiter: bytes,
    writer: PartWriter,
) -> None:
    """Hand the part's bytes to ``writer`` up to ``delimiter``; what follows stays in ``buffer``.

    A chunk that holds no delimiter goes to the writer as a view of itself, without being
    copied into ``buffer`` first: for an instance of half a megabyte that saved three copies.
    Only the last ``len(delimiter) - 1`` bytes are held back, in case the delimiter starts there.
    """
    hold = len(delimiter) - 1
    found = buffer.find(delimiter)
    if found >= 0:
        if found:
            await writer.write(bytes(buffer[:found]))
        del buffer[: found + len(delimiter)]
        return
    if len(buffer) > hold:
        cut = len(buffer) - hold
        await writer.write(bytes(memoryview(buffer)[:cut]))
        del buffer[:cut]
    while True:
        chunk = await next_chunk()
        if chunk is None:
            raise InvalidInput("the multipart body ends inside a part (closing boundary missing)")
        if not chunk:
            continue
        # A delimiter that starts in the held-back bytes ends within the chunk's first bytes.
        if buffer and (found := (buffer + chunk[:hold]).find(delimiter)) >= 0:
            buffer.extend(chunk)
            if found:
                await writer.write(bytes(buffer[:found]))
            del buffer[: found + len(delimiter)]
            return
        found = chunk.find(delimiter)
        if found >= 0:
            if buffer:
                await writer.write(bytes(buffer))
            if found:
                await writer.write(memoryview(chunk)[:found])
            buffer[:] = memoryview(chunk)[found + len(delimiter) :]
            return
        if len(chunk) <= hold:
            buffer.extend(chunk)
            if len(buffer) > hold:
                cut = len(buffer) - hold
                await writer.write(bytes(buffer[:cut]))
                del buffer[:cut]
            continue
        if buffer:
            await writer.write(bytes(buffer))
        await writer.write(memoryview(chunk)[: len(chunk) - hold])
        buffer[:] = memoryview(chunk)[len(chunk) - hold :]
