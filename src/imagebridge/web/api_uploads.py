"""Resumable uploads of media at ``/api/uploads`` (issue 6): a zip, an ISO image or a DICOM file.

- ``POST /api/uploads`` ``{"name": "disc.zip", "size": 123456}`` → 201 ``{"id", "offset": 0, ...}``,
  ``Location`` and ``Upload-Offset`` headers
- ``PATCH`` or ``PUT /api/uploads/{id}`` with the chunk as the body and its start as
  ``Upload-Offset: N`` or ``Content-Range: bytes N-M/SIZE`` → ``{"offset": ..., "state": ...}``;
  a chunk that does not start where the upload stands is refused with 409 and the right offset
- ``HEAD /api/uploads/{id}`` → ``Upload-Offset`` / ``Upload-Length`` (where to resume);
  ``GET /api/uploads/{id}`` → the upload as JSON, with its import result once run
- ``POST /api/uploads/{id}/import`` ``{"source": "name"}`` (optional) → the per-study result
- ``GET /api/uploads`` → your uploads (staff: everyone's); ``DELETE /api/uploads/{id}`` cancels

Who may upload: staff (a ``user/`` token of a user who reaches every patient, or a ``system/``
token, with ``ImagingStudy.c``; or a clinician's or administrator's portal session) and patients
(a ``patient/ImagingStudy.c`` token with a patient in context, or a patient's portal session).
From a patient, only studies naming the patient's own Patient ID and Issuer are filed; the
others wait for staff, who import the upload (normally with a source) after review.
Portal sessions (cookie) must send their CSRF value in ``X-CSRF-Token`` on every change.
Errors are ``{"status", "error"}``: 400, 401, 403, 404, 409 (with ``offset``), 413.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from imagebridge.auth.authority import bearer_token
from imagebridge.auth.errors import InvalidToken
from imagebridge.auth.policy import Principal
from imagebridge.dicomweb.errors import problem
from imagebridge.errors import InvalidInput, NotFound
from imagebridge.media import uploads as media_uploads
from imagebridge.media.uploads import MAX_CHUNK_BYTES, MAX_UPLOAD_BYTES, OffsetMismatch, Upload, Uploads

STAFF_ROLES = ("clinician", "admin")


@dataclass(frozen=True)
class Uploader:
    owner: str
    staff: bool
    patient: str | None = None


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def from_principal(principal: Principal) -> Uploader:
    """Staff or patient, from a bearer token's scopes (SMART ``ImagingStudy.c``)."""
    scopes = principal.scopes
    if scopes.grants("system", "ImagingStudy", "c"):
        return Uploader(f"client:{principal.client_id}", staff=True)
    if scopes.grants("user", "ImagingStudy", "c") and principal.subject:
        if principal.user_patients is None:
            return Uploader(f"user:{principal.subject}", staff=True)
        if len(principal.user_patients) == 1:
            return Uploader(f"user:{principal.subject}", staff=False, patient=principal.user_patients[0])
    if scopes.grants("patient", "ImagingStudy", "c") and principal.patient:
        return Uploader(f"patient:{principal.patient}", staff=False, patient=principal.patient)
    raise Refused(403, "uploading media needs ImagingStudy.c: a staff token, or a patient's own")


async def _uploader(request: Request) -> Uploader:
    header = request.headers.get("authorization")
    if header is not None:
        try:
            token = bearer_token(header)
            principal = await run_in_threadpool(request.app.state.authority.principal, token)
        except InvalidToken as exc:
            raise Refused(401, exc.description) from exc
        return from_principal(principal)
    return await _from_portal(request)


async def _from_portal(request: Request) -> Uploader:
    from imagebridge.portal.session import current

    session = await current(request, "user")
    if session is None or session.user is None:
        raise Refused(401, "no access token; send Authorization: Bearer <token>, or sign in at /portal")
    if request.method not in ("GET", "HEAD"):
        sent = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent, session.csrf):
            raise Refused(403, "the X-CSRF-Token header does not match this portal session")
    user = session.user
    if user.role.value in STAFF_ROLES:
        return Uploader(f"user:{user.username}", staff=True)
    if len(user.patients) == 1:
        return Uploader(f"user:{user.username}", staff=False, patient=user.patients[0])
    raise Refused(403, "this account acts for several patients; ask the imaging department to import media")


Who = Annotated[Uploader, Depends(_uploader)]


def _uploads(request: Request) -> Uploads:
    archive = request.app.state.archive
    return Uploads(archive.engine, archive.settings.data_dir)


def _mine(request: Request, who: Uploader, upload_id: str) -> Upload:
    upload = _uploads(request).get(upload_id)
    if not who.staff and upload.owner != who.owner:
        raise NotFound("no such upload")
    return upload


def _headers(upload: Upload) -> dict[str, str]:
    return {
        "Upload-Offset": str(upload.received),
        "Upload-Length": str(upload.size),
        "Cache-Control": "no-store",
    }


