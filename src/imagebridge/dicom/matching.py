"""Attribute matching as PS3.4 §C.2.2.2 defines it, shared by QIDO-RS and C-FIND.

A query is a list of :class:`Criterion`; each names a tag and the value as the
requester wrote it. :func:`classify` turns the value into one of the standard's
matching types, which the index then translates into SQL.
"""

from __future__ import annotations

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

    kind: str  # single, list, wildcard, range, empty
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


_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def classify(value: str, kind: Kind, list_separators: str = ",\\") -> Match:
    """The matching type of ``value`` for an attribute compared as ``kind``."""
    if value == '""':
        return Match("empty")
    if kind in (Kind.DATE, Kind.TIME):
        return _range(value, kind)
    if kind in (Kind.UID, Kind.CODE, Kind.INTEGER) and any(s in value for s in list_separators):
        parts = tuple(p.strip() for p in re.split("[" + re.escape(list_separators) + "]", value) if p.strip())
        for part in parts:
            _check_single(part, kind)
        return Match("list", parts)
    if kind in (Kind.TEXT, Kind.PERSON_NAME, Kind.CODE) and ("*" in value or "?" in value):
        return Match("wildcard", (value,))
    _check_single(value, kind)
    return Match("single", (value,))


def _check_single(value: str, kind: Kind) -> None:
    if kind is Kind.INTEGER and not re.fullmatch(r"[+-]?\d+", value):
        raise InvalidQuery(f"'{value}' is not an integer")
    if kind is Kind.UID and not re.fullmatch(r"[0-9.]{1,64}", value):
        raise InvalidQuery(f"'{value}' is not a valid UID (digits and dots, at most 64 characters)")


def _range(value: str, kind: Kind) -> Match:
    if "-" not in value:
        values = tuple(v for v in value.split("\\") if v)
        normalised = tuple(_bound(v, kind, upper=False) for v in values)
        if kind is Kind.TIME:
            return (
                Match("range", low=normalised[0], high=_bound(values[0], kind, upper=True))
                if len(values) == 1
                else Match("list", normalised)
            )
        return Match("list", normalised) if len(normalised) > 1 else Match("single", normalised)
    low, _, high = value.partition("-")
    if not low and not high:
        raise InvalidQuery(f"'{value}' is not a range: give a start, an end or both")
    match = Match(
        "range",
        low=_bound(low, kind, upper=False) if low else None,
        high=_bound(high, kind, upper=True) if high else None,
    )
    if match.low and match.high and match.low > match.high:
        raise InvalidQuery(f"the range '{value}' ends before it starts")
    return match


def _bound(value: str, kind: Kind, *, upper: bool) -> str:
    value = value.strip()
    if kind is Kind.DATE:
        value = value.replace("-", "").replace(".", "") if len(value) == 10 else value
        if not _DATE.match(value):
            raise InvalidQuery(f"'{value}' is not a date in the form YYYYMMDD")
        return value
    text = value.replace(":", "")
    if not _TIME.match(text):
        raise InvalidQuery(f"'{value}' is not a time in the form HHMMSS.FFFFFF")
    return normalise_time(text, upper=upper)


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
