"""§4 scenarios 7-17: ImagingStudy search and read against a real server, positive and negative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.auth.helpers import World, authorize, backend_token, bearer

DCM = "http://dicom.nema.org/resources/ontology/DCM"


@pytest.fixture(scope="module")
def ann(world: World) -> str:
    return str(authorize(world, "launch/patient patient/ImagingStudy.rs")["access_token"])


def search(world: World, token: str | None, **params: str) -> httpx.Response:
    headers = bearer(token) if token else {}
    return httpx.get(f"{world.fhir}/ImagingStudy", params=params, headers=headers)


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def test_scenario_7_patient_search_returns_their_studies(world: World, ann: str) -> None:
    response = search(world, ann, patient=world.a)
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "application/fhir+json"
    )
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["total"] == 2
    assert sorted(ids(bundle)) == sorted([world.sa1, world.sa2])
    assert bundle["link"] == [{"relation": "self", "url": str(response.url)}]
    for entry in bundle["entry"]:
        study = entry["resource"]
        assert entry["fullUrl"] == f"{world.fhir}/ImagingStudy/{study['id']}"
        assert study["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study['id']}"}
        assert study["status"] == "available" and study["subject"] == {"reference": f"Patient/{world.a}"}
        assert study["modality"][0]["system"] == DCM and study["endpoint"] == [
            {"reference": "Endpoint/dicomweb"}
        ]
    sa1 = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == world.sa1)
    assert sa1["numberOfSeries"] == 2 and sa1["numberOfInstances"] == 2 and sa1["started"] == "2023-01-01"
    assert {i["number"] for s in sa1["series"] for i in s["instance"]} == {1, 2}
    assert sa1["series"][0]["modality"] == {"system": DCM, "code": "CT"}


def test_scenario_7_endpoint_resolves_to_our_dicomweb(world: World, ann: str) -> None:
    endpoint = httpx.get(f"{world.fhir}/Endpoint/dicomweb", headers=bearer(ann)).json()
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs" and endpoint["status"] == "active"
    assert endpoint["address"] == f"{world.base}/dicomweb"
    studies = httpx.get(f"{endpoint['address']}/studies", params={"StudyInstanceUID": world.sa1})
    assert studies.status_code == 200 and len(studies.json()) == 1


@pytest.mark.parametrize("form", ["plain", "relative", "absolute"])
def test_scenario_8_reference_forms_and_include(world: World, ann: str, form: str) -> None:
    value = {
        "plain": world.a,
        "relative": f"Patient/{world.a}",
        "absolute": f"{world.fhir}/Patient/{world.a}",
    }[form]
    bundle = search(world, ann, patient=value, _include="ImagingStudy:endpoint").json()
    assert bundle["total"] == 2 and len(ids(bundle)) == 2
    [included] = [e for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert included["fullUrl"] == f"{world.fhir}/Endpoint/dicomweb"
    assert included["resource"]["address"] == f"{world.base}/dicomweb"


@pytest.mark.parametrize("system", ["", "urn:dicom:uid|"])
def test_scenario_9_identifier_finds_one_study(world: World, ann: str, system: str) -> None:
    bundle = search(world, ann, patient=world.a, identifier=f"{system}urn:oid:{world.sa1}").json()
    assert ids(bundle) == [world.sa1] and bundle["total"] == 1


def test_scenario_9_unknown_uid_is_an_empty_bundle(world: World, ann: str) -> None:
    response = search(world, ann, patient=world.a, identifier="urn:oid:1.2.3.4.5.6.7")
    assert response.status_code == 200 and response.json()["total"] == 0 and "entry" not in response.json()


def test_scenario_10_last_updated(world: World, ann: str) -> None:
    bundle = search(world, ann, patient=world.a).json()
    stamps = sorted(e["resource"]["meta"]["lastUpdated"] for e in bundle["entry"])
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert search(world, ann, patient=world.a, _lastUpdated=f"gt{future}").json()["total"] == 0
    assert search(world, ann, patient=world.a, _lastUpdated="gt2000-01-01").json()["total"] == 2
    assert search(world, ann, patient=world.a, _lastUpdated=f"lt{future}").json()["total"] == 2
    newest = search(world, ann, patient=world.a, _lastUpdated=f"ge{stamps[-1]}").json()
    assert newest["total"] >= 1 and all(
        e["resource"]["meta"]["lastUpdated"] >= stamps[-1] for e in newest["entry"]
    )


def test_started_and_modality(world: World, ann: str) -> None:
    assert ids(search(world, ann, patient=world.a, started="ge2024-01-01").json()) == [world.sa2]
    assert ids(search(world, ann, patient=world.a, started="2023").json()) == [world.sa1]
    assert ids(search(world, ann, patient=world.a, started="lt2023-01-01").json()) == []
    assert ids(search(world, ann, patient=world.a, modality="MR").json()) == [world.sa2]
    assert ids(search(world, ann, patient=world.a, modality=f"{DCM}|CT").json()) == [world.sa1]
    assert sorted(ids(search(world, ann, patient=world.a, modality="CT,MR").json())) == sorted(
        [world.sa1, world.sa2]
    )


def test_scenario_11_other_patient_is_403_not_empty(world: World, ann: str) -> None:
    response = search(world, ann, patient=world.b)
    assert response.status_code == 403 and response.json()["resourceType"] == "OperationOutcome"
    assert world.sb1 not in response.text


def test_scenario_12_other_patients_uid_under_own_patient(world: World, ann: str) -> None:
    response = search(world, ann, patient=world.a, identifier=f"urn:oid:{world.sb1}")
    assert response.status_code == 200
    assert response.json()["total"] == 0 and "entry" not in response.json()
    read = httpx.get(f"{world.fhir}/ImagingStudy/{world.sb1}", headers=bearer(ann))
    assert read.status_code == 403 and '"series"' not in read.text


@pytest.mark.parametrize("header", [None, "Basic YW5uOnB3", "Bearer", "Bearer garbage-token"])
def test_scenario_13_missing_or_malformed_token_is_401(world: World, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["resourceType"] == "OperationOutcome"
    if header and "garbage" in header:
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_scenario_14_revoked_and_foreign_tokens_are_denied(world: World) -> None:
    token = authorize(world, "launch/patient patient/ImagingStudy.rs")["access_token"]
    assert search(world, token, patient=world.a).status_code == 200
    assert (
        httpx.post(f"{world.base}/oauth/revoke", data={"token": token, "client_id": "viewer"}).status_code
        == 200
    )
    assert search(world, token, patient=world.a).status_code == 401
    foreign = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbm4iLCJwYXRpZW50IjoiQSJ9.c2lnbmF0dXJl"
    assert search(world, foreign, patient=world.a).status_code == 401


@pytest.mark.parametrize(
    "scope", ["patient/*.rs", "patient/*.read", "patient/ImagingStudy.rs", "patient/ImagingStudy.read"]
)
def test_scenario_15_imaging_scopes_allow(world: World, scope: str) -> None:
    token = authorize(world, f"launch/patient {scope}")["access_token"]
    assert search(world, token, patient=world.a).status_code == 200


def test_scenario_15_no_imaging_scope_is_insufficient_scope(world: World) -> None:
    token = authorize(world, "launch/patient patient/Observation.rs")["access_token"]
    response = search(world, token, patient=world.a)
    assert (
        response.status_code == 403 and 'error="insufficient_scope"' in response.headers["www-authenticate"]
    )


def test_scenario_16_no_patient_context_is_denied(world: World) -> None:
    token = authorize(world, "patient/ImagingStudy.rs", username="drx")["access_token"]
    assert search(world, token, patient=world.a).status_code == 403


def test_scenario_16_system_token_without_policy_for_patient_is_denied(world: World) -> None:
    token = backend_token(world)
    assert search(world, token, patient=world.b).status_code == 403


def test_scenario_17_no_patient_parameter_is_refused(world: World, ann: str) -> None:
    response = search(world, ann)
    assert response.status_code == 400 and response.json()["issue"][0]["code"] == "invalid"
    assert search(world, ann, identifier=f"urn:oid:{world.sa1}").status_code == 400


def test_clinician_user_scope_reaches_any_patient(world: World) -> None:
    token = authorize(world, "openid fhirUser user/ImagingStudy.rs", username="drx")["access_token"]
    assert search(world, token, patient=world.b).json()["total"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"status": "available"},
        {"_lastUpdated": "yesterday"},
        {"started": "gt2023-13-01"},
        {"patient": "Group/1"},
        {"_include": "ImagingStudy:subject"},
    ],
)
def test_bad_parameters_are_400_operation_outcomes(world: World, ann: str, params: dict[str, str]) -> None:
    response = search(world, ann, **{"patient": world.a, **params})
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"


def test_read_and_unknown_resources(world: World, ann: str) -> None:
    study = httpx.get(f"{world.fhir}/ImagingStudy/{world.sa1}", headers=bearer(ann))
    assert study.status_code == 200 and study.json()["id"] == world.sa1
    missing = httpx.get(f"{world.fhir}/ImagingStudy/1.2.3.999", headers=bearer(ann))
    assert missing.status_code == 404 and missing.json()["issue"][0]["code"] == "not-found"
    unknown = httpx.get(f"{world.fhir}/Observation", headers=bearer(ann))
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"


def test_every_decision_is_audited(world: World, ann: str, caplog: pytest.LogCaptureFixture) -> None:
    import json

    with caplog.at_level("INFO", logger="imagebridge.audit"):
        search(world, ann, patient=world.a)
        search(world, ann, patient=world.b)
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "imagebridge.audit"]
    allowed = [r for r in records if r["outcome"] == "allow" and r.get("patient") == world.a]
    denied = [r for r in records if r["outcome"] == "deny" and r.get("patient") == world.b]
    assert allowed and denied
    assert denied[0]["client_id"] == "viewer" and denied[0]["token_patient"] == world.a
    assert {r.get("study") for r in allowed} >= {world.sa1, world.sa2}


def test_search_by_post(world: World, ann: str) -> None:
    form = {"patient": world.a, "identifier": f"urn:oid:{world.sa1}"}
    response = httpx.post(f"{world.fhir}/ImagingStudy/_search", data=form, headers=bearer(ann))
    assert response.status_code == 200 and ids(response.json()) == [world.sa1]
    assert response.json()["link"][0]["url"].startswith(f"{world.fhir}/ImagingStudy?patient=")
    denied = httpx.post(f"{world.fhir}/ImagingStudy/_search", data={"patient": world.b}, headers=bearer(ann))
    assert denied.status_code == 403
    anonymous = httpx.post(f"{world.fhir}/ImagingStudy/_search", data={"patient": world.a})
    assert anonymous.status_code == 401
    as_json = httpx.post(f"{world.fhir}/ImagingStudy/_search", json={"patient": world.a}, headers=bearer(ann))
    assert as_json.status_code == 400
