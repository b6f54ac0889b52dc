"""The access log a patient reads ("who saw my images") and the administrator's overview page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from imagebridge.audit import plain
from imagebridge.audit.store import AuditRecord, AuditStore
from imagebridge.index.peers import Peers
from imagebridge.portal import layout, routes
from imagebridge.portal.layout import esc
from imagebridge.portal.session import SignedIn
from imagebridge.services.archive import Archive

router = APIRouter(prefix="/portal", include_in_schema=False)
LOG_LENGTH = 200


def _events(archive: Archive, patients: tuple[str, ...] | None, limit: int) -> list[tuple[AuditRecord, str]]:
    store = AuditStore.of(archive.engine)
    store.flush()
    if patients is None:
        found = store.search(limit=limit)
    else:
        found = sorted(
            (e for p in patients for e in store.search(patient=p, limit=limit)),
            key=lambda e: e.recorded,
            reverse=True,
        )[:limit]
    return list(zip(found, plain.describe_all(archive.engine, found), strict=True))


def _event_list(events: list[tuple[AuditRecord, str]]) -> str:
    items = "".join(
        f'<li data-action="{esc(e.action)}"{" class=error" if e.outcome not in ("success", "allow") else ""}>'
        f"{esc(text)}</li>"
        for e, text in events
    )
    return (
        f'<ol class="card" aria-label="Access log">{items}</ol>'
        if items
        else "<p>Nobody has opened them yet.</p>"
    )


@router.get("/access-log")
async def access_log(request: Request, current: SignedIn) -> Response:
    if current.role not in ("patient", "proxy") or current.user is None:
        return layout.problem(
            "This page is for patients",
            "Staff see the whole access log on the Administration page.",
            ("/portal", "Back to the studies"),
            status=403,
        )
    events = await run_in_threadpool(_events, request.app.state.archive, current.user.patients, LOG_LENGTH)
    body = (
        "<h1>Who saw your images</h1>"
        + layout.next_step(
            "Each line is one time someone looked at, downloaded, shared or added your images, newest first. "
            "If something looks wrong, revoke the share on the Shares page and call the imaging department."
        )
        + _event_list(events)
    )
    return layout.response("Who saw your images", body, **routes.chrome(current, "/portal/access-log"))


@router.get("/admin")
async def admin(request: Request, current: SignedIn) -> Response:
    if current.role != "admin":
        return layout.problem(
            "For administrators only",
            "This page lists the archive's settings and users; ask an administrator if you need something here.",
            ("/portal", "Back to the studies"),
            status=403,
        )
    archive: Archive = request.app.state.archive
    authz = request.app.state.authorization
    peers, clients, users, events = await run_in_threadpool(
        lambda: (
            Peers(archive.engine).all(),
            authz.clients.all(),
            authz.users.all(),
            _events(archive, None, 50),
        )
    )
    body = (
        "<h1>Administration</h1>"
        + layout.next_step(
            "Add DICOM peers with `imagebridge peer add`, apps with `imagebridge client add` and "
            "people with `imagebridge user add`; they appear here."
        )
        + '<section class="card" aria-labelledby="h-peers"><h2 id="h-peers">DICOM peers</h2>'
        + layout.table(
            ["Name", "AE title", "Host", "Port", "TLS"],
            [
                [esc(p.name), esc(p.ae_title), esc(p.host), str(p.port), "yes" if p.tls else "no"]
                for p in peers
            ],
        )
        + '</section><section class="card" aria-labelledby="h-apps"><h2 id="h-apps">Registered apps</h2>'
        + layout.table(
            ["Client id", "Name", "Kind", "Scopes"],
            [
                [esc(c.client_id), esc(c.name), esc(c.kind.value), esc(c.scope or "(any user scope)")]
                for c in clients
            ],
        )
        + '</section><section class="card" aria-labelledby="h-users"><h2 id="h-users">Users</h2>'
        + layout.table(
            ["User name", "Name", "Role", "Patients"],
            [
                [esc(u.username), esc(u.display_name), esc(u.role.value), esc(", ".join(u.patients) or "all")]
                for u in users
            ],
        )
        + '</section><section aria-labelledby="h-log"><h2 id="h-log">Recent access</h2>'
        + _event_list(events)
        + "</section>"
    )
    return layout.response("Administration", body, **routes.chrome(current, "/portal/admin"))
