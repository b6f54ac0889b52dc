"""The index side of access control: who owns a UID, what is restricted, and SQL for a :class:`Reach`.

``auth.policy`` decides; this module only reads and writes the facts it decides on. Every
lookup here is by a unique or indexed key (a Study Instance UID, a Patient ID with its issuer),
never a scan, because it runs before every WADO-RS response.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    false,
    insert,
    or_,
    select,
    true,
)
from sqlalchemy.exc import IntegrityError

from imagebridge.auth.policy import Interaction, Reach, Target
from imagebridge.dicom.matching import Level
from imagebridge.errors import Conflict, InvalidInput, NotFound
from imagebridge.fhir.index import FhirIndex, fhir_id
from imagebridge.index.schema import (
    access_exclusions,
    access_restrictions,
    fhir_patient_ids,
    instances,
    patients,
    series,
    studies,
)

RESOURCE = "ImagingStudy"


def target(
    engine: Engine,
    interaction: Interaction,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Target | None:
    """The policy target for a study, series or instance, with its owner, restriction and
    exclusions, in one indexed query; None when the study is not in the archive."""
    query = _target_statement(series_uid is not None, sop_uid is not None and series_uid is not None)
    with engine.connect() as conn:
        rows = conn.execute(query, {"t_study": study_uid, "t_series": series_uid, "t_sop": sop_uid}).all()
    if not rows:
        return None
    return Target(
        RESOURCE,
        interaction,
        patient=fhir_id(rows[0].patient_id, rows[0].issuer),
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        restricted=bool(rows[0].restricted),
        hidden_from=tuple(row.username for row in rows if row.username is not None),
    )


@functools.cache
def _target_statement(with_series: bool, with_sop: bool) -> Select[Any]:
    """The statement of :func:`target`, built once per shape: it runs before every DICOMweb
    read, and building and cache-keying it cost more CPU than running it. One row per user the
    study is excluded for (an outer join), or one row with no user."""
    restricted = exists().where(
        _restriction_within(
            bindparam("t_study"),
            bindparam("t_series") if with_series else None,
            bindparam("t_sop") if with_sop else None,
        )
    )
    return (
        select(
            patients.c.patient_id,
            patients.c.issuer,
            restricted.label("restricted"),
            access_exclusions.c.username,
        )
        .select_from(
            studies.join(patients, studies.c.patient_pk == patients.c.pk).outerjoin(
                access_exclusions, access_exclusions.c.study_uid == studies.c.study_uid
            )
        )
        .where(studies.c.study_uid == bindparam("t_study"))
    )


def _restriction_within(study_uid: Any, series_uid: Any, sop_uid: Any) -> ColumnElement[bool]:
    """Restrictions that touch the target: the study's own, or any inside it that the target
    covers (a whole study covers every series; a series every instance of it)."""
    r = access_restrictions.c
    clause = r.study_uid == study_uid
    if series_uid is not None:
        clause = and_(clause, or_(r.series_uid == "", r.series_uid == series_uid))
        if sop_uid is not None:
            clause = and_(clause, or_(r.sop_uid == "", r.sop_uid == sop_uid))
    return clause


def visible(engine: Engine, reaches: Sequence[Reach], level: Level) -> ColumnElement[bool]:
    """SQL over ``studies`` and ``patients`` (and ``series``/``instances`` below study level)
    that is true for exactly the rows some reach shows (``auth.policy.reach``)."""
    if not reaches:
        return false()
    if any(r.unlimited for r in reaches):
        return true()
    wanted = {p for r in reaches if r.patients is not None for p in r.patients}
    pairs = patient_keys(engine, wanted)
    return or_(*(_one(r, level, pairs) for r in reaches))


def _one(reach: Reach, level: Level, pairs: dict[str, tuple[str, str]]) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if reach.patients is not None:
        known = [pairs[p] for p in reach.patients if p in pairs]
        parts.append(
            or_(
                false(), *(and_(patients.c.patient_id == pid, patients.c.issuer == iss) for pid, iss in known)
            )
        )
    if reach.studies is not None:
        parts.append(studies.c.study_uid.in_(reach.studies) if reach.studies else false())
    if reach.restricted_patients is not None:
        parts.append(_unrestricted_or_allowed(reach, level, pairs))
    if reach.excluded_for is not None:
        parts.append(
            ~exists().where(
                access_exclusions.c.study_uid == studies.c.study_uid,
                access_exclusions.c.username == reach.excluded_for,
            )
        )
    return and_(true(), *parts)


def _unrestricted_or_allowed(
    reach: Reach, level: Level, pairs: dict[str, tuple[str, str]]
) -> ColumnElement[bool]:
    series_uid = series.c.series_uid if level in (Level.SERIES, Level.IMAGE) else None
    sop_uid = instances.c.sop_uid if level is Level.IMAGE else None
    alternatives: list[ColumnElement[bool]] = [
        ~exists().where(_restriction_within(studies.c.study_uid, series_uid, sop_uid))
    ]
    assert reach.restricted_patients is not None
    for p in reach.restricted_patients:
        if p in pairs:
            pid, iss = pairs[p]
            alternatives.append(and_(patients.c.patient_id == pid, patients.c.issuer == iss))
    if reach.restricted_studies:
        alternatives.append(studies.c.study_uid.in_(reach.restricted_studies))
    return or_(*alternatives)


def patient_keys(engine: Engine, ids: set[str]) -> dict[str, tuple[str, str]]:
    """(Patient ID, Issuer) for FHIR Patient ids; patients filed since the ids were last
    assigned get theirs first, so a new patient's token finds their studies at once."""
    ids = {i for i in ids if i}
    reach_of = _patient_keys(engine, ids)
    if ids - reach_of.keys():
        FhirIndex(engine).assign_ids()
        reach_of = _patient_keys(engine, ids)
    return reach_of


