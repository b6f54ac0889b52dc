"""A real server with the §4 world (SQLite and PostgreSQL), shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.auth.helpers import World, build_world
from tests.conftest import BACKENDS, archive_per_backend


@pytest.fixture(scope="module", params=BACKENDS)
def world_archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    yield from archive_per_backend(request.param, tmp_path_factory.mktemp(f"smart-{request.param}"))


@pytest.fixture(scope="module")
def world(world_archive: Archive) -> Iterator[World]:
    app = create_app(world_archive)
    running = BackgroundServer(app).start()
    yield build_world(running.url, app.state.authorization)
    running.stop()
