"""``/api/uploads`` and ``/portal/import`` over a real server: chunked, interrupted and resumed,
imported with a per-study result; patients' uploads wait for review; clear refusals."""

from __future__ import annotations

import io
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.tokens import Grant
from imagebridge.auth.users import Role
from imagebridge.media.uploads import Uploads
from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.conftest import make_archive
from tests.media.test_sources import DICOMDIR_TESTS
from tests.reconcile.helpers import SOURCE, add_source

PASSWORD = "correct horse battery"


@dataclass
class Api:
    base: str
    authz: AuthorizationServer
    archive: Archive

    def token(self, scope: str, *, subject: str | None = None, patient: str | None = None) -> dict[str, str]:
        grant = Grant(
            "test-client", scope, patient=patient, subject=subject, data={"policy": AccessGrant().to_json()}
        )
        token, _ = self.authz.tokens.issue("access", grant, 600)
        return {"Authorization": f"Bearer {token}"}

    def staff(self) -> dict[str, str]:
        self.authz.users.add("rad", PASSWORD, Role.CLINICIAN)
        return self.token("openid fhirUser user/*.cruds", subject="rad")


@pytest.fixture
def api(archive: Archive) -> Iterator[Api]:
    app = create_app(archive)
    running = BackgroundServer(app).start()
    yield Api(running.url, app.state.authorization, archive)
    running.stop()


