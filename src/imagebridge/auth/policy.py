"""The one place that decides whether a principal may reach a target (ARCHITECTURE.md "Layers").

Every surface (FHIR, DICOMweb, the portal) builds a :class:`Principal` from whatever
authenticated the caller and a :class:`Target` naming the data, and asks :func:`decide` (or
:func:`check`, which also audits). Searches that run in SQL ask :func:`reach` for the same rules
as data (:class:`Reach`), so that a page of results is filtered in the query, never afterwards.

The rules (SMART App Launch 2.2 scopes; SMART Imaging Access "Required token checks"):

1. The scopes must cover the interaction: ``s`` search, ``r`` read, ``c`` create (STOW-RS),
   ``d`` delete, on the resource type or ``*``, at some level. Otherwise 403 ``insufficient_scope``.
   DICOMweb is ``ImagingStudy``: QIDO-RS is search, WADO-RS (metadata, frames, rendered,
   thumbnail, bulk data) is read.
2. ``patient/`` scopes reach only the token's ``patient``; a token without patient context gets
   nothing from them ("Missing patient context SHALL NOT be treated as authorization").
3. ``user/`` scopes follow the user's access: clinicians and administrators with no patient list
   reach every patient; otherwise only the listed ones.
4. ``system/`` scopes follow the client's pre-authorized policy (patients and studies); the scope
   alone grants nothing.
5. An ``Endpoint`` holds no patient data (it is the DICOMweb base URL): any valid token may read it.
6. ``Principal.studies`` (a patient's share) limits every level to those studies.
7. Delete is an administrator's operation: ``user/`` scopes only for a user whose role is
   ``admin``; ``system/`` scopes when the client's policy reaches the patient and study;
   ``patient/`` scopes never.
8. **Restricted studies.** A study, series or instance can be restricted (a sensitive category,
   ``imagebridge study restrict``); a target is restricted when it or anything inside it, or the
   study around it, is. Only these see restricted data: the patient themselves (a principal
   whose ``fhirUser`` is ``Patient/<the study's patient>``), administrators (role ``admin``),
   and ``system/`` clients whose policy names the study explicitly by UID. Proxies, clinicians
   and shares do not: there is no break-glass right in this server (an administrator lifts a
   restriction with ``imagebridge study unrestrict``). A whole-study or whole-series request
   with any restricted part is refused whole, never answered in part.
9. **Exclusions.** A study can be left out of one user's view (``imagebridge user
   exclude-study``, typically a proxy); that user's tokens neither find nor read it.

A study-level target is allowed only if its patient is; a search for a patient the principal may
not reach is refused (403), never answered with an empty Bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from imagebridge.audit import log as audit
from imagebridge.auth.clients import ALL, AccessGrant
from imagebridge.auth.scopes import LEVELS, Level, Scopes, parse

Interaction = Literal["read", "search", "create", "delete"]
_PERMISSION = {"read": "r", "search": "s", "create": "c", "delete": "d"}
ADMIN = "admin"


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
    role: str | None = None
    """The signed-in user's role (``auth.users.Role`` value) when known; ``admin`` sees restricted studies."""

    @property
    def self_patient(self) -> str | None:
        """The patient this principal *is* (``fhirUser`` = ``Patient/<id>``), not one it acts for."""
        if self.fhir_user and self.share is None:
            kind, _, ident = self.fhir_user.rstrip("/").rpartition("/")
            if kind.endswith("Patient") and ident:
                return ident
        return None


def anonymous() -> Principal:
    """The caller on a server that serves DICOMweb without tokens (``dicomweb_anonymous``): everything."""
    return Principal(
        client_id="anonymous",
        scopes=parse("system/*.cruds"),
        client_policy=AccessGrant(ALL, ALL),
        role=ADMIN,
    )


@dataclass(frozen=True)
class Target:
    resource_type: str
    interaction: Interaction
    patient: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    restricted: bool = False
    """The target, something inside it or the study around it is restricted (rule 8)."""
    hidden_from: tuple[str, ...] = ()
    """Users who have this study excluded from their view (rule 9)."""


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
    levels = _levels(principal, target.resource_type, target.interaction)
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
    return Decision(False, "; ".join(dict.fromkeys(denials)))


def _levels(principal: Principal, resource_type: str, interaction: Interaction) -> list[Level]:
    permission = _PERMISSION[interaction]
    return [lv for lv in LEVELS if principal.scopes.grants(lv, resource_type, permission)]


