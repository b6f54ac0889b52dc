"""Full-study WADO-RS through the server's ``http.response.zerocopy`` extension (sendfile), each
batch of files handed to the server in one message.

Large instances, so the socket fills and the server has to wait for the client; a client that
leaves halfway, and a blob removed or cut short while the study is on its way, must leave no
open file and a server that answers the next request.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from imagebridge.services import retrieve
from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from imagebridge.web.zerocopy import ZeroCopySender
from tests.dicomweb.test_wado_batches import ANY, _parts
from tests.factory import make_instance, multipart, part10, stow_type

PIXELS = 1024
"""2 MiB of pixel data per instance: a few of them overflow the loopback socket buffers."""


def _store_study(url: str, count: int) -> tuple[str, list[bytes]]:
    study_uid, series_uid = generate_uid(), generate_uid()
    files = [
        part10(make_instance(study=study_uid, series=series_uid, InstanceNumber=n, pixels=PIXELS + n))
        for n in range(1, count + 1)
    ]
    response = httpx.post(
        f"{url}/studies", content=multipart(files), headers={"Content-Type": stow_type()}, timeout=60
    )
    assert response.status_code == 200, response.text
    return study_uid, files


@pytest.fixture(scope="module")
def big_study(module_url: str) -> tuple[str, list[bytes]]:
    return _store_study(module_url, 6)


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each ``os.sendfile`` call sent to a socket (the server runs in this process, on its
    own thread; reading files into the cache, ``retrieve.read_ahead`` sends them to ``/dev/null``)."""
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        if stat.S_ISSOCK(os.fstat(out_fd).st_mode):
            calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """The zero-copy messages the server was given."""
    seen: list[dict[str, object]] = []
    real = ZeroCopySender.zerocopy

    async def zerocopy(self: ZeroCopySender, message: dict[str, object], send: object) -> None:
        seen.append(message)
        await real(self, message, send)  # type: ignore[arg-type]

    monkeypatch.setattr(ZeroCopySender, "zerocopy", zerocopy)
    return seen


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[ZeroCopySender]:
    """One entry per time the server found the socket full and waited for it."""
    seen: list[ZeroCopySender] = []
    real = ZeroCopySender._writable

    async def writable(self: ZeroCopySender) -> None:
        seen.append(self)
        await real(self)

    monkeypatch.setattr(ZeroCopySender, "_writable", writable)
    return seen


def _multipart_body(boundary: str, files: list[bytes]) -> bytes:
    """The response PS3.18 §8.7.3.4 asks for: each stored file as a part, in its stored syntax."""
    body = b""
    for data in files:
        syntax = pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID
        body += f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def _open_blobs(archive: Archive, key: str) -> int:
    """How many of this process's file descriptors are open on a blob of the archive."""
    root = archive.blobs.path(key)
    assert root is not None
    blobs = str(root.parent.parent.parent)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(blobs)
    return count


def _no_open_blobs(archive: Archive, key: str) -> bool:
    deadline = time.monotonic() + 5
    while _open_blobs(archive, key) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _open_blobs(archive, key) == 0


def _raw_get(url: str, path: str) -> tuple[socket.socket, int]:
    """Send a GET on a raw socket; return it with the response's Content-Length, headers read."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {ANY}\r\nConnection: close\r\n\r\n"
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return sock, length


def _read_to_end(sock: socket.socket) -> int:
    received = 0
    while chunk := sock.recv(1 << 20):
        received += len(chunk)
    return received


@pytest.mark.parametrize(
    ("batch", "most", "expected"),
    [(retrieve.OPEN_BATCH, retrieve.OPEN_FILES, [6]), (5 << 20, 64, [2, 2, 2]), (1 << 30, 4, [4, 2])],
)
def test_study_is_the_stored_bytes_sent_with_sendfile_one_message_per_batch(
    module_url: str,
    big_study: tuple[str, list[bytes]],
    sendfile_calls: list[int],
    messages: list[dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    most: int,
    expected: list[int],
) -> None:
    """Batches of the files' bytes or of their number, whichever is reached first (2 MiB files)."""
    monkeypatch.setattr(retrieve, "OPEN_BATCH", batch)
    monkeypatch.setattr(retrieve, "OPEN_FILES", most)
    study_uid, files = big_study
    response = httpx.get(f"{module_url}/studies/{study_uid}", headers={"Accept": ANY}, timeout=60)
    assert response.status_code == 200
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0]
    assert response.content == _multipart_body(boundary, files)
    assert int(response.headers["content-length"]) == len(response.content)
    assert sum(sendfile_calls) == sum(len(f) for f in files)
    assert [len(m["parts"]) for m in messages] == expected  # type: ignore[arg-type]


