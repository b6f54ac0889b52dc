"""The one mapping from errors to FHIR: an OperationOutcome with the right status (R4 §3.1.0.4).

Authentication failures follow RFC 6750 §3: 401 with ``WWW-Authenticate: Bearer`` for a missing
or invalid token, 403 (``insufficient_scope`` where the scopes are what is missing) for a valid
token without access.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagebridge import errors
from imagebridge.auth.errors import InsufficientScope, InvalidToken, OAuthError
from imagebridge.fhir.resources import operation_outcome

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"
REALM = 'Bearer realm="imagebridge"'

_DOMAIN: list[tuple[type[errors.ImageBridgeError], int, str]] = [
    (errors.NotFound, 404, "not-found"),
    (errors.InvalidInput, 400, "invalid"),
    (errors.Conflict, 409, "conflict"),
    (errors.NotAcceptable, 406, "not-supported"),
    (errors.UnsupportedMediaType, 415, "not-supported"),
    (errors.StorageFailure, 503, "transient"),
]


def outcome(status: int, code: str, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        operation_outcome(code, reason), status_code=status, media_type=FHIR_JSON, headers=headers
    )


def _challenge(exc: OAuthError) -> str:
    if isinstance(exc, InvalidToken) and "no access token" in exc.description:
        return REALM
    description = exc.description.replace('"', "'")
    return f'{REALM}, error="{exc.error}", error_description="{description}"'


def install(app: FastAPI) -> None:
    @app.exception_handler(OAuthError)
    async def _auth(_request: Request, exc: OAuthError) -> JSONResponse:
        if isinstance(exc, InvalidToken):
            return outcome(401, "login", exc.description, {"WWW-Authenticate": _challenge(exc)})
        headers = {"WWW-Authenticate": _challenge(exc)} if isinstance(exc, InsufficientScope) else None
        return outcome(403, "forbidden", exc.description, headers)

    @app.exception_handler(errors.ImageBridgeError)
    async def _domain(_request: Request, exc: errors.ImageBridgeError) -> JSONResponse:
        for kind, status, code in _DOMAIN:
            if isinstance(exc, kind):
                return outcome(status, code, exc.reason)
        return outcome(500, "exception", exc.reason)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return outcome(400, "invalid", f"invalid request: {details}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return outcome(404, "not-found", "no such FHIR resource type or interaction; see /fhir/metadata")
        if exc.status_code == 405:
            return outcome(405, "not-supported", "this server is read-only for FHIR: read and search only")
        return outcome(exc.status_code, "processing", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return outcome(500, "exception", "internal error; the server logged the details")
