"""AuthorizationServer.principal remembers a resolved token briefly; revocations forget it at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagebridge.auth import server as auth_server
from imagebridge.auth.clients import ALL, AccessGrant, Client, ClientKind
from imagebridge.auth.errors import InvalidToken
from imagebridge.auth.jwks import load_or_create
from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.tokens import Grant
from imagebridge.services.archive import Archive
from tests.conftest import make_archive


@pytest.fixture
def authz(tmp_path: Path) -> Iterator[AuthorizationServer]:
    archive: Archive = make_archive(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite3'}")
    server = AuthorizationServer(archive.engine, load_or_create(archive.settings.data_dir))
    server.clients.add(
        Client("app", "An app", ClientKind.CONFIDENTIAL_ASYMMETRIC, policy=AccessGrant(ALL, ALL))
    )
    yield server
    archive.close()


def _issue(authz: AuthorizationServer, lifetime: int = 3600) -> tuple[str, str]:
    grant = Grant("app", "system/ImagingStudy.rs")
    token, _ = authz.tokens.issue("access", grant, lifetime)
    return token, grant.grant_id


def _count_lookups(authz: AuthorizationServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    find = authz.tokens.find

    def counting(token: str):  # type: ignore[no-untyped-def]
        seen.append(token)
        return find(token)

    monkeypatch.setattr(authz.tokens, "find", counting)
    return seen


def test_a_burst_of_requests_costs_one_lookup(
    authz: AuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = _issue(authz)
    lookups = _count_lookups(authz, monkeypatch)
    first = authz.principal(token)
    assert all(authz.principal(token) == first for _ in range(50))
    assert len(lookups) == 1


def test_revoking_forgets_the_remembered_token_at_once(authz: AuthorizationServer) -> None:
    token, grant_id = _issue(authz)
    authz.principal(token)
    authz.tokens.revoke_grant(grant_id)
    with pytest.raises(InvalidToken):
        authz.principal(token)


def test_removing_the_client_forgets_its_tokens_at_once(authz: AuthorizationServer) -> None:
    token, _ = _issue(authz)
    authz.principal(token)
    authz.clients.remove("app")
    with pytest.raises(InvalidToken):
        authz.principal(token)


def test_remembered_for_at_most_the_cache_time(
    authz: AuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_server, "PRINCIPAL_CACHE_SECONDS", 0.2)
    token, _ = _issue(authz)
    lookups = _count_lookups(authz, monkeypatch)
    authz.principal(token)
    time.sleep(0.3)
    authz.principal(token)
    assert len(lookups) == 2


def test_never_remembered_past_the_token_expiry(authz: AuthorizationServer) -> None:
    token, _ = _issue(authz, lifetime=1)
    authz.principal(token)
    time.sleep(1.2)
    with pytest.raises(InvalidToken):
        authz.principal(token)
