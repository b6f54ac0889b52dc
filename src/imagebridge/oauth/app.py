"""/oauth: the authorization server's endpoints (RFC 6749, 7636, 7662, 7009, 7591; SMART App Launch 2.2).

A sub-application with its own error mapping: protocol errors are RFC 6749 §5.2 JSON, errors in
the browser flow are an HTML page or a redirect back to the client (RFC 6749 §4.1.2.1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from imagebridge.auth import jwks, registration, revocation
from imagebridge.auth.authority import bearer_token
from imagebridge.auth.errors import InvalidRequest, OAuthError
from imagebridge.auth.scopes import parse
from imagebridge.auth.server import (
    SESSION_LIFETIME,
    AuthorizationRequest,
    AuthorizationServer,
    Endpoints,
    RedirectableError,
)
from imagebridge.auth.users import Role, User
from imagebridge.fhir.index import FhirIndex
from imagebridge.index.schema import fhir_patient_ids
from imagebridge.oauth import pages
from imagebridge.services.archive import Archive

T = TypeVar("T")
SESSION_COOKIE = "imagebridge_oauth_session"
EHR_ROLES = (Role.CLINICIAN, Role.ADMIN)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
REQUEST_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "aud",
    "nonce",
    "launch",
)


def open_authorization(archive: Archive) -> AuthorizationServer:
    return AuthorizationServer(archive.engine, jwks.load_or_create(archive.settings.data_dir))


def mount(parent: FastAPI, archive: Archive) -> AuthorizationServer:
    """Mount /oauth on ``parent`` and return the authorization server the other surfaces ask."""
    authorization = open_authorization(archive)
    app = FastAPI(title="imagebridge authorization server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.archive = archive
    app.state.authorization = authorization
    _errors(app)
    _browser_routes(app, authorization)
    from imagebridge.oauth import ehr  # the EHR launcher builds on this module's helpers

    ehr.install(app, authorization)
    _protocol_routes(app, authorization)
    parent.mount("/oauth", app)
    parent.state.authorization = authorization
    return authorization


def endpoints(request: Request) -> Endpoints:
    archive: Archive = request.app.state.archive
    base = archive.settings.public_base_url or f"{request.url.scheme}://{request.url.netloc}"
    return Endpoints(base.rstrip("/"))


async def _run(func: Callable[..., T], *args: Any) -> T:
    return await run_in_threadpool(func, *args)


def _fields(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = f'Bearer realm="imagebridge", error="{exc.error}"'
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(OAuthError)
    async def _oauth(_request: Request, exc: OAuthError) -> JSONResponse:
        return oauth_error(exc)

    @app.exception_handler(RedirectableError)
    async def _redirect(_request: Request, exc: RedirectableError) -> Response:
        query = {"error": exc.error.error, "error_description": exc.error.description}
        if exc.state is not None:
            query["state"] = exc.state
        return RedirectResponse(_with_query(exc.redirect_uri, query), status_code=303)


def _with_query(uri: str, query: dict[str, str]) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{urlencode(query)}"


def _browser_routes(app: FastAPI, authz: AuthorizationServer) -> None:
    @app.get("/authorize", response_class=HTMLResponse)
    async def authorize(request: Request) -> Response:
        fields = {k: v for k, v in request.query_params.items() if k in REQUEST_FIELDS}
        try:
            auth_request = await _run(authz.check_authorization, fields, endpoints(request))
        except OAuthError as exc:
            return HTMLResponse(pages.error(exc.description), status_code=400)
        client = await _run(authz.clients.get, auth_request.client_id)
        name = client.name if client else "An app"
        if auth_request.launch is not None:
            user = await _run(authz.read_session, request.cookies.get(SESSION_COOKIE))
            context = await _run(authz.launch_context, auth_request)
            if user is not None and context is not None and user.username == context.username:
                return await _signed_in(request, authz, auth_request, user, name)
        return HTMLResponse(pages.sign_in(name, fields), headers=NO_STORE)

    @app.post("/authorize", response_class=HTMLResponse)
    async def sign_in(request: Request) -> Response:
        form = _fields(await request.form())
        fields = {k: v for k, v in form.items() if k in REQUEST_FIELDS}
        try:
            auth_request = await _run(authz.check_authorization, fields, endpoints(request))
        except OAuthError as exc:
            return HTMLResponse(pages.error(exc.description), status_code=400)
        client = await _run(authz.clients.get, auth_request.client_id)
        name = client.name if client else "An app"
        username = form.get("username", "").strip()
        if authz.sign_ins.locked(username):
            message = "Too many wrong passwords for this user name. Wait 15 minutes, then try again."
            return HTMLResponse(pages.sign_in(name, fields, message), status_code=429, headers=NO_STORE)
        user = await _run(authz.users.authenticate, username, form.get("password", ""))
        if user is None:
            authz.sign_ins.failed(username)
            page = pages.sign_in(name, fields, "That user name and password do not match.")
            return HTMLResponse(page, status_code=401, headers=NO_STORE)
        authz.sign_ins.succeeded(username)
        context = await _run(authz.launch_context, auth_request)
        if context is not None and context.username != user.username:
            page = pages.sign_in(name, fields, "This app was opened by another user; sign in as that user.")
            return HTMLResponse(page, status_code=403, headers=NO_STORE)
        response = await _signed_in(request, authz, auth_request, user, name)
        if user.role in EHR_ROLES:
            keep_session(response, request, authz.sign_session(user))
        return response

    @app.post("/consent")
    async def consent(request: Request) -> Response:
        form = await request.form()
        try:
            auth_request, user = await _run(authz.read_ticket, str(form.get("ticket", "")))
        except OAuthError as exc:
            return HTMLResponse(pages.error(exc.description), status_code=400)
        if form.get("decision") != "approve":
            denied = {"error": "access_denied", "error_description": "the user declined"}
            return RedirectResponse(
                _with_query(auth_request.redirect_uri, _stated(denied, auth_request)), 303
            )
        ticked = {str(s) for s in form.getlist("scope")}
        granted = parse(auth_request.scope).only(ticked)
        patient = str(form["patient"]) if form.get("patient") else None
        try:
            code = await _run(authz.issue_code, auth_request, user, granted, patient)
        except OAuthError as exc:
            return HTMLResponse(pages.error(exc.description), status_code=400)
        query = _stated({"code": code, "iss": endpoints(request).issuer}, auth_request)
        return RedirectResponse(_with_query(auth_request.redirect_uri, query), status_code=303)


async def _signed_in(
    request: Request, authz: AuthorizationServer, auth_request: AuthorizationRequest, user: User, name: str
) -> Response:
    """After sign-in: straight back to the app with a code when the organisation pre-approved it for
    this EHR launch (SMART "no clicks"); otherwise the consent page."""
    if await _run(authz.pre_approved, auth_request, user):
        code = await _run(authz.issue_code, auth_request, user, auth_request.scopes(), None)
        query = _stated({"code": code, "iss": endpoints(request).issuer}, auth_request)
        return RedirectResponse(
            _with_query(auth_request.redirect_uri, query), status_code=303, headers=NO_STORE
        )
    ticket = authz.sign_ticket(auth_request, user)
    context = await _run(authz.launch_context, auth_request)
    if context is not None:
        choices, launched_for = [], await _run(_patient_name, authz, context.patient)
    else:
        choices, launched_for = await _run(_patient_choices, authz, auth_request, user), None
    scopes = parse(auth_request.scope).items()
    page = pages.consent(name, user.display_name, ticket, scopes, choices, launched_for)
    return HTMLResponse(page, headers=NO_STORE)


def keep_session(response: Response, request: Request, value: str) -> None:
    """The authorization server's sign-in session: only ever sent back to /oauth, never readable by script."""
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_LIFETIME,
        path="/oauth",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="lax",
    )


