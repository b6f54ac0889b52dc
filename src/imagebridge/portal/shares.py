"""Sharing in the browser: the patient's Share form and list (``/portal/shares``), and the recipient's
pages (``/s/{id}``: access code and date of birth, then the shared studies), over ``services.sharing``.

The recipient needs no account: a correct code and date of birth give a share session (the same
signed cookie as a signed-in person's, holding the share's own token), which ends the moment the
patient revokes the share.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from imagebridge.errors import InvalidInput, NotFound
from imagebridge.portal import layout, pages, routes, session, studies
from imagebridge.portal.layout import esc
from imagebridge.portal.session import Session, SignedIn
from imagebridge.services.sharing import (
    RedemptionRefused,
    Share,
    ShareLocked,
    ShareState,
    ShareUnavailable,
    Sharing,
    TooManyAttempts,
)

router = APIRouter(include_in_schema=False)
EXPIRY_CHOICES = {"1": "1 day", "7": "1 week", "30": "30 days", "90": "3 months", "365": "1 year"}
CODE_COOKIE = "ib_share_form"
_STATE_TEXT = {
    ShareState.ACTIVE: "Active",
    ShareState.LOCKED: "Locked after wrong codes",
    ShareState.REVOKED: "Revoked",
    ShareState.EXPIRED: "Expired",
}


def _sharing(request: Request) -> Sharing:
    sharing: Sharing = request.app.state.sharing
    return sharing


def _own_patients(current: Session) -> tuple[str, ...]:
    return current.user.patients if current.user and current.role in ("patient", "proxy") else ()


def _not_a_patient() -> Response:
    return layout.problem(
        "Sharing is for patients",
        "Only a patient (or a parent or carer acting for one) shares her images here.",
        ("/portal", "Back to the studies"),
        status=403,
    )


# --- the patient's side --------------------------------------------------------------------------


@router.get("/portal/shares")
async def list_shares(request: Request, current: SignedIn) -> Response:
    own = _own_patients(current)
    if not own:
        return _not_a_patient()
    sharing = _sharing(request)
    found = await run_in_threadpool(lambda: [s for p in own for s in sharing.list(p, include_revoked=True)])
    rows = [_share_row(share, current.csrf) for share in found]
    body = (
        "<h1>Your shares</h1>"
        + layout.next_step(
            "To let a doctor see your images, press New share. Revoke a share when it is no longer needed: "
            "the link stops working at once."
        )
        + '<p><a class="button" href="/portal/shares/new">New share</a></p>'
        + (
            layout.table(["Shared with", "Studies", "State", "Until", "Download", ""], rows, caption="Shares")
            if rows
            else "<p>You have not shared any images yet.</p>"
        )
    )
    return layout.response("Your shares", body, **routes.chrome(current, "/portal/shares"))


def _share_row(share: Share, csrf: str) -> list[str]:
    state = share.state()
    actions = ""
    if state in (ShareState.ACTIVE, ShareState.LOCKED):
        actions = layout.form(
            f"/portal/shares/{share.share_id}/revoke",
            csrf,
            layout.button("Revoke", "danger"),
            label=f"Revoke the share with {share.recipient or 'someone'}",
        )
    if state is ShareState.LOCKED:
        actions += layout.form(
            f"/portal/shares/{share.share_id}/unlock",
            csrf,
            layout.button("Unlock", "secondary"),
            label="Unlock this share",
        )
    return [
        esc(share.recipient or "(no name given)"),
        str(len(share.studies)),
        f'<span data-state="{state.value}">{esc(_STATE_TEXT[state])}</span>',
        esc(share.expires_at.strftime("%Y-%m-%d %H:%M UTC")),
        "Yes" if share.allow_download else "No",
        actions,
    ]


@router.get("/portal/shares/new")
async def new_share(
    request: Request, current: SignedIn, study: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    if not _own_patients(current):
        return _not_a_patient()
    rows = await run_in_threadpool(studies.visible, request.app.state.archive, current.principal)
    return _share_form(current, rows, chosen={study} if study else set())


def _share_form(
    current: Session, rows: list[studies.StudyRow], *, chosen: set[str], error: str = ""
) -> Response:
    boxes = "".join(
        layout.checkbox(
            "study",
            f"{pages.date(r.date)} · {', '.join(r.modalities)} · {r.description or 'Imaging study'}",
            r.uid,
            checked=r.uid in chosen,
        )
        for r in rows
    )
    expiry = "".join(
        f'<option value="{k}"{" selected" if k == "30" else ""}>{esc(v)}</option>'
        for k, v in EXPIRY_CHOICES.items()
    )
    inner = (
        f"<fieldset><legend>Which studies?</legend>{layout.checkbox('all', 'All my studies', 'yes')}"
        f"{boxes}</fieldset>"
        + layout.field(
            "recipient",
            "Who is it for? (optional)",
            hint="A name or email, so you recognise the share later.",
        )
        + f'<label for="f-expires">How long may they look?</label><select id="f-expires" name="expires">{expiry}</select>'
        + layout.checkbox("download", "Allow them to download a copy", "yes", checked=True)
        + layout.button("Create the share")
    )
    body = (
        "<h1>Share images with a doctor</h1>"
        + (layout.alert(error) if error else "")
        + layout.next_step(
            "Tick the studies, then press Create the share. You will get a link and a code to give the doctor."
        )
        + f'<div class="card">{layout.form("/portal/shares", current.csrf, inner, label="New share")}</div>'
    )
    return layout.response("New share", body, status=400 if error else 200, **routes.chrome(current, ""))


@router.post("/portal/shares")
async def create_share(request: Request, current: SignedIn) -> Response:
    form = await session.checked_form(request, current)
    own = _own_patients(current)
    if not own:
        return _not_a_patient()
    archive = request.app.state.archive
    rows = await run_in_threadpool(studies.visible, archive, current.principal)
    wanted = [str(v) for v in form.getlist("study")]
    everything = form.get("all") == "yes"
    if not everything and not wanted:
        return _share_form(current, rows, chosen=set(), error="Tick at least one study, or All my studies.")
    by_uid = {r.uid: r for r in rows}
    if any(uid not in by_uid for uid in wanted):
        return _share_form(
            current, rows, chosen=set(wanted), error="One of those studies is not yours to share."
        )
    patient = by_uid[wanted[0]].patient.fhir_id if wanted else own[0]
    days = str(form.get("expires", "30"))
    if days not in EXPIRY_CHOICES:
        return _share_form(current, rows, chosen=set(wanted), error="Choose how long the share lasts.")
    try:
        created = await run_in_threadpool(
            lambda: _sharing(request).create(
                patient=patient,
                studies=None if everything else wanted,
                created_by=current.user.username if current.user else "",
                recipient=str(form.get("recipient", "")),
                expires=datetime.now(UTC) + timedelta(days=int(days)),
                allow_download=form.get("download") == "yes",
            )
        )
    except (InvalidInput, NotFound) as exc:
        return _share_form(current, rows, chosen=set(wanted), error=str(exc))
    link = _absolute(request, created.link)
    body = (
        "<h1>Your share is ready</h1>"
        + layout.alert("Write down or copy the code now: it is shown only this once.", "ok")
        + '<div class="card">'
        f'<h2>Link</h2><p class="secret" id="share-link">{esc(link)}</p>'
        + layout.copy_button("share-link", "Copy the link")
        + f'<h2>Access code</h2><p class="secret" id="share-code">{esc(created.code)}</p>'
        + layout.copy_button("share-code", "Copy the code")
        + f"<p>Valid until {esc(created.share.expires_at.strftime('%Y-%m-%d %H:%M UTC'))}; "
        f"{'download allowed' if created.share.allow_download else 'viewing only'}; "
        f"{len(created.share.studies)} {'study' if len(created.share.studies) == 1 else 'studies'}.</p>"
        "</div>"
        + layout.next_step(
            "Give the doctor the link and the code (for example the link by email and the code by phone). "
            "They will also be asked for your date of birth."
        )
        + '<p><a class="button secondary" href="/portal/shares">See all your shares</a></p>'
    )
    return layout.response("Share created", body, script=layout.COPY_SCRIPT, **routes.chrome(current, ""))


def _absolute(request: Request, path: str) -> str:
    base = request.app.state.archive.settings.public_base_url or str(request.base_url)
    return base.rstrip("/") + path


async def _owned(request: Request, current: Session, share_id: str) -> Share | None:
    try:
        share = await run_in_threadpool(_sharing(request).get, share_id)
    except NotFound:
        return None
    return share if share.patient in _own_patients(current) else None


@router.post("/portal/shares/{share_id}/revoke")
async def revoke_share(request: Request, share_id: str, current: SignedIn) -> Response:
    return await _on_own_share(request, current, share_id, Sharing.revoke)


@router.post("/portal/shares/{share_id}/unlock")
async def unlock_share(request: Request, share_id: str, current: SignedIn) -> Response:
    return await _on_own_share(request, current, share_id, Sharing.unlock)


async def _on_own_share(
    request: Request, current: Session, share_id: str, act: Callable[[Sharing, str, str], object]
) -> Response:
    """Revoke or unlock one of the signed-in patient's shares, then back to the list."""
    await session.check_csrf(request, current)
    share = await _owned(request, current, share_id)
    if share is None:
        return layout.problem(
            "Share not found",
            "That share is not one of yours.",
            ("/portal/shares", "Your shares"),
            status=404,
        )
    by = current.user.username if current.user else ""
    await run_in_threadpool(act, _sharing(request), share_id, by)
    return RedirectResponse("/portal/shares", status_code=303)


