"""§4 scenarios 6, 28 and 29: SMART Backend Services with private_key_jwt (RS384 and ES384)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.auth.helpers import World, assertion, backend_token, bearer


def request_token(
    world: World, client_assertion: str, scope: str = "system/ImagingStudy.rs"
) -> httpx.Response:
    return httpx.post(
        world.token_url,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion,
        },
    )


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_scenario_6_valid_assertion_gives_a_short_token(world: World, alg: str) -> None:
    key = world.rs_key if alg == "RS384" else world.ec_key
    response = request_token(world, assertion(key, "backend", world.token_url, alg=alg))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/ImagingStudy.rs" and "refresh_token" not in body and "patient" not in body


def test_scenario_6_replayed_jti_is_refused(world: World) -> None:
    signed = assertion(world.rs_key, "backend", world.token_url, jti=uuid.uuid4().hex)
    assert request_token(world, signed).status_code == 200
    replay = request_token(world, signed)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"


def _forged(world: World) -> str:
    other = RSAKey.generate_key(2048, parameters={"kid": world.rs_key.kid})
    return assertion(other, "backend", world.token_url)


def _unknown_kid(world: World) -> str:
    stranger = ECKey.generate_key("P-384", parameters={"kid": "unknown-kid"})
    return assertion(stranger, "backend", world.token_url)


def _hs256(world: World) -> str:
    now = int(time.time())
    claims = {
        "iss": "backend",
        "sub": "backend",
        "aud": world.token_url,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    from joserfc.jwk import OctKey

    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key("s" * 32), algorithms=["HS256"])


@pytest.mark.parametrize(
    "make",
    [
        lambda w: assertion(w.rs_key, "backend", "https://elsewhere.example/token"),
        lambda w: assertion(w.rs_key, "backend", w.token_url, exp_in=3600),
        lambda w: assertion(w.rs_key, "backend", w.token_url, exp_in=-120),
        _unknown_kid,
        _forged,
        _hs256,
        lambda w: assertion(w.rs_key, "nobody", w.token_url),
        lambda w: "not.a.jwt",
    ],
    ids=[
        "wrong-aud",
        "exp-too-far",
        "expired",
        "unknown-kid",
        "bad-signature",
        "symmetric-alg",
        "unknown-client",
        "garbage",
    ],
)
def test_scenario_6_bad_assertions_are_invalid_client(world: World, make: object) -> None:
    response = request_token(world, make(world))  # type: ignore[operator]
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert "access_token" not in response.text


def test_backend_cannot_ask_for_scopes_it_was_not_granted(world: World) -> None:
    response = request_token(
        world, assertion(world.rs_key, "backend", world.token_url), scope="system/*.cruds"
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"
    mixed = request_token(
        world,
        assertion(world.rs_key, "backend", world.token_url),
        scope="system/ImagingStudy.rs patient/ImagingStudy.rs",
    )
    assert mixed.status_code == 400


def test_public_client_cannot_use_client_credentials(world: World) -> None:
    response = httpx.post(
        world.token_url,
        data={"grant_type": "client_credentials", "client_id": "viewer", "scope": "system/ImagingStudy.rs"},
    )
    assert response.status_code == 401


def test_scenario_28_client_policy_narrows_system_access(world: World) -> None:
    token = backend_token(world)
    found = httpx.get(f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=bearer(token))
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [world.sa1]
    assert found.json()["total"] == 1
    read_sa1 = httpx.get(f"{world.fhir}/ImagingStudy/{world.sa1}", headers=bearer(token))
    assert read_sa1.status_code == 200
    read_sa2 = httpx.get(f"{world.fhir}/ImagingStudy/{world.sa2}", headers=bearer(token))
    assert read_sa2.status_code == 403 and world.sa2 not in read_sa2.text
    other = httpx.get(f"{world.fhir}/ImagingStudy", params={"patient": world.b}, headers=bearer(token))
    assert other.status_code == 403


def test_scenario_28_unrestricted_client_sees_both_patients(world: World) -> None:
    token = backend_token(world, client_id="everything")
    for patient, total in ((world.a, 2), (world.b, 1)):
        response = httpx.get(f"{world.fhir}/ImagingStudy", params={"patient": patient}, headers=bearer(token))
        assert response.status_code == 200 and response.json()["total"] == total


def test_scenario_29_the_client_assertion_is_not_a_bearer_token(world: World) -> None:
    signed = assertion(world.rs_key, "backend", world.token_url)
    response = httpx.get(f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=bearer(signed))
    assert response.status_code == 401
