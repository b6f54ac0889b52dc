"""Mount the browser surfaces on the main app: /portal, /s (share recipients) and /viewer (OHIF).

Errors on these paths are pages with a way forward (``layout.problem``), never JSON or a stack
trace; every other path keeps the error handlers the app already had.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagebridge.dicomweb.errors import status_of
from imagebridge.errors import ImageBridgeError
from imagebridge.portal import admin, download, layout, routes, send, shares, viewer
from imagebridge.portal.session import CsrfFailure, SignInRequired

log = logging.getLogger(__name__)
PAGES = ("/portal", "/s/")
Handler = Callable[[Request, Exception], Awaitable[Response]]


def mount(app: FastAPI) -> None:
    app.include_router(routes.router)
    app.include_router(viewer.router)
    app.include_router(shares.router)
    app.include_router(download.router)
    app.include_router(admin.router)
    app.include_router(send.router)
    _session_errors(app)
    for kind in (StarletteHTTPException, RequestValidationError, ImageBridgeError, Exception):
        _as_pages(app, kind)


def _session_errors(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(_request: Request, exc: SignInRequired) -> Response:
        if exc.kind == "share" and exc.share:
            return RedirectResponse(f"/s/{exc.share}", status_code=303)
        return RedirectResponse("/portal/sign-in", status_code=303)

    @app.exception_handler(CsrfFailure)
    async def _csrf(_request: Request, _exc: CsrfFailure) -> Response:
        return layout.problem(
            "The form had expired",
            "That form was old or did not come from this site, so nothing was changed.",
            ("/portal", "Go back and try again"),
            status=403,
        )


def _as_pages(app: FastAPI, kind: type[Exception]) -> None:
    previous: Handler | None = app.exception_handlers.get(kind)  # type: ignore[assignment]

    async def handle(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith(PAGES):
            return page_for(request, exc)
        if previous is None:
            raise exc
        return await previous(request, exc)

    app.add_exception_handler(kind, handle)


def page_for(request: Request, exc: Exception) -> Response:
    """The error page of a browser path: what happened in plain words, and where to go."""
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return layout.problem("Page not found", "There is no page at this address.", status=404)
        if exc.status_code == 405:
            return layout.problem("Not available", "This page cannot be used that way.", status=405)
        return layout.problem("Cannot continue", str(exc.detail), status=exc.status_code)
    if isinstance(exc, RequestValidationError):
        return layout.problem(
            "Something is missing", "The address or the form lacks something this page needs.", status=400
        )
    if isinstance(exc, ImageBridgeError):
        return layout.problem("Cannot continue", exc.reason, status=status_of(exc))
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return layout.problem(
        "Something went wrong",
        "The server could not finish this page. Nothing was changed; please try again in a moment.",
        status=500,
    )
