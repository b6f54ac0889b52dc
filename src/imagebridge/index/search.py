"""Translate a classified query (PS3.4 §C.2.2.2) into SQL over the index.

Used by QIDO-RS and C-FIND alike, so both surfaces match identically.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, case, func, literal, or_, select, true

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
_STUDY_DATE, _STUDY_TIME, _MODALITIES_IN_STUDY = 0x00080020, 0x00080030, 0x00080061
_TOP = "\U0010ffff"
"""Sorts after every character: ``prefix <= x < prefix + _TOP`` is 'x starts with prefix'."""
_DAY_START, _DAY_END = "000000.000000", "235959.999999"


def supported(tag: int, level: Level) -> bool:
    """Whether the index can match on ``tag`` at ``level`` (its own level or above)."""
    field = FIELDS.get(tag)
    return field is not None and _DEPTH[field.level] <= _DEPTH[level]


@dataclass(frozen=True)
class _Dialect:
    """What differs between SQLite and PostgreSQL when matching text."""

    name: str

    def bytewise(self, column: Any) -> Any:
        """``column`` compared in code-point order: SQLite's BINARY, PostgreSQL's "C" collation.

        Migration 0004 gives the person-name, Patient ID and accession columns an index in that order.
        """
        return column.collate("C") if self.name == "postgresql" else column

    def starts_with(self, column: Any, prefix: str) -> ColumnElement[bool]:
        """Case-sensitive prefix test written as a range, so that an index serves it."""
        ordered = self.bytewise(column)
        return and_(ordered >= prefix, ordered < prefix + _TOP)

    def pattern(self, column: Any, pattern: str) -> ColumnElement[bool]:
        """``*``/``?`` wildcards (PS3.4 §C.2.2.2.4), case-sensitive on both databases; ``%``,
        ``_`` and ``[`` in the data are literal characters."""
        if self.name == "sqlite":  # SQLite's LIKE ignores case; GLOB does not.
            return column.op("GLOB")(pattern.replace("[", "[[]"))
        like = _escape_like(pattern).replace("*", "%").replace("?", "_")
        return column.like(like, escape="\\")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _wildcard(dialect: _Dialect, column: Any, pattern: str) -> ColumnElement[bool]:
    prefix = re.split(r"[*?]", pattern, maxsplit=1)[0]
    condition = dialect.pattern(column, pattern)
    return and_(dialect.starts_with(column, prefix), condition) if prefix else condition


def _pn_value(value: str) -> str:
    """A person name as matched: upper case, trailing empty components dropped per group."""
    return "=".join(group.rstrip("^ ") for group in value.upper().split("=")).rstrip("=")


def _person_name(dialect: _Dialect, column: Any, match: Match, fuzzy: bool) -> ColumnElement[bool]:
    """PN matching, case-insensitive (PS3.18 §8.3.4.6).

    A single value matches the whole name or its leading components (``DOE`` finds
    ``DOE^JOHN``; ``DOE^JOHN`` finds ``DOE^JOHN^^^``) in the first component group.
    With fuzzymatching every word of the value must begin some component of the name.
    """
    value = _pn_value(match.values[0])
    if fuzzy:
        words = [w for w in re.split(r"[\^ =,]+", value.replace("*", "").replace("?", "")) if w]
        return and_(true(), *(_begins_component(column, word) for word in words))
    if match.kind == "wildcard":
        return _wildcard(dialect, column, value)
    ordered = dialect.bytewise(column)
    alternatives = [ordered == value, dialect.starts_with(column, value + "^")]
    if "=" not in value:
        alternatives.append(dialect.starts_with(column, value + "="))
    return or_(*alternatives)


def _begins_component(column: Any, word: str) -> ColumnElement[bool]:
    escaped = _escape_like(word)
    patterns = [f"{escaped}%", *(f"%{sep}{escaped}%" for sep in ("^", " ", "="))]
    return or_(*(column.like(p, escape="\\") for p in patterns))


def _condition(dialect: _Dialect, field: Field, match: Match, fuzzy: bool) -> ColumnElement[bool]:
    column = field.column
    if match.kind == "universal":
        return true()
    if match.kind == "empty":
        return or_(column.is_(None), column == "")
    if field.kind is Kind.PERSON_NAME:
        return _person_name(dialect, column, match, fuzzy)
    if match.kind == "wildcard":
        return _wildcard(dialect, column, match.values[0])
    if match.kind == "range":
        return _range(column, match.low, match.high)
    values: tuple[Any, ...] = match.values
    if field.kind is Kind.INTEGER:
        values = tuple(int(v) for v in values)
    return column.in_(values) if len(values) > 1 else column == values[0]


def _range(column: Any, low: str | None, high: str | None) -> ColumnElement[bool]:
    if low is not None and high is not None and low > high:  # a time range across midnight
        return and_(column != "", or_(column >= low, column <= high))
    parts = [column != ""]
    if low is not None:
        parts.append(column >= low)
    if high is not None:
        parts.append(column <= high)
    return and_(*parts)


def _modalities_in_study(dialect: _Dialect, match: Match) -> ColumnElement[bool]:
    """ModalitiesInStudy (0008,0061) matches a study when any of its series matches."""
    if match.kind == "universal":
        return true()
    if match.kind == "empty":
        return studies.c.modalities == ""
    inner = select(series.c.study_pk)
    if match.kind == "wildcard":
        inner = inner.where(_wildcard(dialect, series.c.modality, match.values[0]))
    else:
        inner = inner.where(series.c.modality.in_(match.values))
    return studies.c.pk.in_(inner)


def _combined_study_datetime(date: Match, time: Match) -> ColumnElement[bool]:
    """StudyDate and StudyTime ranges read as one date-time range (PS3.4 §C.2.2.2.5.1):
    ``20200101-20200102`` with ``2200-0600`` is 1 January 22:00 to 2 January 06:00.
    A study without a time matches on its date alone."""
    parts = [studies.c.study_date != ""]
    has_time = studies.c.study_time != ""
    if date.low is not None:
        stamp = studies.c.study_date + case((has_time, studies.c.study_time), else_=literal(_DAY_END))
        parts.append(stamp >= date.low + (time.low or _DAY_START))
    if date.high is not None:
        stamp = studies.c.study_date + case((has_time, studies.c.study_time), else_=literal(_DAY_START))
        parts.append(stamp <= date.high + (time.high or _DAY_END))
    return and_(*parts)


def where_clauses(query: Query, dialect: str = "sqlite") -> list[ColumnElement[bool]]:
    """The SQL conditions of ``query``; raises InvalidQuery for values that cannot match."""
    sql = _Dialect(dialect)
    matches = {c.tag: classify(c.value, FIELDS[c.tag].kind) for c in query.criteria}
    clauses: list[ColumnElement[bool]] = []
    date, time = matches.get(_STUDY_DATE), matches.get(_STUDY_TIME)
    if date is not None and time is not None and date.kind == time.kind == "range":
        clauses.append(_combined_study_datetime(date, time))
        del matches[_STUDY_TIME]
    for tag, match in matches.items():
        if tag == _MODALITIES_IN_STUDY:
            clauses.append(_modalities_in_study(sql, match))
        else:
            clauses.append(_condition(sql, FIELDS[tag], match, query.fuzzy))
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


def _apply(query: Query, sql: Select[Any], dialect: str) -> Select[Any]:
    if query.level is Level.PATIENT:
        deeper = [c for c in query.criteria if FIELDS[c.tag].level is not Level.PATIENT]
        if deeper or query.study_uid:
            raise ValueError("patient-level queries match on patient attributes only")
    clauses = where_clauses(query, dialect)
    if clauses:
        sql = sql.where(*clauses)
    return sql


def search(engine: Engine, query: Query, visible: ColumnElement[bool] | None = None) -> list[dict[str, Any]]:
    """Rows matching ``query`` as dicts of column values (patient, study, series, instance).

    ``visible`` (``index.access.visible``) limits the rows to what the caller may see, in the
    query itself, so that ``limit`` and ``offset`` count visible rows only."""
    sql = _apply(query, _base(query.level), engine.dialect.name)
    if visible is not None:
        sql = sql.where(visible)
    sql = sql.order_by(*_ORDER[query.level]).offset(query.offset)
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


def representative_metadata_many(
    engine: Engine, *, study_pks: Iterable[int] = (), series_pks: Iterable[int] = ()
) -> dict[tuple[str, int], dict[str, Any]]:
    """One instance's metadata per study or series, in one query per level (no N+1 for a page).

    Keys are ``("study", pk)`` and ``("series", pk)``.
    """
    found: dict[tuple[str, int], dict[str, Any]] = {}
    first_series = (
        select(series.c.pk)
        .where(series.c.study_pk == studies.c.pk)
        .limit(1)
        .correlate(studies)
        .scalar_subquery()
    )
    in_study = select(instances.c.metadata).where(instances.c.series_pk == first_series).limit(1)
    in_series = select(instances.c.metadata).where(instances.c.series_pk == series.c.pk).limit(1)
    queries = [
        (
            "study",
            select(studies.c.pk, in_study.correlate(studies).scalar_subquery()),
            studies.c.pk,
            study_pks,
        ),
        (
            "series",
            select(series.c.pk, in_series.correlate(series).scalar_subquery()),
            series.c.pk,
            series_pks,
        ),
    ]
    with engine.connect() as conn:
        for level, sql, key, pks in queries:
            wanted = sorted(set(pks))
            if not wanted:
                continue
            for pk, text in conn.execute(sql.where(key.in_(wanted))):
                found[(level, pk)] = json.loads(text) if text else {}
    return found


__all__ = [
    "FIELDS",
    "Criterion",
    "count_patient_studies",
    "representative_metadata",
    "representative_metadata_many",
    "search",
    "supported",
    "where_clauses",
]
