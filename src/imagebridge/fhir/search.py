"""FHIR search parameters (R4 §3.1.1.4 "search") turned into conditions on the index.

Each parser takes the raw values of one parameter and returns SQL conditions; a malformed
value is :class:`~imagebridge.errors.InvalidQuery` (400 with an OperationOutcome).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from sqlalchemy import ColumnElement, exists, false, or_

from imagebridge.errors import InvalidQuery
from imagebridge.index.catalog import person_name_search
from imagebridge.index.schema import fhir_patient_ids, patients, series, studies

DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID = "urn:dicom:uid"
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class DateRange:
    """The instants a FHIR date value covers, [start, end), at its own precision (R4 §3.1.1.4.6)."""

    prefix: str
    start: datetime
    end: datetime


def split_values(raw: list[str]) -> list[str]:
    """Repeated parameters AND; commas inside one OR (R4 §3.1.1.4.1). Escaped commas are kept."""
    return [v.replace("\\,", ",") for value in raw for v in re.split(r"(?<!\\),", value) if v != ""]


def patient_reference(value: str) -> str:
    """``123``, ``Patient/123`` or ``https://host/fhir/Patient/123`` → ``123``."""
    text = unquote(value.strip())
    if "/" in text:
        head, _, tail = text.rstrip("/").rpartition("/")
        if not head.endswith("Patient"):
            raise InvalidQuery(f"'{value}' is not a reference to a Patient")
        text = tail
    if not _ID.match(text):
        raise InvalidQuery(f"'{value}' is not a Patient id")
    return text


def date_range(value: str) -> DateRange:
    prefix, text = ("eq", value)
    if value[:2] in PREFIXES:
        prefix, text = value[:2], value[2:]
    match = _DATE.match(text)
    if match is None:
        raise InvalidQuery(
            f"'{value}' is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime), with an optional prefix"
        )
    try:
        start, end = _bounds(match)
    except ValueError as exc:
        raise InvalidQuery(f"'{value}' is not a valid date") from exc
    return DateRange(prefix, start, end)


def _bounds(m: re.Match[str]) -> tuple[datetime, datetime]:
    year = int(m["y"])
    if m["m"] is None:
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    month = int(m["m"])
    if m["d"] is None:
        start = datetime(year, month, 1, tzinfo=UTC)
        return start, datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    day = datetime(year, month, int(m["d"]), tzinfo=UTC)
    if m["H"] is None:
        return day, day + timedelta(days=1)
    fraction = (m["f"] or "").ljust(6, "0")[:6]
    moment = day.replace(
        hour=int(m["H"]), minute=int(m["M"]), second=int(m["S"] or 0), microsecond=int(fraction)
    )
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hours, minutes = (int(x) for x in m["tz"][1:].split(":"))
        moment -= sign * timedelta(hours=hours, minutes=minutes)
    step = timedelta(microseconds=1) if m["f"] else timedelta(seconds=1) if m["S"] else timedelta(minutes=1)
    return moment, moment + step


def compare(column: ColumnElement, r: DateRange, fmt: object = None) -> ColumnElement[bool]:
    """R4 §3.1.1.4.6 prefix semantics for a column holding an instant."""
    start, end = (r.start, r.end) if fmt is None else (fmt(r.start), fmt(r.end))  # type: ignore[operator]
    match r.prefix:
        case "eq":
            return (column >= start) & (column < end)
        case "ne":
            return (column < start) | (column >= end)
        case "gt" | "sa":
            return column >= end
        case "ge":
            return column >= start
        case "lt" | "eb":
            return column < start
        case _:
            return column < end


def last_updated(values: list[str]) -> list[ColumnElement[bool]]:
    return [
        or_(*(compare(studies.c.updated_at, date_range(v)) for v in split_values([raw]))) for raw in values
    ]


def _dicom_datetime(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S.%f")


def started(values: list[str]) -> list[ColumnElement[bool]]:
    """StudyDate + StudyTime as written (DICOM local time; a zone in the query value is not applied)."""
    column = studies.c.study_date.concat(studies.c.study_time)
    conditions: list[ColumnElement[bool]] = []
    for raw in values:
        ranges = [date_range(v) for v in split_values([raw])]
        naive = [DateRange(r.prefix, r.start, r.end) for r in ranges]
        conditions.append(
            (studies.c.study_date != "") & or_(*(compare(column, r, _dicom_datetime) for r in naive))
        )
    return conditions


def study_identifier(values: list[str]) -> list[ColumnElement[bool]]:
    """``urn:oid:<StudyInstanceUID>``, optionally with the ``urn:dicom:uid|`` system."""
    conditions: list[ColumnElement[bool]] = []
    for raw in values:
        uids = []
        for value in split_values([raw]):
            system, bar, code = value.rpartition("|")
            if bar and system not in (DICOM_UID, ""):
                continue
            uids.append(code.removeprefix("urn:oid:"))
        conditions.append(studies.c.study_uid.in_(uids) if uids else false())
    return conditions


def modality(values: list[str]) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for raw in values:
        codes = []
        for value in split_values([raw]):
            system, bar, code = value.rpartition("|")
            if bar and system not in (DCM, ""):
                continue
            codes.append(code)
        has = exists().where(series.c.study_pk == studies.c.pk, series.c.modality.in_(codes))
        conditions.append(has if codes else false())
    return conditions


def patient_ids(values: list[str]) -> list[ColumnElement[bool]]:
    return [
        fhir_patient_ids.c.fhir_id.in_([patient_reference(v) for v in split_values([raw])]) for raw in values
    ]


def patient_names(values: list[str]) -> list[ColumnElement[bool]]:
    """R4 string search: case-insensitive, starting any part of the name (DICOM PN components)."""
    conditions: list[ColumnElement[bool]] = []
    for raw in values:
        alternatives = []
        for value in split_values([raw]):
            text = person_name_search(value.strip()).replace("%", "").replace("_", "")
            if not text:
                raise InvalidQuery("name needs some text")
            alternatives.append(
                patients.c.name_search.like(f"{text}%") | patients.c.name_search.like(f"%^{text}%")
            )
        conditions.append(or_(*alternatives))
    return conditions


def birth_dates(values: list[str]) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for raw in values:
        ranges = [date_range(v) for v in split_values([raw])]
        column = patients.c.birth_date
        conditions.append(
            (column != "") & or_(*(compare(column, r, lambda d: d.strftime("%Y%m%d")) for r in ranges))
        )
    return conditions
