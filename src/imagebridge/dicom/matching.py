"""Attribute matching as PS3.4 §C.2.2.2 defines it, shared by QIDO-RS and C-FIND.

A query is a list of :class:`Criterion`; each names a tag and the value as the
requester wrote it. :func:`classify` turns the value into one of the standard's
matching types, which the index then translates into SQL.
"""

from __future__ import annotations

import calendar
import datetime
import enum
import re
from dataclasses import dataclass, field

from imagebridge.errors import InvalidQuery


class Level(enum.Enum):
    """Query/Retrieve levels (PS3.4 §C.3)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class Kind(enum.Enum):
    """How an indexed attribute is compared."""

    UID = "uid"
    TEXT = "text"
    PERSON_NAME = "pn"
    DATE = "date"
    TIME = "time"
    INTEGER = "int"
    CODE = "code"


@dataclass(frozen=True)
class Criterion:
    tag: int
    value: str


@dataclass(frozen=True)
class Match:
    """A classified matching key (PS3.4 §C.2.2.2.1-.5)."""

    kind: str  # single, list, wildcard, range, empty, universal
    values: tuple[str, ...] = ()
    low: str | None = None
    high: str | None = None


@dataclass
class Query:
    level: Level
    criteria: list[Criterion] = field(default_factory=list)
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    study_uid: str | None = None
    series_uid: str | None = None


_DATE = re.compile(r"^\d{4}(\d{2}(\d{2})?)?$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
UNIVERSAL = Match("universal")
"""A key whose value is only ``*`` matches everything (PS3.4 §C.2.2.2.3: universal matching)."""


def classify(value: str, kind: Kind, list_separators: str = ",\\") -> Match:
    """The matching type of ``value`` for an attribute compared as ``kind``.

    Raises InvalidQuery when the value cannot be a value of that kind.
    """
    if value == '""':
        return Match("empty")
    if value.strip("*") == "" and value:
        return UNIVERSAL
    if kind in (Kind.DATE, Kind.TIME):
        return _range(value, kind)
    if kind in (Kind.UID, Kind.CODE, Kind.INTEGER) and any(s in value for s in list_separators):
        parts = tuple(p.strip() for p in re.split("[" + re.escape(list_separators) + "]", value) if p.strip())
        if not parts:
            raise InvalidQuery(f"'{value}' is an empty list of values")
        for part in parts:
            _check_single(part, kind)
        return Match("list", parts)
    if kind in (Kind.TEXT, Kind.PERSON_NAME, Kind.CODE) and ("*" in value or "?" in value):
        return Match("wildcard", (value,))
    _check_single(value, kind)
    return Match("single", (value,))


def _check_single(value: str, kind: Kind) -> None:
    if kind is Kind.INTEGER and not re.fullmatch(r"[+-]?\d+", value.strip()):
        raise InvalidQuery(f"'{value}' is not an integer")
    if kind is Kind.UID and (len(value) > 64 or not _UID.match(value)):
        raise InvalidQuery(f"'{value}' is not a valid UID (digits and dots, at most 64 characters)")


def _range(value: str, kind: Kind) -> Match:
    """Date and time keys: a single value, a list, or a range ``a-b``, ``-b``, ``a-`` (PS3.4 §C.2.2.2.5).

    A value that is less precise than the attribute (``2020`` for a date, ``10`` for a
    time) covers the whole period it names, so it becomes a range. A time range may end
    before it starts: ``2200-0600`` crosses midnight.
    """
    if "\\" in value:
        values = tuple(v.strip() for v in value.split("\\") if v.strip())
        if not values or any("-" in v for v in values):
            raise InvalidQuery(f"'{value}' is not a list of dates or times")
        return Match("list", tuple(_single(v, kind) for v in values))
    if "-" not in value:
        low, high = _bound(value, kind, upper=False), _bound(value, kind, upper=True)
        return Match("single", (low,)) if low == high else Match("range", low=low, high=high)
    if value.count("-") > 1:
        form = "YYYYMMDD" if kind is Kind.DATE else "HHMMSS"
        raise InvalidQuery(f"'{value}' is not a range: write start-end, -end or start-, with {form} values")
    low, _, high = (v.strip() for v in value.partition("-"))
    if not low and not high:
        raise InvalidQuery(f"'{value}' is not a range: give a start, an end or both")
    match = Match(
        "range",
        low=_bound(low, kind, upper=False) if low else None,
        high=_bound(high, kind, upper=True) if high else None,
    )
    if kind is Kind.DATE and match.low and match.high and match.low > match.high:
        raise InvalidQuery(f"the range '{value}' ends before it starts")
    return match


def _single(value: str, kind: Kind) -> str:
    low = _bound(value, kind, upper=False)
    if low != _bound(value, kind, upper=True):
        raise InvalidQuery(f"'{value}' in a list must be a complete value")
    return low


def _bound(value: str, kind: Kind, *, upper: bool) -> str:
    value = value.strip()
    if kind is Kind.DATE:
        return date_bound(value, upper=upper)
    text = value.replace(":", "")
    if not _TIME.match(text) or not _valid_time(text):
        raise InvalidQuery(f"'{value}' is not a time in the form HHMMSS.FFFFFF")
    return normalise_time(text, upper=upper)


def date_bound(value: str, *, upper: bool) -> str:
    """A DA value (``YYYYMMDD``; ``YYYY`` or ``YYYYMM`` name a whole year or month) as the
    first or last day it covers. Raises InvalidQuery for anything else, such as month 13."""
    if len(value) == 10 and value[4] == "." and value[7] == ".":
        value = value.replace(".", "")  # ACR-NEMA form YYYY.MM.DD (PS3.5 §6.2, DA)
    if not _DATE.match(value):
        raise InvalidQuery(f"'{value}' is not a date in the form YYYYMMDD")
    year = int(value[:4])
    month = int(value[4:6]) if len(value) >= 6 else (12 if upper else 1)
    try:
        last = calendar.monthrange(year, month)[1] if 1 <= month <= 12 and year >= 1 else 0
        day = int(value[6:8]) if len(value) == 8 else (last if upper else 1)
        datetime.date(year, month, day)
    except ValueError as exc:
        raise InvalidQuery(f"'{value}' is not a date that exists") from exc
    return f"{year:04d}{month:02d}{day:02d}"


def _valid_time(text: str) -> bool:
    whole = text.partition(".")[0]
    hours, minutes, seconds = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    return hours < 24 and minutes < 60 and seconds < 61


def normalise_time(value: str, *, upper: bool = False) -> str:
    """A TM value padded to ``HHMMSS.FFFFFF`` so that string order is time order.

    As an upper bound, missing parts mean 'to the end of' (``12`` is 12:59:59.999999).
    """
    text = value.strip().replace(":", "")
    if not text or not _TIME.match(text):
        return text
    whole, _, fraction = text.partition(".")
    filler = "5959" if upper else "0000"
    whole = (whole + filler[max(len(whole) - 2, 0) :])[:6] if len(whole) < 6 else whole[:6]
    fraction = (fraction + ("9" if upper else "0") * 6)[:6]
    return f"{whole}.{fraction}"