def _offset(request: Request, upload: Upload) -> int:
    """The chunk's start: ``Upload-Offset``, else the first byte of ``Content-Range``."""
    if (value := request.headers.get("upload-offset")) is not None:
        if not value.isdigit():
            raise InvalidInput("Upload-Offset must be a whole number of bytes")
        return int(value)
    if (value := request.headers.get("content-range")) is not None:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", value.strip())
        if not match or int(match[2]) < int(match[1]):
            raise InvalidInput("Content-Range must read 'bytes FIRST-LAST/SIZE'")
        if match[3] != "*" and int(match[3]) != upload.size:
            raise InvalidInput(f"Content-Range names a size of {match[3]}; the upload declared {upload.size}")
        return int(match[1])
    raise InvalidInput("say where the chunk starts: Upload-Offset: N, or Content-Range: bytes N-M/SIZE")


def router() -> APIRouter:
    api = APIRouter(prefix="/api/uploads", tags=["media uploads"])

    @api.post("", status_code=201)
    def create(
        request: Request, who: Who, body: Annotated[dict[str, Any] | None, Body()] = None
    ) -> JSONResponse:
        size = (body or {}).get("size")
        if isinstance(size, int) and size > MAX_UPLOAD_BYTES:
            raise Refused(413, f"an upload may hold at most {MAX_UPLOAD_BYTES} bytes")
        upload = _uploads(request).create(who.owner, who.patient, str((body or {}).get("name") or ""), size)  # type: ignore[arg-type]
        location = f"/api/uploads/{upload.upload_id}"
        return JSONResponse(upload.as_json(), 201, headers={**_headers(upload), "Location": location})

    @api.get("")
    def listing(request: Request, who: Who) -> JSONResponse:
        found = _uploads(request).list(None if who.staff else who.owner)
        return JSONResponse({"uploads": [u.as_json() for u in found]}, headers={"Cache-Control": "no-store"})

    @api.head("/{upload_id}")
    def where(request: Request, upload_id: str, who: Who) -> Response:
        return Response(status_code=200, headers=_headers(_mine(request, who, upload_id)))

    @api.get("/{upload_id}")
    def status(request: Request, upload_id: str, who: Who) -> JSONResponse:
        upload = _mine(request, who, upload_id)
        return JSONResponse(upload.as_json(), headers=_headers(upload))

    @api.api_route("/{upload_id}", methods=["PATCH", "PUT"])
    async def chunk(request: Request, upload_id: str, who: Who) -> JSONResponse:
        upload = await run_in_threadpool(_mine, request, who, upload_id)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_CHUNK_BYTES:
            raise Refused(413, f"a chunk may hold at most {MAX_CHUNK_BYTES} bytes; send smaller chunks")
        offset = _offset(request, upload)
        writer = await run_in_threadpool(_uploads(request).chunk, upload_id, offset)
        try:
            async for data in request.stream():
                writer.write(data)
                if writer.written > MAX_CHUNK_BYTES:
                    raise Refused(413, f"a chunk may hold at most {MAX_CHUNK_BYTES} bytes")
        except ClientDisconnect:
            pass
        finally:
            upload = await run_in_threadpool(writer.close)
        return JSONResponse(upload.as_json(), headers=_headers(upload))

    @api.post("/{upload_id}/import")
    def run(
        request: Request, upload_id: str, who: Who, body: Annotated[dict[str, Any] | None, Body()] = None
    ) -> JSONResponse:
        _mine(request, who, upload_id)
        source = (body or {}).get("source")
        if source is not None and (not isinstance(source, str) or not source.strip()):
            raise InvalidInput('"source" names a configured source (imagebridge source list)')
        if source and not who.staff:
            raise Refused(403, "only staff name the source of an import")
        done = media_uploads.run_import(
            request.app.state.archive,
            _uploads(request),
            upload_id,
            staff=who.staff,
            source=source,
            actor=who.owner,
        )
        return JSONResponse(done.as_json())

    @api.delete("/{upload_id}", status_code=204)
    def cancel(request: Request, upload_id: str, who: Who) -> Response:
        _mine(request, who, upload_id)
        _uploads(request).delete(upload_id)
        return Response(status_code=204)

    return api


def mount(app: FastAPI) -> None:
    """The JSON API and the ``/portal/import`` page."""
    from imagebridge.portal import imports

    app.include_router(router())
    app.include_router(imports.router)

    @app.exception_handler(Refused)
    async def _refused(_request: Request, exc: Refused) -> JSONResponse:
        response = problem(exc.status, exc.reason)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="imagebridge"'
        return response

    @app.exception_handler(OffsetMismatch)
    async def _offset_mismatch(_request: Request, exc: OffsetMismatch) -> JSONResponse:
        return JSONResponse(
            {"status": 409, "error": exc.reason, "offset": exc.expected},
            status_code=409,
            headers={"Upload-Offset": str(exc.expected), "Cache-Control": "no-store"},
        )
