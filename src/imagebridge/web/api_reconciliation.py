"""The review queue of patient reconciliation as JSON at ``/api/reconciliation`` (issue 6).

Staff only: an administrator's token (a ``user/`` token of a user with role ``admin``), or a
backend-services token with a ``system/`` write scope. Tokens are resolved by
``app.state.authority`` into an ``auth.policy.Principal``, like every other surface.

- ``GET /api/reconciliation/queue`` → ``{"cases": [case...]}`` (pending, oldest first); each case
  carries the incoming demographics, the suggested local patient's, the score and per-field breakdown
- ``GET /api/reconciliation/{id}`` → the case (any state)
- ``POST /api/reconciliation/{id}/accept`` → link to the suggested patient
- ``POST /api/reconciliation/{id}/link`` ``{"patient_id": "...", "issuer": "..."}`` → link to another
- ``POST /api/reconciliation/{id}/new-patient`` → file under a new local patient

Errors are ``{"status", "error"}``: 400 bad input, 401 no or invalid token, 403 not staff,
404 unknown case or patient, 409 already decided.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from imagebridge.auth.authority import bearer_token
from imagebridge.auth.errors import InvalidToken
from imagebridge.auth.policy import Principal
from imagebridge.auth.users import Role
from imagebridge.dicomweb.errors import problem
from imagebridge.errors import InvalidInput
from imagebridge.reconcile.records import Case
from imagebridge.services.reconcile import Decision, Reconciler, reconciler_for


class NotStaff(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def staff_name(request: Request, principal: Principal) -> str | None:
    """Who is deciding, if the principal is staff: an administrator, or a system/ writer."""
    authorization = getattr(request.app.state, "authorization", None)
    if principal.subject and authorization is not None:
        user = authorization.users.get(principal.subject)
        if user is not None and user.role is Role.ADMIN:
            return f"user:{user.username}"
    if any(s.level == "system" and s.permissions & {"c", "u"} for s in principal.scopes.clinical):
        return f"client:{principal.client_id}"
    return None


def _staff(request: Request) -> str:
    try:
        token = bearer_token(request.headers.get("authorization"))
        principal: Principal = request.app.state.authority.principal(token)
    except InvalidToken as exc:
        raise NotStaff(401, exc.description) from exc
    name = staff_name(request, principal)
    if name is None:
        raise NotStaff(403, "only staff decide patient identity: an administrator, or a system/ write token")
    return name


Staff = Annotated[str, Depends(_staff)]


def _reconciler(request: Request) -> Reconciler:
    return reconciler_for(request.app.state.archive)


def case_json(reconciler: Reconciler, case: Case) -> dict[str, Any]:
    """A case with the demographics of its suggested local patient, for side-by-side review."""
    body = case.as_json()
    suggested = reconciler.records.patients.get(*case.candidate) if case.candidate else None
    body["suggested_patient"] = (
        None
        if suggested is None
        else {
            "patient_id": suggested.identity.patient_id,
            "issuer": suggested.identity.issuer,
            "name": suggested.identity.name,
            "birth_date": suggested.identity.birth_date,
            "sex": suggested.identity.sex,
        }
    )
    body["instances"] = reconciler.records.count_instances(case.pk)
    return body


def router() -> APIRouter:
    api = APIRouter(prefix="/api/reconciliation", tags=["reconciliation"])

    @api.get("/queue")
    def queue(request: Request, _who: Staff) -> JSONResponse:
        reconciler = _reconciler(request)
        return JSONResponse({"cases": [case_json(reconciler, c) for c in reconciler.records.cases()]})

    @api.get("/{case_id}")
    def one(request: Request, case_id: int, _who: Staff) -> JSONResponse:
        reconciler = _reconciler(request)
        return JSONResponse(case_json(reconciler, reconciler.records.case(case_id)))

    def decide(
        request: Request, case_id: int, who: str, decision: Decision, patient: Any = None
    ) -> JSONResponse:
        reconciler = _reconciler(request)
        case = reconciler.decide(case_id, decision, who, patient)
        return JSONResponse(case_json(reconciler, case))

    @api.post("/{case_id}/accept")
    def accept(request: Request, case_id: int, who: Staff) -> JSONResponse:
        return decide(request, case_id, who, "accept")

    @api.post("/{case_id}/link")
    def link(
        request: Request, case_id: int, who: Staff, body: Annotated[dict[str, Any] | None, Body()] = None
    ) -> JSONResponse:
        patient_id = (body or {}).get("patient_id")
        issuer = (body or {}).get("issuer", "")
        if not isinstance(patient_id, str) or not patient_id.strip() or not isinstance(issuer, str):
            raise InvalidInput('send {"patient_id": "...", "issuer": "..."} naming a local patient')
        return decide(request, case_id, who, "link", (patient_id.strip(), issuer.strip()))

    @api.post("/{case_id}/new-patient")
    def new_patient(request: Request, case_id: int, who: Staff) -> JSONResponse:
        return decide(request, case_id, who, "new-patient")

    return api


def mount(app: FastAPI) -> None:
    """The JSON API and the ``/portal/review`` page."""
    from imagebridge.portal import review

    app.include_router(router())
    app.include_router(review.router)

    @app.exception_handler(NotStaff)
    async def _not_staff(_request: Request, exc: NotStaff) -> JSONResponse:
        response = problem(exc.status, exc.reason)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="imagebridge", error="invalid_token"'
        return response
