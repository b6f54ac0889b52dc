"""The one mapping from the error tree to HTTP for DICOMweb (and any plain HTTP route)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagebridge import errors

log = logging.getLogger(__name__)

STATUS: list[tuple[type[errors.ImageBridgeError], int]] = [
    (errors.NotFound, 404),
    (errors.InvalidInput, 400),
    (errors.Conflict, 409),
    (errors.NotAcceptable, 406),
    (errors.UnsupportedMediaType, 415),
    (errors.StorageFailure, 503),
]


def status_of(error: errors.ImageBridgeError) -> int:
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 500


def problem(status: int, reason: str) -> JSONResponse:
    """An error body people and programs can read: ``{"status": 404, "error": "..."}``."""
    return JSONResponse({"status": status, "error": reason}, status_code=status)


def install(app: FastAPI) -> None:
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
