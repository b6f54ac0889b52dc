"""Request bodies reach the app as the chunks that arrived (web/zerocopy.py ``_Chunks``), not
copied twice on the event loop as uvicorn's own ``bytearray`` buffer does; and whole."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httptools
import pytest
from fastapi import FastAPI, Request
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from imagebridge.web.server import BackgroundServer
from imagebridge.web.zerocopy import ZeroCopyHttpToolsProtocol, _Chunks

T = TypeVar("T")


def _run(coroutine: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a loop of its own thread (a browser test may have left a loop
    running in this one)."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(coroutine())))  # type: ignore[arg-type]
    thread.start()
    thread.join(10)
    return result[0]


class _Transport:
    """What uvicorn's flow control and ``receive`` ask of a transport."""

    def __init__(self) -> None:
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False


def _protocol() -> tuple[ZeroCopyHttpToolsProtocol, RequestResponseCycle, _Transport]:
    """Our protocol, holding one uvicorn request cycle, without a connection around it."""
    transport = _Transport()
    flow = FlowControl(transport)  # type: ignore[arg-type]
    cycle = RequestResponseCycle(
        scope={},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=flow,
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    protocol = object.__new__(ZeroCopyHttpToolsProtocol)
    protocol.cycle, protocol.flow = cycle, flow
    protocol.parser = httptools.HttpRequestParser(protocol)
    return protocol, cycle, transport


def test_a_chunk_is_handed_on_as_it_arrived() -> None:
    protocol, cycle, _ = _protocol()
    chunk = os.urandom(300_000)
    protocol.on_body(chunk)
    message: dict[str, Any] = _run(cycle.receive)  # type: ignore[arg-type]
    assert message["body"] is chunk and message["more_body"] is True


def test_chunks_gathered_meanwhile_are_joined_once_in_order() -> None:
    protocol, cycle, _ = _protocol()
    first, second, third = os.urandom(70_000), os.urandom(1), os.urandom(90_000)
    for chunk in (first, second, third):
        protocol.on_body(chunk)
    message: dict[str, Any] = _run(cycle.receive)  # type: ignore[arg-type]
    assert message["body"] == first + second + third
    protocol.on_body(b"tail")
    protocol.on_message_complete()
    message = _run(cycle.receive)  # type: ignore[arg-type]
    assert message == {"type": "http.request", "body": b"tail", "more_body": False}


def test_reading_pauses_above_uvicorns_high_water_mark() -> None:
    protocol, cycle, transport = _protocol()
    for _ in range(5):
        protocol.on_body(os.urandom(20_000))
    assert transport.paused and len(cycle.body) == 100_000
    _run(cycle.receive)
    assert not transport.paused


def test_the_stand_in_buffer() -> None:
    body = _Chunks()
    assert len(body) == 0 and bytes(body) == b""
    body += b""
    body += bytearray(b"ab")
    body += b"c"
    assert len(body) == 3 and bytes(body) == b"abc" and type(bytes(body)) is bytes


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[BackgroundServer, list[int]]]:
    messages: list[int] = []
    app = FastAPI()

    @app.post("/digest")
    async def digest(request: Request) -> dict[str, object]:
        digest, size, count = hashlib.sha256(), 0, 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
            count += 1 if chunk else 0
        messages.append(count)
        return {"sha256": digest.hexdigest(), "size": size}

    background = BackgroundServer(app).start()
    yield background, messages
    background.stop()


def test_a_body_sent_in_pieces_arrives_whole(server: tuple[BackgroundServer, list[int]]) -> None:
    """A real server on 127.0.0.1: 6 MB sent in uneven pieces with pauses, over one keep-alive
    connection twice (the second request's body must not mix with the first's)."""
    background, messages = server
    body = os.urandom(6_000_003)
    with socket.create_connection((background.host, background.port)) as sock:
        for _ in range(2):
            head = f"POST /digest HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            sock.sendall(head)
            for start in range(0, len(body), 700_001):
                sock.sendall(body[start : start + 700_001])
                time.sleep(0.005)
            reply = b""
            while b"}" not in reply:
                reply += sock.recv(65536)
            assert b"200 OK" in reply
            assert hashlib.sha256(body).hexdigest().encode() in reply
            assert f'"size":{len(body)}'.encode() in reply
    assert len(messages) == 2 and all(count > 1 for count in messages)
