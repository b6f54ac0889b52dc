"""The JSON API of patient-controlled sharing at ``/api/shares`` (for the portal and for apps).

Managing shares needs a bearer token (``Authorization: Bearer``) resolved by
``app.state.authority``; the caller may share, list and revoke only studies that
``auth.policy`` lets it read (a patient token: its own patient's studies; decided on the study's
restriction and exclusions too), never a restricted study (400; "all" leaves them out), and a share
token itself may not make shares. Redeeming a share needs no token:

- ``POST /api/shares`` ``{patient?, studies?: [uid] | null, recipient?, expires?: "14d" | date |
  datetime, allow_download?: bool}`` → 201 ``{share..., "url", "code"}`` (the code is shown once)
- ``GET /api/shares?patient=&include_revoked=true`` → ``{"shares": [...]}``
- ``GET /api/shares/{id}``; ``DELETE /api/shares/{id}`` or ``POST /api/shares/{id}/revoke``
- ``POST /api/shares/{id}/unlock``; ``POST /api/shares/{id}/code`` (a new code, clears a lock)
- ``POST /api/shares/{id}/redeem`` ``{code, birth_date: "YYYY-MM-DD"}`` →
  ``{access_token, token_type, expires_at, expires_in, patient, studies, allow_download}``

Errors are ``{"status", "error", "error_description"}``: 400 bad input, 401 no/invalid token or
wrong code/birth date (with ``attempts_left``), 403 not yours / share ended, 404 unknown share,
423 locked, 429 rate limited (with ``Retry-After``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from imagebridge.auth import policy
from imagebridge.auth.authority import bearer_token
from imagebridge.auth.errors import InvalidToken, OAuthError
from imagebridge.auth.policy import Principal, Target
from imagebridge.errors import ImageBridgeError, InvalidInput, NotFound
from imagebridge.index import access
from imagebridge.services.sharing import (
    CreatedShare,
    RedemptionRefused,
    Share,
    Sharing,
    SharingError,
    TooManyAttempts,
    parse_expiry,
)


class _Refused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def _answer(exc: Exception) -> JSONResponse:
    """The one mapping of this API's errors to HTTP."""
    headers: dict[str, str] = {}
    body: dict[str, Any]
    if isinstance(exc, SharingError):
        body = {"status": exc.status, "error": exc.code, "error_description": exc.reason}
        if isinstance(exc, TooManyAttempts):
            headers["Retry-After"] = str(exc.retry_after)
            body["retry_after"] = exc.retry_after
        if isinstance(exc, RedemptionRefused):
            body["attempts_left"] = exc.attempts_left
    elif isinstance(exc, OAuthError):
        status = 401 if isinstance(exc, InvalidToken) else exc.status
        body = {"status": status, "error": exc.error, "error_description": exc.description}
        if status == 401:
            headers["WWW-Authenticate"] = f'Bearer realm="imagebridge", error="{exc.error}"'
    elif isinstance(exc, _Refused):
        body = {"status": exc.status, "error": exc.error, "error_description": exc.description}
    elif isinstance(exc, NotFound):
        body = {"status": 404, "error": "not_found", "error_description": exc.reason}
    elif isinstance(exc, ImageBridgeError):
        body = {"status": 400, "error": "invalid_request", "error_description": exc.reason}
    else:
        raise exc
    return JSONResponse(body, status_code=body["status"], headers=headers)


def sharing(request: Request) -> Sharing:
    service: Sharing = request.app.state.sharing
    return service


def caller(request: Request) -> Principal:
    token = bearer_token(request.headers.get("authorization"))
    principal: Principal = request.app.state.authority.principal(token)
    return principal


