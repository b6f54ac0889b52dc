"""/fhir/AuditEvent: every sharing step and every access is an R4 AuditEvent, searchable and valid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.fhir.test_r4_validation import medplum_errors, schema_errors
from tests.sharing.conftest import Served
from tests.sharing.helpers import BIRTH_A, admin_token, patient_token

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "User-Agent": "audit-test/1.0"}


def _actions(bundle: dict[str, Any]) -> list[str]:
    return [
        next(c["code"] for c in e["resource"]["subtype"] if c["system"] == "urn:imagebridge:audit-action")
        for e in bundle.get("entry", [])
    ]


def _journey(served: Served) -> str:
    """Ann reads a study, shares it, a recipient gets it wrong once then right, Ann revokes."""
    p, url = served.people, served.url
    ann = _bearer(patient_token(served.authz, p.a))
    assert httpx.get(f"{url}/fhir/ImagingStudy/{p.sa1}", headers=ann).status_code == 200
    made = httpx.post(f"{url}/api/shares", json={"studies": [p.sa1]}, headers=ann).json()
    redeem = f"{url}/api/shares/{made['id']}/redeem"
    assert httpx.post(redeem, json={"code": "00000-00000", "birth_date": BIRTH_A}).status_code == 401
    assert httpx.post(redeem, json={"code": made["code"], "birth_date": BIRTH_A}).status_code == 200
    assert httpx.delete(f"{url}/api/shares/{made['id']}", headers=ann).status_code == 200
    return str(made["id"])


def test_each_step_is_an_audit_event_the_patient_can_read(served: Served) -> None:
    share_id = _journey(served)
    p, url = served.people, served.url
    ann = _bearer(patient_token(served.authz, p.a))
    bundle = httpx.get(f"{url}/fhir/AuditEvent", params={"patient": p.a, "_count": "100"}, headers=ann).json()
    actions = _actions(bundle)
    for step in ("share-create", "share-redeem-failed", "share-redeem", "share-revoke", "access"):
        assert step in actions, actions
    assert actions.index("share-revoke") < actions.index("share-redeem") < actions.index("share-create")
    events = [e["resource"] for e in bundle["entry"]]
    recorded = [e["recorded"] for e in events]
    assert recorded == sorted(recorded, reverse=True)
    redeemed = next(e for e, a in zip(events, actions, strict=True) if a == "share-redeem")
    assert redeemed["type"]["code"] == "110114" and redeemed["action"] == "E" and redeemed["outcome"] == "0"
    assert redeemed["agent"][0]["network"] == {"address": "127.0.0.1", "type": "2"}
    assert redeemed["agent"][0]["who"]["identifier"]["value"] == share_id
    study = next(e for e in redeemed["entity"] if e["what"].get("reference", "").startswith("ImagingStudy/"))
    assert study["what"]["identifier"]["value"] == f"urn:oid:{p.sa1}"
    failed = next(e for e, a in zip(events, actions, strict=True) if a == "share-redeem-failed")
    assert failed["outcome"] == "4"
    read = next(e for e in events if e["type"].get("code") == "rest" and e["action"] == "R")
    assert read["subtype"][0]["code"] == "read" and read["agent"][0]["name"] == "audit-test/1.0"
    assert {"reference": f"Patient/{p.a}"} in [e["what"] for e in read["entity"]]
    assert httpx.get(f"{url}/fhir/AuditEvent/{read['id']}", headers=ann).json() == read
    assert not [problem for problem in map(schema_errors, events) if problem]
    assert medplum_errors(events) == [[] for _ in events]
    assert medplum_errors([bundle]) == [[]]


def test_search_parameters(served: Served) -> None:
    _journey(served)
    p, url = served.people, served.url
    ann = _bearer(patient_token(served.authz, p.a))
    search = f"{url}/fhir/AuditEvent"
    own = httpx.get(search, headers=ann).json()
    assert own["total"] >= 5
    assert all(
        any(e["what"] == {"reference": f"Patient/{p.a}"} for e in x["resource"]["entity"])
        for x in own["entry"]
    )
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = httpx.get(
        search, params=[("patient", p.a), ("date", f"ge{since}"), ("date", "lt2100")], headers=ann
    )
    assert recent.json()["total"] == own["total"]
    old = httpx.get(search, params={"patient": p.a, "date": "lt2000-01-01"}, headers=ann).json()
    assert old["total"] == 0 and "entry" not in old
    by_study = httpx.get(
        search, params={"entity": f"ImagingStudy/{p.sa1}", "patient": p.a}, headers=ann
    ).json()
    assert by_study["total"] >= 5
    none = httpx.get(search, params={"entity": p.sa2, "patient": p.a}, headers=ann).json()
    assert none["total"] < by_study["total"]
    paged = httpx.get(search, params={"patient": p.a, "_count": "2"}, headers=ann).json()
    assert len(paged["entry"]) == 2 and any(link["relation"] == "next" for link in paged["link"])
    bad = httpx.get(search, params={"date": "yesterday"}, headers=ann)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert httpx.get(search, params={"entity": "Observation/1"}, headers=ann).status_code == 400


def test_access_follows_the_policy(served: Served) -> None:
    _journey(served)
    p, url = served.people, served.url
    search = f"{url}/fhir/AuditEvent"
    bob = _bearer(patient_token(served.authz, p.b))
    refused = httpx.get(search, params={"patient": p.a}, headers=bob)
    assert refused.status_code == 403
    bobs_own = httpx.get(search, headers=bob).json()
    assert all(
        {"reference": f"Patient/{p.a}"} not in [e["what"] for e in x["resource"].get("entity", [])]
        for x in bobs_own.get("entry", [])
    )
    ann_event = httpx.get(search, params={"patient": p.a}, headers=_bearer(patient_token(served.authz, p.a)))
    event_id = ann_event.json()["entry"][0]["resource"]["id"]
    assert httpx.get(f"{search}/{event_id}", headers=bob).status_code == 403
    no_scope = _bearer(patient_token(served.authz, p.a, scope="patient/ImagingStudy.rs"))
    assert httpx.get(search, headers=no_scope).status_code == 403
    assert httpx.get(search).status_code == 401
    admin = _bearer(admin_token(served.authz))
    everything = httpx.get(search, params={"_count": "500"}, headers=admin).json()
    patients = {
        e["what"].get("reference") for x in everything["entry"] for e in x["resource"].get("entity", [])
    }
    assert f"Patient/{p.a}" in patients and f"Patient/{p.b}" in patients
    resources = [x["resource"] for x in everything["entry"]]
    assert {r["outcome"] for r in resources} >= {"0", "4"}
    assert not [problem for problem in map(schema_errors, resources) if problem]
    assert medplum_errors(resources) == [[] for _ in resources]
    assert httpx.get(f"{search}/not-an-event", headers=admin).status_code == 404


def test_capability_statement_lists_audit_event(served: Served) -> None:
    statement = httpx.get(f"{served.url}/fhir/metadata").json()
    kinds = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {p["name"] for p in kinds["AuditEvent"]["searchParam"]} == {"patient", "date", "entity"}
