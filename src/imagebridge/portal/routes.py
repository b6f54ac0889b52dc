"""/portal: sign-in, the study list of each role, one study's quick look, and its images.

Images are fetched in-process from ``/dicomweb`` with the session's own bearer token, so the
portal shows exactly what that token may see (and the DICOMweb layer audits it); the portal
also asks ``auth.policy`` itself before it forwards, so it never shows more than the policy allows.
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from imagebridge.auth.policy import Principal
from imagebridge.auth.users import SignInThrottle
from imagebridge.portal import layout, pages, session, studies
from imagebridge.portal.session import Session, SignedIn
from imagebridge.services.archive import Archive

router = APIRouter(prefix="/portal", include_in_schema=False)
SIGNIN_COOKIE = "ib_signin"
_IMAGE_PATH = re.compile(
    r"^studies/(?P<study>[0-9.]{1,64})(/series/[0-9.]{1,64}(/instances/[0-9.]{1,64}(/frames/[0-9]{1,6})?)?)?"
    r"/(thumbnail|rendered)$"
)
MAX_LISTED = 100
"""Studies shown on one list page (newest first); staff narrow it by choosing a patient."""
MAX_PEOPLE = 50
"""Patients listed for choosing one; with more than that, staff search by name or ID instead."""


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _sign_in_page(
    request: Request, error: str | None = None, username: str = "", status: int = 200
) -> Response:
    csrf = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    response = HTMLResponse(pages.sign_in(csrf, error, username), status_code=status, headers=layout.NO_STORE)
    response.set_cookie(SIGNIN_COOKIE, csrf, max_age=3600, path="/portal", httponly=True, samesite="strict")
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    if await session.current(request, "user") is not None:
        return RedirectResponse("/portal", status_code=303)
    return _sign_in_page(request)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await request.form()
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, str(form.get("csrf", ""))):
        return _sign_in_page(request, "The sign-in form had expired. Please try again.", username, 400)
    authz = request.app.state.authorization
    throttle: SignInThrottle = authz.sign_ins
    if throttle.locked(username):
        message = "Too many wrong passwords for this user name. Wait 15 minutes, then try again."
        return _sign_in_page(request, message, username, 429)
    user = await run_in_threadpool(authz.users.authenticate, username, password)
    if user is None:
        throttle.failed(username)
        return _sign_in_page(request, "That user name and password do not match.", username, 401)
    throttle.succeeded(username)
    token = await run_in_threadpool(session.issue_user_token, authz, user)
    response = RedirectResponse("/portal", status_code=303)
    session.start(request, response, "user", token)
    response.delete_cookie(SIGNIN_COOKIE, path="/portal")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, current: SignedIn) -> Response:
    await session.check_csrf(request, current)
    response = RedirectResponse("/portal/sign-in", status_code=303)
    await run_in_threadpool(session.end, request, response, "user")
    return response


def chrome(current: Session, path: str) -> dict[str, Any]:
    """The layout options of a signed-in page (navigation, who, sign-out form)."""
    return {
        "nav": layout.nav_for(current.role, current=path),
        "current": path,
        "who": current.display_name,
        "csrf": current.csrf,
    }


@router.get("")
async def home(
    request: Request,
    current: SignedIn,
    patient: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    archive, principal = _archive(request), current.principal
    listing = await run_in_threadpool(studies.newest, archive, principal, MAX_LISTED, patient=patient or None)
    people, everyone = await run_in_threadpool(studies.people, archive, principal, MAX_PEOPLE)
    searching = everyone > MAX_PEOPLE or bool(q.strip())  # too many patients for one list: find one
    found: list[studies.Person] = []
    matching = 0
    if q.strip():
        found, matching = await run_in_threadpool(studies.people, archive, principal, MAX_PEOPLE, search=q)
    shown = listing.rows
    reports = await run_in_threadpool(lambda: {r.uid: studies.report(archive, r) for r in shown})
    is_patient = current.role in ("patient", "proxy")
    cards = "".join(
        pages.study_card(
            r,
            base="/portal",
            actions=pages.study_actions(
                r, base="/portal", can_share=is_patient, can_download=True, can_send=not is_patient
            ),
            report=reports[r.uid],
            show_patient=everyone > 1,
        )
        for r in shown
    )
    heading = "Your studies" if is_patient else "Studies you may see"
    if everyone == 0:
        hint = "There are no images for you yet. When the imaging department files them, they appear here."
    elif is_patient:
        hint = "Open a study in the viewer, download it, or share it with a doctor using the Share button."
    elif searching and not patient:
        hint = "Find a patient by name or Patient ID, then open one of their studies in the viewer."
    else:
        hint = "Pick a patient to narrow the list, then open a study in the viewer."
    chosen = shown[0].patient if patient and shown else (people[0].patient if everyone == 1 else None)
    more = listing.total - len(shown)
    narrow = (
        ""
        if patient
        else "; find a patient to see theirs"
        if searching
        else "; choose a patient to see theirs"
    )
    body = (
        f"<h1>{heading}</h1>"
        + layout.next_step(hint)
        + (
            _patient_finder(found, matching, q)
            if q.strip()
            else pages.patient_search(q)
            if searching
            else pages.patient_chooser(people, patient)
        )
        + (
            pages.patient_table(people)
            if not searching and not is_patient and not patient and everyone > 1
            else ""
        )
        + pages.download_all(chosen, listing.total)
        + (f'<ul class="studies" aria-label="Studies">{cards}</ul>' if cards else "")
        + (
            f"<p>{pages.plural(more, 'older study is', 'older studies are')} not shown{narrow}.</p>"
            if more > 0
            else ""
        )
    )
    return layout.response(heading, body, **chrome(current, "/portal"))


def _patient_finder(people: list[studies.Person], matching: int, search: str) -> str:
    """The search form, and the patients it found (all of them, or the first :data:`MAX_PEOPLE`)."""
    if not people:
        return pages.patient_search(search) + layout.alert(
            f"No patient you may see matches “{search}”. Check the spelling, or try fewer words.", "status"
        )
    caption = f"Patients matching “{search}”"
    extra = (
        f"<p>{pages.plural(matching - len(people), 'more patient matches', 'more patients match')}; "
        "add to the search to narrow it.</p>"
        if matching > len(people)
        else ""
    )
    return pages.patient_search(search) + pages.patient_table(people, caption) + extra


@router.get("/studies/{study}")
async def quick_look(request: Request, study: str, current: SignedIn) -> Response:
    return await quick_look_page(
        request, study, current.principal, back="/portal", options=chrome(current, "")
    )


async def quick_look_page(
    request: Request, study: str, principal: Principal, *, back: str, options: dict[str, Any]
) -> Response:
    """The quick-look page of ``study`` for a person or a share recipient."""
    row = await run_in_threadpool(studies.find, _archive(request), principal, study)
    if row is None:
        return layout.problem(
            "Study not available",
            "This study is not in the archive, or it is not yours to see.",
            (back, "Back to the list"),
            status=404,
        )
    base = "/portal/images" if back == "/portal" else f"{back}/images"
    frames = await run_in_threadpool(studies.quick_look_frames, _archive(request), row, base)
    body = pages.quick_look(row, frames, back=back)
    return layout.response(row.description or "Study", body, **options)


@router.get("/images/{path:path}")
async def images(request: Request, path: str, current: SignedIn) -> Response:
    return await forward_image(request, path, current)


async def forward_image(request: Request, path: str, current: Session) -> Response:
    """A thumbnail or rendered frame from ``/dicomweb``, fetched with the session's token."""
    match = _IMAGE_PATH.match(path)
    if match is None:
        return Response("only thumbnails and rendered frames are served here", status_code=404)
    if not await run_in_threadpool(studies.may_read, _archive(request), current.principal, match["study"]):
        return Response("this study is not yours to see", status_code=403)
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portal.internal") as client:
        answer = await client.get(
            f"/dicomweb/{path}",
            params=dict(request.query_params),
            headers={"Authorization": f"Bearer {current.token}", "Accept": "image/jpeg"},
        )
    headers = {"Cache-Control": "private, max-age=300"}
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type"),
        headers=headers,
    )
