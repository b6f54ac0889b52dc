"""Real SMART clients in a real browser: ``fhirclient`` and authlib's ``OAuth2Session`` make the requests
an app makes, Playwright drives Debian Chromium through the sign-in and consent pages (or, for a
pre-approved EHR launch, through no page at all), and a small loopback web app receives the redirect."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from fhirclient import client as smart_client
from fhirclient.models.imagingstudy import ImagingStudy
from playwright.sync_api import Page, Response

from imagebridge.auth.clients import Client, ClientKind
from imagebridge.oauth.app import open_authorization
from imagebridge.services.archive import Archive
from tests.auth.helpers import PASSWORD, World, backend_token, bearer
from tests.browser import PHONE, screenshot

SCOPE = "openid fhirUser patient/ImagingStudy.rs patient/Patient.rs"


@dataclass
class LoopbackApp:
    """The web side of a SMART app on 127.0.0.1, port 0: ``/launch`` starts an EHR launch with fhirclient,
    ``/callback`` is the registered redirect_uri and keeps every URL it was called with."""

    fhir: str = ""
    port: int = 0
    callbacks: list[str] = field(default_factory=list)
    launched: list[smart_client.FHIRClient] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redirect_uri(self) -> str:
        return f"{self.base}/callback"

    def smart(
        self, scope: str = SCOPE, launch: str | None = None, iss: str | None = None
    ) -> smart_client.FHIRClient:
        settings = {"app_id": "browserapp", "api_base": iss or self.fhir, "redirect_uri": self.redirect_uri}
        settings |= {"scope": scope, "launch_token": launch}
        return smart_client.FHIRClient(settings=settings)


def _handler(app: LoopbackApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = f"{app.base}{self.path}"
            query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
            if self.path.startswith("/launch"):
                smart = app.smart("openid fhirUser patient/ImagingStudy.rs", query["launch"], query["iss"])
                app.launched.append(smart)
                self.send_response(302)
                self.send_header("Location", smart.authorize_url)
                self.end_headers()
                return
            app.callbacks.append(url)
            body = b"<!doctype html><title>App</title><h1>App received the answer</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            return

    return Handler


@pytest.fixture(scope="module")
def app(world: World, world_archive: Archive) -> Iterator[LoopbackApp]:
    """The loopback app, registered as a public client with a launch URL and the organisation's pre-approval."""
    loopback = LoopbackApp(fhir=world.fhir)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(loopback))
    loopback.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    authz = open_authorization(world_archive)
    authz.clients.add(
        Client(
            "browserapp",
            "Browser Imaging App",
            ClientKind.PUBLIC,
            (loopback.redirect_uri,),
            launch_url=f"{loopback.base}/launch",
            pre_approved=True,
        )
    )
    yield loopback
    httpd.shutdown()
    httpd.server_close()


def sign_in(page: Page, username: str) -> None:
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def wait_for_callback(page: Page, app: LoopbackApp) -> str:
    page.wait_for_url(f"{app.redirect_uri}*")
    return page.url


def test_fhirclient_standalone_launch_untick_a_scope_and_read_studies(
    world: World, app: LoopbackApp, browser_page: Page, request: pytest.FixtureRequest
) -> None:
    smart = app.smart()
    browser_page.goto(smart.authorize_url)
    assert browser_page.get_by_role("heading", name="Sign in").is_visible()
    assert "Browser Imaging App" in browser_page.inner_text("main")
    screenshot(browser_page, request.node.nodeid, "sign-in")
    sign_in(browser_page, "ann")
    assert browser_page.get_by_role("heading", name="Allow access?").is_visible()
    screenshot(browser_page, request.node.nodeid, "consent")
    browser_page.get_by_role("checkbox", name="patient/Patient.rs").uncheck()
    browser_page.get_by_role("button", name="Allow").click()
    smart.handle_callback(wait_for_callback(browser_page, app))
    assert smart.patient_id == world.a
    token = smart.server.auth.access_token
    granted = introspect(world, token)
    assert granted["active"] and "patient/Patient.rs" not in granted["scope"].split()
    assert "patient/ImagingStudy.rs" in granted["scope"].split()
    studies = list(ImagingStudy.where(struct={"patient": world.a}).perform_resources_iter(smart.server))
    assert sorted(s.id for s in studies) == sorted([world.sa1, world.sa2])
    patient = httpx.get(f"{world.fhir}/Patient/{world.a}", headers=bearer(token))
    assert patient.status_code == 403, "the unticked scope was not granted"