@pytest.fixture(scope="module")
def disc_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """dicomdirtests as a zipped disc (31 instances, 6 studies) with a viewer program and autorun."""
    root = tmp_path_factory.mktemp("zipdisc") / "DISC"
    shutil.copytree(
        DICOMDIR_TESTS, root, ignore=shutil.ignore_patterns("DICOMDIR-*", "TINY_ALPHA", "README.txt")
    )
    (root / "VIEWER.EXE").write_bytes(b"MZ" + b"\0" * 4000)
    (root / "AUTORUN.INF").write_text("[autorun]\nopen=VIEWER.EXE\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root.parent).as_posix())
    return buffer.getvalue()


def _create(client: httpx.Client, headers: dict[str, str], name: str, size: int) -> str:
    created = client.post("/api/uploads", json={"name": name, "size": size}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"/api/uploads/{created.json()['id']}"
    assert created.headers["Upload-Offset"] == "0"
    return str(created.json()["id"])


def _offset(client: httpx.Client, headers: dict[str, str], upload_id: str) -> int:
    head = client.head(f"/api/uploads/{upload_id}", headers=headers)
    assert head.status_code == 200
    return int(head.headers["Upload-Offset"])


def _broken_body(data: bytes) -> Iterator[bytes]:
    yield data
    raise ConnectionResetError("the browser tab was closed")


def test_upload_interrupted_resumed_and_imported(api: Api, disc_zip: bytes) -> None:
    staff = api.staff()
    first_cut, second_cut = len(disc_zip) // 5, len(disc_zip) // 2
    with httpx.Client(base_url=api.base, timeout=30) as client:
        upload_id = _create(client, staff, "../../Disc from St Elsewhere.zip", len(disc_zip))
        first = client.patch(
            f"/api/uploads/{upload_id}", content=disc_zip[:first_cut], headers={**staff, "Upload-Offset": "0"}
        )
        assert first.status_code == 200 and first.json()["offset"] == first_cut
        stale = client.patch(
            f"/api/uploads/{upload_id}", content=disc_zip[:50], headers={**staff, "Upload-Offset": "0"}
        )
        assert stale.status_code == 409 and stale.json()["offset"] == first_cut
        with pytest.raises(ConnectionResetError):  # the connection drops in the middle of a chunk
            client.patch(
                f"/api/uploads/{upload_id}",
                content=_broken_body(disc_zip[first_cut:second_cut]),
                headers={**staff, "Upload-Offset": str(first_cut)},
            )
        offset = _offset(client, staff, upload_id)
        assert first_cut <= offset <= second_cut
        early = client.post(f"/api/uploads/{upload_id}/import", headers=staff)
        assert early.status_code == 409 and "not complete" in early.json()["error"]
        while offset < len(disc_zip):
            end = min(offset + 256 * 1024, len(disc_zip))
            put = client.put(
                f"/api/uploads/{upload_id}",
                content=disc_zip[offset:end],
                headers={**staff, "Content-Range": f"bytes {offset}-{end - 1}/{len(disc_zip)}"},
            )
            if put.status_code == 409:  # the broken chunk may still hold the lock, or ended elsewhere
                time.sleep(0.05)
                offset = put.json().get("offset", _offset(client, staff, upload_id))
                continue
            assert put.status_code == 200, put.text
            offset = put.json()["offset"]
        stored = Uploads(api.archive.engine, api.archive.settings.data_dir).path(upload_id).read_bytes()
        assert stored == disc_zip
        done = client.post(f"/api/uploads/{upload_id}/import", headers=staff)
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["name"] == "Disc from St Elsewhere.zip" and body["state"] == "imported"
        result = body["result"]
        assert result["stored"] == 31 and len(result["studies"]) == 6
        assert result["skipped_by_reason"] == {
            "not a DICOM file: viewer program": 1,
            "not a DICOM file: autorun or system file": 1,
        }
        assert all(s["name"].startswith("Disc from St Elsewhere.zip!") for s in result["skipped"])
        assert not Uploads(api.archive.engine, api.archive.settings.data_dir).path(upload_id).exists()
        again = client.post(f"/api/uploads/{upload_id}/import", headers=staff)
        assert again.status_code == 409


def test_a_patients_upload_waits_for_review_then_staff_import_it(api: Api, disc_zip: bytes) -> None:
    add_source(api.archive)
    patient = api.token("patient/ImagingStudy.c patient/ImagingStudy.r", patient="pat-1")
    other = api.token("patient/ImagingStudy.c", patient="pat-2")
    with httpx.Client(base_url=api.base, timeout=30) as client:
        upload_id = _create(client, patient, "my cd.zip", len(disc_zip))
        sent = client.patch(
            f"/api/uploads/{upload_id}", content=disc_zip, headers={**patient, "Upload-Offset": "0"}
        )
        assert sent.json()["state"] == "complete"
        assert client.get(f"/api/uploads/{upload_id}", headers=other).status_code == 404
        named = client.post(f"/api/uploads/{upload_id}/import", json={"source": SOURCE}, headers=patient)
        assert named.status_code == 403
        waiting = client.post(f"/api/uploads/{upload_id}/import", headers=patient)
        assert waiting.status_code == 200, waiting.text
        body = waiting.json()
        assert body["state"] == "review" and body["patient"] == "pat-1"
        assert body["result"]["stored"] == 0 and body["result"]["waiting_review"] == 31
        assert {s["decision"] for s in body["result"]["studies"]} == {"waiting for staff review"}
        with api.archive.engine.connect() as conn:
            from sqlalchemy import func, select

            from imagebridge.index.schema import instances

            assert conn.execute(select(func.count()).select_from(instances)).scalar_one() == 0

        staff = api.staff()
        listed = client.get("/api/uploads", headers=staff).json()["uploads"]
        assert [u["id"] for u in listed] == [upload_id]
        assert client.get("/api/uploads", headers=other).json()["uploads"] == []
        filed = client.post(f"/api/uploads/{upload_id}/import", json={"source": SOURCE}, headers=staff)
        assert filed.status_code == 200, filed.text
        result = filed.json()["result"]
        assert filed.json()["state"] == "imported" and result["stored"] == 31
        assert all(s["decision"] != "waiting for staff review" for s in result["studies"])


def test_refusals_are_clear(api: Api) -> None:
    staff = api.staff()
    reader = api.token("user/*.rs", subject="rad")
    with httpx.Client(base_url=api.base, timeout=30) as client:
        assert client.post("/api/uploads", json={"name": "x", "size": 10}).status_code == 401
        assert client.post("/api/uploads", json={"name": "x", "size": 10}, headers=reader).status_code == 403
        assert client.post("/api/uploads", json={"name": "x", "size": 0}, headers=staff).status_code == 400
        assert client.post("/api/uploads", json={"name": "x"}, headers=staff).status_code == 400
        huge = client.post("/api/uploads", json={"name": "x", "size": 10**15}, headers=staff)
        assert huge.status_code == 413
        upload_id = _create(client, staff, "small.dcm", 10)
        bad_range = client.put(
            f"/api/uploads/{upload_id}", content=b"12", headers={**staff, "Content-Range": "bytes 5-1/10"}
        )
        assert bad_range.status_code == 400 and "Content-Range" in bad_range.json()["error"]
        no_offset = client.patch(f"/api/uploads/{upload_id}", content=b"12", headers=staff)
        assert no_offset.status_code == 400 and "Upload-Offset" in no_offset.json()["error"]
        past = client.patch(
            f"/api/uploads/{upload_id}", content=b"x" * 12, headers={**staff, "Upload-Offset": "0"}
        )
        assert past.status_code == 400 and "declared size" in past.json()["error"]
        done = client.post(f"/api/uploads/{upload_id}/import", headers=staff)
        assert done.status_code == 200
        assert done.json()["result"]["skipped"] == [
            {"name": "small.dcm", "reason": "not a DICOM file (no DICM prefix)"}
        ]
        assert client.get("/api/uploads/nope-nope-nope-nope", headers=staff).status_code == 404
        assert client.delete(f"/api/uploads/{upload_id}", headers=staff).status_code == 204
        assert client.get(f"/api/uploads/{upload_id}", headers=staff).status_code == 404


def _sign_in(client: httpx.Client, username: str) -> None:
    form = client.get("/portal/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text
    signed = client.post(
        "/portal/sign-in",
        data={"username": username, "password": PASSWORD, "csrf": csrf[1]},
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text


def test_portal_page_session_upload_and_result_page(api: Api, disc_zip: bytes) -> None:
    api.authz.users.add("pat", PASSWORD, Role.PATIENT, patients=("pat-9",))
    with httpx.Client(base_url=api.base, timeout=30) as client:
        _sign_in(client, "pat")
        page = client.get("/portal/import")
        assert page.status_code == 200 and "Drop a folder, zip or ISO file here" in page.text
        csrf = re.search(r'data-csrf="([^"]+)"', page.text)
        assert csrf
        assert client.post("/api/uploads", json={"name": "d.zip", "size": 5}).status_code == 403  # no CSRF
        headers = {"X-CSRF-Token": csrf[1]}
        upload_id = _create(client, headers, "disc.zip", len(disc_zip))
        client.patch(f"/api/uploads/{upload_id}", content=disc_zip, headers={**headers, "Upload-Offset": "0"})
        assert client.post(f"/api/uploads/{upload_id}/import", headers=headers).json()["state"] == "review"
        shown = client.get(f"/portal/import/{upload_id}")
        assert shown.status_code == 200
        assert "waiting for staff review" in shown.text and "Archibald Doe" in shown.text
        assert client.get("/portal/import/unknown-unknown-unknown").status_code == 404


def test_a_patients_own_studies_are_filed_and_only_those(api: Api) -> None:
    from imagebridge.fhir.index import fhir_id
    from tests.factory import make_instance, part10

    me = fhir_id("MRN-7", "HOSP")
    mine = [
        make_instance(PatientID="MRN-7", IssuerOfPatientID="HOSP", PatientName="Seven^Pat") for _ in range(2)
    ]
    stranger = make_instance(PatientID="MRN-7", PatientName="Seven^Pat")  # no issuer: not provably me
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for number, ds in enumerate([*mine, stranger]):
            zf.writestr(f"IM{number}", part10(ds))
    data = buffer.getvalue()
    patient = api.token("patient/ImagingStudy.c", patient=me)
    with httpx.Client(base_url=api.base, timeout=30) as client:
        upload_id = _create(client, patient, "mine.zip", len(data))
        client.patch(f"/api/uploads/{upload_id}", content=data, headers={**patient, "Upload-Offset": "0"})
        body = client.post(f"/api/uploads/{upload_id}/import", headers=patient).json()
    assert body["state"] == "review"
    decisions = {s["study_uid"]: s["decision"] for s in body["result"]["studies"]}
    assert {decisions[ds.StudyInstanceUID] for ds in mine} == {
        "filed under your record (the disc names you by this hospital's Patient ID)"
    }
    assert decisions[stranger.StudyInstanceUID] == "waiting for staff review"
    assert body["result"]["stored"] == 2 and body["result"]["waiting_review"] == 1
    assert api.archive.lookup.patient_of(mine[0].StudyInstanceUID) == ("MRN-7", "HOSP")
    assert api.archive.lookup.patient_of(stranger.StudyInstanceUID) is None


def test_staff_see_waiting_uploads_in_the_portal_and_file_them(api: Api, disc_zip: bytes) -> None:
    add_source(api.archive)
    patient = api.token("patient/ImagingStudy.c", patient="pat-3")
    api.authz.users.add("rad", PASSWORD, Role.CLINICIAN)
    with httpx.Client(base_url=api.base, timeout=30) as client:
        upload_id = _create(client, patient, "from home.zip", len(disc_zip))
        client.patch(f"/api/uploads/{upload_id}", content=disc_zip, headers={**patient, "Upload-Offset": "0"})
        assert client.post(f"/api/uploads/{upload_id}/import", headers=patient).json()["state"] == "review"
    with httpx.Client(base_url=api.base, timeout=30) as browser:
        _sign_in(browser, "rad")
        page = browser.get("/portal/import")
        assert "Uploads waiting for review" in page.text and "from home.zip" in page.text
        shown = browser.get(f"/portal/import/{upload_id}")
        assert "File these studies" in shown.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert csrf
        forged = browser.post(f"/portal/import/{upload_id}/import", data={"csrf": "nope", "source": SOURCE})
        assert forged.status_code == 403
        unknown = browser.post(
            f"/portal/import/{upload_id}/import", data={"csrf": csrf[1], "source": "nowhere"}
        )
        assert unknown.status_code == 409 and "nowhere" in unknown.text
        filed = browser.post(
            f"/portal/import/{upload_id}/import",
            data={"csrf": csrf[1], "source": SOURCE},
            follow_redirects=True,
        )
        assert filed.status_code == 200 and "31 stored" in filed.text
        assert "Uploads waiting for review" not in browser.get("/portal/import").text


def test_abandoned_halves_are_removed(archive: Archive) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from imagebridge.index.schema import media_uploads

    uploads = Uploads(archive.engine, archive.settings.data_dir)
    old = uploads.create("user:a", None, "old.zip", 100)
    uploads.append(old.upload_id, 0, [b"x" * 10])
    done = uploads.create("user:a", None, "done.dcm", 3)
    uploads.append(done.upload_id, 0, [b"abc"])
    week_ago = datetime.now(UTC) - timedelta(days=8)
    with archive.engine.begin() as conn:
        conn.execute(update(media_uploads).values(updated_at=week_ago))
    fresh = uploads.create("user:b", None, "new.zip", 100)
    assert {u.upload_id for u in uploads.list()} == {done.upload_id, fresh.upload_id}
    assert not uploads.path(old.upload_id).exists() and uploads.path(done.upload_id).exists()


def test_cors_lets_another_origin_upload_in_chunks(tmp_path: Path) -> None:
    """With ``cors_origins`` set, a browser app on that origin may PATCH/PUT chunks with
    ``Upload-Offset``/``Upload-Length`` and read where the upload stands."""
    origin = "https://uploader.example"
    archive = make_archive(tmp_path, f"sqlite:///{tmp_path / 'i.sqlite3'}", cors_origins=[origin])
    app = create_app(archive)
    running = BackgroundServer(app).start()
    try:
        api = Api(running.url, app.state.authorization, archive)
        staff = api.staff()
        for method in ("PATCH", "PUT"):
            preflight = httpx.options(
                f"{running.url}/api/uploads/abc",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization, content-type, upload-offset, upload-length",
                },
            )
            assert preflight.status_code == 200, preflight.text
            assert preflight.headers["access-control-allow-origin"] == origin
            assert method in preflight.headers["access-control-allow-methods"]
            allowed = preflight.headers["access-control-allow-headers"].lower()
            assert {"upload-offset", "upload-length", "authorization"} <= {
                h.strip() for h in allowed.split(",")
            }
        elsewhere = httpx.options(
            f"{running.url}/api/uploads/abc",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"},
        )
        assert elsewhere.status_code == 400 and "access-control-allow-origin" not in elsewhere.headers
        with httpx.Client(base_url=running.url, headers={"Origin": origin}, timeout=30) as client:
            upload_id = _create(client, staff, "one.dcm", 4)
            sent = client.patch(
                f"/api/uploads/{upload_id}", content=b"abcd", headers={**staff, "Upload-Offset": "0"}
            )
            assert sent.status_code == 200 and sent.headers["access-control-allow-origin"] == origin
            exposed = {h.strip().lower() for h in sent.headers["access-control-expose-headers"].split(",")}
            assert {"upload-offset", "upload-length", "location"} <= exposed
            assert sent.headers["upload-offset"] == "4"
    finally:
        running.stop()
        archive.close()
