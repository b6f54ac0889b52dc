"""A raw-socket HTTP/1.1 GET that counts the body, so the client is not what limits WADO-RS rows.

httpx (one Python thread, a copy per chunk) tops out well below the loopback ceiling. This
reader sends one GET over a plain socket, parses only the status line, the headers and the
chunked framing (RFC 9112 §7.1) when the server uses it, and reads the rest with ``recv_into`` a
preallocated 1 MiB buffer, as the loopback ceiling's own receiver does. It keeps the first bytes
of the body (the first multipart part's headers) and the last ones (the closing boundary), so a
caller can check the response is the study and not just the right number of bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

BUFFER = 1 << 20
HEAD_KEEP = 4096
TAIL_KEEP = 256
MAX_HEADER = 64 * 1024
TIMEOUT_S = 600.0


class RawHttpError(RuntimeError):
    """The response was not a complete 2xx HTTP/1.1 answer; short enough for a table cell."""


@dataclass
class Body:
    """What was seen of a response body: its length, first and last bytes."""

    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    tail: bytes = b""

    def add(self, data: memoryview) -> None:
        self.size += len(data)
        if len(self.head) < HEAD_KEEP:
            self.head += data[: HEAD_KEEP - len(self.head)]
        self.tail = (self.tail + bytes(data[-TAIL_KEEP:]))[-TAIL_KEEP:]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Body


def get(url: str, headers: Mapping[str, str] | None = None) -> Response:
    """GET ``url`` on a fresh connection (``Connection: close``) and count its body."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target or '/'} HTTP/1.1", f"Host: {parts.netloc}", "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append("Connection: close")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=TIMEOUT_S) as sock:
        sock.sendall(request)
        return _Reader(sock).read()


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(BUFFER)
        self.view = memoryview(self.buffer)

    def recv(self) -> memoryview:
        n = self.sock.recv_into(self.view)
        return self.view[:n]

    def read(self) -> Response:
        status, headers, rest = self._head()
        body = Body()
        if status >= 300:
            raise RawHttpError(f"HTTP {status}")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            _Dechunker(body).feed_all(rest, self.recv)
        elif "content-length" in headers:
            self._counted(body, rest, int(headers["content-length"]))
        else:
            self._until_close(body, rest)
        return Response(status, headers, body)

    def _head(self) -> tuple[int, dict[str, str], memoryview]:
        received = bytearray()
        while (end := received.find(b"\r\n\r\n")) < 0:
            data = self.recv()
            if not data or len(received) > MAX_HEADER:
                raise RawHttpError("the response ended (or grew too long) before its headers did")
            received += data
        status_line, *lines = bytes(received[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise RawHttpError(f"not an HTTP status line: {status_line[:80]!r}") from exc
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, memoryview(bytes(received[end + 4 :]))

    def _counted(self, body: Body, rest: memoryview, length: int) -> None:
        body.add(rest)
        while body.size < length:
            data = self.recv()
            if not data:
                raise RawHttpError(f"the connection closed after {body.size} of {length} body bytes")
            body.add(data)
        if body.size != length:
            raise RawHttpError(f"received {body.size} body bytes, Content-Length said {length}")

    def _until_close(self, body: Body, rest: memoryview) -> None:
        body.add(rest)
        while data := self.recv():
            body.add(data)


class _Dechunker:
    """RFC 9112 §7.1 chunked framing: hands each chunk's data to ``body``; trailers are ignored."""

    def __init__(self, body: Body) -> None:
        self.body = body
        self.remaining = 0
        self.framing = bytearray()
        self.after_data = False
        self.done = False

    def feed_all(self, first: memoryview, recv: Callable[[], memoryview]) -> None:
        self.feed(first)
        while not self.done:
            data = recv()
            if not data:
                raise RawHttpError(f"the connection closed inside chunked data after {self.body.size} bytes")
            self.feed(data)

    def feed(self, data: memoryview) -> None:
        pos = 0
        while pos < len(data) and not self.done:
            if self.remaining:
                take = min(self.remaining, len(data) - pos)
                self.body.add(data[pos : pos + take])
                pos += take
                self.remaining -= take
                self.after_data = self.remaining == 0
            else:
                pos = self._size_line(data, pos)

    def _size_line(self, data: memoryview, pos: int) -> int:
        """Read (part of) ``CRLF? size [;ext] CRLF``; returns where the chunk's data starts."""
        piece = data[pos : pos + 64]
        self.framing += piece
        pos += len(piece)
        if self.after_data:
            if len(self.framing) < 2:
                return pos
            if self.framing[:2] != b"\r\n":
                raise RawHttpError("a chunk's data is not followed by CRLF")
            del self.framing[:2]
            self.after_data = False
        end = self.framing.find(b"\r\n")
        if end < 0:
            if len(self.framing) > 1024:
                raise RawHttpError("a chunk size line is longer than 1 KiB")
            return pos
        size_text = bytes(self.framing[:end]).split(b";")[0].strip()
        try:
            self.remaining = int(size_text, 16)
        except ValueError as exc:
            raise RawHttpError(f"bad chunk size {size_text[:20]!r}") from exc
        pos -= len(self.framing) - (end + 2)
        self.framing.clear()
        self.done = self.remaining == 0
        return pos
