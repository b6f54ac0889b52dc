"""Patient identifier systems derived from DICOM IssuerOfPatientID (0010,0021).

An issuer that is an OID becomes ``urn:oid:<issuer>``; one that is already an absolute URI is
used as it is; any other local name becomes ``urn:imagebridge:issuer:<name>``, and an empty
issuer ``urn:imagebridge:patient-id`` (PatientID as this archive received it).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from sqlalchemy import ColumnElement, and_, or_

from imagebridge.errors import InvalidQuery
from imagebridge.fhir.search import split_values
from imagebridge.index.schema import patients

LOCAL = "urn:imagebridge:issuer:"
NO_ISSUER = "urn:imagebridge:patient-id"
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")


def system_of(issuer: str) -> str:
    if not issuer:
        return NO_ISSUER
    if _OID.match(issuer):
        return f"urn:oid:{issuer}"
    if _URI.match(issuer):
        return issuer
    return LOCAL + quote(issuer, safe="")


def issuer_of(system: str) -> str:
    if system == NO_ISSUER:
        return ""
    if system.startswith(LOCAL):
        return unquote(system[len(LOCAL) :])
    if system.startswith("urn:oid:") and _OID.match(system[8:]):
        return system[8:]
    return system


def patient_identifier(values: list[str]) -> list[ColumnElement[bool]]:
    """``system|value``, ``|value`` (no system) or ``value`` (any system) — R4 token search."""
    conditions: list[ColumnElement[bool]] = []
    for raw in values:
        alternatives = []
        for value in split_values([raw]):
            system, bar, code = value.partition("|") if "|" in value else ("", "", value)
            if not code:
                raise InvalidQuery("identifier needs a value after '|'")
            if bar and system:
                alternatives.append(
                    and_(patients.c.patient_id == code, patients.c.issuer == issuer_of(system))
                )
            elif bar:
                alternatives.append(and_(patients.c.patient_id == code, patients.c.issuer == ""))
            else:
                alternatives.append(patients.c.patient_id == code)
        conditions.append(or_(*alternatives))
    return conditions