def _refusal(principal: Principal, target: Target, level: Level) -> str | None:
    """Why ``level`` scopes do not reach ``target``, or None if they do."""
    reason = _precondition(principal, level, target.interaction)
    if reason is not None:
        return reason
    if (
        principal.studies is not None
        and target.study_uid is not None
        and target.study_uid not in principal.studies
    ):
        return "the grant covers only the studies that were shared"
    if target.patient is None:
        return None if target.study_uid is None else "the study's patient is unknown"
    reason = _patient_refusal(principal, target, level)
    if reason is not None:
        return reason
    if target.restricted and not _sees_restricted(principal, target, level):
        return "the study (or part of it) is restricted; only the patient and administrators may see it"
    if principal.subject is not None and principal.subject in target.hidden_from:
        return "the study is excluded from this user's view"
    return None


def _precondition(principal: Principal, level: Level, interaction: Interaction) -> str | None:
    if level == "patient" and principal.patient is None:
        return "patient/ scopes need a patient in the token's launch context"
    if level == "user" and principal.subject is None:
        return "user/ scopes need a signed-in user"
    if interaction == "delete":
        if level == "patient":
            return "patient/ scopes never delete; deleting is an administrator's operation"
        if level == "user" and principal.role != ADMIN:
            return "only administrators delete"
    return None


def _patient_refusal(principal: Principal, target: Target, level: Level) -> str | None:
    assert target.patient is not None
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


def _sees_restricted(principal: Principal, target: Target, level: Level) -> bool:
    if principal.role == ADMIN:
        return True
    if principal.self_patient is not None and principal.self_patient == target.patient:
        return True
    studies = principal.client_policy.studies
    return level == "system" and studies != ALL and target.study_uid in studies


@dataclass(frozen=True)
class Reach:
    """What one scope level lets a principal find, as data a query turns into SQL.

    A row is visible when its patient and study are within the limits, it is not excluded
    from ``excluded_for``'s view, and it is not restricted unless an exception below applies.
    """

    patients: tuple[str, ...] | None = None
    """FHIR Patient ids; None: every patient."""
    studies: tuple[str, ...] | None = None
    """Study Instance UIDs; None: every study."""
    restricted_patients: tuple[str, ...] | None = ()
    """Patients whose restricted studies stay visible; None: everyone's (administrators)."""
    restricted_studies: tuple[str, ...] = ()
    """Restricted studies visible by explicit grant (a system/ client's policy naming them)."""
    excluded_for: str | None = None
    """The user whose excluded studies are hidden."""

    @property
    def unlimited(self) -> bool:
        return (
            self.patients is None
            and self.studies is None
            and self.restricted_patients is None
            and self.excluded_for is None
        )


def reach(principal: Principal, interaction: Interaction = "search") -> list[Reach]:
    """One :class:`Reach` per scope level that grants ``interaction`` on ImagingStudy and whose
    preconditions hold; the visible rows are the union. An empty list: nothing is visible."""
    reaches = []
    for level in _levels(principal, "ImagingStudy", interaction):
        if _precondition(principal, level, interaction) is None:
            reaches.append(_reach(principal, level))
    return reaches


def _reach(principal: Principal, level: Level) -> Reach:
    admin = principal.role == ADMIN
    mine = (principal.self_patient,) if principal.self_patient else ()
    restricted_patients: tuple[str, ...] | None = None if admin else mine
    if level == "patient":
        assert principal.patient is not None
        return Reach((principal.patient,), principal.studies, restricted_patients, (), principal.subject)
    if level == "user":
        return Reach(principal.user_patients, principal.studies, restricted_patients, (), principal.subject)
    policy = principal.client_policy
    patients = None if policy.patients == ALL else tuple(policy.patients)
    granted = None if policy.studies == ALL else tuple(policy.studies)
    studies = _intersect(granted, principal.studies)
    return Reach(patients, studies, restricted_patients, granted or (), principal.subject)


def _intersect(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(x for x in a if x in b)


def sees_everything(principal: Principal, interaction: Interaction) -> bool:
    """Whether some level reaches every patient and study, so that "not found" tells nothing
    the principal could not have learnt anyway (a 404 instead of a 403)."""
    return any(r.patients is None and r.studies is None for r in reach(principal, interaction))


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
        share=principal.share,
        restricted=target.restricted or None,
    )
    return decision
