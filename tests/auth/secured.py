"""The §4 world on a server that enforces DICOMweb access (``dicomweb_anonymous`` off), per backend.

The world is stored while the archive still serves DICOMweb without tokens (``build_world``
stores over DICOMweb), then the setting is turned off: from then on the server behaves as a
default-settings server. Patient B gets a second instance with random pixels, so that a leak
of B's pixel data would be recognisable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from dicomweb_client import DICOMwebClient
from sqlalchemy import update

from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.tokens import digest
from imagebridge.auth.users import Role
from imagebridge.index.lookup import Target
from imagebridge.index.schema import auth_tokens
from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.auth.helpers import PASSWORD, World, authorize, build_world
from tests.conftest import archive_per_backend
from tests.factory import make_instance

B_PIXELS = os.urandom(32 * 32 * 2)


@dataclass(frozen=True)
class Secured:
    world: World
    archive: Archive
    authz: AuthorizationServer
    b_series: tuple[str, ...]
    b_instances: tuple[str, ...]
    a_series: str
    a_instance: str
    a_series_all: tuple[str, ...]

    @property
    def dicomweb(self) -> str:
        return f"{self.world.base}/dicomweb"

    def b_secrets(self) -> list[bytes]:
        """Byte strings of B's data that must never reach a caller without access to B."""
        uids = [self.world.sb1, *self.b_series, *self.b_instances]
        return [u.encode() for u in uids] + [b"MRN-B", b"Beta^Bob", b"BETA", B_PIXELS[:64]]

    def patient_token(self, scope: str, username: str = "ann", patient: str | None = None) -> str:
        return str(authorize(self.world, scope, username=username, patient=patient)["access_token"])

    def expired(self, token: str) -> str:
        with self.archive.engine.begin() as conn:
            conn.execute(
                update(auth_tokens)
                .where(auth_tokens.c.token_hash == digest(token))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        return token

    def revoked(self, token: str) -> str:
        response = httpx.post(f"{self.world.base}/oauth/revoke", data={"token": token, "client_id": "viewer"})
        assert response.status_code == 200
        return token


def secured_world(backend: str, tmp: Path) -> Iterator[Secured]:
    for archive in archive_per_backend(backend, tmp, dicomweb_anonymous=True):
        app = create_app(archive)
        running = BackgroundServer(app).start()
        try:
            world = build_world(running.url, app.state.authorization)
            extra = make_instance(
                study=world.sb1,
                PatientID="MRN-B",
                IssuerOfPatientID="HOSP",
                PatientName="Beta^Bob",
                PatientBirthDate="20100505",
                PatientSex="M",
                StudyDate="20230303",
                SeriesNumber=2,
                Rows=32,
                Columns=32,
            )
            extra.PixelData = B_PIXELS
            DICOMwebClient(f"{running.url}/dicomweb").store_instances([extra])
            app.state.authorization.users.add("root", PASSWORD, Role.ADMIN, display_name="Admin")
            archive.settings.dicomweb_anonymous = False  # from here on: a default-settings server
            b = archive.lookup.instances(Target(world.sb1))
            a = archive.lookup.instances(Target(world.sa1))
            yield Secured(
                world,
                archive,
                app.state.authorization,
                tuple(dict.fromkeys(i.series_uid for i in b)),
                tuple(i.sop_uid for i in b),
                a[0].series_uid,
                a[0].sop_uid,
                tuple(dict.fromkeys(i.series_uid for i in a)),
            )
        finally:
            running.stop()
