"""Run the ASGI app with uvicorn on a socket we bind ourselves, so port 0 reports its real port."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from imagebridge.web.zerocopy import ZeroCopyHttpToolsProtocol

SWITCH_INTERVAL_S = 0.1
"""How long a thread of a serving process may hold the interpreter before a thread waiting for it
asks for it back (Python's default is 5 ms). The server's threads (the event loop and the
storing threads) give it up at every system call anyway; the forced hand-overs came on top:
with 16 storing threads a worker made about 170 futex calls per instance stored (``strace -c``).
STOW-RS with 4 clients on 2 workers, the two settings side by side in alternating rounds
(/tmp/drv/ab.py, 2026-12-06, medians of 14 and 20 rounds): 0.1 s stored 4% and 3% more
instances per second with 0-4% less CPU per instance; a QIDO-RS search made during the load
took as long (p95 42 against 41 ms). A small gain, within this VM's noise in any single run."""


def serving_process() -> None:
    """Tune the interpreter of a process that will serve requests (``imagebridge serve``; forked
    workers inherit it)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(app: FastAPI, *, log_level: str = "info", access_log: bool = False) -> uvicorn.Server:
    return uvicorn.Server(make_config(app, log_level=log_level, access_log=access_log))


def make_config(app: FastAPI, *, log_level: str = "info", access_log: bool = False) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        timeout_keep_alive=30,
        http=ZeroCopyHttpToolsProtocol,
        loop="uvloop",
        lifespan="off",
    )


class BackgroundServer:
    """A server on its own thread (tests, the CLI's embedded listeners)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.host = host
        self.server = make_server(app, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, until: Callable[[], bool] | None = None) -> BackgroundServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the HTTP server stopped during start-up")
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
