"""Patient read and search by identifier, name and birthdate, filtered by the token's access."""

from __future__ import annotations

import httpx
import pytest

from tests.auth.helpers import World, authorize, backend_token, bearer


@pytest.fixture(scope="module")
def clinician(world: World) -> str:
    return str(authorize(world, "openid fhirUser user/Patient.rs", username="drx")["access_token"])


def patients(world: World, token: str, **params: str) -> list[str]:
    response = httpx.get(f"{world.fhir}/Patient", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


def test_patient_read(world: World, clinician: str) -> None:
    patient = httpx.get(f"{world.fhir}/Patient/{world.a}", headers=bearer(clinician)).json()
    assert patient["id"] == world.a and patient["gender"] == "female" and patient["birthDate"] == "1980-01-01"
    assert patient["name"] == [{"text": "Ann Alpha", "family": "Alpha", "given": ["Ann"]}]
    [identifier] = patient["identifier"]
    assert identifier["value"] == "MRN-A" and identifier["system"] == "urn:imagebridge:issuer:HOSP"
    assert identifier["type"]["coding"][0]["code"] == "MR"
    missing = httpx.get(f"{world.fhir}/Patient/0123456789abcdef", headers=bearer(clinician))
    assert missing.status_code == 404


def test_patient_search(world: World, clinician: str) -> None:
    assert patients(world, clinician, identifier="MRN-B") == [world.b]
    assert patients(world, clinician, identifier="urn:imagebridge:issuer:HOSP|MRN-A") == [world.a]
    assert patients(world, clinician, identifier="urn:oid:1.2.3|MRN-A") == []
    assert patients(world, clinician, name="alp") == [world.a]
    assert patients(world, clinician, name="bob") == [world.b]
    assert patients(world, clinician, birthdate="2010") == [world.b]
    assert patients(world, clinician, birthdate="lt2000-01-01") == [world.a]
    assert patients(world, clinician, _id=world.b) == [world.b]


def test_patient_token_sees_only_its_patient(world: World) -> None:
    token = authorize(world, "launch/patient patient/Patient.rs")["access_token"]
    assert patients(world, token, birthdate="gt1900") == [world.a]
    assert httpx.get(f"{world.fhir}/Patient/{world.b}", headers=bearer(token)).status_code == 403


def test_system_token_follows_client_policy(world: World) -> None:
    token = backend_token(world, scope="system/Patient.rs")
    assert patients(world, token, name="a") == [world.a] or patients(world, token) == [world.a]
    assert httpx.get(f"{world.fhir}/Patient/{world.b}", headers=bearer(token)).status_code == 403
