"""A small world for sharing tests: patient A (studies SA1, SA2), patient B (SB1), stored directly."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom.uid import generate_uid

from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.tokens import Grant
from imagebridge.auth.users import Role
from imagebridge.fhir.index import fhir_id
from imagebridge.services.archive import Archive
from tests.factory import make_instance, part10

BIRTH_A = "1980-01-01"
PATIENT_SCOPE = "patient/ImagingStudy.rs patient/Patient.r patient/AuditEvent.rs"


@dataclass(frozen=True)
class People:
    a: str
    b: str
    sa1: str
    sa2: str
    sb1: str
    sa1_series: str
    sa1_sop: str


def fill(archive: Archive, authz: AuthorizationServer) -> People:
    """Store the studies through the ingest service and add the users the tests sign in as."""
    sa1, sa2, sb1 = generate_uid(), generate_uid(), generate_uid()
    a_attrs = {
        "PatientID": "MRN-A",
        "IssuerOfPatientID": "HOSP",
        "PatientName": "Alpha^Ann",
        "PatientBirthDate": "19800101",
    }
    b_attrs = {
        "PatientID": "MRN-B",
        "IssuerOfPatientID": "HOSP",
        "PatientName": "Beta^Bob",
        "PatientBirthDate": "20100505",
    }
    first = make_instance(
        study=sa1, StudyDate="20240303", Modality="CT", StudyDescription="CT chest", **a_attrs
    )
    datasets = [
        first,
        make_instance(study=sa2, StudyDate="20230101", Modality="MR", StudyDescription="MR knee", **a_attrs),
        make_instance(study=sb1, StudyDate="20220202", Modality="CT", **b_attrs),
    ]
    for ds in datasets:
        archive.ingest.store_stream(io.BytesIO(part10(ds)))
    a, b = fhir_id("MRN-A", "HOSP"), fhir_id("MRN-B", "HOSP")
    authz.users.add("ann", "correct horse battery", Role.PATIENT, display_name="Ann Alpha", patients=(a,))
    authz.users.add("admin", "correct horse battery", Role.ADMIN, display_name="Ada Admin")
    return People(a, b, sa1, sa2, sb1, str(first.SeriesInstanceUID), str(first.SOPInstanceUID))


def patient_token(authz: AuthorizationServer, patient: str, scope: str = PATIENT_SCOPE) -> str:
    """An access token as the patient's app would hold after a standalone launch."""
    token, _ = authz.tokens.issue("access", Grant("portal", scope, patient=patient, subject="ann"), 3600)
    return token


def admin_token(authz: AuthorizationServer, scope: str = "user/AuditEvent.rs user/ImagingStudy.rs") -> str:
    token, _ = authz.tokens.issue("access", Grant("portal", scope, subject="admin"), 3600)
    return token
