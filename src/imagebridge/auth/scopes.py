"""SMART App Launch scopes, v1 and v2, parsed into values (SMART App Launch 2.2 "Scopes and Launch Context").

A clinical scope is ``<level>/<resourceType|*>.<permissions>[?query]``: level ``patient``, ``user``
or ``system``; permissions are a v2 subset of ``cruds`` written in that order, or v1 ``read``
(= ``rs``), ``write`` (= ``cud``) or ``*`` (= ``cruds``). Other scopes are kept as plain names
(``openid``, ``fhirUser``, ``launch/patient``, ``offline_access`` ...). A v2 scope with a query
(``?category=...``) narrows what it grants; it is kept, but only counted as granting access to
resources it can be checked against, which for the imaging resources is none (it grants nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from imagebridge.auth.errors import InvalidScope

Level = Literal["patient", "user", "system"]
LEVELS: tuple[Level, ...] = ("patient", "user", "system")

_CLINICAL = re.compile(
    r"^(?P<level>patient|user|system)/(?P<resource>\*|[A-Z][A-Za-z]{1,63})\.(?P<perms>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>\S+))?$"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
KNOWN_NAMES = frozenset(
    {
        "openid",
        "fhirUser",
        "profile",
        "offline_access",
        "online_access",
        "launch",
        "launch/patient",
        "launch/encounter",
    }
)


@dataclass(frozen=True)
class ClinicalScope:
    level: Level
    resource: str
    permissions: frozenset[str]
    query: str | None
    text: str

    def grants(self, level: Level, resource: str, permission: str) -> bool:
        return (
            self.query is None
            and self.level == level
            and self.resource in ("*", resource)
            and permission in self.permissions
        )


@dataclass(frozen=True)
class Scopes:
    """A parsed, ordered, duplicate-free set of scopes."""

    clinical: tuple[ClinicalScope, ...]
    names: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join([*self.names, *(s.text for s in self.clinical)])

    def items(self) -> list[str]:
        return [*self.names, *(s.text for s in self.clinical)]

    def has(self, name: str) -> bool:
        return name in self.names

    def grants(self, level: Level, resource: str, permission: str) -> bool:
        return any(s.grants(level, resource, permission) for s in self.clinical)

    def levels(self) -> set[Level]:
        return {s.level for s in self.clinical}

    def only(self, allowed: set[str]) -> Scopes:
        """These scopes less those not in ``allowed`` (the user unticked them, or the client may not ask)."""
        return parse(" ".join(s for s in self.items() if s in allowed))

    def __contains__(self, item: object) -> bool:
        return item in self.items()


def parse_one(text: str) -> ClinicalScope | str:
    match = _CLINICAL.match(text)
    if match is None:
        if text in KNOWN_NAMES:
            return text
        raise InvalidScope(f"'{text}' is not a SMART scope this server understands")
    perms = match["perms"]
    if not perms:
        raise InvalidScope(f"'{text}' grants no permission")
    letters = _V1.get(perms, perms)
    level: Level = match["level"]  # type: ignore[assignment]
    return ClinicalScope(level, match["resource"], frozenset(letters), match["query"], text)


def parse(text: str | None) -> Scopes:
    """Parse a space-separated scope string; InvalidScope names the first scope that is not one."""
    clinical: list[ClinicalScope] = []
    names: list[str] = []
    for item in dict.fromkeys((text or "").split()):
        parsed = parse_one(item)
        if isinstance(parsed, str):
            names.append(parsed)
        else:
            clinical.append(parsed)
    return Scopes(tuple(clinical), tuple(names))