# --- the recipient's side ------------------------------------------------------------------------


def _ended(state: ShareState) -> Response:
    why = "was revoked by the patient" if state is ShareState.REVOKED else "has expired"
    return layout.problem(
        "Access has ended",
        f"This share {why}, so the images can no longer be opened with it. "
        "If you still need them, ask the patient for a new share.",
        ("/portal/sign-in", "Go to the start page"),
        status=410,
    )


def _code_page(
    request: Request, share_id: str, error: str = "", status: int = 200, *, form: bool = True
) -> Response:
    csrf = request.cookies.get(CODE_COOKIE) or secrets.token_urlsafe(24)
    inner = (
        layout.field(
            "code",
            "Access code",
            required=True,
            autocomplete="off",
            autocapitalize="characters",
            hint="Ten letters and digits, like ABCDE-12345. Dashes and spaces do not matter.",
        )
        + layout.field("birth_date", "The patient's date of birth", "date", required=True)
        + layout.button("Open the images")
    )
    body = (
        "<h1>Images shared with you</h1>"
        + (layout.alert(error) if error else "")
        + layout.next_step(
            "Type the access code the patient gave you and the patient's date of birth."
            if form
            else "Contact the patient: they can unlock the share, or give you a new code, on their Shares page."
        )
        + (
            f'<div class="card">{layout.form(f"/s/{share_id}", csrf, inner, label="Open shared images")}</div>'
            if form
            else ""
        )
    )
    response = layout.response("Shared images", body, status=status)
    response.set_cookie(CODE_COOKIE, csrf, max_age=3600, path="/s", httponly=True, samesite="strict")
    return response


