"""FHIR R4 resources rendered from index rows: ImagingStudy, Patient, Endpoint, Bundle, OperationOutcome."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from imagebridge.fhir.identifiers import system_of
from imagebridge.fhir.index import PatientRow, SeriesRow, StudyRow
from imagebridge.fhir.search import DCM, DICOM_UID

ENDPOINT_ID = "dicomweb"
REQUIRES_ACCESS_TOKEN = "http://fhir.org/argonaut/smart-imaging/StructureDefinition/requires-access-token"
_GENDER = {"M": "male", "F": "female", "O": "other"}
_TZ = re.compile(r"^[+-]\d{4}$")


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def endpoint(dicomweb_base: str) -> dict[str, Any]:
    """The DICOMweb WADO-RS base as an R4 Endpoint (SMART Imaging Access "Endpoint rules")."""
    return {
        "resourceType": "Endpoint",
        "id": ENDPOINT_ID,
        "extension": [{"url": REQUIRES_ACCESS_TOKEN, "valueBoolean": True}],
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "name": "imagebridge DICOMweb (WADO-RS)",
        "payloadType": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type", "code": "DICOM"}
                ]
            }
        ],
        "payloadMimeType": ["application/dicom"],
        "address": dicomweb_base,
    }


def patient(row: PatientRow) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": row.fhir_id,
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                    "text": "Patient ID (0010,0020)",
                },
                "system": system_of(row.issuer),
                "value": row.patient_id,
            }
        ]
        if row.patient_id
        else [],
    }
    name = human_name(row.name)
    if name:
        resource["name"] = [name]
    if row.sex in _GENDER:
        resource["gender"] = _GENDER[row.sex]
    birth = fhir_date(row.birth_date)
    if birth:
        resource["birthDate"] = birth
    if not resource["identifier"]:
        del resource["identifier"]
    return resource


def human_name(pn: str) -> dict[str, Any] | None:
    """The alphabetic group of a DICOM PN (family^given^middle^prefix^suffix) as a HumanName."""
    alphabetic = pn.split("=")[0]
    parts = [p.strip() for p in alphabetic.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    if not any((family, given, middle, prefix, suffix)):
        return None
    name: dict[str, Any] = {"text": " ".join(p for p in (prefix, given, middle, family, suffix) if p)}
    if family:
        name["family"] = family
    if given or middle:
        name["given"] = [p for p in (given, middle) if p]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def fhir_date(da: str) -> str | None:
    da = da.strip()
    if len(da) != 8 or not da.isdigit():
        return None
    try:
        datetime.strptime(da, "%Y%m%d")
    except ValueError:
        return None
    return f"{da[:4]}-{da[4:6]}-{da[6:]}"


def started(row: StudyRow) -> str | None:
    """StudyDate/StudyTime as a FHIR dateTime: with the time only when the zone is known (R4 dateTime)."""
    date = fhir_date(row.date)
    if date is None:
        return None
    offset = _timezone(row.attrs)
    if offset is None or len(row.time) < 6 or not row.time[:6].isdigit():
        return date
    t = row.time
    return f"{date}T{t[:2]}:{t[2:4]}:{t[4:6]}{offset[:3]}:{offset[3:]}"


def _timezone(attrs: str) -> str | None:
    try:
        value = json.loads(attrs).get("00080201", {}).get("Value", [None])[0]
    except (ValueError, AttributeError, IndexError):
        return None
    return value if isinstance(value, str) and _TZ.match(value) else None


def _modality(code: str) -> dict[str, str]:
    return {"system": DCM, "code": code or "OT"}


def imaging_study(row: StudyRow) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": row.uid,
        "meta": {"lastUpdated": instant(row.updated_at)},
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{row.uid}"}],
        "status": "available",
        "subject": {"reference": f"Patient/{row.patient.fhir_id}"},
    }
    if row.accession:
        resource["identifier"].append(
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
                },
                "value": row.accession,
            }
        )
    if row.modalities:
        resource["modality"] = [_modality(m) for m in row.modalities]
    when = started(row)
    if when:
        resource["started"] = when
    resource["endpoint"] = [{"reference": f"Endpoint/{ENDPOINT_ID}"}]
    resource["numberOfSeries"] = row.num_series
    resource["numberOfInstances"] = row.num_instances
    if row.description:
        resource["description"] = row.description
    resource["series"] = [_series(s) for s in row.series]
    return resource


def _series(row: SeriesRow) -> dict[str, Any]:
    item: dict[str, Any] = {"uid": row.uid}
    if row.number is not None and row.number >= 0:
        item["number"] = row.number
    item["modality"] = _modality(row.modality)
    if row.description:
        item["description"] = row.description
    item["numberOfInstances"] = row.num_instances
    item["instance"] = []
    for inst in row.instances:
        entry: dict[str, Any] = {
            "uid": inst.uid,
            "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{inst.sop_class}"},
        }
        if inst.number is not None and inst.number >= 0:
            entry["number"] = inst.number
        item["instance"].append(entry)
    if not item["instance"]:
        del item["instance"]
    return item


def searchset(
    self_url: str, fhir_base: str, matches: list[dict[str, Any]], includes: list[dict[str, Any]]
) -> dict[str, Any]:
    """R4 Bundle type searchset: total counts matches only; includes carry search.mode 'include'."""

    def entry(resource: dict[str, Any], mode: str) -> dict[str, Any]:
        return {
            "fullUrl": f"{fhir_base}/{resource['resourceType']}/{resource['id']}",
            "resource": resource,
            "search": {"mode": mode},
        }

    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "link": [{"relation": "self", "url": self_url}],
    }
    entries = [entry(r, "match") for r in matches] + [entry(r, "include") for r in includes]
    if entries:
        bundle["entry"] = entries
    return bundle


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
