"""§4 scenario 2 and the browser flow: standalone patient launch with PKCE S256, consent, proxy choice,
refresh tokens and OpenID Connect, driven by authlib's OAuth2Session and by plain form posts."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.auth.helpers import PASSWORD, REDIRECT, World, authorize, bearer, consent_code, hidden, pkce_pair


def test_scenario_2_standalone_launch_with_v2_scope(world: World) -> None:
    token = authorize(world, "launch/patient patient/ImagingStudy.rs")
    assert token["patient"] == world.a and token["token_type"] == "Bearer"
    assert token["scope"] == "launch/patient patient/ImagingStudy.rs"
    assert 0 < token["expires_in"] <= 3600
    assert "refresh_token" not in token and "id_token" not in token


def test_scenario_2_v1_scope_works_too(world: World) -> None:
    token = authorize(world, "launch/patient patient/ImagingStudy.read")
    response = httpx.get(
        f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=bearer(token["access_token"])
    )
    assert response.status_code == 200 and response.json()["total"] == 2


WADO_ACCEPT = "multipart/related; type=application/dicom; transfer-syntax=*"


def test_authlib_session_code_pkce_refresh_and_revoke(world: World) -> None:
    session = OAuth2Session(
        "viewer",
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        scope="launch/patient openid fhirUser offline_access patient/ImagingStudy.rs",
        token_endpoint_auth_method="none",
        revocation_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    url, _state = session.create_authorization_url(
        f"{world.base}/oauth/authorize", code_verifier=verifier, aud=world.fhir
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["code_challenge_method"] == "S256"
    with httpx.Client() as browser:
        assert browser.get(url).status_code == 200
        page = browser.post(
            f"{world.base}/oauth/authorize", data={**query, "username": "ann", "password": PASSWORD}
        )
        scopes = query["scope"].split()
        done = browser.post(
            f"{world.base}/oauth/consent",
            data={"ticket": hidden(page.text, "ticket"), "decision": "approve", "scope": scopes},
        )
    token = session.fetch_token(
        world.token_url, authorization_response=done.headers["location"], code_verifier=verifier
    )
    assert token["patient"] == world.a and token["refresh_token"]
    claims = _verify_id_token(world, token["id_token"])
    assert claims["aud"] == "viewer" and claims["sub"] == "ann"
    assert claims["fhirUser"] == f"{world.fhir}/Patient/{world.a}"
    assert (
        httpx.get(claims["fhirUser"], headers=bearer(token["access_token"])).status_code == 403
    )  # no Patient scope

    refreshed = session.refresh_token(
        world.token_url, refresh_token=token["refresh_token"], client_id="viewer"
    )
    assert refreshed["access_token"] != token["access_token"] and refreshed["patient"] == world.a
    search = {"patient": world.a}
    assert (
        httpx.get(
            f"{world.fhir}/ImagingStudy", params=search, headers=bearer(refreshed["access_token"])
        ).status_code
        == 200
    )
    # Scenario 26: the Endpoint is a plain DICOMweb base, so the refreshed token retrieves at once.
    wado = httpx.get(
        f"{world.base}/dicomweb/studies/{world.sa1}",
        headers={**bearer(refreshed["access_token"]), "Accept": WADO_ACCEPT},
    )
    assert wado.status_code == 200 and wado.headers["content-type"].startswith("multipart/related")

    session.revoke_token(
        f"{world.base}/oauth/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
    )
    for access in (token["access_token"], refreshed["access_token"]):
        denied = httpx.get(f"{world.fhir}/ImagingStudy", params=search, headers=bearer(access))
        assert denied.status_code == 401
    again = httpx.post(
        world.token_url,
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": "viewer"},
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def _verify_id_token(world: World, id_token: str) -> dict[str, object]:
    keys = KeySet.import_key_set(httpx.get(f"{world.base}/oauth/jwks").json())
    claims = dict(jwt.decode(id_token, keys, algorithms=["RS256"]).claims)
    assert claims["iss"] == f"{world.base}/oauth"
    return claims


def test_user_can_untick_scopes_on_the_consent_page(world: World) -> None:
    token = authorize(
        world, "launch/patient patient/ImagingStudy.rs patient/Patient.rs", untick=("patient/Patient.rs",)
    )
    assert token["scope"] == "launch/patient patient/ImagingStudy.rs"
    response = httpx.get(f"{world.fhir}/Patient/{world.a}", headers=bearer(token["access_token"]))
    assert response.status_code == 403


def test_proxy_chooses_which_patient(world: World) -> None:
    for chosen in (world.a, world.b):
        token = authorize(world, "launch/patient patient/ImagingStudy.rs", username="parent", patient=chosen)
        assert token["patient"] == chosen


def test_consent_page_lists_the_proxys_patients_by_name(world: World) -> None:
    _verifier, challenge = pkce_pair()
    params = _params(world, challenge)
    page = httpx.post(
        f"{world.base}/oauth/authorize", data={**params, "username": "parent", "password": PASSWORD}
    )
    assert (
        'type="radio" name="patient"' in page.text and "Alpha, Ann" in page.text and "Beta, Bob" in page.text
    )
    assert '<meta name="viewport"' in page.text and '<label for="username">' not in page.text


def test_wrong_password_shows_the_sign_in_page_again(world: World) -> None:
    _verifier, challenge = pkce_pair()
    page = httpx.post(
        f"{world.base}/oauth/authorize",
        data={**_params(world, challenge), "username": "ann", "password": "wrong password"},
    )
    assert page.status_code == 401 and 'role="alert"' in page.text and 'name="ticket"' not in page.text


def _params(world: World, challenge: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "viewer",
        "redirect_uri": REDIRECT,
        "state": "s1",
        "scope": "launch/patient patient/ImagingStudy.rs",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": world.fhir,
        **extra,
    }


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "system/ImagingStudy.rs"}, "invalid_scope"),
        ({"aud": "https://elsewhere.example/fhir"}, "invalid_request"),
    ],
)
def test_bad_authorization_requests_redirect_with_an_error(
    world: World, change: dict[str, str], error: str
) -> None:
    _verifier, challenge = pkce_pair()
    response = httpx.get(f"{world.base}/oauth/authorize", params={**_params(world, challenge), **change})
    assert response.status_code == 303
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == [error] and query["state"] == ["s1"]


@pytest.mark.parametrize("change", [{"client_id": "nobody"}, {"redirect_uri": "http://127.0.0.1:9/evil"}])
def test_unknown_client_or_redirect_is_shown_not_redirected(world: World, change: dict[str, str]) -> None:
    _verifier, challenge = pkce_pair()
    response = httpx.get(f"{world.base}/oauth/authorize", params={**_params(world, challenge), **change})
    assert response.status_code == 400 and "location" not in response.headers


def test_code_needs_the_right_verifier_and_works_once(world: World) -> None:
    verifier, challenge = pkce_pair()
    code = consent_code(world, _params(world, challenge))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "viewer"}
    wrong = httpx.post(world.token_url, data={**form, "code_verifier": pkce_pair()[0]})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    code = consent_code(world, _params(world, challenge))
    first = httpx.post(world.token_url, data={**form, "code": code, "code_verifier": verifier})
    assert first.status_code == 200
    replay = httpx.post(world.token_url, data={**form, "code": code, "code_verifier": verifier})
    assert replay.status_code == 400
    revoked = httpx.get(
        f"{world.fhir}/ImagingStudy",
        params={"patient": world.a},
        headers=bearer(first.json()["access_token"]),
    )
    assert revoked.status_code == 401, "a replayed code revokes what it issued (RFC 6749 §4.1.2)"


def test_user_who_denies_sends_access_denied(world: World) -> None:
    _verifier, challenge = pkce_pair()
    params = _params(world, challenge)
    page = httpx.post(
        f"{world.base}/oauth/authorize", data={**params, "username": "ann", "password": PASSWORD}
    )
    done = httpx.post(
        f"{world.base}/oauth/consent", data={"ticket": hidden(page.text, "ticket"), "decision": "deny"}
    )
    assert done.status_code == 303
    assert parse_qs(urlsplit(done.headers["location"]).query)["error"] == ["access_denied"]


def test_consent_refuses_anything_but_our_sign_in_ticket(world: World) -> None:
    token = authorize(world, "launch/patient openid fhirUser patient/ImagingStudy.rs")
    for forged in (token["id_token"], "garbage", ""):
        response = httpx.post(f"{world.base}/oauth/consent", data={"ticket": forged, "decision": "approve"})
        assert response.status_code == 400 and "location" not in response.headers