async def _share_session(request: Request, share_id: str) -> Session | None:
    current = await session.current(request, "share")
    return current if current is not None and current.share == share_id else None


async def _share_or_none(request: Request, share_id: str) -> Share | None:
    try:
        return await run_in_threadpool(_sharing(request).get, share_id[:64])
    except NotFound:
        return None


@router.get("/s/{share_id}")
async def recipient_start(request: Request, share_id: str) -> Response:
    if await _share_session(request, share_id) is not None:
        return RedirectResponse(f"/s/{share_id}/studies", status_code=303)
    share = await _share_or_none(request, share_id)
    if share is None:
        return layout.problem(
            "Link not recognised",
            "This link does not lead to any shared images. Check that it was copied whole.",
            ("/portal/sign-in", "Go to the start page"),
            status=404,
        )
    state = share.state()
    if state in (ShareState.REVOKED, ShareState.EXPIRED):
        return _ended(state)
    if state is ShareState.LOCKED:
        return _code_page(request, share_id, _LOCKED, 423, form=False)
    return _code_page(request, share_id)


_LOCKED = (
    "This share is locked because the code or date of birth was entered wrongly too many times. "
    "Ask the patient to unlock it (or to give you a new code)."
)


@router.post("/s/{share_id}")
async def recipient_redeem(request: Request, share_id: str) -> Response:
    form = await request.form()
    expected = request.cookies.get(CODE_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, str(form.get("csrf", ""))):
        return _code_page(request, share_id, "The form had expired. Please type the code again.", 400)
    remote = request.client.host if request.client else None
    try:
        opened = await run_in_threadpool(
            _sharing(request).redeem,
            share_id,
            str(form.get("code", "")),
            str(form.get("birth_date", "")),
            remote,
        )
    except RedemptionRefused as exc:
        left = (
            f"{exc.attempts_left} attempt{'s' if exc.attempts_left != 1 else ''} left before the share locks."
        )
        return _code_page(request, share_id, f"The code or the date of birth is not right. {left}", 401)
    except ShareLocked:
        return _code_page(request, share_id, _LOCKED, 423, form=False)
    except TooManyAttempts as exc:
        return _code_page(
            request, share_id, f"Too many tries. Wait {exc.retry_after} seconds, then try again.", 429
        )
    except ShareUnavailable as exc:
        return _ended(exc.state)
    except NotFound:
        return layout.problem(
            "Link not recognised", "This link does not lead to any shared images.", status=404
        )
    except InvalidInput as exc:
        return _code_page(request, share_id, str(exc), 400)
    response = RedirectResponse(f"/s/{share_id}/studies", status_code=303)
    session.start(request, response, "share", opened.access_token, share=share_id)
    response.delete_cookie(CODE_COOKIE, path="/s")
    return response


