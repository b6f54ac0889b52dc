"""Dynamic client registration (RFC 7591): register once, then reach imaging with the same token."""

from __future__ import annotations

import httpx
import pytest
from joserfc.jwk import ECKey

from tests.auth.helpers import REDIRECT, World, assertion, authorize, bearer, consent_code, pkce_pair


def register(world: World, metadata: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{world.base}/oauth/register", json=metadata)


def test_public_app_registers_and_launches(world: World) -> None:
    response = register(
        world,
        {
            "client_name": "My Images",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "scope": "launch/patient patient/ImagingStudy.rs",
        },
    )
    assert response.status_code == 201, response.text
    client = response.json()
    assert client["client_id"] and client["token_endpoint_auth_method"] == "none"
    assert client["redirect_uris"] == [REDIRECT] and client["client_id_issued_at"] > 0
    token = authorize(world, "launch/patient patient/ImagingStudy.rs", client_id=client["client_id"])
    search = httpx.get(
        f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=bearer(token["access_token"])
    )
    assert search.status_code == 200 and search.json()["total"] == 2


def test_registered_scope_limits_what_the_app_gets(world: World) -> None:
    client = register(
        world, {"redirect_uris": [REDIRECT], "scope": "launch/patient patient/ImagingStudy.rs"}
    ).json()
    token = authorize(
        world, "launch/patient patient/ImagingStudy.rs patient/Patient.rs", client_id=client["client_id"]
    )
    assert token["scope"] == "launch/patient patient/ImagingStudy.rs"


def test_confidential_app_registers_with_inline_public_keys(world: World) -> None:
    key = ECKey.generate_key("P-384", auto_kid=True)
    jwks = {"keys": [key.as_dict(private=True) | {"kid": key.kid}]}
    response = register(
        world,
        {
            "client_name": "Confidential",
            "token_endpoint_auth_method": "private_key_jwt",
            "redirect_uris": [REDIRECT],
            "jwks": jwks,
        },
    )
    assert response.status_code == 201
    [stored] = response.json()["jwks"]["keys"]
    assert "d" not in stored, "private parts sent by mistake are never kept"


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://app.example/cb#frag"]}, "invalid_redirect_uri"),
        ({}, "invalid_redirect_uri"),
        (
            {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"},
            "invalid_client_metadata",
        ),
        (
            {
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": "https://app.example/jwks",
            },
            "invalid_client_metadata",
        ),
        ({"redirect_uris": [REDIRECT], "scope": "system/ImagingStudy.rs"}, "invalid_client_metadata"),
        ({"redirect_uris": [REDIRECT], "scope": "patient/Nonsense.xyz"}, "invalid_scope"),
    ],
)
def test_bad_metadata_is_refused(world: World, metadata: dict[str, object], error: str) -> None:
    response = register(world, metadata)
    assert response.status_code == 400 and response.json()["error"] == error


def test_body_must_be_json(world: World) -> None:
    response = httpx.post(f"{world.base}/oauth/register", content=b"not json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"


def test_confidential_app_exchanges_its_code_with_an_assertion(world: World) -> None:
    key = ECKey.generate_key("P-384", auto_kid=True)
    metadata = {
        "token_endpoint_auth_method": "private_key_jwt",
        "redirect_uris": [REDIRECT],
        "jwks": {"keys": [key.as_dict(private=False) | {"kid": key.kid}]},
    }
    client_id = register(world, metadata).json()["client_id"]
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "s1",
        "scope": "launch/patient patient/ImagingStudy.rs",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": world.fhir,
    }
    form = {
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    code = consent_code(world, params)
    without = httpx.post(world.token_url, data={**form, "code": code})
    assert without.status_code == 401 and without.json()["error"] == "invalid_client"
    code = consent_code(world, params)
    signed = {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(key, client_id, world.token_url),
    }
    response = httpx.post(world.token_url, data={**form, **signed, "code": code})
    assert response.status_code == 200 and response.json()["patient"] == world.a
