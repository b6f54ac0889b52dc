"""The portal's pages over HTTP, on SQLite and PostgreSQL: roles, CSRF, errors as pages, downloads."""

from __future__ import annotations

import io
import re
import zipfile

import httpx
import pytest

from imagebridge.auth.users import MAX_FAILURES, Role, Users
from imagebridge.fhir.index import fhir_id
from imagebridge.index import access
from imagebridge.portal import routes
from tests.portal.conftest import ANNA_FILES, BOB_FILES, PASSWORD, Site


def signed_in(site: Site, username: str) -> httpx.Client:
    client = httpx.Client(base_url=site.url, follow_redirects=True, timeout=30)
    form = client.get("/portal/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = client.post(
        "/portal/sign-in", data={"username": username, "password": PASSWORD, "csrf": csrf[1]}
    )
    assert answer.url.path == "/portal", answer.text
    return client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def test_each_role_sees_what_its_policy_allows(site: Site) -> None:
    anna = signed_in(site, "anna").get("/portal").text
    assert anna.count('class="card study"') == len(ANNA_FILES)
    assert site.bob_studies["US1_J2KR.dcm"] not in anna
    doctor = signed_in(site, "dr.grey").get("/portal").text
    assert doctor.count('class="card study"') == len(ANNA_FILES) + 1
    assert "Whose images?" in doctor and "Patients you may see" in doctor and "PAT-BOB" in doctor
    admin = signed_in(site, "admin")
    overview = admin.get("/portal/admin")
    assert overview.status_code == 200 and "Registered apps" in overview.text and "dr.grey" in overview.text
    assert signed_in(site, "anna").get("/portal/admin").status_code == 403


def test_patient_cannot_open_another_patients_study(site: Site) -> None:
    anna = signed_in(site, "anna")
    bob_study = site.bob_studies["US1_J2KR.dcm"]
    page = anna.get(f"/portal/studies/{bob_study}")
    assert page.status_code == 404 and "Back to the list" in page.text
    assert anna.get(f"/portal/images/studies/{bob_study}/thumbnail").status_code == 403
    assert anna.get(f"/portal/download?study={bob_study}").status_code == 404


def test_wrong_password_and_forged_forms_get_pages_not_errors(site: Site) -> None:
    client = httpx.Client(base_url=site.url, follow_redirects=True)
    form = client.get("/portal/sign-in")
    wrong = client.post(
        "/portal/sign-in", data={"username": "anna", "password": "nope", "csrf": csrf_of(form.text)}
    )
    assert wrong.status_code == 401 and "do not match" in wrong.text
    forged = client.post("/portal/sign-in", data={"username": "anna", "password": PASSWORD, "csrf": "forged"})
    assert forged.status_code == 400 and "expired" in forged.text
    anna = signed_in(site, "anna")
    refused = anna.post("/portal/shares", data={"csrf": "forged", "all": "yes"})
    assert refused.status_code == 403 and "nothing was changed" in refused.text


def test_sign_out_revokes_the_session(site: Site) -> None:
    anna = signed_in(site, "anna")
    page = anna.get("/portal").text
    anna.post("/portal/sign-out", data={"csrf": csrf_of(page)})
    assert anna.get("/portal").url.path == "/portal/sign-in"


def test_download_resumes_with_range(site: Site) -> None:
    anna = signed_in(site, "anna")
    study = site.anna_studies["examples_ybr_color.dcm"]
    whole = anna.get(f"/portal/download?study={study}")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == len(whole.content)
    assert (
        whole.headers["content-disposition"].startswith('attachment; filename="')
        and ".zip" in whole.headers["content-disposition"]
    )
    half = len(whole.content) // 2
    rest = anna.get(f"/portal/download?study={study}", headers={"Range": f"bytes={half}-"})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {half}-{len(whole.content) - 1}/{len(whole.content)}"
    assert whole.content[:half] + rest.content == whole.content
    assert zipfile.ZipFile(io.BytesIO(whole.content)).testzip() is None
    beyond = anna.get(
        f"/portal/download?study={study}", headers={"Range": f"bytes={len(whole.content) + 5}-"}
    )
    assert beyond.status_code == 416


