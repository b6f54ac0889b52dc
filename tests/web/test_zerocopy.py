"""The server's ``http.response.zerocopy`` extension, batched form: many files in one message,
each after its framing bytes, sent with sendfile(2) by a real server on 127.0.0.1.

Files of a few MiB and a client with a small receive buffer, so the socket fills and the
server has to wait for it; a client that leaves, and a file shorter than the part says.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from fastapi import FastAPI, Response

from imagebridge.web.server import BackgroundServer
from imagebridge.web.zerocopy import EXTENSION, ZeroCopySender

MiB = 1024 * 1024
Step = Callable[[dict[str, BinaryIO]], list[dict[str, Any]]]


class Scripted(Response):
    """A response that sends the running test's messages (given the open files) after its start;
    a message the server refuses is noted and the next one sent."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self.app = app
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        if app.length is not None:
            self.raw_headers.append((b"content-length", str(app.length).encode()))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert EXTENSION in scope["extensions"]
        opened: dict[str, BinaryIO] = {name: path.open("rb") for name, path in self.app.files.items()}
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            for message in self.app.step(opened):
                try:
                    await send(message)
                except RuntimeError as exc:
                    self.app.refused.append(str(exc))
                except OSError:
                    return
        finally:
            for fh in opened.values():
                fh.close()


@pytest.fixture(scope="module")
def contents() -> dict[str, bytes]:
    return {name: os.urandom(size) for name, size in (("a", 3 * MiB), ("b", 5 * MiB + 7), ("c", 1))}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, contents: dict[str, bytes]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zerocopy")
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in contents}


class App:
    """A server whose ``/run`` answers with the script of the test that is running."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.step: Step = lambda opened: []
        self.length: int | None = None
        self.refused: list[str] = []
        app = FastAPI()
        app.add_api_route("/run", self.run, methods=["GET", "HEAD"])
        self.server = BackgroundServer(app).start()

    async def run(self) -> Response:
        return Scripted(self)

    def script(self, step: Step, length: int | None) -> str:
        self.step, self.length = step, length
        self.refused.clear()
        return f"{self.server.url}/run"


@pytest.fixture(scope="module")
def app(files: dict[str, Path]) -> Iterator[App]:
    running = App(files)
    yield running
    running.server.stop()


@dataclass
class Seen:
    """What the server did (it runs in this process): bytes per sendfile call, waits for a full
    socket, and the zero-copy senders made (one per response)."""

    sendfile: list[int] = field(default_factory=list)
    waits: int = 0
    senders: list[ZeroCopySender] = field(default_factory=list)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Seen:
    seen = Seen()
    real_sendfile, real_writable, real_init = os.sendfile, ZeroCopySender._writable, ZeroCopySender.__init__

    def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real_sendfile(out_fd, in_fd, offset, count)
        seen.sendfile.append(sent)
        return sent

    async def writable(self: ZeroCopySender) -> None:
        seen.waits += 1
        await real_writable(self)

    def init(self: ZeroCopySender, cycle: Any) -> None:
        real_init(self, cycle)
        seen.senders.append(self)

    monkeypatch.setattr(os, "sendfile", sendfile)
    monkeypatch.setattr(ZeroCopySender, "_writable", writable)
    monkeypatch.setattr(ZeroCopySender, "__init__", init)
    return seen


def _batch(more_body: bool = True) -> Step:
    def step(opened: dict[str, BinaryIO]) -> list[dict[str, Any]]:
        opened["c"].seek(0)
        parts = [
            (b"<a>", opened["a"], 0, 3 * MiB),
            (b"<b from 100>", opened["b"], 100, 4 * MiB),
            (b"", opened["c"], None, None),
            (b"<empty>", opened["a"], 5, 0),
        ]
        tail = [{"type": "http.response.body", "body": b"<end>"}] if more_body else []
        return [{"type": EXTENSION, "parts": parts, "more_body": more_body}, *tail]

    return step


def _expected(contents: dict[str, bytes], end: bytes = b"<end>") -> bytes:
    a, b, c = contents["a"], contents["b"], contents["c"]
    return b"<a>" + a + b"<b from 100>" + b[100 : 100 + 4 * MiB] + c + b"<empty>" + end


def _raw_get(url: str, method: str = "GET") -> tuple[socket.socket, dict[str, str]]:
    """A request on a raw socket with a small receive buffer; returns it with the headers read."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return sock, headers


def _read_slowly(sock: socket.socket) -> bytes:
    received = bytearray()
    with sock:
        while chunk := sock.recv(128 * 1024):
            received += chunk
            time.sleep(0.001)
    return bytes(received)


def test_a_batch_is_each_prefix_then_its_file_in_order(
    app: App, contents: dict[str, bytes], seen: Seen
) -> None:
    expected = _expected(contents)
    response = httpx.get(app.script(_batch(), len(expected)), timeout=30)
    assert response.status_code == 200
    assert response.content == expected
    assert sum(seen.sendfile) == len(expected) - len(b"<a><b from 100><empty><end>")


def test_the_last_message_of_a_response_can_be_a_batch(app: App, contents: dict[str, bytes]) -> None:
    expected = _expected(contents, end=b"")
    response = httpx.get(app.script(_batch(more_body=False), len(expected)), timeout=30)
    assert response.content == expected