def test_proxy_chooses_a_patient_in_the_browser(world: World, app: LoopbackApp, browser_page: Page) -> None:
    smart = app.smart("patient/ImagingStudy.rs")
    browser_page.goto(smart.authorize_url)
    sign_in(browser_page, "parent")
    browser_page.get_by_role("radio", name="Beta, Bob").check()
    browser_page.get_by_role("button", name="Allow").click()
    smart.handle_callback(wait_for_callback(browser_page, app))
    assert smart.patient_id == world.b
    studies = list(ImagingStudy.where(struct={"patient": world.b}).perform_resources_iter(smart.server))
    assert [s.id for s in studies] == [world.sb1]


def test_deny_in_the_browser_sends_access_denied(app: LoopbackApp, browser_page: Page) -> None:
    smart = app.smart()
    browser_page.goto(smart.authorize_url)
    sign_in(browser_page, "ann")
    browser_page.get_by_role("button", name="Deny").click()
    query = parse_qs(urlsplit(wait_for_callback(browser_page, app)).query)
    assert query["error"] == ["access_denied"] and query["state"] == [smart.server.auth.auth_state]
    with pytest.raises(Exception, match="declined"):
        smart.handle_callback(browser_page.url)


def introspect(world: World, token: str) -> dict[str, Any]:
    """RFC 7662 through authlib, the caller authenticated by a backend-services bearer token."""
    caller = backend_token(world)

    def with_bearer(prepared: requests.PreparedRequest) -> requests.PreparedRequest:
        prepared.headers["Authorization"] = f"Bearer {caller}"
        return prepared

    session = OAuth2Session("browserapp")
    response = session.introspect_token(f"{world.base}/oauth/introspect", token=token, auth=with_bearer)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_authlib_code_pkce_refresh_introspect_revoke(
    world: World, app: LoopbackApp, browser_page: Page
) -> None:
    session = OAuth2Session(
        "browserapp",
        redirect_uri=app.redirect_uri,
        scope="launch/patient openid fhirUser offline_access patient/ImagingStudy.rs",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
        revocation_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    url, state = session.create_authorization_url(
        f"{world.base}/oauth/authorize", code_verifier=verifier, aud=world.fhir
    )
    browser_page.goto(url)
    sign_in(browser_page, "ann")
    browser_page.get_by_role("button", name="Allow").click()
    token = session.fetch_token(
        world.token_url, authorization_response=wait_for_callback(browser_page, app), code_verifier=verifier
    )
    assert token["patient"] == world.a and token["refresh_token"] and state
    seen = introspect(world, token["access_token"])
    assert seen["active"] and seen["patient"] == world.a and seen["client_id"] == "browserapp"
    refreshed = session.refresh_token(world.token_url, refresh_token=token["refresh_token"])
    assert refreshed["access_token"] != token["access_token"]
    search = {"patient": world.a}
    read = httpx.get(f"{world.fhir}/ImagingStudy", params=search, headers=bearer(refreshed["access_token"]))
    assert read.status_code == 200 and read.json()["total"] == 2
    revoked = session.revoke_token(
        f"{world.base}/oauth/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
    )
    assert revoked.status_code == 200
    assert introspect(world, refreshed["access_token"]) == {"active": False}


def test_ehr_launch_of_a_pre_approved_app_renders_no_page(
    world: World, app: LoopbackApp, browser_page: Page
) -> None:
    browser_page.goto(f"{world.base}/oauth/ehr")
    sign_in(browser_page, "drx")
    browser_page.get_by_label("App").select_option("browserapp")
    browser_page.get_by_label("Patient").select_option(world.b)
    documents: list[Response] = []
    browser_page.on(
        "response", lambda r: documents.append(r) if r.request.resource_type == "document" else None
    )
    committed: list[str] = []
    browser_page.on(
        "framenavigated", lambda f: committed.append(f.url) if f == browser_page.main_frame else None
    )
    browser_page.get_by_role("button", name="Launch app").click()
    callback = wait_for_callback(browser_page, app)
    hops = [(urlsplit(r.url).path, r.status) for r in documents]
    assert hops == [
        ("/oauth/ehr/launch", 303),
        ("/launch", 302),
        ("/oauth/authorize", 303),
        ("/callback", 200),
    ], hops
    assert committed == [callback], "no page was shown between the launch and the app's redirect_uri"
    smart = app.launched[-1]
    smart.handle_callback(callback)
    assert smart.patient_id == world.b
    studies = list(ImagingStudy.where(struct={"patient": world.b}).perform_resources_iter(smart.server))
    assert [s.id for s in studies] == [world.sb1]
    fhir_user = (
        smart.server.auth.access_token and introspect(world, smart.server.auth.access_token)["fhirUser"]
    )
    assert fhir_user == f"{world.fhir}/Practitioner/drx"


@pytest.mark.parametrize("viewport", [PHONE, {"width": 1280, "height": 800}], ids=["phone", "desktop"])
def test_sign_in_and_consent_fit_the_screen(
    app: LoopbackApp, browser_page: Page, request: pytest.FixtureRequest, viewport: dict[str, int]
) -> None:
    """No sideways scrolling, controls large enough to touch, every input labelled; screenshots kept."""
    browser_page.set_viewport_size(viewport)
    browser_page.goto(app.smart("launch/patient " + SCOPE + " offline_access").authorize_url)
    check_layout(browser_page, viewport)
    screenshot(browser_page, request.node.nodeid, "sign-in")
    sign_in(browser_page, "parent")
    # The click submits the form; measure the consent page once it is there, not the page
    # being replaced (its document can be empty at that moment: seen once in CI).
    browser_page.get_by_role("heading", name="Allow access?").wait_for()
    browser_page.wait_for_load_state()
    check_layout(browser_page, viewport)
    screenshot(browser_page, request.node.nodeid, "consent")


def check_layout(page: Page, viewport: dict[str, int]) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    for control in page.locator("button, input[type=checkbox], input[type=radio], input[type=text]").all():
        box = control.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    for target in page.locator("button, label:has(input)").all():
        box = target.bounding_box()
        assert box is not None and box["height"] >= 44, (
            f"{target.inner_text()!r} is {box} high; touch needs 44px"
        )
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input:not([type=hidden])')].filter(i => !i.labels.length).length"
    )
    assert unlabelled == 0


@pytest.mark.parametrize("viewport", [PHONE, {"width": 1280, "height": 800}], ids=["phone", "desktop"])
def test_ehr_launcher_fits_the_screen(
    world: World,
    app: LoopbackApp,
    browser_page: Page,
    request: pytest.FixtureRequest,
    viewport: dict[str, int],
) -> None:
    browser_page.set_viewport_size(viewport)
    browser_page.goto(f"{world.base}/oauth/ehr")
    check_layout(browser_page, viewport)
    sign_in(browser_page, "drx")
    assert browser_page.get_by_role("heading", name="Launch an app").is_visible()
    check_layout(browser_page, viewport)
    screenshot(browser_page, request.node.nodeid, "launcher")
    browser_page.get_by_label("Encounter (optional)").fill("not valid!")
    browser_page.evaluate("document.querySelector('form').noValidate = true")
    browser_page.get_by_role("button", name="Launch app").click()
    assert "An encounter id is" in browser_page.get_by_role("alert").inner_text()
    check_layout(browser_page, viewport)
