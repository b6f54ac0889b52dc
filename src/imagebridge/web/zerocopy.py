"""The ASGI ``http.response.zerocopy`` extension on uvicorn's httptools protocol.

An app that finds ``"http.response.zerocopy"`` in ``scope["extensions"]`` may send
``{"type": "http.response.zerocopy", "file": f, "offset": o, "count": n, "more_body": b}``
(asgiref, HTTP extensions): the server hands ``n`` bytes of ``f`` from ``o`` to the socket with
``sendfile(2)``, so the bytes go from the page cache to the socket without passing through Python.

uvloop's transports offer no sendfile, so this runs beside the transport, on the event loop: the
transport's write buffer is drained first (so bytes stay in order), then ``os.sendfile`` writes on
the socket, which is non-blocking. When the socket is full, a slice of the file is read and
written through the transport instead, which waits for room as it always does; the next
``sendfile`` follows once that slice has gone. A client that goes away makes ``send`` raise
:class:`~uvicorn.protocols.utils.ClientDisconnected` (an ``OSError``, as ASGI 2.4 asks); a file
that ends early or cannot be read closes the connection after one log line (the Content-Length
cannot be met) and raises the same.
Plain TLS-less HTTP/1.1 only: the extension is not offered on TLS connections.
"""

from __future__ import annotations

import logging
import os
from typing import Any, NoReturn

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import ClientDisconnected

EXTENSION = "http.response.zerocopy"
SLICE = 64 * 1024
"""Bytes copied through the transport when the socket is full (it then tells us when it drained)."""

_log = logging.getLogger(__name__)

HOOKED = callable(getattr(HttpToolsProtocol, "_start_asgi_task", None))
"""Whether this uvicorn starts each request through the private method overridden below; on a
uvicorn without it the extension is not offered, so WADO-RS takes its ordinary path."""


class ZeroCopyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, offering ``http.response.zerocopy`` on plain HTTP."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.scheme == "http" and HOOKED:
            self.scope["extensions"] = {EXTENSION: {}}

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        super()._start_asgi_task(cycle, _with_zerocopy(cycle, app))


def _with_zerocopy(cycle: RequestResponseCycle, app: ASGI3Application) -> ASGI3Application:
    sender = ZeroCopySender(cycle)

    async def run(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        await app(scope, receive, sender.wrap(send))
        sender.finished()

    return run


class ZeroCopySender:
    """Handles one response's ``http.response.zerocopy`` messages; passes the others on."""

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self.cycle = cycle
        self.used = False

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

    async def zerocopy(self, message: Any, send: ASGISendCallable) -> None:
        cycle = self.cycle
        if not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"'{EXTENSION}' sent outside a response body")
        if cycle.disconnected or cycle.transport.is_closing():
            raise ClientDisconnected
        self.used = True
        fd = message["file"].fileno()
        offset = message.get("offset")
        offset = os.lseek(fd, 0, os.SEEK_CUR) if offset is None else offset
        count = message.get("count")
        count = os.fstat(fd).st_size - offset if count is None else count
        if cycle.chunked_encoding or cycle.scope["method"] == "HEAD":
            await self._copy(fd, offset, count, send)
        else:
            if count > cycle.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            await self._sendfile(fd, offset, count)
        if not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _copy(self, fd: int, offset: int, count: int, send: ASGISendCallable) -> None:
        """Chunked or HEAD responses: the bytes as ordinary body messages."""
        while count > 0:
            data = os.pread(fd, min(count, 1024 * 1024), offset)
            if not data:
                self._fail("the file ended early (it changed while being sent)")
            await send({"type": "http.response.body", "body": data, "more_body": True})
            offset, count = offset + len(data), count - len(data)

    async def _sendfile(self, fd: int, offset: int, count: int) -> None:
        cycle = self.cycle
        transport = cycle.transport
        await self._drain()
        sock = transport.get_extra_info("socket").fileno()
        end = offset + count
        while offset < end:
            if cycle.disconnected or transport.is_closing():
                raise ClientDisconnected
            try:
                sent = os.sendfile(sock, fd, offset, end - offset)
            except BlockingIOError:
                sent = await self._write_slice(fd, offset, min(SLICE, end - offset))
            except ConnectionError as exc:
                cycle.disconnected = True
                transport.close()
                raise ClientDisconnected from exc
            except OSError as exc:
                self._fail(f"the file could not be read ({exc.strerror})")
            if sent == 0:
                self._fail("the file ended early (it changed while being sent)")
            offset += sent
            cycle.expected_content_length -= sent

    async def _write_slice(self, fd: int, offset: int, size: int) -> int:
        """The socket is full: let the transport send a slice and tell us when it has."""
        try:
            data = os.pread(fd, size, offset)
        except OSError as exc:
            self._fail(f"the file could not be read ({exc.strerror})")
        if data:
            self.cycle.transport.write(data)
            await self._drain()
        return len(data)

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
        if cycle.disconnected or transport.is_closing():
            raise ClientDisconnected

    def _fail(self, reason: str) -> NoReturn:
        cycle = self.cycle
        _log.warning("%s %s: %s; connection closed", cycle.scope["method"], cycle.scope["path"], reason)
        cycle.disconnected = True
        cycle.transport.close()
        raise ClientDisconnected(reason)
