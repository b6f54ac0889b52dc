"""``/portal/review``: administrators compare demographics side by side and decide in the browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from pydicom.uid import generate_uid

from imagebridge.auth.users import Role, Users
from imagebridge.reconcile.records import Records
from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.reconcile.helpers import add_source, import_all, outside, store_local

PASSWORD = "correct horse battery"


@pytest.fixture
def site(archive: Archive) -> Iterator[str]:
    store_local(
        archive,
        PatientID="L-1",
        IssuerOfPatientID="HOSP",
        PatientName="Smith^John",
        PatientBirthDate="19800512",
        PatientSex="M",
    )
    add_source(archive)
    import_all(
        archive,
        [
            outside(
                study=generate_uid(),
                PatientID=f"N-{n}",
                PatientName="Smith^John",
                PatientBirthDate="19801205",
                PatientSex="M",
            )
            for n in (1, 2)
        ],
    )
    users = Users(archive.engine)
    users.add("admin", PASSWORD, Role.ADMIN, display_name="Site Administrator")
    users.add("dr.grey", PASSWORD, Role.CLINICIAN)
    running = BackgroundServer(create_app(archive)).start()
    yield running.url
    running.stop()


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF value"
    return found.group(1)


@contextmanager
def signed_in(base: str, username: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base) as client:
        form = client.get("/portal/sign-in")
        answer = client.post(
            "/portal/sign-in", data={"username": username, "password": PASSWORD, "csrf": csrf(form.text)}
        )
        assert answer.status_code == 303, answer.text
        yield client


def test_an_administrator_reviews_and_decides(site: str, archive: Archive) -> None:
    with signed_in(site, "admin") as client:
        page = client.get("/portal/review")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        html = page.text
        assert html.count('<section class="card"') == 2
        assert "Imported from north" in html and "Suggested local patient" in html
        assert "1980-12-05 <strong>(differs)</strong>" in html and "1980-05-12" in html  # side by side
        assert "swapped" in html and "+12.8" in html and "Score 68.8: above 70 links automatically" in html
        assert "Case 1: Smith, John from north" in html
        first, second = (c.pk for c in Records(archive.engine).cases())
        token = csrf(html)
        done = client.post(f"/portal/review/{first}", data={"csrf": token, "decision": "accept"})
        assert done.status_code == 303
        after = client.get(done.headers["location"])
        assert f"Case {first}: linked to L-1" in after.text and after.text.count('<section class="card"') == 1
        stale = client.post(f"/portal/review/{first}", data={"csrf": token, "decision": "new-patient"})
        assert stale.status_code == 409 and "not waiting for review" in stale.text
        missing = client.post(
            f"/portal/review/{second}", data={"csrf": token, "decision": "link", "patient_id": "NOPE"}
        )
        assert missing.status_code == 404 and "no local patient" in missing.text
        forged = client.post(f"/portal/review/{second}", data={"csrf": "forged", "decision": "accept"})
        assert forged.status_code == 403
        assert Records(archive.engine).case(second).state == "pending"


def test_the_queue_is_for_administrators_only(site: str) -> None:
    with signed_in(site, "dr.grey") as client:
        page = client.get("/portal/review")
    assert page.status_code == 403 and "Staff only" in page.text
    anonymous = httpx.get(f"{site}/portal/review")
    assert anonymous.status_code == 303 and anonymous.headers["location"].endswith("/portal/sign-in")
