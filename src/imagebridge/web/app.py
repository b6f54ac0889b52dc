"""Build the ASGI application from an Archive (composition only; no logic lives here)."""

from __future__ import annotations

import warnings
from typing import Any

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from imagebridge import __version__
from imagebridge.audit import log as audit_log
from imagebridge.audit.context import AuditContextMiddleware
from imagebridge.audit.store import AuditStore
from imagebridge.auth.authority import TokenAuthority
from imagebridge.auth.server import AuthorizationServer
from imagebridge.dicomweb import errors as http_errors
from imagebridge.dicomweb.router import build_router
from imagebridge.fhir import app as fhir
from imagebridge.oauth import app as oauth
from imagebridge.portal import app as portal
from imagebridge.services.archive import Archive
from imagebridge.services.sharing import Sharing, with_share_tokens
from imagebridge.web import api_reconciliation, api_shares, api_uploads


def create_app(archive: Archive) -> FastAPI:
    app = FastAPI(
        title="imagebridge",
        version=__version__,
        summary="DICOMweb archive: STOW-RS, QIDO-RS, WADO-RS",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.archive = archive
    http_errors.install(app)
    _audit(app, archive)
    if archive.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=archive.settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Accept",
                "Content-Type",
                "If-None-Match",
                "Range",
                # resumable uploads (/api/uploads): where a chunk starts, and the declared size
                "Upload-Offset",
                "Upload-Length",
                "Content-Range",
            ],
            expose_headers=[
                "ETag",
                "Warning",
                "Content-Location",
                "Content-Range",
                "WWW-Authenticate",
                "Location",
                "Upload-Offset",
                "Upload-Length",
                "Retry-After",
            ],
        )
    app.include_router(build_router())
    authorization = oauth.mount(app, archive)
    app.state.authority = _authority(app, archive, authorization)
    app.state.authority = with_share_tokens(app.state.authority, authorization)
    fhir.mount(app, archive, authorization)
    portal.mount(app)
    app.state.sharing = Sharing(archive, authorization)
    app.include_router(api_shares.router())
    api_reconciliation.mount(app)
    api_uploads.mount(app)
    _health_routes(app, archive)
    _unique_operation_ids(app)
    return app


def _unique_operation_ids(app: FastAPI) -> None:
    """OpenAPI wants every operationId unique; FastAPI gives a route that serves several methods
    (GET and HEAD, PUT and PATCH) one id for all of them, ending in whichever of its methods a set
    yields first. Each operation's id ends in its own method instead (the same in every process)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Duplicate Operation ID")
            schema = FastAPI.openapi(app)
        for path_item in schema.get("paths", {}).values():
            methods = [
                m for m in path_item if isinstance(path_item[m], dict) and "operationId" in path_item[m]
            ]
            for method in methods:
                operation_id = path_item[method]["operationId"]
                for suffix in (f"_{m}" for m in methods):
                    if operation_id.endswith(suffix):
                        operation_id = operation_id.removesuffix(suffix)
                        break
                path_item[method]["operationId"] = f"{operation_id}_{method}"
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _authority(app: FastAPI, archive: Archive, local: AuthorizationServer) -> TokenAuthority:
    """Standalone: the local authorization server. Integrated (``[ehr]``): the EHR, by introspection."""
    settings = archive.settings.ehr
    if settings is None:
        return local
    from imagebridge.auth.clients import AccessGrant
    from imagebridge.auth.remote import EhrAuthority
    from imagebridge.fhir.identifiers import issuer_of, system_of
    from imagebridge.fhir.index import fhir_id
    from imagebridge.web.retry import RetryAfter

    def policy(client_id: str) -> AccessGrant:
        client = local.clients.get(client_id)
        return client.policy if client else AccessGrant()

    app.add_middleware(RetryAfter, seconds=settings.retry_after)
    return EhrAuthority(
        settings, patient_key=fhir_id, issuer_of=issuer_of, system_of=system_of, client_policy=policy
    )


def _audit(app: FastAPI, archive: Archive) -> None:
    """The durable access log: every request's records go to this archive's store, with its address."""
    store = AuditStore.of(archive.engine)
    app.state.audit = store
    app.add_middleware(AuditContextMiddleware, store=store)
    audit_log.attach(store)


def _health_routes(app: FastAPI, archive: Archive) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        try:
            with archive.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse(
                {"ready": False, "error": f"index unreachable: {type(exc).__name__}"}, status_code=503
            )
        return JSONResponse({"ready": True})

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return JSONResponse(
            {
                "service": "imagebridge",
                "version": __version__,
                "dicomweb": "/dicomweb",
                "api_docs": "/docs",
            }
        )
