"""The FHIR R4 surface at /fhir: a sub-application with its own error mapping (OperationOutcome).

Routes parse parameters, authenticate the bearer token, ask ``auth.policy`` and render; they
decide nothing themselves.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement

from imagebridge.auth import policy
from imagebridge.auth.authority import bearer_token
from imagebridge.auth.errors import AccessDenied, InsufficientScope
from imagebridge.auth.policy import Principal, Target
from imagebridge.auth.server import AuthorizationServer, Endpoints
from imagebridge.dicom.matching import Level
from imagebridge.errors import InvalidQuery, NotFound
from imagebridge.fhir import errors, identifiers, integrated, paging, resources, search
from imagebridge.fhir.index import FhirIndex
from imagebridge.index import access
from imagebridge.index.schema import fhir_patient_ids, studies
from imagebridge.services.archive import Archive

IMAGING_STUDY_PARAMS = {"patient", "subject", "identifier", "_lastUpdated", "started", "modality", "_include"}
PATIENT_PARAMS = {"_id", "identifier", "name", "birthdate"}
IGNORED = {"_format", "_pretty"}
_UID = r"^[0-9.]{1,64}$"


def mount(parent: FastAPI, archive: Archive, authorization: AuthorizationServer) -> None:
    app = FastAPI(title="imagebridge FHIR R4", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.archive = archive
    app.state.authorization = authorization
    app.state.authority = getattr(parent.state, "authority", authorization)
    app.state.index = FhirIndex(archive.engine)
    app.state.started = datetime.now(UTC).isoformat(timespec="seconds")
    errors.install(app)
    _discovery_routes(app)
    _resource_routes(app)
    from imagebridge.fhir import audit  # AuditEvent routes; they use the dependencies defined here

    audit.install(app)
    parent.mount("/fhir", app)


def endpoints(request: Request) -> Endpoints:
    archive: Archive = request.app.state.archive
    base = archive.settings.public_base_url or f"{request.url.scheme}://{request.url.netloc}"
    return Endpoints(base.rstrip("/"))


def principal(request: Request) -> Principal:
    """RFC 6750 §2.1: the bearer token in the Authorization header, resolved by the authorization server."""
    return integrated.authority(request).principal(bearer_token(request.headers.get("authorization")))


Where = Annotated[Endpoints, Depends(endpoints)]
Caller = Annotated[Principal, Depends(principal)]


def fhir(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=errors.FHIR_JSON)


def require(caller: Principal, target: Target) -> None:
    decision = policy.check(caller, target)
    if decision.allowed:
        return
    if decision.error == "insufficient_scope":
        raise InsufficientScope(decision.reason)
    raise AccessDenied(decision.reason)


async def search_pairs(request: Request) -> list[tuple[str, str]]:
    """The search parameters of a GET, or of a POST to ``_search`` with a form body (R4 §3.1.1.1)."""
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise InvalidQuery("a POST _search sends its parameters as application/x-www-form-urlencoded")
        form = await request.form()
        pairs += [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    return pairs


SearchPairs = Annotated[list[tuple[str, str]], Depends(search_pairs)]


def params(pairs: list[tuple[str, str]], allowed: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in pairs:
        if key in IGNORED:
            continue
        if key not in allowed:
            raise InvalidQuery(f"search parameter '{key}' is not supported here; see /fhir/metadata")
        found.setdefault(key, []).append(value)
    return found


def _discovery_routes(app: FastAPI) -> None:
    @app.get("/metadata")
    def metadata(request: Request, where: Where) -> JSONResponse:
        return fhir(integrated.capability_statement(request, where, request.app.state.started))

    @app.get("/.well-known/smart-configuration")
    def smart_configuration(request: Request, where: Where) -> JSONResponse:
        return JSONResponse(integrated.smart_configuration(request, where))


def _resource_routes(app: FastAPI) -> None:
    @app.get("/ImagingStudy")
    @app.post("/ImagingStudy/_search")
    def search_imaging_studies(
        request: Request, pairs: SearchPairs, caller: Caller, where: Where
    ) -> JSONResponse:
        page, pairs = paging.take(pairs)
        query = params(pairs, IMAGING_STUDY_PARAMS)
        refs = query.get("patient", []) + query.get("subject", [])
        if not refs:
            raise InvalidQuery(
                "ImagingStudy search needs a patient parameter; population search is not offered"
            )
        wanted = {search.patient_reference(v) for v in search.split_values(refs)}
        if len(wanted) != 1 or len(refs) != 1:
            raise InvalidQuery("search one patient at a time")
        patient_id = integrated.archive_patient(request, wanted.pop())
        require(caller, Target("ImagingStudy", "search", patient=patient_id))
        include = _include(query.get("_include", []))
        conditions: list[ColumnElement[bool]] = [fhir_patient_ids.c.fhir_id == patient_id]
        conditions += search.study_identifier(query.get("identifier", []))
        conditions += search.last_updated(query.get("_lastUpdated", []))
        conditions += search.started(query.get("started", []))
        conditions += search.modality(query.get("modality", []))
        conditions.append(access.visible(request.app.state.archive.engine, policy.reach(caller), Level.STUDY))
        rows = request.app.state.index.studies(conditions)
        visible = [
            r
            for r in rows
            if policy.check(caller, Target("ImagingStudy", "search", r.patient.fhir_id, r.uid)).allowed
        ]
        matches = integrated.with_subjects(request, visible, [resources.imaging_study(r) for r in visible])
        includes = [resources.endpoint(f"{where.base}/dicomweb")] if include and matches else []
        url = f"{where.fhir}/ImagingStudy"
        return fhir(paging.searchset(url, where.fhir, pairs, page, matches, includes))

    @app.get("/ImagingStudy/{study_id}")
    def read_imaging_study(request: Request, study_id: str, caller: Caller) -> JSONResponse:
        rows = request.app.state.index.studies([studies.c.study_uid == study_id]) if _is_uid(study_id) else []
        if not rows:
            require(caller, Target("ImagingStudy", "read"))
            raise NotFound(f"ImagingStudy/{study_id} is not known")
        engine = request.app.state.archive.engine
        require(caller, access.target(engine, "read", study_id) or Target("ImagingStudy", "read"))
        return fhir(integrated.with_subjects(request, rows, [resources.imaging_study(rows[0])])[0])

    @app.get("/Patient")
    @app.post("/Patient/_search")
    def search_patients(request: Request, caller: Caller, pairs: SearchPairs, where: Where) -> JSONResponse:
        page, pairs = paging.take(pairs)
        query = params(pairs, PATIENT_PARAMS)
        require(caller, Target("Patient", "search"))
        conditions: list[ColumnElement[bool]] = [
            fhir_patient_ids.c.fhir_id.in_(search.split_values([v])) for v in query.get("_id", [])
        ]
        conditions += identifiers.patient_identifier(query.get("identifier", []))
        conditions += search.patient_names(query.get("name", []))
        conditions += search.birth_dates(query.get("birthdate", []))
        rows = request.app.state.index.patients(conditions)
        visible = [r for r in rows if policy.check(caller, Target("Patient", "search", r.fhir_id)).allowed]
        matches = [resources.patient(r) for r in visible]
        return fhir(paging.searchset(f"{where.fhir}/Patient", where.fhir, pairs, page, matches, []))

    @app.get("/Patient/{patient_id}")
    def read_patient(request: Request, patient_id: str, caller: Caller) -> JSONResponse:
        require(caller, Target("Patient", "read", patient=patient_id))
        rows = request.app.state.index.patients([fhir_patient_ids.c.fhir_id == patient_id])
        if not rows:
            raise NotFound(f"Patient/{patient_id} is not known")
        return fhir(resources.patient(rows[0]))

    @app.get("/Endpoint/{endpoint_id}")
    def read_endpoint(endpoint_id: str, caller: Caller, where: Where) -> JSONResponse:
        require(caller, Target("Endpoint", "read"))
        if endpoint_id != resources.ENDPOINT_ID:
            raise NotFound(f"Endpoint/{endpoint_id} is not known")
        return fhir(resources.endpoint(f"{where.base}/dicomweb"))


def _include(values: list[str]) -> bool:
    for value in search.split_values(values):
        if value not in ("ImagingStudy:endpoint", "ImagingStudy:endpoint:Endpoint"):
            raise InvalidQuery(f"_include={value} is not supported; ImagingStudy:endpoint is")
    return bool(values)


def _is_uid(text: str) -> bool:
    return re.match(_UID, text) is not None
