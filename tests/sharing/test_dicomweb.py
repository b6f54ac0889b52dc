"""A share's token over DICOMweb: exactly the shared studies, nothing else of the patient, not after revocation."""

from __future__ import annotations

import httpx

from imagebridge.fhir.audit import audit_event
from tests.sharing.conftest import Served
from tests.sharing.helpers import BIRTH_A


def test_share_token_reaches_only_the_shared_study(served: Served) -> None:
    p = served.people
    created = served.sharing.create(patient=p.a, studies=[p.sa1], created_by="ann")
    session = served.sharing.redeem(created.share.share_id, created.code, BIRTH_A, "10.2.2.2")
    token = {"Authorization": f"Bearer {session.access_token}"}
    web = f"{served.url}/dicomweb"
    found = httpx.get(f"{web}/studies", headers=token)
    assert found.status_code == 200, found.text
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [p.sa1]
    assert httpx.get(f"{web}/studies", params={"PatientID": "MRN-B"}, headers=token).status_code in (200, 204)
    assert p.sb1 not in httpx.get(f"{web}/studies", params={"PatientID": "MRN-B"}, headers=token).text
    assert httpx.get(f"{web}/studies/{p.sa1}/metadata", headers=token).status_code == 200
    frame = httpx.get(
        f"{web}/studies/{p.sa1}/series/{p.sa1_series}/instances/{p.sa1_sop}/frames/1",
        headers={**token, "Accept": 'multipart/related; type="application/octet-stream"'},
    )
    assert frame.status_code == 200
    for other in (p.sa2, p.sb1):
        refused = httpx.get(f"{web}/studies/{other}/metadata", headers=token)
        assert refused.status_code == 403 and other not in refused.text
    served.sharing.revoke(created.share.share_id, by="ann")
    assert httpx.get(f"{web}/studies/{p.sa1}/metadata", headers=token).status_code == 401


def test_dicomweb_reads_are_audit_events_of_the_patient(served: Served) -> None:
    p = served.people
    created = served.sharing.create(patient=p.a, studies=[p.sa1], created_by="ann")
    session = served.sharing.redeem(created.share.share_id, created.code, BIRTH_A, None)
    token = {"Authorization": f"Bearer {session.access_token}", "User-Agent": "viewer/3"}
    assert httpx.get(f"{served.url}/dicomweb/studies/{p.sa1}/metadata", headers=token).status_code == 200
    assert httpx.get(f"{served.url}/dicomweb/studies/{p.sa2}/metadata", headers=token).status_code == 403
    store = served.sharing.audit
    store.flush()
    events = [
        e for e in store.search(patient=p.a) if e.share_id == created.share.share_id and e.action == "access"
    ]
    allowed = next(e for e in events if e.outcome == "allow" and e.study_uid == p.sa1)
    assert allowed.remote == "127.0.0.1" and allowed.user_agent == "viewer/3"
    resource = audit_event(allowed, served.url)
    assert resource["type"]["code"] == "110103" and resource["action"] == "R" and resource["outcome"] == "0"
    assert any(e.outcome == "deny" and e.study_uid == p.sa2 for e in events)
