"""EHR launch (SMART App Launch 2.2 §2.0.1): the launch context binds patient, encounter and clinician;
a pre-approved app with a signed-in clinician gets its code with no page in between; bad launches are
``invalid_request`` redirects; the /oauth/ehr launcher and the CLI create launches."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from typer.testing import CliRunner

from imagebridge.auth.clients import Client, ClientKind
from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.users import Role, Users
from imagebridge.cli.main import app as cli_app
from imagebridge.config import Settings
from imagebridge.oauth.app import SESSION_COOKIE, open_authorization
from imagebridge.services.archive import Archive, open_archive
from tests.auth.helpers import PASSWORD, REDIRECT, World, bearer, hidden, pkce_pair
from tests.factory import make_instance, part10

LAUNCH_URL = "http://127.0.0.1:9/launch"
SCOPE = "launch openid fhirUser patient/ImagingStudy.rs"


@pytest.fixture(scope="module")
def authz(world: World, world_archive: Archive) -> Iterator[AuthorizationServer]:
    """The world's authorization server, with one pre-approved app and one that asks for consent."""
    server = open_authorization(world_archive)
    server.users.add("drz", PASSWORD, Role.CLINICIAN, display_name="Dr Z")
    server.clients.add(
        Client(
            "ehrapp",
            "Radiology Viewer",
            ClientKind.PUBLIC,
            (REDIRECT,),
            launch_url=LAUNCH_URL,
            pre_approved=True,
        )
    )
    server.clients.add(
        Client("ehrask", "Second Opinion", ClientKind.PUBLIC, (REDIRECT,), launch_url=LAUNCH_URL)
    )
    yield server


@contextmanager
def signed_in(world: World, username: str = "drx") -> Iterator[httpx.Client]:
    """A browser-like client holding the clinician's session cookie from the EHR launcher."""
    with httpx.Client(base_url=f"{world.base}/oauth") as browser:
        response = browser.post("/ehr/sign-in", data={"username": username, "password": PASSWORD})
        assert response.status_code == 303, response.text
        assert SESSION_COOKIE in browser.cookies
        yield browser


def launch_params(
    world: World, launch: str, challenge: str, client_id: str = "ehrapp", **extra: str
) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": SCOPE,
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": world.fhir,
        "launch": launch,
        **extra,
    }


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(world: World, code: str, verifier: str, client_id: str = "ehrapp") -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    response = httpx.post(world.token_url, data=form)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_discovery_advertises_ehr_launch(world: World) -> None:
    config = httpx.get(f"{world.fhir}/.well-known/smart-configuration").json()
    assert {"launch-ehr", "context-ehr-patient", "launch-standalone"} <= set(config["capabilities"])
    assert "launch" in config["scopes_supported"]


def test_pre_approved_app_and_signed_in_clinician_get_a_code_with_no_page(
    world: World, authz: AuthorizationServer
) -> None:
    launch = authz.launches.create("ehrapp", "drx", world.b, "enc-7")
    verifier, challenge = pkce_pair()
    with signed_in(world) as browser:
        response = browser.get("/authorize", params=launch_params(world, launch, challenge))
    query = redirect_query(response)
    assert query["state"] == "st" and query["iss"] == f"{world.base}/oauth" and "error" not in query
    assert "text/html" not in response.headers.get("content-type", "")
    token = exchange(world, query["code"], verifier)
    assert token["patient"] == world.b and token["encounter"] == "enc-7"
    assert token["scope"] == SCOPE
    keys = KeySet.import_key_set(httpx.get(f"{world.base}/oauth/jwks").json())
    claims = jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["fhirUser"] == f"{world.fhir}/Practitioner/drx" and claims["sub"] == "drx"
    studies = httpx.get(
        f"{world.fhir}/ImagingStudy", params={"patient": world.b}, headers=bearer(token["access_token"])
    )
    assert studies.status_code == 200 and studies.json()["total"] == 1
    other = httpx.get(
        f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=bearer(token["access_token"])
    )
    assert other.status_code == 403, "the launch context limits patient/ scopes to the launch's patient"


def test_without_pre_approval_the_consent_page_shows_the_launch_patient(
    world: World, authz: AuthorizationServer
) -> None:
    launch = authz.launches.create("ehrask", "drx", world.a)
    verifier, challenge = pkce_pair()
    with signed_in(world) as browser:
        page = browser.get("/authorize", params=launch_params(world, launch, challenge, client_id="ehrask"))
        assert page.status_code == 200 and 'name="ticket"' in page.text
        assert "Opened from the EHR for <strong>Alpha, Ann</strong>" in page.text
        assert 'name="patient"' not in page.text, "the EHR chose the patient; the page offers no other"
        scopes = SCOPE.split()
        done = browser.post(
            "/consent", data={"ticket": hidden(page.text, "ticket"), "decision": "approve", "scope": scopes}
        )
    token = exchange(world, redirect_query(done)["code"], verifier, client_id="ehrask")
    assert token["patient"] == world.a and "encounter" not in token


