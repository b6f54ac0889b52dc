"""``/oauth/ehr``: the clinician's side of an EHR launch (SMART App Launch 2.2 §2.0.1).

A clinician or administrator signs in here (the session cookie the authorization server then
recognises), picks an app and a patient, and the browser is sent to the app's launch URL with
``iss`` and a one-time ``launch``. When the organisation pre-approved the app, the app's
authorization request then comes straight back with a code: no sign-in page, no consent page.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from imagebridge.auth.clients import Client
from imagebridge.auth.launches import launch_url
from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.users import User
from imagebridge.fhir.index import FhirIndex
from imagebridge.index.schema import fhir_patient_ids
from imagebridge.oauth import pages
from imagebridge.oauth.app import EHR_ROLES, NO_STORE, SESSION_COOKIE, _fields, _run, endpoints, keep_session

_ENCOUNTER = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
PATIENTS_LISTED = 500


def install(app: FastAPI, authz: AuthorizationServer) -> None:
    @app.get("/ehr", response_class=HTMLResponse)
    async def launcher(request: Request) -> Response:
        user = await _clinician(request, authz)
        if user is None:
            return HTMLResponse(pages.ehr_sign_in(), headers=NO_STORE)
        return HTMLResponse(await _run(_launcher_page, authz, user, None), headers=NO_STORE)

    @app.post("/ehr/sign-in", response_class=HTMLResponse)
    async def sign_in(request: Request) -> Response:
        form = _fields(await request.form())
        user = await _run(authz.users.authenticate, form.get("username", ""), form.get("password", ""))
        if user is None:
            page = pages.ehr_sign_in("That user name and password do not match.")
            return HTMLResponse(page, status_code=401, headers=NO_STORE)
        if user.role not in EHR_ROLES:
            page = pages.ehr_sign_in("Only clinicians and administrators launch apps from the EHR.")
            return HTMLResponse(page, status_code=403, headers=NO_STORE)
        response = RedirectResponse(f"{endpoints(request).issuer}/ehr", status_code=303, headers=NO_STORE)
        keep_session(response, request, authz.sign_session(user))
        return response

    @app.post("/ehr/launch", response_class=HTMLResponse)
    async def launch(request: Request) -> Response:
        user = await _clinician(request, authz)
        if user is None:
            page = pages.ehr_sign_in("Your session has ended; sign in again.")
            return HTMLResponse(page, status_code=401, headers=NO_STORE)
        form = _fields(await request.form())
        client = await _run(_launchable, authz, user, form)
        if isinstance(client, str):
            page = await _run(_launcher_page, authz, user, client)
            return HTMLResponse(page, status_code=400, headers=NO_STORE)
        value = await _run(
            authz.launches.create,
            client.client_id,
            user.username,
            form["patient"],
            form.get("encounter") or None,
        )
        target = launch_url(client.launch_url, endpoints(request).fhir, value)
        return RedirectResponse(target, status_code=303, headers=NO_STORE)

    @app.post("/ehr/sign-out")
    async def sign_out(request: Request) -> Response:
        response = RedirectResponse(f"{endpoints(request).issuer}/ehr", status_code=303, headers=NO_STORE)
        response.delete_cookie(SESSION_COOKIE, path="/oauth")
        return response


async def _clinician(request: Request, authz: AuthorizationServer) -> User | None:
    user = await _run(authz.read_session, request.cookies.get(SESSION_COOKIE))
    return user if user is not None and user.role in EHR_ROLES else None


def _launchable(authz: AuthorizationServer, user: User, form: dict[str, str]) -> Client | str:
    """The app to launch, or why this launch cannot be made, in words for the clinician."""
    client = authz.clients.get(form.get("client_id", ""))
    if client is None or not client.launch_url:
        return "Choose an app that has a launch URL."
    patient = form.get("patient", "")
    if user.patients and patient not in user.patients:
        return "You may not open records of that patient."
    if not FhirIndex(authz.engine).patients([fhir_patient_ids.c.fhir_id == patient]):
        return "That patient is not in the archive."
    encounter = form.get("encounter", "")
    if encounter and not _ENCOUNTER.match(encounter):
        return "An encounter id is letters, digits, '-' and '.', at most 64."
    return client


def _launcher_page(authz: AuthorizationServer, user: User, error: str | None) -> str:
    apps = [(c.client_id, c.name) for c in authz.clients.all() if c.launch_url]
    where = [fhir_patient_ids.c.fhir_id.in_(user.patients)] if user.patients else []
    rows = FhirIndex(authz.engine).patients(where)[:PATIENTS_LISTED]
    patients = [(r.fhir_id, f"{pages.person_name(r.name) or '(no name)'} · {r.patient_id}") for r in rows]
    return pages.ehr_launcher(user.display_name, apps, patients, error)
