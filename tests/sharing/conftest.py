"""A real server over an archive with the sharing world, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagebridge.auth.clients import Client, ClientKind
from imagebridge.auth.server import AuthorizationServer
from imagebridge.services.archive import Archive
from imagebridge.services.sharing import Sharing
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.conftest import make_archive
from tests.sharing.helpers import People, fill


@dataclass
class Served:
    url: str
    archive: Archive
    authz: AuthorizationServer
    sharing: Sharing
    people: People


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[Served]:
    archive = make_archive(tmp_path, database_url, dicomweb_anonymous=False)
    app = create_app(archive)
    authz: AuthorizationServer = app.state.authorization
    authz.clients.add(Client("portal", "Patient portal", ClientKind.PUBLIC, ("http://127.0.0.1:9/cb",)))
    people = fill(archive, authz)
    running = BackgroundServer(app).start()
    yield Served(running.url, archive, authz, app.state.sharing, people)
    running.stop()
    app.state.audit.flush()
    archive.close()
