"""The ASGI ``http.response.zerocopy`` extension on uvicorn's httptools protocol (and request
bodies passed on without copying, see :class:`_Chunks`).

An app that finds ``"http.response.zerocopy"`` in ``scope["extensions"]`` may send
``{"type": "http.response.zerocopy", "file": f, "offset": o, "count": n, "more_body": b}``
(asgiref, HTTP extensions): the server hands ``n`` bytes of ``f`` from ``o`` to the socket with
``sendfile(2)``, so the bytes go from the page cache to the socket without passing through Python.
One message may instead carry many files, each after some bytes of framing:
``{"type": "http.response.zerocopy", "parts": [(prefix, f, o, n), ...], "more_body": b}``; the
server loops over them itself, so a multipart response costs one ASGI message per batch of files
rather than two per file, each through every middleware.

uvloop's transports offer no sendfile, so this runs beside the transport, on the event loop: the
transport's write buffer is drained first (so bytes stay in order), then the prefixes are written
(``MSG_MORE``, so they leave with the file's first bytes) and ``os.sendfile`` sends the files on
the non-blocking socket, through a duplicate of its descriptor (uvloop refuses to watch a socket
one of its transports owns; the duplicate can be watched, and cannot be reused for another
connection while we hold it). When the socket is full the loop waits until it is writable again.
Why ``sendfile`` rather than mapping each file and sending it with ``sendmsg`` (which this did
for a day): the socket copies a mapped file into its buffers, while ``sendfile`` hands it the
page cache's pages (on loopback the receiver's copy out of them is the only one). How much that
is worth depends on the host: a bare loop over the bench CT's 500 files (263 MB) to a
raw-socket reader ran at 3.44 GB/s with ``sendfile`` and 2.65 GB/s mapped (``MAP_POPULATE``) on
an AMD EPYC VM (sending from memory: 3.69), and the server's full-study WADO-RS at 3.31 against
2.16 GB/s (medians of 20 alternating requests, two servers side by side); on an Intel Xeon VM
mapping was ahead instead (bare loop 3.3 against 2.3 GB/s, the server 2.25 against 2.04). The
one copy fewer, and the larger of the two differences, decided. Also measured on the AMD VM and
not taken: splicing each part's framing and file through a 1 MiB pipe of the response's own
(``splice(2)`` both ways, one socket write per file): 3-15% ahead of ``sendfile`` in a bare loop
over files in the cache in large folios, level over files read in by ``retrieve.read_ahead``
(small folios), and behind in the server (3.18 against 3.49 and 2.88 against 3.66 GB/s, medians
of 30 alternating requests).
A client that goes away makes ``send`` raise :class:`~uvicorn.protocols.utils.ClientDisconnected`
(an ``OSError``, as ASGI 2.4 asks); a file that ends early or cannot be read closes the connection
after one log line (the Content-Length cannot be met) and raises the same.
Plain TLS-less HTTP/1.1 only: the extension is not offered on TLS connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, NoReturn, Protocol

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import ClientDisconnected

EXTENSION = "http.response.zerocopy"
COPY = 1024 * 1024
"""Bytes read per body message when the response cannot use sendfile (chunked encoding)."""


class SupportsFileno(Protocol):
    def fileno(self) -> int: ...


Part = tuple[bytes, SupportsFileno, int | None, int | None]
"""One entry of ``parts``: framing bytes, then ``count`` bytes of the file from ``offset``."""
_Span = tuple[bytes, int, int, int]
_LAST = int(socket.MSG_NOSIGNAL)
_MORE = int(socket.MSG_MORE | socket.MSG_NOSIGNAL)
"""``send`` flags as plain ints: or-ing the ``socket.MsgFlag`` members per call costs microseconds."""

_ENDED_EARLY = "the file ended early (it changed while being sent)"

_log = logging.getLogger(__name__)

HOOKED = callable(getattr(HttpToolsProtocol, "_start_asgi_task", None))
"""Whether this uvicorn starts each request through the private method overridden below; on a
uvicorn without it the extension is not offered, so WADO-RS takes its ordinary path."""


class ZeroCopyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, offering ``http.response.zerocopy`` on plain HTTP, and
    passing request bodies to the app as they arrived (:class:`_Chunks`)."""

    sender: ZeroCopySender | None = None

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle.body) is bytearray and not cycle.body:
            cycle.body = _Chunks()  # type: ignore[assignment]
        super().on_body(body)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.scheme == "http" and HOOKED:
            self.scope["extensions"] = {EXTENSION: {}}

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self.sender = ZeroCopySender(cycle)
        super()._start_asgi_task(cycle, _with_zerocopy(self.sender, app))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.sender is not None:
            self.sender.wake()