Service = Annotated[Sharing, Depends(sharing)]


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise InvalidInput("the body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(f"'{name}' must be a string" + (" and is required" if required else ""))
    return value


def _owner(principal: Principal, patient: str) -> None:
    """The caller may manage shares of ``patient`` only if it may read her studies itself."""
    if principal.share is not None:
        raise _Refused(403, "forbidden", "a share's token cannot create or manage shares")
    _allowed(principal, Target("ImagingStudy", "read", patient=patient))


def _may_share(request: Request, principal: Principal, patient: str, studies: tuple[str, ...]) -> None:
    """Each study named must be one the caller may read, decided on the facts DICOMweb decides on
    (a carer may not share a study restricted to the patient). A study that is not the patient's,
    or is restricted, is the sharing service's to refuse (a share never carries a restricted one)."""
    engine = request.app.state.archive.engine
    for study_uid in studies:
        facts = access.target(engine, "read", study_uid)
        if facts is not None and facts.patient == patient:
            _allowed(principal, facts)


def _allowed(principal: Principal, target: Target) -> None:
    decision = policy.check(principal, target)
    if not decision.allowed:
        raise _Refused(403, decision.error or "forbidden", decision.reason)


def _patient(principal: Principal, given: str | None) -> str:
    patient = given or principal.patient
    if not patient:
        raise InvalidInput(
            "say which patient: 'patient' (a FHIR Patient id); this token has no patient context"
        )
    return patient


def _share_json(request: Request, share: Share) -> dict[str, Any]:
    return {**share.to_json(), "url": _public(request) + share.link}


def _public(request: Request) -> str:
    base = request.app.state.archive.settings.public_base_url
    return str(base or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")


def _create(request: Request, service: Sharing, body: dict[str, Any]) -> CreatedShare:
    principal = caller(request)
    patient = _patient(principal, _text(body, "patient"))
    studies = body.get("studies")
    if studies is not None and (
        not isinstance(studies, list) or not all(isinstance(s, str) for s in studies)
    ):
        raise InvalidInput("'studies' must be a list of Study Instance UIDs, or null for all")
    _owner(principal, patient)
    _may_share(request, principal, patient, tuple(studies or ()))
    expires = _text(body, "expires")
    download = body.get("allow_download", True)
    if not isinstance(download, bool):
        raise InvalidInput("'allow_download' must be true or false")
    created = service.create(
        patient=patient,
        studies=studies,
        created_by=_who(principal),
        recipient=_text(body, "recipient"),
        expires=parse_expiry(expires) if expires else None,
        allow_download=download,
    )
    return created


def _who(principal: Principal) -> str:
    return principal.subject or principal.fhir_user or principal.client_id


async def _off_loop(work: Callable[[], Any]) -> Any:
    """Hashing and the index are blocking: run them on a worker thread (the audit context goes along)."""
    return await anyio.to_thread.run_sync(work)


def router() -> APIRouter:
    api = APIRouter(prefix="/api/shares", tags=["sharing"])

    @api.post("", status_code=201)
    async def create(request: Request, service: Service) -> JSONResponse:
        try:
            body = await _body(request)
            created = await _off_loop(lambda: _create(request, service, body))
        except Exception as exc:
            return _answer(exc)
        return JSONResponse({**_share_json(request, created.share), "code": created.code}, status_code=201)

    @api.get("")
    def list_shares(
        request: Request, service: Service, patient: str | None = None, include_revoked: bool = False
    ) -> JSONResponse:
        try:
            principal = caller(request)
            chosen = _patient(principal, patient)
            _owner(principal, chosen)
            shares = service.list(chosen, include_revoked=include_revoked)
        except Exception as exc:
            return _answer(exc)
        return JSONResponse({"shares": [_share_json(request, s) for s in shares]})

    def _mine(request: Request, service: Sharing, share_id: str) -> tuple[Principal, Share]:
        principal = caller(request)
        share = service.get(share_id)
        _owner(principal, share.patient)
        return principal, share

    @api.get("/{share_id}")
    def read(request: Request, share_id: str, service: Service) -> JSONResponse:
        try:
            _, share = _mine(request, service, share_id)
        except Exception as exc:
            return _answer(exc)
        return JSONResponse(_share_json(request, share))

    @api.delete("/{share_id}")
    @api.post("/{share_id}/revoke")
    def revoke(request: Request, share_id: str, service: Service) -> JSONResponse:
        return _change(request, service, share_id, Sharing.revoke)

    @api.post("/{share_id}/unlock")
    def unlock(request: Request, share_id: str, service: Service) -> JSONResponse:
        return _change(request, service, share_id, Sharing.unlock)

    def _change(
        request: Request, service: Sharing, share_id: str, act: Callable[[Sharing, str, str], Share]
    ) -> JSONResponse:
        """Revoke or unlock one of the caller's shares; the share as it now stands."""
        try:
            principal, share = _mine(request, service, share_id)
            share = act(service, share.share_id, _who(principal))
        except Exception as exc:
            return _answer(exc)
        return JSONResponse(_share_json(request, share))

    @api.post("/{share_id}/code")
    def new_code(request: Request, share_id: str, service: Service) -> JSONResponse:
        try:
            principal, share = _mine(request, service, share_id)
            created = service.reissue_code(share.share_id, by=_who(principal))
        except Exception as exc:
            return _answer(exc)
        return JSONResponse({**_share_json(request, created.share), "code": created.code})

    @api.post("/{share_id}/redeem")
    async def redeem(request: Request, share_id: str, service: Service) -> JSONResponse:
        try:
            body = await _body(request)
            code = _text(body, "code", required=True) or ""
            birth_date = _text(body, "birth_date", required=True) or ""
            remote = request.client.host if request.client else None
            session = await _off_loop(lambda: service.redeem(share_id, code, birth_date, remote))
        except Exception as exc:
            return _answer(exc)
        left = int((session.expires_at - datetime.now(UTC)).total_seconds())
        return JSONResponse(
            {
                "access_token": session.access_token,
                "token_type": "Bearer",
                "expires_at": session.expires_at.isoformat(),
                "expires_in": max(left, 0),
                "patient": session.share.patient,
                "studies": list(session.share.studies),
                "allow_download": session.share.allow_download,
            },
            headers={"Cache-Control": "no-store"},
        )

    return api
