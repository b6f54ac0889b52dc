"""Several HTTP worker processes on one listening socket (``serve --workers N``).

Each worker builds its own Archive from the parent's exact Settings, handed over
as JSON in the environment. Nothing correct depends on two requests reaching
the same process: the index and the blob store are shared, every cache is
per-process and rebuildable.
"""

from __future__ import annotations

import os
import socket

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from imagebridge.config import Settings
from imagebridge.services.archive import open_archive
from imagebridge.web.app import create_app
from imagebridge.web.zerocopy import ZeroCopyHttpToolsProtocol

SETTINGS_ENV = "IB_WORKER_SETTINGS"


def app_from_environment() -> FastAPI:
    """The app factory each worker process calls."""
    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    return create_app(open_archive(settings, upgrade=False))


def run(settings: Settings, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve with ``settings.http_workers`` processes until interrupted."""
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    config = uvicorn.Config(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=settings.http_workers,
        log_level=log_level,
        access_log=False,
        http=ZeroCopyHttpToolsProtocol,
        loop="uvloop",
        lifespan="off",
        timeout_keep_alive=30,
    )
    Multiprocess(config, sockets=[sock]).run()
