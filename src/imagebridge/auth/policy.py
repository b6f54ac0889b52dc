"""The one place that decides whether a principal may reach a target (ARCHITECTURE.md "Layers").

Every surface (FHIR now, DICOMweb and DIMSE next) builds a :class:`Principal` from whatever
authenticated the caller and a :class:`Target` naming the data, and asks :func:`decide`.

The rules (SMART App Launch 2.2 scopes; SMART Imaging Access "Required token checks"):

1. The scopes must cover the interaction: ``s`` for search, ``r`` for read, on the resource
   type or ``*``, at some level. Otherwise 403 ``insufficient_scope``.
2. ``patient/`` scopes reach only the token's ``patient``; a token without patient context gets
   nothing from them ("Missing patient context SHALL NOT be treated as authorization").
3. ``user/`` scopes follow the user's access: clinicians and administrators with no patient list
   reach every patient; otherwise only the listed ones.
4. ``system/`` scopes follow the client's pre-authorized policy (patients and studies); the scope
   alone grants nothing.
5. An ``Endpoint`` holds no patient data (it is the DICOMweb base URL): any valid token may read it.

A study-level target is allowed only if its patient is; a search for a patient the principal may
not reach is refused (403), never answered with an empty Bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from imagebridge.audit import log as audit
from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.scopes import LEVELS, Level, Scopes

Interaction = Literal["read", "search"]
_PERMISSION = {"read": "r", "search": "s"}


@dataclass(frozen=True)
class Principal:
    """Who is asking, as the token says: its scopes, launch context and the access behind them."""

    client_id: str
    scopes: Scopes
    patient: str | None = None
    fhir_user: str | None = None
    subject: str | None = None
    user_patients: tuple[str, ...] | None = None
    """For ``user/`` scopes: the patients the user may reach; None means every patient."""
    client_policy: AccessGrant = field(default_factory=AccessGrant)
    studies: tuple[str, ...] | None = None
    """A limit on top of everything else: only these studies (a patient's share); None: no limit."""
    share: str | None = None
    """The id of the patient's share this token was issued for (``services.sharing``), else None."""
    download: bool = True
    """Whether copies may be taken (zip downloads, sending on); False for a share without download."""


@dataclass(frozen=True)
class Target:
    resource_type: str
    interaction: Interaction
    patient: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    level: Level | None = None
    error: str | None = None
    """RFC 6750 §3.1 code for a denial: ``insufficient_scope`` or None (plain 403)."""

    def __bool__(self) -> bool:
        return self.allowed


PATIENT_DATA = frozenset({"ImagingStudy", "Patient", "AuditEvent"})


def decide(principal: Principal, target: Target) -> Decision:
    permission = _PERMISSION[target.interaction]
    levels = [lv for lv in LEVELS if principal.scopes.grants(lv, target.resource_type, permission)]
    if target.resource_type not in PATIENT_DATA:
        if levels or principal.scopes.clinical:
            return Decision(True, f"{target.resource_type} holds no patient data", None)
        return Decision(False, "the token carries no FHIR resource scope", None, "insufficient_scope")
    if not levels:
        needed = f"{target.resource_type}.{permission}"
        return Decision(False, f"the token's scopes do not grant {needed}", None, "insufficient_scope")
    denials = []
    for level in levels:
        reason = _refusal(principal, target, level)
        if reason is None:
            return Decision(True, f"{level}/ scope and {level} access cover the request", level)
        denials.append(reason)
    return Decision(False, "; ".join(denials))


def _refusal(principal: Principal, target: Target, level: Level) -> str | None:
    """Why ``level`` scopes do not reach ``target``, or None if they do."""
    if level == "patient" and principal.patient is None:
        return "patient/ scopes need a patient in the token's launch context"
    if level == "user" and principal.subject is None:
        return "user/ scopes need a signed-in user"
    if (
        principal.studies is not None
        and target.study_uid is not None
        and target.study_uid not in principal.studies
    ):
        return "the grant covers only the studies that were shared"
    if target.patient is None:
        return None if target.study_uid is None else "the study's patient is unknown"
    if level == "patient":
        return None if target.patient == principal.patient else "the token is for another patient"
    if level == "user":
        allowed = principal.user_patients
        return (
            None if allowed is None or target.patient in allowed else "the user has no access to this patient"
        )
    policy = principal.client_policy
    if not policy.allows_patient(target.patient):
        return "the client's pre-authorized policy does not include this patient"
    if target.study_uid is not None and not policy.allows_study(target.study_uid):
        return "the client's pre-authorized policy does not include this study"
    return None


def check(principal: Principal, target: Target) -> Decision:
    """:func:`decide`, with the decision audited, allow and deny alike."""
    decision = decide(principal, target)
    audit.record(
        "allow" if decision.allowed else "deny",
        decision.reason,
        client_id=principal.client_id,
        user=principal.subject,
        token_patient=principal.patient,
        resource=target.resource_type,
        interaction=target.interaction,
        patient=target.patient,
        study=target.study_uid,
        series=target.series_uid,
        instance=target.sop_uid,
    )
    return decision