def test_a_single_file_message_is_still_understood(app: App, contents: dict[str, bytes]) -> None:
    def step(opened: dict[str, BinaryIO]) -> list[dict[str, Any]]:
        opened["b"].seek(10)
        return [
            {"type": EXTENSION, "file": opened["a"], "offset": 1, "count": 1000, "more_body": True},
            {"type": EXTENSION, "file": opened["b"], "more_body": False},
        ]

    expected = contents["a"][1:1001] + contents["b"][10:]
    assert httpx.get(app.script(step, len(expected)), timeout=30).content == expected


def test_bytes_the_transport_still_holds_go_out_first_and_a_full_socket_is_waited_for(
    app: App, contents: dict[str, bytes], seen: Seen
) -> None:
    """8 MiB through the transport while the client is not reading: most of it is still in the
    transport's buffer when the batch comes, and the socket fills again during the batch."""
    before = os.urandom(8 * MiB)

    def step(opened: dict[str, BinaryIO]) -> list[dict[str, Any]]:
        return [{"type": "http.response.body", "body": before, "more_body": True}, *_batch()(opened)]

    expected = before + _expected(contents)
    sock, headers = _raw_get(app.script(step, len(expected)))
    time.sleep(0.2)
    assert _read_slowly(sock) == expected
    assert int(headers["content-length"]) == len(expected)
    assert seen.waits and seen.sendfile


def test_chunked_responses_get_the_batch_as_body_messages(
    app: App, contents: dict[str, bytes], seen: Seen
) -> None:
    response = httpx.get(app.script(_batch(), None), timeout=30)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == _expected(contents)
    assert seen.sendfile == []


def test_head_sends_no_body_and_reads_no_file(app: App, contents: dict[str, bytes], seen: Seen) -> None:
    expected = _expected(contents)
    response = httpx.head(app.script(_batch(), len(expected)), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(expected))
    assert response.content == b""
    assert seen.sendfile == []


def test_a_batch_longer_than_the_content_length_is_refused_before_a_byte_is_sent(
    app: App, contents: dict[str, bytes]
) -> None:
    def step(opened: dict[str, BinaryIO]) -> list[dict[str, Any]]:
        too_long = {"type": EXTENSION, "parts": [(b"x", opened["a"], 0, 10), (b"y", opened["b"], 0, 10)]}
        return [too_long, {"type": EXTENSION, "parts": [(b"x", opened["a"], 0, 10)]}]

    response = httpx.get(app.script(step, 11), timeout=30)
    assert response.content == b"x" + contents["a"][:10]
    assert app.refused == ["Response content longer than Content-Length"]


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def uvicorn_errors() -> Iterator[list[logging.LogRecord]]:
    """What the server logs itself (its logger does not propagate to caplog)."""
    handler = Kept()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def test_a_file_shorter_than_its_part_closes_the_connection_after_one_line(
    app: App,
    contents: dict[str, bytes],
    caplog: pytest.LogCaptureFixture,
    uvicorn_errors: list[logging.LogRecord],
) -> None:
    def step(opened: dict[str, BinaryIO]) -> list[dict[str, Any]]:
        parts = [
            (b"<a>", opened["a"], 0, 3 * MiB),
            (b"<c>", opened["c"], 0, 1000),
            (b"<b>", opened["b"], 0, 10),
        ]
        return [{"type": EXTENSION, "parts": parts, "more_body": False}]

    length = 3 + 3 * MiB + 3 + 1000 + 3 + 10
    sock, _ = _raw_get(app.script(step, length))
    received = _read_slowly(sock)
    assert received == b"<a>" + contents["a"] + b"<c>" + contents["c"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["imagebridge.web.zerocopy"]
    assert "ended early" in warnings[0].getMessage() and warnings[0].exc_info is None
    assert uvicorn_errors == []
    assert httpx.get(app.script(_batch(), len(_expected(contents))), timeout=30).content == _expected(
        contents
    )


def test_a_client_leaving_mid_batch_ends_the_response_and_frees_the_socket(
    app: App, contents: dict[str, bytes], seen: Seen, caplog: pytest.LogCaptureFixture
) -> None:
    """One batch of 16 files (~32 MiB, more than the socket buffers hold), the client leaving
    after 4 MiB."""
    expected = _expected(contents)

    def step(opened: dict[str, BinaryIO]) -> list[dict[str, Any]]:
        parts = _batch()(opened)[0]["parts"] * 4
        return [{"type": EXTENSION, "parts": parts, "more_body": False}]

    sock, _ = _raw_get(app.script(step, 4 * (len(expected) - len(b"<end>"))))
    received = 0
    while received < 4 * MiB:
        received += len(sock.recv(MiB))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    deadline = time.monotonic() + 5
    while not _ended(seen.senders) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(seen.senders) == 1 and _ended(seen.senders)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert httpx.get(app.script(_batch(), len(expected)), timeout=30).content == expected


def _ended(senders: list[ZeroCopySender]) -> bool:
    """Every response gave its duplicate of the socket back and knows the client left."""
    return all(s.sock is None and s.cycle.disconnected for s in senders)
