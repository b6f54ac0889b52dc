"""Guessing passwords on the authorization server's sign-in page locks the user name, and the lock
is shared with the portal's sign-in (one count per user name, whichever page is used)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagebridge.auth.clients import Client, ClientKind
from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.users import MAX_FAILURES, Role
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.auth.helpers import PASSWORD, REDIRECT, pkce_pair
from tests.conftest import make_archive


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, AuthorizationServer]]:
    archive = make_archive(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite3'}", dicomweb_anonymous=False)
    app = create_app(archive)
    authz: AuthorizationServer = app.state.authorization
    authz.users.add("zoe", PASSWORD, Role.CLINICIAN, display_name="Dr Zoe")
    authz.clients.add(Client("viewer", "Imaging Viewer", ClientKind.PUBLIC, (REDIRECT,)))
    running = BackgroundServer(app).start()
    yield running.url, authz
    running.stop()
    archive.close()


def _sign_in(base: str, password: str) -> httpx.Response:
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": "viewer",
        "redirect_uri": REDIRECT,
        "scope": "launch/patient patient/ImagingStudy.rs",
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": f"{base}/fhir",
    }
    return httpx.post(f"{base}/oauth/authorize", data={**params, "username": "zoe", "password": password})


def test_wrong_passwords_lock_the_user_name_on_every_sign_in_page(
    site: tuple[str, AuthorizationServer],
) -> None:
    base, authz = site
    assert _sign_in(base, PASSWORD).status_code == 200  # the right password works, and resets the count
    for _ in range(MAX_FAILURES):
        wrong = _sign_in(base, "not the password")
        assert wrong.status_code == 401 and "do not match" in wrong.text
    locked = _sign_in(base, PASSWORD)
    assert locked.status_code == 429
    assert "Too many wrong passwords for this user name. Wait 15 minutes" in locked.text
    assert authz.sign_ins.locked("ZOE")  # the portal asks the same throttle
    assert not authz.sign_ins.locked("someone-else")