async def _recipient(request: Request, share_id: str) -> Session | Response:
    """The share session for ``share_id``, or the page to show instead (ended, or the code form)."""
    current = await _share_session(request, share_id)
    if current is not None:
        return current
    share = await _share_or_none(request, share_id)
    if share is not None and share.state() in (ShareState.REVOKED, ShareState.EXPIRED):
        return _ended(share.state())
    return RedirectResponse(f"/s/{share_id}", status_code=303)


@router.get("/s/{share_id}/studies")
async def recipient_studies(request: Request, share_id: str) -> Response:
    current = await _recipient(request, share_id)
    if isinstance(current, Response):
        return current
    archive = request.app.state.archive
    rows = await run_in_threadpool(studies.visible, archive, current.principal)
    reports = await run_in_threadpool(lambda: {r.uid: studies.report(archive, r) for r in rows})
    base = f"/s/{share_id}"
    cards = "".join(
        pages.study_card(
            r,
            base=base,
            actions=pages.study_actions(
                r,
                base=base,
                can_share=False,
                can_download=current.principal.download,
                can_send=current.principal.download,
            ),
            report=reports[r.uid],
            show_patient=False,
        )
        for r in rows
    )
    patient = pages.person_name(rows[0].patient.name) if rows else "the patient"
    body = (
        f"<h1>Images shared by {esc(patient)}</h1>"
        + layout.next_step(
            "Open a study in the viewer, or take a quick look. "
            + (
                "You may also download a copy or send it to your own system."
                if current.principal.download
                else ""
            )
        )
        + f'<ul class="studies" aria-label="Shared studies">{cards}</ul>'
        + layout.form(
            f"/s/{share_id}/end", current.csrf, layout.button("Close these images", "secondary"), label="End"
        )
    )
    return layout.response("Shared images", body, who="a shared link")


@router.get("/s/{share_id}/studies/{study}")
async def recipient_quick_look(request: Request, share_id: str, study: str) -> Response:
    current = await _recipient(request, share_id)
    if isinstance(current, Response):
        return current
    return await routes.quick_look_page(
        request, study, current.principal, back=f"/s/{share_id}", options={"who": "a shared link"}
    )


@router.get("/s/{share_id}/images/{path:path}")
async def recipient_images(request: Request, share_id: str, path: str) -> Response:
    current = await _share_session(request, share_id)
    if current is None:
        return Response("the share session has ended", status_code=403)
    return await routes.forward_image(request, path, current)


@router.post("/s/{share_id}/end")
async def recipient_end(request: Request, share_id: str) -> Response:
    current = await _share_session(request, share_id)
    response = RedirectResponse(f"/s/{share_id}", status_code=303)
    if current is not None:
        await session.check_csrf(request, current)
        await run_in_threadpool(session.end, request, response, "share")
    return response
