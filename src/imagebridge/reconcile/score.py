"""A configurable weighted scorecard over demographics, after the Ontario EMPI (seed 003).

Each field contributes its ``agree`` weight when both sides say the same, a share of it for a
near miss (a name typo caught by phonetic codes and Jaro-Winkler; a birth date with day and month
swapped or one digit wrong), its ``disagree`` weight (zero or negative) when they differ, and
nothing when either side is missing. The total decides: above ``match_above`` the same patient,
below ``different_below`` a different one, in between a person must look (defaults 70 / 63).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Final

import jellyfish

FIELDS: Final = ("family_name", "given_name", "birth_date", "sex", "postcode")


@dataclass(frozen=True)
class Weight:
    agree: float
    disagree: float = 0.0


DEFAULT_WEIGHTS: Final = {
    "family_name": Weight(28, -8),
    "given_name": Weight(20, -8),
    "birth_date": Weight(32, -12),
    "sex": Weight(8, -10),
    "postcode": Weight(12, -4),
}


@dataclass(frozen=True)
class Scorecard:
    weights: dict[str, Weight] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    match_above: float = 70.0
    different_below: float = 63.0
    name_close: float = 0.85
    """Share of a name's weight for a near miss (same phonetic code or one edit, Jaro-Winkler >= 0.85)."""
    birth_date_near: float = 0.4
    """Share of the birth date's weight for day and month swapped, or one digit wrong."""


@dataclass(frozen=True)
class Demographics:
    family_name: str = ""
    given_name: str = ""
    birth_date: str = ""
    sex: str = ""
    postcode: str = ""

    @classmethod
    def from_dicom(cls, name: str, birth_date: str, sex: str, address: str = "") -> Demographics:
        """From PS3.5 §6.2 person name (``Family^Given^Middle^Prefix^Suffix``, first group only)."""
        parts = (name.split("=")[0] + "^^").split("^")
        given = parts[1].split(" ")[0] if parts[1] else ""
        return cls(
            family_name=normalise_name(parts[0]),
            given_name=normalise_name(given),
            birth_date=re.sub(r"\D", "", birth_date)[:8],
            sex=sex.strip().upper() if sex.strip().upper() in ("M", "F", "O") else "",
            postcode=postcode_of(address),
        )

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True)
class Contribution:
    field: str
    outcome: str
    """agree, close, swapped, one digit, disagree or missing."""
    points: float


@dataclass(frozen=True)
class Score:
    total: float
    contributions: tuple[Contribution, ...]

    def breakdown(self) -> list[dict[str, object]]:
        return [{"field": c.field, "outcome": c.outcome, "points": c.points} for c in self.contributions]


class Verdict(enum.StrEnum):
    MATCH = "match"
    REVIEW = "review"
    DIFFERENT = "different"


def normalise_name(value: str) -> str:
    """Upper case ASCII letters only: accents folded, spaces, hyphens and apostrophes dropped."""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Z]", "", folded.upper())


_POSTCODES = (
    re.compile(r"\b([A-Z]\d[A-Z]) ?(\d[A-Z]\d)\b"),  # Canada
    re.compile(r"\b([A-Z]{1,2}\d[A-Z\d]?) ?(\d[A-Z]{2})\b"),  # United Kingdom
    re.compile(r"\b(\d{4,5})(?:-\d{4})?\b"),  # US ZIP, most of Europe, Australia
)


def postcode_of(address: str) -> str:
    """The postcode found in a free-text Patient's Address (0010,1040), without spaces; '' if none."""
    text = address.upper()
    for pattern in _POSTCODES:
        found = list(pattern.finditer(text))
        if found:  # the last one: a postcode ends an address, a house number starts it
            return "".join(g for g in found[-1].groups() if g)
    return ""


def score(incoming: Demographics, local: Demographics, card: Scorecard) -> Score:
    contributions = (
        _field(card, "family_name", *_names(incoming.family_name, local.family_name, card)),
        _field(card, "given_name", *_names(incoming.given_name, local.given_name, card)),
        _field(card, "birth_date", *_dates(incoming.birth_date, local.birth_date, card)),
        _field(card, "sex", *_exact(incoming.sex, local.sex)),
        _field(card, "postcode", *_exact(incoming.postcode, local.postcode)),
    )
    return Score(round(sum(c.points for c in contributions), 2), contributions)


def verdict(total: float, card: Scorecard) -> Verdict:
    if total > card.match_above:
        return Verdict.MATCH
    if total < card.different_below:
        return Verdict.DIFFERENT
    return Verdict.REVIEW


def _field(card: Scorecard, name: str, outcome: str, share: float | None) -> Contribution:
    weight = card.weights.get(name, Weight(0.0))
    if share is not None:
        points = weight.agree * share
    elif outcome == "disagree":
        points = weight.disagree
    else:
        points = 0.0
    return Contribution(name, outcome, round(points, 2))


def _exact(a: str, b: str) -> tuple[str, float | None]:
    if not a or not b:
        return "missing", None
    return ("agree", 1.0) if a == b else ("disagree", None)


def _names(a: str, b: str, card: Scorecard) -> tuple[str, float | None]:
    if not a or not b:
        return "missing", None
    if a == b:
        return "agree", 1.0
    similar = jellyfish.jaro_winkler_similarity(a, b) >= 0.85
    sounds_alike = jellyfish.metaphone(a) == jellyfish.metaphone(b) or jellyfish.nysiis(
        a
    ) == jellyfish.nysiis(b)
    if similar and (sounds_alike or jellyfish.damerau_levenshtein_distance(a, b) <= 1):
        return "close", card.name_close
    return "disagree", None


def _dates(a: str, b: str, card: Scorecard) -> tuple[str, float | None]:
    if len(a) != 8 or len(b) != 8:
        return "missing", None
    if a == b:
        return "agree", 1.0
    if a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]:
        return "swapped", card.birth_date_near
    if sum(x != y for x, y in zip(a, b, strict=True)) == 1:
        return "one digit", card.birth_date_near
    return "disagree", None
