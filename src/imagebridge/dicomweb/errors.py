"""The one mapping from the error tree to HTTP for DICOMweb (and any plain HTTP route).

Authentication and authorization follow RFC 6750 §3: a missing, malformed, unknown, expired or
revoked token is 401 with ``WWW-Authenticate: Bearer realm="imagebridge"`` (with
``error="invalid_token"`` when a token was sent, §3.1); a valid token without access is 403,
with ``error="insufficient_scope"`` in the challenge when the scopes are what is missing.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagebridge import errors
from imagebridge.auth.errors import InsufficientScope, InvalidToken, OAuthError

log = logging.getLogger(__name__)

STATUS: list[tuple[type[errors.ImageBridgeError], int]] = [
    (errors.NotFound, 404),
    (errors.InvalidInput, 400),
    (errors.Conflict, 409),
    (errors.NotAuthorizedToStore, 403),
    (errors.NotAcceptable, 406),
    (errors.UnsupportedMediaType, 415),
    (errors.StorageFailure, 503),
]


def status_of(error: errors.ImageBridgeError) -> int:
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 500


def problem(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error body people and programs can read: ``{"status": 404, "error": "..."}``."""
    return JSONResponse({"status": status, "error": reason}, status_code=status, headers=headers)


REALM = 'Bearer realm="imagebridge"'


def challenge(exc: OAuthError) -> str:
    """The ``WWW-Authenticate`` value for a refused token (RFC 6750 §3); a request without any
    token gets the bare challenge (§3.1: no error code when no authentication was attempted)."""
    if isinstance(exc, InvalidToken) and exc.description.startswith("no access token"):
        return REALM
    description = exc.description.replace('"', "'").replace("\\", "/")
    return f'{REALM}, error="{exc.error}", error_description="{description}"'


def oauth_problem(exc: OAuthError) -> JSONResponse:
    if isinstance(exc, InvalidToken):
        return problem(401, exc.description, {"WWW-Authenticate": challenge(exc)})
    headers = {"WWW-Authenticate": challenge(exc)} if isinstance(exc, InsufficientScope) else None
    return problem(403, exc.description, headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(OAuthError)
    async def _oauth(_request: Request, exc: OAuthError) -> JSONResponse:
        return oauth_problem(exc)

    @app.exception_handler(errors.ImageBridgeError)
    async def _domain(_request: Request, exc: errors.ImageBridgeError) -> JSONResponse:
        return problem(status_of(exc), exc.reason)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return problem(400, f"invalid request: {details}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and reason == "Not Found":
            reason = "no such resource; the DICOMweb root is /dicomweb (see /docs)"
        if exc.status_code == 405:
            reason = "this method is not allowed on this resource"
        return problem(exc.status_code, reason)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the server logged the details and nothing was changed")
