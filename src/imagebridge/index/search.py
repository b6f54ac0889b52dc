"""Translate a classified query (PS3.4 §C.2.2.2) into SQL over the index.

Used by QIDO-RS and C-FIND alike, so both surfaces match identically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, exists, false, func, or_, select

from imagebridge.dicom.matching import Criterion, Kind, Level, Match, Query, classify
from imagebridge.index.schema import instances, patients, series, studies


@dataclass(frozen=True)
class Field:
    column: Any
    kind: Kind
    level: Level


FIELDS: dict[int, Field] = {
    0x00100010: Field(patients.c.name_search, Kind.PERSON_NAME, Level.PATIENT),
    0x00100020: Field(patients.c.patient_id, Kind.TEXT, Level.PATIENT),
    0x00100021: Field(patients.c.issuer, Kind.TEXT, Level.PATIENT),
    0x00100030: Field(patients.c.birth_date, Kind.DATE, Level.PATIENT),
    0x00100040: Field(patients.c.sex, Kind.CODE, Level.PATIENT),
    0x0020000D: Field(studies.c.study_uid, Kind.UID, Level.STUDY),
    0x00080020: Field(studies.c.study_date, Kind.DATE, Level.STUDY),
    0x00080030: Field(studies.c.study_time, Kind.TIME, Level.STUDY),
    0x00080050: Field(studies.c.accession_number, Kind.TEXT, Level.STUDY),
    0x00080090: Field(studies.c.referring_search, Kind.PERSON_NAME, Level.STUDY),
    0x00081030: Field(studies.c.description, Kind.TEXT, Level.STUDY),
    0x00200010: Field(studies.c.study_id, Kind.TEXT, Level.STUDY),
    0x00080061: Field(None, Kind.CODE, Level.STUDY),  # ModalitiesInStudy: matched through series
    0x0020000E: Field(series.c.series_uid, Kind.UID, Level.SERIES),
    0x00080060: Field(series.c.modality, Kind.CODE, Level.SERIES),
    0x00200011: Field(series.c.series_number, Kind.INTEGER, Level.SERIES),
    0x0008103E: Field(series.c.description, Kind.TEXT, Level.SERIES),
    0x00400244: Field(series.c.performed_date, Kind.DATE, Level.SERIES),
    0x00400245: Field(series.c.performed_time, Kind.TIME, Level.SERIES),
    0x00080018: Field(instances.c.sop_uid, Kind.UID, Level.IMAGE),
    0x00080016: Field(instances.c.sop_class_uid, Kind.UID, Level.IMAGE),
    0x00200013: Field(instances.c.instance_number, Kind.INTEGER, Level.IMAGE),
    0x00280010: Field(instances.c.rows, Kind.INTEGER, Level.IMAGE),
    0x00280011: Field(instances.c.columns, Kind.INTEGER, Level.IMAGE),
    0x00280008: Field(instances.c.number_of_frames, Kind.INTEGER, Level.IMAGE),
}
_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


def supported(tag: int, level: Level) -> bool:
    """Whether the index can match on ``tag`` at ``level`` (its own level or above)."""
    field = FIELDS.get(tag)
    return field is not None and _DEPTH[field.level] <= _DEPTH[level]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _wildcard(column: Any, pattern: str) -> ColumnElement[bool]:
    like = _escape_like(pattern).replace("*", "%").replace("?", "_")
    return column.like(like, escape="\\")


def _person_name(column: Any, match: Match, fuzzy: bool) -> ColumnElement[bool]:
    value = match.values[0].upper()
    if fuzzy:
        word = _escape_like(value.replace("*", "").replace("?", "").strip("^ "))
        starts = [f"{word}%", f"%^{word}%", f"% {word}%", f"%={word}%"]
        return or_(*(column.like(p, escape="\\") for p in starts))
    if match.kind == "wildcard":
        return _wildcard(column, value)
    return (
        or_(column == value, column.like(_escape_like(value) + "^%", escape="\\"))
        if "^" not in value
        else column == value
    )


def _condition(field: Field, match: Match, fuzzy: bool) -> ColumnElement[bool]:
    column = field.column
    if match.kind == "empty":
        return or_(column.is_(None), column == "")
    if field.kind is Kind.PERSON_NAME:
        return _person_name(column, match, fuzzy)
    if match.kind == "wildcard":
        return _wildcard(column, match.values[0])
    if match.kind == "range":
        parts = []
        if match.low is not None:
            parts.append(column >= match.low)
        if match.high is not None:
            parts.append(column <= (match.high + "~" if field.kind is Kind.DATE else match.high))
        return and_(*parts, column != "")
    values: tuple[Any, ...] = match.values
    if field.kind is Kind.INTEGER:
        values = tuple(int(v) for v in values)
    if field.kind is Kind.DATE:
        return or_(*(column.like(v + "%") for v in values))
    return column.in_(values) if len(values) > 1 else column == values[0]


def _modalities_in_study(match: Match) -> ColumnElement[bool]:
    values = match.values if match.kind in ("single", "list") else ()
    inner = select(series.c.pk).where(series.c.study_pk == studies.c.pk)
    if match.kind == "wildcard":
        inner = inner.where(_wildcard(series.c.modality, match.values[0]))
    elif values:
        inner = inner.where(series.c.modality.in_(values))
    else:
        return false()
    return exists(inner)


def where_clauses(query: Query) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    for criterion in query.criteria:
        field = FIELDS[criterion.tag]
        match = classify(criterion.value, field.kind)
        if criterion.tag == 0x00080061:
            clauses.append(_modalities_in_study(match))
        else:
            clauses.append(_condition(field, match, query.fuzzy))
    if query.study_uid:
        clauses.append(studies.c.study_uid == query.study_uid)
    if query.series_uid:
        clauses.append(series.c.series_uid == query.series_uid)
    return clauses


def _labelled(table: Any, prefix: str) -> list[Any]:
    return [c.label(f"{prefix}_{c.name}") for c in table.c]


def _base(level: Level) -> Select[Any]:
    """Rows carry every column, prefixed by level: ``patient_*``, ``study_*``, ``series_*``, ``instance_*``."""
    if level is Level.PATIENT:
        return select(*_labelled(patients, "patient")).select_from(patients)
    query = select(*_labelled(patients, "patient"), *_labelled(studies, "study")).select_from(
        studies.join(patients, studies.c.patient_pk == patients.c.pk)
    )
    if level is Level.STUDY:
        return query
    query = query.add_columns(*_labelled(series, "series")).join(series, series.c.study_pk == studies.c.pk)
    if level is Level.SERIES:
        return query
    return query.add_columns(*_labelled(instances, "instance")).join(
        instances, instances.c.series_pk == series.c.pk
    )


_ORDER = {
    Level.PATIENT: (patients.c.pk,),
    Level.STUDY: (studies.c.pk,),
    Level.SERIES: (studies.c.pk, series.c.series_number, series.c.pk),
    Level.IMAGE: (series.c.pk, instances.c.instance_number, instances.c.pk),
}


def _apply(query: Query, sql: Select[Any]) -> Select[Any]:
    if query.level is Level.PATIENT:
        deeper = [c for c in query.criteria if FIELDS[c.tag].level is not Level.PATIENT]
        if deeper or query.study_uid:
            raise ValueError("patient-level queries match on patient attributes only")
    clauses = where_clauses(query)
    if clauses:
        sql = sql.where(*clauses)
    return sql


def search(engine: Engine, query: Query) -> list[dict[str, Any]]:
    """Rows matching ``query`` as dicts of column values (patient, study, series, instance)."""
    sql = _apply(query, _base(query.level)).order_by(*_ORDER[query.level]).offset(query.offset)
    if query.limit is not None:
        sql = sql.limit(query.limit)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sql)]


def count_patient_studies(engine: Engine, patient_pk: int) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).where(studies.c.patient_pk == patient_pk)) or 0)


def representative_metadata(
    engine: Engine, *, study_pk: int | None = None, series_pk: int | None = None
) -> dict[str, Any]:
    """The full metadata of one instance of a study or series, for attributes not kept per level."""
    sql = select(instances.c.metadata)
    if series_pk is not None:
        sql = sql.where(instances.c.series_pk == series_pk)
    else:
        sql = sql.join(series, instances.c.series_pk == series.c.pk).where(series.c.study_pk == study_pk)
    with engine.connect() as conn:
        text = conn.scalar(sql.limit(1))
    return json.loads(text) if text else {}


__all__ = ["FIELDS", "Criterion", "count_patient_studies", "representative_metadata", "search", "supported"]
