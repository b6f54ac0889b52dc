"""Mount the browser surfaces on the main app: /portal, /s (share recipients) and /viewer (OHIF)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from imagebridge.portal import admin, download, layout, routes, send, shares, viewer
from imagebridge.portal.session import CsrfFailure, SignInRequired


def mount(app: FastAPI) -> None:
    app.include_router(routes.router)
    app.include_router(viewer.router)
    app.include_router(shares.router)
    app.include_router(download.router)
    app.include_router(admin.router)
    app.include_router(send.router)

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
