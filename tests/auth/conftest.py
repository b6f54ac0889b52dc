"""A real server with the §4 world (SQLite and PostgreSQL), shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.auth.helpers import World, build_world
from tests.conftest import BACKENDS, _temporary_pg_database, make_archive


@pytest.fixture(scope="module", params=BACKENDS)
def world_archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    tmp = tmp_path_factory.mktemp(f"smart-{request.param}")
    if request.param == "sqlite":
        archive = make_archive(tmp, f"sqlite:///{tmp / 'index.sqlite3'}")
        yield archive
        archive.close()
        return
    for url in _temporary_pg_database():
        archive = make_archive(tmp, url)
        yield archive
        archive.close()


@pytest.fixture(scope="module")
def world(world_archive: Archive) -> Iterator[World]:
    app = create_app(world_archive)
    running = BackgroundServer(app).start()
    yield build_world(running.url, app.state.authorization)
    running.stop()
