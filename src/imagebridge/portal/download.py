"""GET /portal/download: a study, or every study of a patient, as an IHE PDI zip (DICOMDIR, README, files).

The zip is laid out from sizes alone (``media.pdi.plan``) and streamed from the stored blobs with
flat memory; it has a ``Content-Length``, answers ``Range`` (RFC 9110 §14) so a broken download
resumes, and names itself in ``Content-Disposition`` (RFC 6266). A share recipient may download
only when the share allows it (``Principal.download``). Each download is audited.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from imagebridge.audit import log as audit
from imagebridge.audit.store import AuditStore
from imagebridge.fhir.index import StudyRow
from imagebridge.media import pdi
from imagebridge.portal import layout, studies
from imagebridge.portal.session import AnySession, Session
from imagebridge.services.archive import Archive

router = APIRouter(include_in_schema=False)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _back(current: Session) -> tuple[str, str]:
    return (
        (f"/s/{current.share}/studies", "Back to the shared studies")
        if current.share
        else ("/portal", "Back")
    )


@router.get("/portal/download")
async def download(
    request: Request,
    current: AnySession,
    study: Annotated[list[str] | None, Query(max_length=64)] = None,
    patient: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    archive: Archive = request.app.state.archive
    if not current.principal.download:
        return layout.problem(
            "Download is not allowed",
            "The patient shared these images for viewing only. Ask her for a share that allows downloads.",
            _back(current),
            status=403,
        )
    if not study and not patient:
        return layout.problem("Nothing to download", "Choose a study first.", _back(current), status=400)
    rows = await run_in_threadpool(_allowed_studies, archive, current, study or [], patient)
    wanted = [row.uid for row in rows]
    if not rows:
        return layout.problem(
            "Study not available",
            "That study is not in the archive, or it is not yours to download.",
            _back(current),
            status=404,
        )
    plan = await run_in_threadpool(pdi.plan, archive, wanted)
    first, last = _range(request.headers.get("range"), plan.size)
    if first is None:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{plan.size}"})
    _audit(archive, current, rows, partial=last - first + 1 != plan.size)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(last - first + 1),
        "Content-Disposition": f'attachment; filename="{plan.filename}"',
        "ETag": f'"{plan.etag}"',
        "Cache-Control": "private, no-store",
    }
    status = 200
    if last - first + 1 != plan.size:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{plan.size}"
    return StreamingResponse(
        plan.iter_zip(first, last + 1), status_code=status, media_type="application/zip", headers=headers
    )


def _allowed_studies(
    archive: Archive, current: Session, wanted: list[str], patient: str | None
) -> list[StudyRow]:
    if patient:
        return studies.visible(archive, current.principal, patient=patient)
    found = (studies.find(archive, current.principal, uid) for uid in dict.fromkeys(wanted))
    return [row for row in found if row is not None]


def _range(header: str | None, size: int) -> tuple[int | None, int]:
    """(first, last) byte of a single ``bytes=`` range; the whole file when absent or unusable."""
    whole = (0, size - 1)
    match = _RANGE.match((header or "").strip())
    if match is None or not (match[1] or match[2]):
        return whole
    if not match[1]:
        length = int(match[2])
        return (max(size - length, 0), size - 1) if length else (None, 0)
    first = int(match[1])
    last = min(int(match[2]), size - 1) if match[2] else size - 1
    if first >= size or first > last:
        return (None, 0)
    return first, last


def _audit(archive: Archive, current: Session, rows: list[StudyRow], *, partial: bool) -> None:
    wanted = [row.uid for row in rows]
    audit.record(
        "success",
        "studies downloaded as a zip" + (" (resumed part)" if partial else ""),
        store=AuditStore.of(archive.engine),
        action="download",
        client_id=current.principal.client_id,
        user=current.principal.subject,
        share=current.share,
        patient=rows[0].patient.fhir_id,
        study=wanted[0] if len(wanted) == 1 else None,
        studies=wanted,
    )