def test_all_studies_of_a_patient_in_one_zip(site: Site) -> None:
    anna = signed_in(site, "anna")
    link = re.search(r'href="(/portal/download\?patient=[^"]+)">Download all', anna.get("/portal").text)
    assert link is not None
    answer = anna.get(link[1])
    assert answer.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(answer.content)).namelist()
    assert "DICOMDIR" in names and len([n for n in names if n.startswith("DICOM/")]) == len(ANNA_FILES) + 1


@pytest.mark.parametrize("download", [True, False])
def test_share_download_follows_the_share(site: Site, download: bool) -> None:
    assert site.app is not None
    sharing = site.app.state.sharing
    created = sharing.create(
        patient=site.anna_patient,
        studies=[site.anna_studies["CT_small.dcm"]],
        created_by="anna",
        allow_download=download,
    )
    client = httpx.Client(base_url=site.url, follow_redirects=True)
    form = client.get(created.link)
    opened = client.post(
        created.link, data={"code": created.code, "birth_date": "1980-02-14", "csrf": csrf_of(form.text)}
    )
    assert opened.url.path.endswith("/studies") and opened.text.count('class="card study"') == 1
    assert "Report: Diagnosis" in opened.text, "the shared study's report is not shown to the recipient"
    answer = client.get(f"/portal/download?study={site.anna_studies['CT_small.dcm']}")
    if download:
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    else:
        assert answer.status_code == 403 and "viewing only" in answer.text
    other = client.get(f"/portal/download?study={site.anna_studies['SC_rgb.dcm']}")
    assert other.status_code in (403, 404)


def test_patient_reads_who_accessed_her_images(site: Site) -> None:
    anna = signed_in(site, "anna")
    anna.get(f"/portal/download?study={site.anna_studies['CT_small.dcm']}")
    log = anna.get("/portal/access-log")
    assert log.status_code == 200
    assert 'data-action="download"' in log.text and "downloaded" in log.text


def test_proxy_chooses_among_her_patients(site: Site) -> None:
    carer = signed_in(site, "carer")
    everyone = carer.get("/portal").text
    assert "Whose images?" in everyone and everyone.count('class="card study"') == len(ANNA_FILES) + 1
    bob = fhir_id("PAT-BOB", "")
    only_bob = carer.get(f"/portal?patient={bob}").text
    assert only_bob.count('class="card study"') == 1 and site.bob_studies["US1_J2KR.dcm"] in only_bob


def test_quick_look_spreads_through_a_multi_frame_study(site: Site) -> None:
    anna = signed_in(site, "anna")
    study = site.anna_studies["examples_ybr_color.dcm"]
    page = anna.get(f"/portal/studies/{study}").text
    sources = re.findall(r'<img src="([^"]+/frames/\d+/rendered)"', page)
    assert len(sources) == 6 and "frame 1 of 30" in page
    image = anna.get(sources[-1])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/portal/no-such-page", 404, "Page not found"),
        ("/portal/send", 400, "Something is missing"),
        ("/s/unknown-share-id", 404, "Link not recognised"),
        ("/portal/studies/1.2.3", 404, "Study not available"),
    ],
)
def test_errors_are_pages_with_a_way_forward(site: Site, path: str, status: int, words: str) -> None:
    answer = signed_in(site, "anna").get(path)
    assert answer.status_code == status and answer.headers["content-type"].startswith("text/html")
    assert words in answer.text and 'class="button"' in answer.text and "Traceback" not in answer.text


def test_repeated_wrong_passwords_block_the_user_name(site: Site) -> None:
    Users(site.archive.engine).add("target", PASSWORD, Role.CLINICIAN)
    client = httpx.Client(base_url=site.url, follow_redirects=True)
    csrf = csrf_of(client.get("/portal/sign-in").text)
    for _ in range(MAX_FAILURES):
        wrong = client.post("/portal/sign-in", data={"username": "target", "password": "guess", "csrf": csrf})
        assert wrong.status_code == 401
    blocked = client.post("/portal/sign-in", data={"username": "target", "password": PASSWORD, "csrf": csrf})
    assert blocked.status_code == 429 and "Wait 15 minutes" in blocked.text
    assert signed_in(site, "anna").get("/portal").status_code == 200, "other user names are not blocked"


