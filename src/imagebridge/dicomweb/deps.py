"""Request dependencies shared by the DICOMweb routes, as named Annotated aliases.

Access control lives in one dependency, :func:`authorize`, installed on the whole ``/dicomweb``
router so that no route (present or future) is served without it. It authenticates the bearer
token (RFC 6750 §2.1) through ``app.state.authority``, works out the interaction from the route
(QIDO-RS search, STOW-RS create, delete, everything else read) and asks ``auth.policy``:

- a read or delete of a study, series or instance is decided before any byte is produced, from
  the study's owner, restriction and exclusions in the index (one indexed query);
- a search is answered with :class:`Access.visible`, the caller's reach as SQL for the query;
- a store is checked per instance by STOW-RS (:meth:`Access.may_store`).

Existence is not leaked across patients: a UID that is not in the archive is 404 only for a
caller that reaches every patient and study; any other caller gets the same 403 as for data it
may not see, with a body that does not repeat the UIDs it asked for.

With ``Settings.dicomweb_anonymous`` (a trusted network) every request is served as
:func:`auth.policy.anonymous`, without tokens, lookups or audit records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import ColumnElement

from imagebridge.auth import policy
from imagebridge.auth.authority import bearer_token
from imagebridge.auth.errors import AccessDenied, InsufficientScope
from imagebridge.auth.policy import Interaction, Principal, Target
from imagebridge.dicom.matching import Level
from imagebridge.index import access
from imagebridge.services.archive import Archive

NO_ACCESS = "this token does not give access to the requested study, series or instance"


async def _archive(request: Request) -> Archive:
    """``async`` (no I/O): FastAPI runs a plain ``def`` dependency in a worker thread, a hop per request."""
    archive: Archive = request.app.state.archive
    return archive


async def _base_url(request: Request) -> str:
    """The DICOMweb root as the client sees it (PS3.18 §8.2: the Base URI)."""
    archive: Archive = request.app.state.archive
    if archive.settings.public_base_url:
        return archive.settings.public_base_url.rstrip("/") + "/dicomweb"
    return str(request.base_url).rstrip("/") + "/dicomweb"


def caller(request: Request) -> Principal:
    """The principal behind the request's bearer token, resolved only by ``app.state.authority``."""
    archive: Archive = request.app.state.archive
    if archive.settings.dicomweb_anonymous:
        return policy.anonymous()
    principal: Principal = request.app.state.authority.principal(
        bearer_token(request.headers.get("authorization"))
    )
    return principal


@dataclass(frozen=True)
class Access:
    """What :func:`authorize` found: who asks, and for searches what they may see."""

    principal: Principal
    archive: Archive
    reaches: tuple[policy.Reach, ...] | None = None
    """For a search: the caller's reach; None: everything (anonymous)."""

    def visible(self, level: Level) -> ColumnElement[bool] | None:
        """The caller's reach as SQL for a query at ``level``; None when nothing is hidden."""
        if self.reaches is None:
            return None
        return access.visible(self.archive.engine, self.reaches, level)

    @property
    def anonymous(self) -> bool:
        return self.archive.settings.dicomweb_anonymous

    def may_store(self, patient: str, study_uid: str) -> policy.Decision:
        """Whether an instance of ``patient`` may be stored into ``study_uid`` (STOW-RS, per
        instance): the caller must reach the instance's patient and the study as it stands."""
        if self.anonymous:
            return policy.Decision(True, "DICOMweb is served without tokens")
        existing = access.target(self.archive.engine, "create", study_uid)
        if existing is not None and existing.patient != patient:
            decision = policy.check(self.principal, existing)
            if not decision.allowed:
                return decision
        base = existing or Target(access.RESOURCE, "create")
        return policy.check(self.principal, dataclasses.replace(base, patient=patient, study_uid=study_uid))


def interaction_of(request: Request) -> Interaction:
    """The policy interaction of a DICOMweb route, from the module that serves it."""
    route = request.scope.get("route")
    module = getattr(getattr(route, "endpoint", None), "__module__", "")
    if module.endswith(".qido"):
        return "search"
    if module.endswith(".stow"):
        return "create"
    if request.method == "DELETE":
        return "delete"
    return "read"


def authorize(request: Request) -> Access:
    """Authenticate and authorize one DICOMweb request (see the module docstring)."""
    archive: Archive = request.app.state.archive
    principal = caller(request)
    if archive.settings.dicomweb_anonymous:
        return Access(principal, archive)
    interaction = interaction_of(request)
    params = request.path_params
    study = params.get("study")
    if interaction == "search":
        _require(principal, Target(access.RESOURCE, "search"))
        return Access(principal, archive, tuple(policy.reach(principal, "search")))
    if interaction == "create":
        _require(principal, Target(access.RESOURCE, "create"))
        return Access(principal, archive)
    if study is None:
        raise AccessDenied(NO_ACCESS)
    _require_data(principal, archive, interaction, study, params.get("series"), params.get("instance"))
    return Access(principal, archive)


def _require(principal: Principal, target: Target) -> None:
    decision = policy.check(principal, target)
    if decision.allowed:
        return
    if decision.error == "insufficient_scope":
        raise InsufficientScope(decision.reason)
    raise AccessDenied(decision.reason)


def _require_data(
    principal: Principal,
    archive: Archive,
    interaction: Interaction,
    study: str,
    series: str | None,
    instance: str | None,
) -> None:
    """Refuse a read or delete of data outside the caller's access, before a byte is produced."""
    target = access.target(archive.engine, interaction, study, series, instance)
    if target is None:
        target = Target(access.RESOURCE, interaction, study_uid=study, series_uid=series, sop_uid=instance)
        decision = policy.check(principal, target)
        if decision.error == "insufficient_scope":
            raise InsufficientScope(decision.reason)
        if policy.sees_everything(principal, interaction):
            return  # the route answers 404: the caller could have seen it, were it there
        raise AccessDenied(NO_ACCESS)
    decision = policy.check(principal, target)
    if decision.allowed:
        return
    if decision.error == "insufficient_scope":
        raise InsufficientScope(decision.reason)
    raise AccessDenied(NO_ACCESS)


ArchiveDep = Annotated[Archive, Depends(_archive)]
BaseUrl = Annotated[str, Depends(_base_url)]
Caller = Annotated[Access, Depends(authorize)]
"""The authorized request: on every /dicomweb route (router dependency); declare it to use it."""
