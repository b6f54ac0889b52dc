"""/api/shares over HTTP: the patient manages her shares; a recipient redeems one; the token's reach."""

from __future__ import annotations

import httpx

from imagebridge.auth.tokens import Grant
from imagebridge.auth.users import Role
from imagebridge.index import access
from imagebridge.services.sharing import RedemptionLimits
from tests.sharing.conftest import Served
from tests.sharing.helpers import BIRTH_A, patient_token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_patient_creates_lists_and_revokes(served: Served) -> None:
    p = served.people
    mine = _bearer(patient_token(served.authz, p.a))
    made = httpx.post(
        f"{served.url}/api/shares",
        json={"studies": [p.sa1], "recipient": "Dr Who", "expires": "14d", "allow_download": False},
        headers=mine,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["url"] == f"{served.url}/s/{body['id']}" and body["code"]
    assert body["studies"] == [p.sa1] and body["allow_download"] is False and body["state"] == "active"
    listed = httpx.get(f"{served.url}/api/shares", headers=mine).json()["shares"]
    assert [s["id"] for s in listed] == [body["id"]] and "code" not in listed[0]
    revoked = httpx.delete(f"{served.url}/api/shares/{body['id']}", headers=mine)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert httpx.get(f"{served.url}/api/shares", headers=mine).json()["shares"] == []
    again = httpx.get(f"{served.url}/api/shares?include_revoked=true", headers=mine).json()["shares"]
    assert [s["state"] for s in again] == ["revoked"]


def test_management_needs_the_patients_own_token(served: Served) -> None:
    p = served.people
    assert httpx.post(f"{served.url}/api/shares", json={}).status_code == 401
    other = _bearer(patient_token(served.authz, p.b))
    refused = httpx.post(f"{served.url}/api/shares", json={"patient": p.a}, headers=other)
    assert refused.status_code == 403 and refused.json()["error_description"]
    mine = _bearer(patient_token(served.authz, p.a))
    foreign = httpx.post(f"{served.url}/api/shares", json={"studies": [p.sb1]}, headers=mine)
    assert foreign.status_code == 400 and "not a study of this patient" in foreign.json()["error_description"]
    share = served.sharing.create(patient=p.a, studies=None, created_by="ann").share
    assert httpx.delete(f"{served.url}/api/shares/{share.share_id}", headers=other).status_code == 403
    assert httpx.get(f"{served.url}/api/shares/nope", headers=mine).status_code == 404
    bad = httpx.post(f"{served.url}/api/shares", content=b"[1,", headers=mine)
    assert bad.status_code == 400 and "JSON" in bad.json()["error_description"]
    bad_expiry = httpx.post(f"{served.url}/api/shares", json={"expires": "soon"}, headers=mine)
    assert bad_expiry.status_code == 400 and "14d" in bad_expiry.json()["error_description"]


def test_redeem_and_read_exactly_the_shared_study(served: Served) -> None:
    p = served.people
    created = served.sharing.create(patient=p.a, studies=[p.sa1], created_by="ann", allow_download=False)
    url = f"{served.url}/api/shares/{created.share.share_id}/redeem"
    answer = httpx.post(url, json={"code": created.code, "birth_date": BIRTH_A})
    assert answer.status_code == 200, answer.text
    session = answer.json()
    assert session["studies"] == [p.sa1] and session["allow_download"] is False
    assert session["patient"] == p.a and 0 < session["expires_in"] <= 3600
    token = _bearer(session["access_token"])
    fhir = f"{served.url}/fhir"
    assert httpx.get(f"{fhir}/ImagingStudy/{p.sa1}", headers=token).status_code == 200
    assert httpx.get(f"{fhir}/ImagingStudy/{p.sa2}", headers=token).status_code == 403
    assert httpx.get(f"{fhir}/ImagingStudy/{p.sb1}", headers=token).status_code == 403
    found = httpx.get(f"{fhir}/ImagingStudy", params={"patient": p.a}, headers=token).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [p.sa1]
    assert httpx.get(f"{fhir}/Patient/{p.a}", headers=token).status_code == 403
    reshare = httpx.post(f"{served.url}/api/shares", json={}, headers=token)
    assert reshare.status_code == 403
    served.sharing.revoke(created.share.share_id, by="ann")
    assert httpx.get(f"{fhir}/ImagingStudy/{p.sa1}", headers=token).status_code == 401
    ended = httpx.post(url, json={"code": created.code, "birth_date": BIRTH_A})
    assert ended.status_code == 403 and ended.json()["error"] == "share_ended"


def test_redeem_errors(served: Served) -> None:
    p = served.people
    created = served.sharing.create(patient=p.a, studies=None, created_by="ann")
    url = f"{served.url}/api/shares/{created.share.share_id}/redeem"
    assert (
        httpx.post(
            f"{served.url}/api/shares/unknown/redeem", json={"code": "x", "birth_date": BIRTH_A}
        ).status_code
        == 404
    )
    missing = httpx.post(url, json={"code": created.code})
    assert missing.status_code == 400 and "birth_date" in missing.json()["error_description"]
    for left in (4, 3, 2, 1):
        wrong = httpx.post(url, json={"code": "ZZZZZ-ZZZZZ", "birth_date": BIRTH_A})
        assert wrong.status_code == 401 and wrong.json()["attempts_left"] == left
    locked = httpx.post(url, json={"code": "ZZZZZ-ZZZZY", "birth_date": BIRTH_A})
    assert locked.status_code == 423 and locked.json()["error"] == "share_locked"
    assert httpx.post(url, json={"code": created.code, "birth_date": BIRTH_A}).status_code == 423
    mine = _bearer(patient_token(served.authz, p.a))
    seen = httpx.get(f"{served.url}/api/shares/{created.share.share_id}", headers=mine).json()
    assert seen["state"] == "locked"
    fresh = httpx.post(f"{served.url}/api/shares/{created.share.share_id}/code", headers=mine)
    assert fresh.status_code == 200 and fresh.json()["state"] == "active"
    assert httpx.post(url, json={"code": fresh.json()["code"], "birth_date": BIRTH_A}).status_code == 200


def test_rate_limited_with_retry_after(served: Served) -> None:
    served.sharing.limits = RedemptionLimits(per_share=3)
    created = served.sharing.create(patient=served.people.a, studies=None, created_by="ann")
    url = f"{served.url}/api/shares/{created.share.share_id}/redeem"
    for _ in range(3):
        assert httpx.post(url, json={"code": created.code, "birth_date": BIRTH_A}).status_code == 200
    limited = httpx.post(url, json={"code": created.code, "birth_date": BIRTH_A})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.json()["error"] == "rate_limited"


def test_a_restricted_study_is_never_shared_and_a_carer_shares_only_what_she_may_read(served: Served) -> None:
    p = served.people
    access.restrict(served.archive.engine, p.sa2, "mental health", "sensitive", by="admin")
    served.authz.users.add(
        "carer", "correct horse battery", Role.PROXY, display_name="Cy Carer", patients=(p.a,)
    )
    carer_token, _ = served.authz.tokens.issue(
        "access", Grant("portal", "user/ImagingStudy.rs", subject="carer"), 3600
    )
    ann_token, _ = served.authz.tokens.issue(  # Ann herself (fhirUser): she may read her restricted study
        "access", Grant("portal", "patient/ImagingStudy.rs", patient=p.a, fhir_user=f"Patient/{p.a}"), 3600
    )
    carer, ann = _bearer(carer_token), _bearer(ann_token)
    refused = httpx.post(f"{served.url}/api/shares", json={"patient": p.a, "studies": [p.sa2]}, headers=carer)
    assert refused.status_code == 403 and "restricted" in refused.json()["error_description"]
    own = httpx.post(f"{served.url}/api/shares", json={"studies": [p.sa1, p.sa2]}, headers=ann)
    assert (
        own.status_code == 400
        and f"a restricted study: {p.sa2}; leave it out" in own.json()["error_description"]
    )
    everything = httpx.post(f"{served.url}/api/shares", json={"studies": None}, headers=ann)
    assert everything.status_code == 201 and everything.json()["studies"] == [p.sa1]  # "all" leaves it out
    allowed = httpx.post(f"{served.url}/api/shares", json={"patient": p.a, "studies": [p.sa1]}, headers=carer)
    assert allowed.status_code == 201 and allowed.json()["studies"] == [p.sa1]
    assert sorted(s.studies for s in served.sharing.list(p.a)) == [(p.sa1,), (p.sa1,)]  # nothing else made