def test_a_patient_finds_import_and_is_told_what_happens_to_her_upload(site: Site) -> None:
    anna = signed_in(site, "anna")
    studies = anna.get("/portal")
    assert '<a href="/portal/imports">Import</a>' in studies.text
    page = anna.get("/portal/import")
    assert page.status_code == 200 and "What happens to your upload" in page.text
    text = " ".join(page.text.split())
    assert "name you exactly by your Patient ID here, <strong>PAT-ANNA</strong>" in text
    assert "are added to your record as soon as the upload finishes" in text
    assert "Every other study (from another hospital, or naming anyone else) waits for staff" in text
    assert "Nothing from your upload is ever added to another person's record without a staff check" in text
    assert 'id="drop"' in page.text

    carer = signed_in(site, "carer")  # a proxy for two patients: nowhere to file an upload
    assert '<a href="/portal/imports">Import</a>' not in carer.get("/portal").text
    refused = carer.get("/portal/import")
    assert "acts for several patients" in refused.text and 'id="drop"' not in refused.text

    staff = signed_in(site, "dr.grey").get("/portal/import")
    assert "What happens to your upload" not in staff.text and 'id="f-source"' in staff.text


def test_restricted_and_excluded_studies_stay_off_the_lists_of_those_who_may_not_see_them(site: Site) -> None:
    """The portal lists and opens studies by the same rules as DICOMweb: a restricted study is
    for the patient and administrators only, an excluded one is hidden from that user."""
    engine = site.archive.engine
    restricted = site.anna_studies["JPEG2000.dcm"]
    excluded = site.anna_studies["MR_small_RLE.dcm"]
    access.restrict(engine, restricted, "mental health", "sensitive", by="admin")
    access.exclude(engine, "carer", excluded, "asked by the patient")
    for username in ("dr.grey", "carer"):
        user = signed_in(site, username)
        listed = user.get("/portal").text
        assert restricted not in listed, username
        assert user.get(f"/portal/studies/{restricted}").status_code == 404
        assert user.get(f"/portal/download?study={restricted}").status_code == 404
    carer = signed_in(site, "carer")
    assert excluded not in carer.get("/portal").text
    assert carer.get(f"/portal/studies/{excluded}").status_code == 404
    assert excluded in signed_in(site, "dr.grey").get("/portal").text
    anna, admin = signed_in(site, "anna").get("/portal").text, signed_in(site, "admin").get("/portal").text
    assert restricted in anna and excluded in anna
    assert restricted in admin


def test_staff_with_more_patients_than_a_list_holds_find_them_by_name_or_id(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "MAX_PEOPLE", 1)  # the server runs in this process
    doctor = signed_in(site, "dr.grey")
    page = doctor.get("/portal").text
    assert "Find a patient" in page and "Whose images?" not in page and "Patients you may see" not in page
    assert page.count('class="card study"') == len(ANNA_FILES) + 1  # the newest studies still show
    bob = doctor.get("/portal", params={"q": "other bob"}).text
    assert "Patients matching “other bob”" in bob and "PAT-BOB" in bob and "PAT-ANNA" not in bob
    by_id = doctor.get("/portal", params={"q": "pat-an"}).text
    assert "PAT-ANNA" in by_id and "PAT-BOB" not in by_id
    both = doctor.get("/portal", params={"q": "pat"}).text
    assert "1 more patient matches; add to the search" in both
    for nothing in ("nobody", "%", "_"):
        missing = doctor.get("/portal", params={"q": nothing})
        assert missing.status_code == 200 and "No patient you may see matches" in missing.text
    link = re.search(r'href="(/portal\?patient=[^"]+)"', bob)
    assert link is not None
    theirs = doctor.get(link[1].replace("&amp;", "&")).text
    assert theirs.count('class="card study"') == len(BOB_FILES) and "PAT-ANNA" not in theirs


def test_a_list_shows_the_newest_studies_and_says_how_many_more_there_are(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "MAX_LISTED", 2)
    page = signed_in(site, "dr.grey").get("/portal").text
    assert page.count('class="card study"') == 2
    assert f"{len(ANNA_FILES) + 1 - 2} older studies are not shown; choose a patient to see theirs." in page
    anna = signed_in(site, "anna").get("/portal").text
    assert anna.count('class="card study"') == 2
    assert f"Download all {len(ANNA_FILES)} studies of" in anna
