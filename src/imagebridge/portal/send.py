"""Send to my system: a clinician or a share recipient copies a study to their own archive.

Two ways, each reporting the outcome of every instance:

* DICOMweb STOW-RS (PS3.18 §10.5): one ``multipart/related; type="application/dicom"`` POST to
  ``{url}/studies``, the stored bytes as they are, with an optional bearer token; the answer's
  ReferencedSOPSequence / FailedSOPSequence (PS3.18 Table 10.5.3-1) say which instances landed.
* DICOM C-STORE (PS3.4 Annex B) to the AE the person names, through ``dimse.scu`` (stored bytes,
  stored transfer syntax; transcoded only when the peer accepts nothing else).

Sending is a copy, so a share must allow downloads. The URL or address is the person's own system,
and the server connects to it from where it runs: ``portal/egress.py`` resolves the host once,
refuses it unless every address is public or inside ``Settings.send_allowed_networks``, and
connects only to the checked addresses (no redirects followed). Every send is audited.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from imagebridge.audit import log as audit
from imagebridge.audit.store import AuditStore
from imagebridge.dimse.peers import Peer
from imagebridge.dimse.scu import AssociationFailed, Scu
from imagebridge.fhir.index import StudyRow
from imagebridge.index.lookup import StoredInstance, Target
from imagebridge.portal import egress, layout, session, studies
from imagebridge.portal.layout import esc
from imagebridge.portal.session import AnySession, Session
from imagebridge.services.archive import Archive

router = APIRouter(include_in_schema=False)
STOW_TIMEOUT = 120.0
_REFERENCED, _FAILED, _SOP_UID, _REASON = "00081199", "00081198", "00081155", "00081197"


@dataclass(frozen=True)
class Outcome:
    sop_uid: str
    ok: bool
    detail: str


class SendRefused(Exception):
    """What the person typed cannot be used (bad URL, port, AE title); the form says why."""


class SendBlocked(SendRefused):
    """The destination is a private address this server may not reach (audited: it may be a probe)."""


def _back(current: Session) -> str:
    return f"/s/{current.share}/studies" if current.share else "/portal"


def _chrome(current: Session) -> dict[str, Any]:
    return {"who": current.display_name if current.user else "a shared link", "csrf": current.csrf}


@router.get("/portal/send")
async def send_form(
    request: Request, current: AnySession, study: Annotated[str, Query(max_length=64)]
) -> Response:
    row = await run_in_threadpool(studies.find, request.app.state.archive, current.principal, study)
    if row is None or not current.principal.download:
        return _refused(current, row is None)
    return _form(current, row)


def _refused(current: Session, missing: bool) -> Response:
    if missing:
        return layout.problem(
            "Study not available", "That study is not yours to send.", (_back(current), "Back"), status=404
        )
    return layout.problem(
        "Sending is not allowed",
        "The patient shared these images for viewing only, so copies cannot be sent.",
        (_back(current), "Back"),
        status=403,
    )


def _form(current: Session, row: StudyRow, error: str = "") -> Response:
    stow = (
        "<fieldset><legend>To a DICOMweb server (STOW-RS)</legend>"
        + layout.field("url", "DICOMweb address", "url", hint="For example https://pacs.example.org/dicomweb")
        + layout.field("bearer", "Access token (optional)", "password", autocomplete="off")
        + layout.button("Send with DICOMweb", name="method", value="stow")
        + "</fieldset>"
    )
    dimse = (
        "<fieldset><legend>To a DICOM system (C-STORE)</legend>"
        + layout.field("host", "Host name or IP address")
        + layout.field("port", "Port", "number", value="104", min="1", max="65535")
        + layout.field("aet", "AE title", hint="The called AE title of your system, up to 16 characters.")
        + layout.button("Send with DICOM", name="method", value="dimse")
        + "</fieldset>"
    )
    body = (
        f"<h1>Send “{esc(row.description or 'this study')}” to your system</h1>"
        + (layout.alert(error) if error else "")
        + layout.next_step(
            "Fill in one of the two boxes, then press its Send button. You will see each image's result."
        )
        + layout.form(
            "/portal/send",
            current.csrf,
            f'<input type="hidden" name="study" value="{esc(row.uid)}">' + stow + dimse,
            label="Send",
        )
    )
    return layout.response("Send to my system", body, status=400 if error else 200, **_chrome(current))


@router.post("/portal/send")
async def send(request: Request, current: AnySession) -> Response:
    form = await session.check_csrf(request, current)
    archive: Archive = request.app.state.archive
    row = await run_in_threadpool(studies.find, archive, current.principal, form.get("study", ""))
    if row is None or not current.principal.download:
        return _refused(current, row is None)
    try:
        if form.get("method") == "stow":
            where, outcomes = await run_in_threadpool(_stow, archive, row, form)
        else:
            where, outcomes = await run_in_threadpool(_cstore, archive, row, form)
    except SendBlocked as exc:
        _audit_blocked(archive, current, row, str(exc))
        return _form(current, row, str(exc))
    except SendRefused as exc:
        return _form(current, row, str(exc))
    _audit(archive, current, row, where, outcomes)
    return _result(current, row, where, outcomes)


def _instances(archive: Archive, row: StudyRow) -> list[StoredInstance]:
    return archive.lookup.instances(Target(row.uid))


def _stow(archive: Archive, row: StudyRow, form: dict[str, str]) -> tuple[str, list[Outcome]]:
    url = form.get("url", "").strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise SendRefused("Type the full DICOMweb address, starting with https:// (or http://).")
    if parsed.userinfo:
        raise SendRefused("Leave the user name and password out of the address; use the access token.")
    destination = _checked(lambda allowed: egress.check_url(parsed, allowed), archive)
    stored = _instances(archive, row)
    boundary = secrets.token_hex(16)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if form.get("bearer", "").strip():
        headers["Authorization"] = f"Bearer {form['bearer'].strip()}"
    try:
        with egress.client(destination, STOW_TIMEOUT) as client:
            answer = client.post(
                f"{url}/studies",
                content=_multipart(archive, stored, boundary),
                headers=headers,
            )
    except httpx.HTTPError as exc:
        raise SendRefused(f"Could not reach {parsed.host}: {type(exc).__name__}. Check the address.") from exc
    if answer.status_code in (401, 403):
        raise SendRefused(f"{parsed.host} refused the access token (HTTP {answer.status_code}).")
    if answer.is_redirect:
        raise SendRefused(
            f"{parsed.host} answered with a redirect (HTTP {answer.status_code}), which is not followed. "
            "Type the address of its DICOMweb service itself."
        )
    return url, _stow_outcomes(stored, answer)


def _checked(
    check: Callable[[list[egress.IPNetwork]], egress.Destination], archive: Archive
) -> egress.Destination:
    """The destination, resolved once and checked against ``send_allowed_networks``."""
    try:
        return check(egress.networks(archive.settings.send_allowed_networks))
    except egress.PrivateDestination as exc:
        raise SendBlocked(str(exc)) from exc
    except egress.DestinationRefused as exc:
        raise SendRefused(str(exc)) from exc


def _multipart(archive: Archive, stored: list[StoredInstance], boundary: str) -> Iterator[bytes]:
    for instance in stored:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with archive.blobs.open(instance.blob_key) as blob:
            while chunk := blob.read(1 << 20):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _stow_outcomes(stored: list[StoredInstance], answer: httpx.Response) -> list[Outcome]:
    try:
        body = answer.json()
    except ValueError:
        body = {}
    ok = {_uid(item) for item in body.get(_REFERENCED, {}).get("Value", [])}
    failed = {_uid(item): _reason(item) for item in body.get(_FAILED, {}).get("Value", [])}
    outcomes = []
    for instance in stored:
        if instance.sop_uid in ok:
            outcomes.append(Outcome(instance.sop_uid, True, "stored"))
        elif instance.sop_uid in failed:
            outcomes.append(Outcome(instance.sop_uid, False, f"refused (reason {failed[instance.sop_uid]})"))
        else:
            outcomes.append(Outcome(instance.sop_uid, False, f"no answer for it (HTTP {answer.status_code})"))
    return outcomes


def _uid(item: dict[str, dict[str, list[str]]]) -> str:
    return str((item.get(_SOP_UID, {}).get("Value") or [""])[0])


def _reason(item: dict[str, dict[str, list[int]]]) -> str:
    code = next(iter(item.get(_REASON, {}).get("Value") or []), None)
    return f"0x{code:04X}" if isinstance(code, int) else "not given"


def _cstore(archive: Archive, row: StudyRow, form: dict[str, str]) -> tuple[str, list[Outcome]]:
    host, aet = form.get("host", "").strip(), form.get("aet", "").strip()
    port_text = form.get("port", "").strip()
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise SendRefused("Give the host name and a port number from 1 to 65535.")
    if not aet or len(aet) > 16:
        raise SendRefused("Give the AE title of your system (1 to 16 characters).")
    destination = _checked(lambda allowed: egress.check(host, int(port_text), allowed), archive)
    peer = Peer("recipient", aet, str(destination.addresses[0]), int(port_text), source="portal")
    stored = _instances(archive, row)
    paths = {}
    for instance in stored:
        path = archive.blobs.path(instance.blob_key)
        if path is not None:
            paths[str(path)] = instance.sop_uid
    try:
        result = Scu(archive.settings).send(peer, [Path(p) for p in paths])
    except AssociationFailed as exc:
        raise SendRefused(f"Could not send: {exc}. Check the host, port and AE title.") from exc
    failed = {paths[path]: reason for path, reason in result.failed}
    where = f"{aet}@{host}:{port_text}"
    return where, [
        Outcome(i.sop_uid, i.sop_uid not in failed, failed.get(i.sop_uid, "stored")) for i in stored
    ]


def _audit(archive: Archive, current: Session, row: StudyRow, where: str, outcomes: list[Outcome]) -> None:
    sent = sum(o.ok for o in outcomes)
    audit.record(
        "success" if sent == len(outcomes) else "failure",
        f"sent {sent} of {len(outcomes)} images to {where}",
        store=AuditStore.of(archive.engine),
        action="send",
        client_id=current.principal.client_id,
        user=current.principal.subject,
        share=current.share,
        patient=row.patient.fhir_id,
        study=row.uid,
    )


def _audit_blocked(archive: Archive, current: Session, row: StudyRow, reason: str) -> None:
    audit.record(
        "failure",
        f"send refused: {reason}",
        store=AuditStore.of(archive.engine),
        action="send",
        client_id=current.principal.client_id,
        user=current.principal.subject,
        share=current.share,
        patient=row.patient.fhir_id,
        study=row.uid,
    )


def _result(current: Session, row: StudyRow, where: str, outcomes: list[Outcome]) -> Response:
    sent = sum(o.ok for o in outcomes)
    summary = f"{sent} of {len(outcomes)} images were stored at {where}."
    rows = [[esc(o.sop_uid), "Stored" if o.ok else "Failed", esc(o.detail)] for o in outcomes]
    body = (
        "<h1>Sending finished</h1>"
        + layout.alert(summary, "ok" if sent == len(outcomes) else "error")
        + layout.table(["Image (SOP Instance UID)", "Result", "Detail"], rows, caption="Each image")
        + layout.next_step("Check the study in your own system. If some images failed, you can send again.")
        + f'<p><a class="button secondary" href="{esc(_back(current))}">Back to the studies</a></p>'
    )
    return layout.response("Sending finished", body, **_chrome(current))