def test_a_slow_client_gets_every_byte(
    module_url: str, big_study: tuple[str, list[bytes]], waits: list[ZeroCopySender]
) -> None:
    study_uid, files = big_study
    sock, length = _raw_get(module_url, f"/dicomweb/studies/{study_uid}")
    with sock:
        received = b""
        while chunk := sock.recv(256 * 1024):
            received += chunk
            time.sleep(0.001)
    assert len(received) == length
    boundary = received[2 : received.index(b"\r\n")].decode()
    assert received == _multipart_body(boundary, files)
    assert waits


def test_head_and_etag_are_unchanged(module_url: str, big_study: tuple[str, list[bytes]]) -> None:
    url = f"{module_url}/studies/{big_study[0]}"
    got = httpx.get(url, headers={"Accept": ANY}, timeout=60)
    head = httpx.head(url, headers={"Accept": ANY})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["etag"] == got.headers["etag"]
    again = httpx.get(url, headers={"Accept": ANY, "If-None-Match": got.headers["etag"]})
    assert again.status_code == 304


def test_a_client_leaving_mid_batch_leaves_the_server_serving(
    module_url: str,
    module_archive: Archive,
    big_study: tuple[str, list[bytes]],
    messages: list[dict[str, object]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    study_uid, files = big_study
    key = hashlib.sha256(files[0]).hexdigest()
    sock, length = _raw_get(module_url, f"/dicomweb/studies/{study_uid}")
    received = 0
    while received < length // 4:
        received += len(sock.recv(1 << 20))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert _no_open_blobs(archive=module_archive, key=key)
    assert len(messages) == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    response = httpx.get(f"{module_url}/studies/{study_uid}", headers={"Accept": ANY}, timeout=60)
    assert _parts(response) == files


@pytest.fixture
def uvicorn_errors() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.parametrize("batch", [1, 8 << 20])
@pytest.mark.parametrize("change", ["removed", "truncated"])
def test_a_blob_changed_under_the_stream_closes_the_connection_after_one_line(
    module_url: str,
    module_archive: Archive,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    uvicorn_errors: list[logging.LogRecord],
    change: str,
    batch: int,
) -> None:
    """Removed before the server opened it, or truncated: every file after the first is cut
    short while the client is not reading, so whichever one the server has open (sendfile finds
    it short, in the middle of a batch of several files when batches are large) or opens next
    (its size is checked) fails, however much the socket buffers took."""
    monkeypatch.setattr(retrieve, "OPEN_BATCH", batch)
    study_uid, files = _store_study(module_url, 12)
    if change == "removed":
        changed = [module_archive.blobs.path(hashlib.sha256(files[-1]).hexdigest())]
    else:
        changed = [module_archive.blobs.path(hashlib.sha256(f).hexdigest()) for f in files[1:]]
    sock, length = _raw_get(module_url, f"/dicomweb/studies/{study_uid}")
    with sock:
        time.sleep(0.2)
        for path in changed:
            assert isinstance(path, Path)
            if change == "removed":
                path.unlink()
            else:
                os.truncate(path, 1000)
        received = _read_to_end(sock)
    assert received < length
    assert _no_open_blobs(module_archive, hashlib.sha256(files[0]).hexdigest())
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("imagebridge")
    ]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage() and warnings[0].exc_info is None
    assert uvicorn_errors == []
    response = httpx.get(f"{module_url}/studies/{_store_study(module_url, 1)[0]}", headers={"Accept": ANY})
    assert response.status_code == 200


def test_a_server_without_the_extension_sends_the_same_bytes(
    module_archive: Archive, big_study: tuple[str, list[bytes]], sendfile_calls: list[int]
) -> None:
    running = BackgroundServer(create_app(module_archive))
    running.server.config.http = "httptools"
    running.start()
    try:
        url = f"{running.url}/dicomweb/studies/{big_study[0]}"
        response = httpx.get(url, headers={"Accept": ANY}, timeout=60)
    finally:
        running.stop()
    assert int(response.headers["content-length"]) == len(response.content)
    assert _parts(response) == big_study[1]
    assert sendfile_calls == []