def _with_zerocopy(sender: ZeroCopySender, app: ASGI3Application) -> ASGI3Application:
    async def run(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        try:
            await app(scope, receive, sender.wrap(send))
            sender.finished()
        finally:
            sender.close()

    return run


class _Chunks:
    """A request body's pending bytes as the chunks that arrived, not copied into one buffer.

    uvicorn gathers body bytes in a ``bytearray`` (``+=``), then copies them out with
    ``bytes()`` for each ``http.request`` message: two copies of every uploaded byte on the
    event loop, 1 MB of copying per 512 kB CT slice stored by STOW-RS. Standing in for that
    buffer, this keeps the chunks themselves: a message of one chunk is that chunk, unchanged;
    several are joined once. uvicorn uses nothing else of the buffer (``len`` for its high-water
    mark), and replaces it with a new ``bytearray`` after each message, which ``on_body``
    swaps for a new ``_Chunks`` again."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def __iadd__(self, chunk: bytes | bytearray | memoryview) -> _Chunks:
        if chunk:
            self._chunks.append(chunk if type(chunk) is bytes else bytes(chunk))
            self._size += len(chunk)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ZeroCopySender:
    """Handles one response's ``http.response.zerocopy`` messages; passes the others on."""

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self.cycle = cycle
        self.used = False
        self.sock: socket.socket | None = None
        self.waiter: asyncio.Future[None] | None = None

    def wrap(self, send: ASGISendCallable) -> Any:
        async def sending(message: Any) -> None:
            if message["type"] == EXTENSION:
                await self.zerocopy(message, send)
            else:
                await send(message)

        return sending

    def finished(self) -> None:
        """An app that stops a zero-copy response early has said why (the file it could not
        read); close the connection without a second, vaguer line from the server."""
        cycle = self.cycle
        if self.used and cycle.response_started and not cycle.response_complete and not cycle.disconnected:
            cycle.disconnected = True
            cycle.transport.close()

    def close(self) -> None:
        """Release our duplicate of the socket (it would keep the connection open)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def wake(self) -> None:
        """The connection is gone: a wait for the socket to drain ends now."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def zerocopy(self, message: Any, send: ASGISendCallable) -> None:
        cycle = self.cycle
        if not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"'{EXTENSION}' sent outside a response body")
        self._check_connected()
        self.used = True
        spans = _spans(message)
        if cycle.scope["method"] != "HEAD":  # uvicorn sends no body for HEAD: nothing to read
            await (self._copy(spans, send) if cycle.chunked_encoding else self._send(spans))
        if not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _copy(self, spans: list[_Span], send: ASGISendCallable) -> None:
        """Chunked responses: the bytes as ordinary body messages."""
        for prefix, fd, offset, count in spans:
            if prefix:
                await send({"type": "http.response.body", "body": prefix, "more_body": True})
            while count > 0:
                data = self._pread(fd, min(count, COPY), offset)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                offset, count = offset + len(data), count - len(data)

    async def _send(self, spans: list[_Span]) -> None:
        """Straight to the socket, after whatever the transport still holds."""
        if sum(len(prefix) + count for prefix, _, _, count in spans) > self.cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        await self._drain()
        sock = self._socket()
        for prefix, fd, offset, count in spans:
            await self._write(sock, prefix, _MORE if count else _LAST)
            await self._sendfile(sock.fileno(), fd, offset, count)

    async def _write(self, sock: socket.socket, data: bytes, flags: int) -> None:
        sent = 0
        while sent < len(data):
            try:
                sent += sock.send(data[sent:] if sent else data, flags)
            except BlockingIOError:
                await self._writable()
            except OSError as exc:
                self._disconnected(exc)
        self.cycle.expected_content_length -= sent

    async def _sendfile(self, out: int, fd: int, offset: int, count: int) -> None:
        cycle = self.cycle
        end = offset + count
        while offset < end:
            try:
                sent = os.sendfile(out, fd, offset, end - offset)
            except BlockingIOError:
                await self._writable()
                continue
            except ConnectionError as exc:
                self._disconnected(exc)
            except OSError as exc:
                self._fail(f"the file could not be read ({exc.strerror})")
            if sent == 0:
                self._fail(_ENDED_EARLY)
            offset += sent
            cycle.expected_content_length -= sent

    def _socket(self) -> socket.socket:
        """Our duplicate of the connection's socket, made on first use."""
        if self.sock is None:
            own = self.cycle.transport.get_extra_info("socket").fileno()
            self.sock = socket.socket(fileno=os.dup(own))
        return self.sock

    async def _writable(self) -> None:
        """Wait until the socket takes bytes again (or the connection is lost)."""
        self._check_connected()
        loop = asyncio.get_running_loop()
        fd = self._socket().fileno()
        self.waiter = waiter = loop.create_future()
        loop.add_writer(fd, _resolve, waiter)
        try:
            await waiter
        finally:
            loop.remove_writer(fd)
            self.waiter = None
        self._check_connected()

    async def _drain(self) -> None:
        """Wait until the transport has written everything it buffered (or the client left)."""
        cycle = self.cycle
        transport = cycle.transport
        if not transport.get_write_buffer_size():
            return
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            while transport.get_write_buffer_size() and not cycle.disconnected and not transport.is_closing():
                await cycle.flow.drain()
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits(high=high, low=low)
        self._check_connected()

    def _check_connected(self) -> None:
        if self.cycle.disconnected or self.cycle.transport.is_closing():
            raise ClientDisconnected

    def _disconnected(self, exc: OSError) -> NoReturn:
        self.cycle.disconnected = True
        self.cycle.transport.close()
        raise ClientDisconnected from exc

    def _pread(self, fd: int, size: int, offset: int) -> bytes:
        try:
            data = os.pread(fd, size, offset)
        except OSError as exc:
            self._fail(f"the file could not be read ({exc.strerror})")
        if not data:
            self._fail(_ENDED_EARLY)
        return data

    def _fail(self, reason: str) -> NoReturn:
        cycle = self.cycle
        _log.warning("%s %s: %s; connection closed", cycle.scope["method"], cycle.scope["path"], reason)
        cycle.disconnected = True
        cycle.transport.close()
        raise ClientDisconnected(reason)


def _spans(message: Any) -> list[_Span]:
    """(prefix, descriptor, offset, count) of each part of a message; a file's part runs by
    default from its current position to its end."""
    parts = (
        message["parts"]
        if "parts" in message
        else [(b"", message["file"], message.get("offset"), message.get("count"))]
    )
    spans = []
    for prefix, file, offset, count in parts:
        fd = file.fileno()
        offset = os.lseek(fd, 0, os.SEEK_CUR) if offset is None else offset
        count = os.fstat(fd).st_size - offset if count is None else count
        spans.append((prefix, fd, offset, count))
    return spans


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