def _patient_name(authz: AuthorizationServer, patient: str) -> str:
    rows = FhirIndex(authz.engine).patients([fhir_patient_ids.c.fhir_id == patient])
    name = pages.person_name(rows[0].name) if rows else ""
    return name or f"Patient {patient}"


def _stated(query: dict[str, str], auth_request: AuthorizationRequest) -> dict[str, str]:
    return {**query, "state": auth_request.state} if auth_request.state is not None else query


def _patient_choices(
    authz: AuthorizationServer, auth_request: AuthorizationRequest, user: User
) -> list[tuple[str, str]]:
    """The patients a proxy may pick between, labelled with their names, when the app asks for a patient.

    Read through FhirIndex, which gives patients filed since the last FHIR read their logical ids:
    the names must not depend on someone having searched FHIR first."""
    scopes = parse(auth_request.scope)
    wants_patient = scopes.has("launch/patient") or "patient" in scopes.levels()
    if not wants_patient or len(user.patients) < 2:
        return []
    rows = FhirIndex(authz.engine).patients([fhir_patient_ids.c.fhir_id.in_(user.patients)])
    names = {r.fhir_id: pages.person_name(r.name) for r in rows}
    return [(pid, names.get(pid) or f"Patient {pid}") for pid in user.patients]


def _protocol_routes(app: FastAPI, authz: AuthorizationServer) -> None:
    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = _fields(await request.form())
        body = await _run(authz.token, form, endpoints(request))
        return JSONResponse(body, headers=NO_STORE)

    @app.post("/introspect")
    async def introspect(request: Request) -> JSONResponse:
        form = _fields(await request.form())
        bearer = _bearer(request)
        body = await _run(authz.introspect, form, bearer, endpoints(request))
        return JSONResponse(body, headers=NO_STORE)

    @app.post("/revoke")
    async def revoke(request: Request) -> Response:
        form = _fields(await request.form())
        where = endpoints(request)
        client = await _run(authz.authenticate_client, form, {where.revoke, where.token})
        if not form.get("token"):
            raise InvalidRequest("the 'token' parameter is required (RFC 7009 §2.1)")
        await _run(revocation.revoke, authz.tokens, form["token"], client)
        return Response(status_code=200, headers=NO_STORE)

    @app.post("/register")
    async def register(request: Request) -> JSONResponse:
        try:
            metadata = json.loads(await request.body())
        except ValueError as exc:
            raise registration.InvalidClientMetadata(
                "the body is not JSON client metadata (RFC 7591 §2)"
            ) from exc
        if not isinstance(metadata, dict):
            raise registration.InvalidClientMetadata("the body is not a JSON object")
        client = registration.client_from_metadata(metadata)
        await _run(authz.clients.add, client)
        return JSONResponse(registration.response(client), status_code=201, headers=NO_STORE)

    @app.get("/jwks")
    async def jwks_document() -> JSONResponse:
        return JSONResponse(authz.key.public_jwks())


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    return None if header is None else bearer_token(header)
