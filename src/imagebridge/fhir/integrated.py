"""What ``/fhir`` does differently when an outside EHR is the token authority (docs/smart.md "Integrated mode").

- A search's ``patient`` is the EHR's Patient id (the one in the app's token response); it is
  mapped to the archive patient through the EHR's Patient identifiers (``auth.remote``).
- ``ImagingStudy.subject`` is the absolute URL of the EHR's Patient (SMART Imaging Access §3).
- ``.well-known/smart-configuration`` is the EHR's own document with this imaging FHIR base in
  ``associated_endpoints``; the CapabilityStatement's ``oauth-uris`` name the EHR's endpoints.

In standalone mode every function here leaves things as they are.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from imagebridge.auth.authority import TokenAuthority
from imagebridge.auth.remote import EhrAuthority
from imagebridge.auth.server import Endpoints
from imagebridge.fhir import discovery
from imagebridge.fhir.index import StudyRow


def authority(request: Request) -> TokenAuthority:
    found: TokenAuthority = request.app.state.authority
    return found


def ehr(request: Request) -> EhrAuthority | None:
    """The outside EHR, when this server runs integrated (seen through the share-token wrapper)."""
    found = request.app.state.authority
    found = getattr(found, "inner", found)
    return found if isinstance(found, EhrAuthority) else None


def archive_patient(request: Request, reference: str) -> str:
    """The archive patient key a search's ``patient`` names (an EHR Patient id in integrated mode)."""
    remote = ehr(request)
    return remote.archive_patient(reference) if remote else reference


def with_subjects(
    request: Request, rows: list[StudyRow], studies: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Point each ImagingStudy's subject at the EHR's Patient, where the EHR has exactly one."""
    remote = ehr(request)
    if remote is None:
        return studies
    for row, study in zip(rows, studies, strict=True):
        url = remote.subject(row.patient.fhir_id, row.patient.patient_id, row.patient.issuer)
        if url:
            study["subject"] = {"reference": url}
    return studies


def smart_configuration(request: Request, where: Endpoints) -> dict[str, Any]:
    remote = ehr(request)
    if remote is None:
        return discovery.smart_configuration(where)
    return remote.smart_configuration(where.fhir, discovery.IMAGING_CAPABILITIES)


def capability_statement(request: Request, where: Endpoints, started: str) -> dict[str, Any]:
    statement = discovery.capability_statement(where, started)
    remote = ehr(request)
    if remote is None:
        return statement
    uris = remote.oauth_uris()
    for rest in statement["rest"]:
        for extension in rest["security"]["extension"]:
            if extension["url"] == discovery.OAUTH_URIS:
                extension["extension"] = [{"url": k, "valueUri": v} for k, v in uris.items()]
    return statement
