"""§4 scenario 1: discovery, as an app and as fhirclient see it."""

from __future__ import annotations

import httpx
from fhirclient import client as fhir_client

from tests.auth.helpers import REDIRECT, World

IMAGING = [
    "smart-imaging-access",
    "http://fhir.org/argonaut/smart-imaging/capabilities/app-launch",
    "http://fhir.org/argonaut/smart-imaging/capabilities/backend-services",
]


def test_scenario_1_smart_configuration(world: World) -> None:
    config = httpx.get(f"{world.fhir}/.well-known/smart-configuration").json()
    oauth = f"{world.base}/oauth"
    assert config["authorization_endpoint"] == f"{oauth}/authorize"
    assert config["token_endpoint"] == f"{oauth}/token"
    assert config["introspection_endpoint"] == f"{oauth}/introspect"
    assert config["revocation_endpoint"] == f"{oauth}/revoke"
    assert config["registration_endpoint"] == f"{oauth}/register"
    assert config["jwks_uri"] == f"{oauth}/jwks"
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(
        config["grant_types_supported"]
    )
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert {"patient/ImagingStudy.rs", "system/ImagingStudy.rs", "launch/patient"} <= set(
        config["scopes_supported"]
    )
    for capability in [
        "launch-standalone",
        "client-public",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "permission-v2",
        "permission-patient",
        "permission-user",
        "sso-openid-connect",
        *IMAGING,
    ]:
        assert capability in config["capabilities"]
    [associated] = config["associated_endpoints"]
    assert associated["url"] == world.fhir and set(IMAGING) <= set(associated["capabilities"])


def test_jwks_publishes_only_the_public_key(world: World) -> None:
    [key] = httpx.get(f"{world.base}/oauth/jwks").json()["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["kid"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_capability_statement_carries_the_oauth_uris(world: World) -> None:
    response = httpx.get(f"{world.fhir}/metadata")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "application/fhir+json"
    )
    statement = response.json()
    assert statement["fhirVersion"] == "4.0.1"
    [uris] = statement["rest"][0]["security"]["extension"]
    found = {e["url"]: e["valueUri"] for e in uris["extension"]}
    assert (
        found["authorize"] == f"{world.base}/oauth/authorize"
        and found["token"] == f"{world.base}/oauth/token"
    )


def test_fhirclient_discovers_the_authorization_server(world: World) -> None:
    smart = fhir_client.FHIRClient(
        settings={
            "app_id": "viewer",
            "api_base": f"{world.fhir}/",
            "redirect_uri": REDIRECT,
            "scope": "launch/patient patient/ImagingStudy.rs",
        }
    )
    smart.prepare()
    url = smart.authorize_url
    assert url.startswith(f"{world.base}/oauth/authorize?")
    page = httpx.get(url)
    assert page.status_code == 200 and "Sign in" in page.text