def test_without_a_session_the_clinician_signs_in_then_goes_straight_back(
    world: World, authz: AuthorizationServer
) -> None:
    launch = authz.launches.create("ehrapp", "drx", world.a)
    verifier, challenge = pkce_pair()
    params = launch_params(world, launch, challenge)
    with httpx.Client(base_url=f"{world.base}/oauth") as browser:
        page = browser.get("/authorize", params=params)
        assert page.status_code == 200 and '<label for="username">' in page.text
        done = browser.post("/authorize", data={**params, "username": "drx", "password": PASSWORD})
        assert SESSION_COOKIE in browser.cookies
    token = exchange(world, redirect_query(done)["code"], verifier)
    assert token["patient"] == world.a


def test_another_user_cannot_take_over_a_launch(world: World, authz: AuthorizationServer) -> None:
    launch = authz.launches.create("ehrapp", "drx", world.a)
    _verifier, challenge = pkce_pair()
    params = launch_params(world, launch, challenge)
    with signed_in(world, "drz") as browser:
        page = browser.get("/authorize", params=params)
        assert page.status_code == 200 and '<label for="username">' in page.text, "drz's session is not drx's"
        refused = browser.post("/authorize", data={**params, "username": "drz", "password": PASSWORD})
    assert refused.status_code == 403 and "another user" in refused.text and "location" not in refused.headers


@pytest.mark.parametrize("problem", ["unknown", "expired", "used", "other-app", "no-launch-scope"])
def test_bad_launches_redirect_with_invalid_request(
    world: World, authz: AuthorizationServer, problem: str
) -> None:
    verifier, challenge = pkce_pair()
    launch = authz.launches.create("ehrapp", "drx", world.a, lifetime=-1 if problem == "expired" else 300)
    extra: dict[str, str] = {}
    if problem == "unknown":
        launch = "not-a-launch-we-issued"
    elif problem == "other-app":
        extra["client_id"] = "ehrask"
    elif problem == "no-launch-scope":
        extra["scope"] = "openid patient/ImagingStudy.rs"
    with signed_in(world) as browser:
        if problem == "used":
            first = redirect_query(browser.get("/authorize", params=launch_params(world, launch, challenge)))
            assert exchange(world, first["code"], verifier)["patient"] == world.a
        response = browser.get("/authorize", params={**launch_params(world, launch, challenge), **extra})
    query = redirect_query(response)
    assert query["error"] == "invalid_request" and query["state"] == "st" and "code" not in query


def test_launch_scope_without_a_launch_is_refused(world: World) -> None:
    _verifier, challenge = pkce_pair()
    params = launch_params(world, "x", challenge)
    del params["launch"]
    query = redirect_query(httpx.get(f"{world.base}/oauth/authorize", params=params))
    assert query["error"] == "invalid_scope"


def test_ehr_launcher_sends_the_browser_to_the_app_launch_url(
    world: World, authz: AuthorizationServer
) -> None:
    with httpx.Client(base_url=f"{world.base}/oauth") as browser:
        assert '<label for="username">' in browser.get("/ehr").text
        assert browser.post("/ehr/sign-in", data={"username": "drx", "password": PASSWORD}).status_code == 303
        page = browser.get("/ehr")
        assert page.status_code == 200 and "Radiology Viewer" in page.text and "Beta, Bob" in page.text
        response = browser.post(
            "/ehr/launch", data={"client_id": "ehrapp", "patient": world.b, "encounter": "e1"}
        )
        assert response.status_code == 303
        target = urlsplit(response.headers["location"])
        query = {k: v[0] for k, v in parse_qs(target.query).items()}
        assert f"{target.scheme}://{target.netloc}{target.path}" == LAUNCH_URL
        assert query["iss"] == world.fhir
        context = authz.launches.find(query["launch"])
        assert context is not None and (context.username, context.patient, context.encounter) == (
            "drx",
            world.b,
            "e1",
        )
        for bad, why in (
            ({"client_id": "viewer", "patient": world.b}, "launch URL"),
            ({"client_id": "ehrapp", "patient": "nobody"}, "not in the archive"),
            ({"client_id": "ehrapp", "patient": world.b, "encounter": "no spaces"}, "encounter"),
        ):
            refused = browser.post("/ehr/launch", data=bad)
            assert refused.status_code == 400 and why in refused.text and 'role="alert"' in refused.text
        browser.post("/ehr/sign-out")
        assert SESSION_COOKIE not in browser.cookies
        assert (
            browser.post("/ehr/launch", data={"client_id": "ehrapp", "patient": world.b}).status_code == 401
        )


