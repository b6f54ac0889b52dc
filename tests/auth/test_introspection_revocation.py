"""§4 scenarios 3-5: introspection (RFC 7662 + SMART fields) and revocation (RFC 7009)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from imagebridge.auth.tokens import digest
from imagebridge.index.schema import auth_tokens
from imagebridge.services.archive import Archive
from tests.auth.helpers import World, authorize, backend_form, backend_token, bearer


def introspect(world: World, token: str, caller: str) -> httpx.Response:
    return httpx.post(f"{world.base}/oauth/introspect", data={"token": token}, headers=bearer(caller))


def test_scenario_3_active_token_with_smart_fields(world: World) -> None:
    token = authorize(world, "launch/patient openid fhirUser patient/ImagingStudy.rs")
    body = introspect(world, token["access_token"], backend_token(world)).json()
    assert body["active"] is True
    assert body["scope"] == token["scope"] and body["client_id"] == "viewer" and body["patient"] == world.a
    assert abs(body["exp"] - (time.time() + token["expires_in"])) < 10
    assert body["iss"] == f"{world.base}/oauth" and body["sub"] == "ann"
    assert body["fhirUser"] == f"{world.fhir}/Patient/{world.a}"


def test_scenario_3_without_openid_no_identity_fields(world: World) -> None:
    token = authorize(world, "launch/patient patient/ImagingStudy.rs")
    body = introspect(world, token["access_token"], backend_token(world)).json()
    assert body["active"] is True and not {"iss", "sub", "fhirUser"} & set(body)


def test_scenario_4_revoked_expired_and_random_tokens_are_exactly_inactive(
    world: World, world_archive: Archive
) -> None:
    caller = backend_token(world)
    revoked = authorize(world, "launch/patient patient/ImagingStudy.rs")["access_token"]
    response = httpx.post(f"{world.base}/oauth/revoke", data={"token": revoked, "client_id": "viewer"})
    assert response.status_code == 200
    expired = authorize(world, "launch/patient patient/ImagingStudy.rs")["access_token"]
    with world_archive.engine.begin() as conn:
        conn.execute(
            update(auth_tokens)
            .where(auth_tokens.c.token_hash == digest(expired))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    for token in (revoked, expired, "random-garbage-token"):
        response = introspect(world, token, caller)
        assert response.status_code == 200 and response.json() == {"active": False}


def test_scenario_5_introspection_needs_an_authorized_caller(world: World) -> None:
    target = authorize(world, "launch/patient patient/ImagingStudy.rs")["access_token"]
    anonymous = httpx.post(f"{world.base}/oauth/introspect", data={"token": target})
    assert anonymous.status_code == 401 and "active" not in anonymous.text
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    patient_app = authorize(world, "launch/patient patient/ImagingStudy.rs")["access_token"]
    forbidden = introspect(world, target, patient_app)
    assert forbidden.status_code == 403 and "active" not in forbidden.text
    garbage = introspect(world, target, "not-a-token")
    assert garbage.status_code == 401 and "active" not in garbage.text


def test_scenario_5_confidential_client_assertion_may_introspect(world: World) -> None:
    target = authorize(world, "launch/patient patient/ImagingStudy.rs")["access_token"]
    form = backend_form(world.ec_key, "backend", f"{world.base}/oauth/introspect", token=target)
    response = httpx.post(f"{world.base}/oauth/introspect", data=form)
    assert response.status_code == 200 and response.json()["active"] is True


def test_revocation_by_another_client_does_nothing(world: World) -> None:
    token = authorize(world, "launch/patient patient/ImagingStudy.rs")["access_token"]
    form = backend_form(world.rs_key, "backend", f"{world.base}/oauth/revoke", token=token)
    assert httpx.post(f"{world.base}/oauth/revoke", data=form).status_code == 200
    assert introspect(world, token, backend_token(world)).json()["active"] is True


def test_revoking_an_unknown_token_is_not_an_error(world: World) -> None:
    response = httpx.post(f"{world.base}/oauth/revoke", data={"token": "never-issued", "client_id": "viewer"})
    assert response.status_code == 200


def test_tokens_are_stored_as_digests_only(world: World, world_archive: Archive) -> None:
    token = authorize(world, "launch/patient offline_access patient/ImagingStudy.rs")
    with world_archive.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(auth_tokens.select()).all() for v in row)
    assert token["access_token"] not in stored and token["refresh_token"] not in stored
    assert digest(token["access_token"]) in stored


def test_a_refresh_token_never_passes_for_an_access_token(world: World) -> None:
    token = authorize(world, "launch/patient offline_access patient/ImagingStudy.rs")
    assert introspect(world, token["refresh_token"], backend_token(world)).json() == {"active": False}
    search = httpx.get(
        f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=bearer(token["refresh_token"])
    )
    assert search.status_code == 401