def _patient_keys(engine: Engine, ids: set[str]) -> dict[str, tuple[str, str]]:
    if not ids:
        return {}
    query = select(
        fhir_patient_ids.c.fhir_id, fhir_patient_ids.c.patient_id, fhir_patient_ids.c.issuer
    ).where(fhir_patient_ids.c.fhir_id.in_(sorted(ids)))
    with engine.connect() as conn:
        return {r.fhir_id: (r.patient_id, r.issuer) for r in conn.execute(query)}


# --- restrictions and exclusions (the CLI and the portal manage them) ---------------------------


@dataclass(frozen=True)
class Restriction:
    study_uid: str
    series_uid: str
    sop_uid: str
    category: str
    reason: str
    created_by: str
    created_at: datetime

    @property
    def uid(self) -> str:
        return self.sop_uid or self.series_uid or self.study_uid

    @property
    def level(self) -> str:
        return "instance" if self.sop_uid else "series" if self.series_uid else "study"


def locate(engine: Engine, uid: str) -> tuple[str, str, str]:
    """(study, series, instance) UIDs for a study, series or instance UID in the archive."""
    with engine.connect() as conn:
        if conn.scalar(select(studies.c.pk).where(studies.c.study_uid == uid)) is not None:
            return uid, "", ""
        row = conn.execute(
            select(studies.c.study_uid)
            .join(series, series.c.study_pk == studies.c.pk)
            .where(series.c.series_uid == uid)
        ).first()
        if row is not None:
            return row.study_uid, uid, ""
        row = conn.execute(
            select(studies.c.study_uid, series.c.series_uid)
            .select_from(instances.join(series, instances.c.series_pk == series.c.pk))
            .join(studies, series.c.study_pk == studies.c.pk)
            .where(instances.c.sop_uid == uid)
        ).first()
    if row is None:
        raise NotFound(f"{uid} is not a study, series or instance in the archive")
    return row.study_uid, row.series_uid, uid


def restrict(engine: Engine, uid: str, category: str, reason: str, by: str) -> Restriction:
    if not category.strip() or not reason.strip():
        raise InvalidInput("a restriction needs a category and a reason")
    study_uid, series_uid, sop_uid = locate(engine, uid)
    row = {
        "study_uid": study_uid,
        "series_uid": series_uid,
        "sop_uid": sop_uid,
        "category": category.strip(),
        "reason": reason.strip(),
        "created_by": by,
        "created_at": datetime.now(UTC),
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(access_restrictions).values(**row))
    except IntegrityError as exc:
        raise Conflict(f"{uid} is restricted already; unrestrict it first to change the category") from exc
    return Restriction(**row)  # type: ignore[arg-type]


def unrestrict(engine: Engine, uid: str) -> int:
    """Lift the restriction on ``uid`` (a study, series or instance UID); NotFound if none."""
    r = access_restrictions.c
    with engine.begin() as conn:
        count = conn.execute(
            delete(access_restrictions).where(
                or_(
                    and_(r.study_uid == uid, r.series_uid == "", r.sop_uid == ""),
                    and_(r.series_uid == uid, r.sop_uid == ""),
                    r.sop_uid == uid,
                )
            )
        ).rowcount
    if not count:
        raise NotFound(f"{uid} has no restriction")
    return int(count)


def restricted_studies(engine: Engine, study_uids: Sequence[str]) -> set[str]:
    """Those of ``study_uids`` that are restricted, whole or in part."""
    if not study_uids:
        return set()
    r = access_restrictions.c
    query = select(r.study_uid).where(r.study_uid.in_(list(study_uids))).distinct()
    with engine.connect() as conn:
        return {row.study_uid for row in conn.execute(query)}


def restrictions(engine: Engine) -> list[Restriction]:
    r = access_restrictions.c
    query = select(
        r.study_uid, r.series_uid, r.sop_uid, r.category, r.reason, r.created_by, r.created_at
    ).order_by(r.created_at, r.pk)
    with engine.connect() as conn:
        return [Restriction(**row._mapping) for row in conn.execute(query)]


def exclude(engine: Engine, username: str, study_uid: str, reason: str = "") -> None:
    study_uid = locate(engine, study_uid)[0]
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(access_exclusions).values(
                    username=username, study_uid=study_uid, reason=reason, created_at=datetime.now(UTC)
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"study {study_uid} is already excluded from {username}'s view") from exc


def include(engine: Engine, username: str, study_uid: str) -> None:
    with engine.begin() as conn:
        count = conn.execute(
            delete(access_exclusions).where(
                access_exclusions.c.username == username, access_exclusions.c.study_uid == study_uid
            )
        ).rowcount
    if not count:
        raise NotFound(f"study {study_uid} is not excluded from {username}'s view")


def exclusions(engine: Engine, username: str | None = None) -> list[tuple[str, str, str]]:
    """(username, study UID, reason) of every exclusion, or one user's."""
    e = access_exclusions.c
    query = select(e.username, e.study_uid, e.reason).order_by(e.username, e.pk)
    if username is not None:
        query = query.where(e.username == username)
    with engine.connect() as conn:
        return [(r.username, r.study_uid, r.reason) for r in conn.execute(query)]