def test_patients_cannot_use_the_ehr_launcher(world: World) -> None:
    response = httpx.post(f"{world.base}/oauth/ehr/sign-in", data={"username": "ann", "password": PASSWORD})
    assert response.status_code == 403 and "clinicians" in response.text
    wrong = httpx.post(f"{world.base}/oauth/ehr/sign-in", data={"username": "drx", "password": "nope nope"})
    assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.cookies


def test_a_forged_session_cookie_is_ignored(world: World, authz: AuthorizationServer) -> None:
    launch = authz.launches.create("ehrapp", "drx", world.a)
    _verifier, challenge = pkce_pair()
    ticket_shaped = authz.key.sign({"username": "drx", "exp": 2**40}, typ="ib-ticket")
    for forged in ("garbage", ticket_shaped):
        with httpx.Client(base_url=f"{world.base}/oauth", cookies={SESSION_COOKIE: forged}) as browser:
            page = browser.get("/authorize", params=launch_params(world, launch, challenge))
        assert page.status_code == 200 and '<label for="username">' in page.text


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _cli(data: Path, *args: str, stdin: str | None = None) -> Ran:
    """The real command line, run in this process (a subprocess per call would take seconds each)."""
    env = {"IMAGEBRIDGE_DATA_DIR": str(data), "COLUMNS": "200", "NO_COLOR": "1"}
    result = CliRunner().invoke(cli_app, list(args), input=stdin, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_cli_registers_approves_and_launches(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(part10(make_instance(PatientID="MRN-A", IssuerOfPatientID="HOSP")))
    data = tmp_path / "data"
    assert _cli(data, "import", str(folder)).returncode == 0
    added = _cli(data, "client", "add", "app", "--redirect-uri", REDIRECT, "--launch-url", LAUNCH_URL)
    assert added.returncode == 0, added.stderr
    assert (
        _cli(data, "user", "add", "doc", "--role", "clinician", "--password", "long enough pw").returncode
        == 0
    )
    assert "yes" not in _cli(data, "client", "list").stdout
    approved = _cli(data, "client", "approve", "app")
    assert approved.returncode == 0 and "pre-approved" in approved.stdout
    assert "yes" in _cli(data, "client", "list").stdout
    made = _cli(
        data,
        "launch",
        "create",
        "--user",
        "doc",
        "--patient",
        "HOSP|MRN-A",
        "--client",
        "app",
        "--base-url",
        "https://pacs.example",
    )
    assert made.returncode == 0, made.stderr
    url = urlsplit(made.stdout.strip())
    query = parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}{url.path}" == LAUNCH_URL
    assert query["iss"] == ["https://pacs.example/fhir"] and len(query["launch"][0]) >= 40
    for args, why in (
        (("--user", "nobody", "--patient", "HOSP|MRN-A", "--client", "app"), "not a clinician"),
        (("--user", "doc", "--patient", "HOSP|MRN-Z", "--client", "app"), "no patient"),
        (("--user", "doc", "--patient", "HOSP|MRN-A", "--client", "nope"), "no client"),
    ):
        refused = _cli(data, "launch", "create", *args)
        assert refused.returncode == 2 and why in refused.stderr and "Traceback" not in refused.stderr
    withdrawn = _cli(data, "client", "approve", "app", "--withdraw")
    assert withdrawn.returncode == 0 and "yes" not in _cli(data, "client", "list").stdout
    assert _cli(data, "client", "approve", "nope").returncode == 2
    bad_url = _cli(data, "client", "add", "b", "--redirect-uri", REDIRECT, "--launch-url", "ftp://x")
    assert bad_url.returncode == 2 and "--launch-url" in bad_url.stderr


def test_cli_user_password_replaces_the_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (
        _cli(data, "user", "add", "doc", "--role", "clinician", "--password", "first password").returncode
        == 0
    )
    changed = _cli(data, "user", "password", "doc", stdin="second password\nsecond password\n")
    assert changed.returncode == 0, changed.stderr
    assert "second password" not in changed.stdout
    archive = open_archive(Settings(data_dir=data))
    try:
        users = Users(archive.engine)
        assert users.authenticate("doc", "second password") is not None
        assert users.authenticate("doc", "first password") is None
    finally:
        archive.close()
    short = _cli(data, "user", "password", "doc", "--password", "short")
    assert short.returncode == 2 and "8 characters" in short.stderr
    missing = _cli(data, "user", "password", "nobody", "--password", "long enough pw")
    assert missing.returncode == 2 and "no user" in missing.stderr
