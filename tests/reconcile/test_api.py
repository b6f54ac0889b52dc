"""``/api/reconciliation`` over a real server: staff only, each decision, clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.tokens import Grant
from imagebridge.auth.users import Role
from imagebridge.index.schema import patients, studies
from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.reconcile.helpers import add_source, import_all, outside, store_local

PASSWORD = "correct horse battery"
UNCERTAIN = {"PatientName": "Smith^John", "PatientBirthDate": "19801205", "PatientSex": "M"}


@dataclass
class Api:
    base: str
    authz: AuthorizationServer
    archive: Archive

    def token(self, scope: str, subject: str | None = None) -> dict[str, str]:
        grant = Grant("test-client", scope, subject=subject, data={"policy": AccessGrant().to_json()})
        token, _ = self.authz.tokens.issue("access", grant, 600)
        return {"Authorization": f"Bearer {token}"}

    def user(self, name: str, role: Role) -> dict[str, str]:
        self.authz.users.add(name, PASSWORD, role)
        return self.token("openid fhirUser user/*.rs", subject=name)


@pytest.fixture
def api(archive: Archive) -> Iterator[Api]:
    store_local(
        archive,
        PatientID="L-1",
        IssuerOfPatientID="HOSP",
        PatientName="Smith^John",
        PatientBirthDate="19800512",
        PatientSex="M",
    )
    store_local(
        archive,
        PatientID="L-2",
        IssuerOfPatientID="HOSP",
        PatientName="Smith^Joan",
        PatientBirthDate="19801205",
        PatientSex="F",
    )
    add_source(archive)
    app = create_app(archive)
    running = BackgroundServer(app).start()
    yield Api(running.url, app.state.authorization, archive)
    running.stop()


def pending(api: Api, n: int) -> list[str]:
    """Import ``n`` uncertain studies (different outside patients); returns their study UIDs."""
    uids = [generate_uid() for _ in range(n)]
    import_all(
        api.archive, [outside(study=uid, PatientID=f"N-{i}", **UNCERTAIN) for i, uid in enumerate(uids)]
    )
    return uids


def test_staff_see_the_queue_side_by_side_and_decide(api: Api) -> None:
    uids = pending(api, 3)
    admin = api.user("admin", Role.ADMIN)
    with httpx.Client(base_url=api.base, headers=admin) as client:
        cases = client.get("/api/reconciliation/queue").json()["cases"]
        assert [c["study_uid"] for c in cases] == uids
        first = cases[0]
        assert first["suggested_patient"] == {
            "patient_id": "L-1",
            "issuer": "HOSP",
            "name": "Smith^John",
            "birth_date": "19800512",
            "sex": "M",
        }
        assert first["incoming"]["birth_date"] == "19801205" and first["score"] == 68.8
        assert {b["field"] for b in first["breakdown"]} == {
            "family_name",
            "given_name",
            "birth_date",
            "sex",
            "postcode",
        }
        assert first["instances"] == 1

        accepted = client.post(f"/api/reconciliation/{cases[0]['id']}/accept")
        assert accepted.status_code == 200
        assert (accepted.json()["state"], accepted.json()["patient"]) == (
            "linked",
            {"patient_id": "L-1", "issuer": "HOSP"},
        )
        assert accepted.json()["decided_by"] == "user:admin"
        linked = client.post(
            f"/api/reconciliation/{cases[1]['id']}/link", json={"patient_id": "L-2", "issuer": "HOSP"}
        )
        assert linked.json()["patient"] == {"patient_id": "L-2", "issuer": "HOSP"}
        new = client.post(f"/api/reconciliation/{cases[2]['id']}/new-patient")
        assert new.json()["patient"] == {"patient_id": "N-2", "issuer": "NORTH-HOSP"}
        assert client.get("/api/reconciliation/queue").json()["cases"] == []

        again = client.post(f"/api/reconciliation/{cases[0]['id']}/accept")
        assert again.status_code == 409 and "not waiting for review" in again.json()["error"]
        assert client.get("/api/reconciliation/999").status_code == 404
    with api.archive.engine.connect() as conn:
        owners = [
            conn.scalar(
                select(patients.c.patient_id)
                .join(studies, studies.c.patient_pk == patients.c.pk)
                .where(studies.c.study_uid == uid)
            )
            for uid in uids
        ]
    assert owners == ["L-1", "L-2", "N-2"]  # in the main index now, under the decided patients


def test_a_system_token_with_write_scope_is_staff(api: Api) -> None:
    [uid] = pending(api, 1)
    writer = api.token("system/*.cruds")
    with httpx.Client(base_url=api.base, headers=writer) as client:
        [case] = client.get("/api/reconciliation/queue").json()["cases"]
        decided = client.post(f"/api/reconciliation/{case['id']}/accept").json()
    assert decided["decided_by"] == "client:test-client" and decided["study_uid"] == uid


@pytest.mark.parametrize(
    "who",
    ["nobody", "clinician", "reader"],
)
def test_others_are_refused(api: Api, who: str) -> None:
    pending(api, 1)
    headers = {
        "nobody": {},
        "clinician": api.user("doc", Role.CLINICIAN),
        "reader": api.token("system/*.rs"),
    }[who]
    with httpx.Client(base_url=api.base, headers=headers) as client:
        queue = client.get("/api/reconciliation/queue")
        decide = client.post("/api/reconciliation/1/accept")
    expected = 401 if who == "nobody" else 403
    assert (queue.status_code, decide.status_code) == (expected, expected)
    assert queue.json()["error"]


def test_bad_input_is_a_readable_400(api: Api) -> None:
    pending(api, 1)
    admin = api.user("admin", Role.ADMIN)
    with httpx.Client(base_url=api.base, headers=admin) as client:
        [case] = client.get("/api/reconciliation/queue").json()["cases"]
        missing = client.post(f"/api/reconciliation/{case['id']}/link", json={"issuer": "HOSP"})
        unknown = client.post(
            f"/api/reconciliation/{case['id']}/link", json={"patient_id": "NOPE", "issuer": "X"}
        )
        not_a_number = client.post("/api/reconciliation/abc/accept")
        bad_token = client.get("/api/reconciliation/queue", headers={"Authorization": "Bearer nope"})
    assert missing.status_code == 400 and "patient_id" in missing.json()["error"]
    assert unknown.status_code == 404 and "no local patient 'NOPE'" in unknown.json()["error"]
    assert not_a_number.status_code == 400
    assert bad_token.status_code == 401
