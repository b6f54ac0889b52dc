"""The patient's and the recipient's whole journey in headless Chromium (issue 5 "Tests").

sign in → study list → the viewer draws an image → share → the link in a FRESH browser context →
code and date of birth → view and download → revoke → the link is refused; the zip is checked
(DICOMDIR read by pydicom's FileSet, every file byte-identical to its stored blob) and the access
log holds an event for each step. Timings of the steps are printed (run with ``-s``).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import httpx
import pydicom
from playwright.sync_api import Browser, Page, expect
from pydicom.fileset import FileSet

from imagebridge.audit.store import AuditRecord, AuditStore
from imagebridge.index.lookup import Target
from tests import browser
from tests.portal.conftest import ANNA, ANNA_FILES, Site
from tests.portal.helpers import Timings, drawn, sign_in, wait_for_image


def test_patient_shares_a_study_and_revokes_it(
    chromium: Browser, browser_page: Page, shared_site: Site, viewer_ready: None
) -> None:
    site, page, times = shared_site, browser_page, Timings()
    ct = site.anna_studies["CT_small.dcm"]
    test_id = "portal-journey"
    bearer_seen: list[str] = []
    page.on(
        "request",
        lambda r: bearer_seen.append(r.headers.get("authorization", "")) if "/dicomweb/" in r.url else None,
    )

    with times.step("patient signs in, study list shown"):
        sign_in(page, site.url)
        cards = page.locator("li.study")
        expect(cards).to_have_count(len(ANNA_FILES))
    assert site.bob_studies["US1_J2KR.dcm"] not in page.content(), "another patient's study is listed"
    expect(page.get_by_text("Report: Diagnosis")).to_be_visible()
    page.set_viewport_size(browser.PHONE)
    browser.screenshot(page, test_id, "phone-study-list")
    page.set_viewport_size(browser.DESKTOP)

    with times.step("viewer draws the CT (OHIF, DICOMweb with token)"):
        page.locator(f'li.study[data-study="{ct}"]').get_by_role("link", name="Open in viewer").click()
        pixels = wait_for_image(page)
    browser.screenshot(page, test_id, "viewer-ct")
    assert drawn(pixels), "the viewer's canvas stayed blank"
    assert bearer_seen and all(h.startswith("Bearer ") for h in bearer_seen), (
        "OHIF called /dicomweb without a token"
    )

    with times.step("patient creates a share"):
        page.goto(f"{site.url}/portal/shares/new?study={ct}")
        page.get_by_label("Who is it for? (optional)").fill("Dr Outside")
        page.get_by_role("button", name="Create the share").click()
        link = page.locator("#share-link").inner_text().strip()
        code = page.locator("#share-code").inner_text().strip()
    assert link.startswith(f"{site.url}/s/") and len(code) == 11
    share_id = link.rsplit("/", 1)[1]

    with browser.fresh_context(chromium, viewport=browser.PHONE, accept_downloads=True) as other:
        outside = other.new_page()
        try:
            with times.step("recipient opens the link, code + date of birth"):
                outside.goto(link)
                browser.screenshot(outside, test_id, "phone-share-page")
                outside.get_by_label("Access code").fill(code.lower().replace("-", " "))
                outside.get_by_label("The patient's date of birth").fill("1980-02-14")
                outside.get_by_role("button", name="Open the images").click()
                expect(outside.locator("li.study")).to_have_count(1)
            with times.step("recipient's quick look shows the image"):
                outside.get_by_role("link", name="Quick look").click()
                image = outside.locator(".frames img").first
                expect(image).to_be_visible()
                outside.wait_for_function(
                    "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
                )
            with times.step("recipient's viewer draws the CT"):
                outside.goto(f"{site.url}/viewer/viewer?StudyInstanceUIDs={ct}")
                assert drawn(wait_for_image(outside)), "the share's viewer stayed blank"
            browser.screenshot(outside, test_id, "recipient-viewer")
            with outside.expect_response(lambda r: "/dicomweb/studies?00100020=" in r.url) as qido:
                outside.reload()
            assert [s["0020000D"]["Value"][0] for s in qido.value.json()] == [ct], (
                "QIDO answered unshared studies"
            )
            outside.get_by_text("e+1").first.wait_for()
            assert outside.get_by_text("Sample SC_rgb").count() == 0, (
                "the viewer lists a study that was not shared"
            )
            with times.step("recipient downloads the zip"):
                outside.goto(f"{site.url}/s/{share_id}/studies")
                with outside.expect_download() as info:
                    outside.get_by_role("link", name="Download").click()
                saved = Path(info.value.path())
            check_zip(site, saved.read_bytes(), [ct])

            with times.step("patient revokes the share"):
                page.goto(f"{site.url}/portal/shares")
                page.get_by_role("button", name="Revoke").first.click()
                expect(page.locator('[data-state="revoked"]').first).to_be_visible()
            with times.step("the recipient is refused"):
                answer = outside.goto(f"{site.url}/s/{share_id}/studies")
                assert answer is not None and answer.status == 410
                expect(outside.get_by_role("heading", name="Access has ended")).to_be_visible()
                refused = outside.request.get(f"{site.url}/s/{share_id}/images/studies/{ct}/thumbnail")
                assert refused.status == 403
        except Exception:
            browser.save_failure_screenshots(other, f"{test_id}-recipient")
            raise

    events = logged_events(site)
    actions = {e.action for e in events}
    for wanted in ("share-create", "share-redeem", "download", "share-revoke"):
        assert wanted in actions, f"no {wanted} AuditEvent; saw {sorted(actions)}"
    viewed = {(e.user, e.share_id) for e in events if ct in e.studies and e.outcome in ("allow", "success")}
    assert ("anna", None) in viewed, "the patient's viewing left no AuditEvent"
    assert any(share == share_id for _user, share in viewed), "the recipient's viewing left no AuditEvent"
    fhir_actions = fhir_audit_actions(page, site)
    for wanted in ("share-create", "share-redeem", "download", "share-revoke"):
        assert wanted in fhir_actions, f"/fhir/AuditEvent?patient= lacks {wanted}; has {sorted(fhir_actions)}"
    print(f"\nAuditEvents by action: { {a: sum(e.action == a for e in events) for a in sorted(actions)} }")
    print("\n" + times.report("Patient and recipient journey"))


def fhir_audit_actions(page: Page, site: Site) -> set[str]:
    """Our action names in the patient's ``/fhir/AuditEvent?patient=`` Bundle, read with her own token."""
    config = page.request.get(f"{site.url}/viewer/app-config.js").text()
    token = re.search(r'var token = "([^"]+)"', config)
    assert token is not None, "the signed-in patient's viewer config carries no token"
    bundle = httpx.get(
        f"{site.url}/fhir/AuditEvent",
        params={"patient": site.anna_patient, "_count": "500"},
        headers={"Authorization": f"Bearer {token[1]}", "Accept": "application/fhir+json"},
    ).json()
    assert bundle.get("resourceType") == "Bundle", bundle
    return {
        coding["code"]
        for entry in bundle.get("entry", [])
        for coding in entry["resource"].get("subtype", [])
        if coding.get("system") == "urn:imagebridge:audit-action"
    }


def check_zip(site: Site, data: bytes, study_uids: list[str]) -> None:
    """DICOMDIR readable by FileSet; every instance file byte-identical to the archive's blob."""
    stored = {i.sop_uid: i.blob_key for uid in study_uids for i in site.archive.lookup.instances(Target(uid))}
    with zipfile.ZipFile(io.BytesIO(data)) as archive_zip, _extracted(archive_zip) as root:
        fileset = FileSet(pydicom.dcmread(root / "DICOMDIR"))
        listed = {str(inst.SOPInstanceUID) for inst in fileset}
        assert listed == set(stored), "the DICOMDIR does not list exactly the study's instances"
        for instance in fileset:
            path = Path(instance.path)
            with site.archive.blobs.open(stored[str(instance.SOPInstanceUID)]) as blob:
                assert path.read_bytes() == blob.read(), f"{path.name} differs from the stored blob"
        assert "README.TXT" in archive_zip.namelist()


class _extracted:
    def __init__(self, archive_zip: zipfile.ZipFile) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        self.zip = archive_zip

    def __enter__(self) -> Path:
        self.zip.extractall(self._tmp.name)
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()


def logged_events(site: Site) -> list[AuditRecord]:
    store = AuditStore.of(site.archive.engine)
    store.flush()
    return store.search(limit=5000)


def test_guessing_the_code_locks_the_share(browser_page: Page, shared_site: Site) -> None:
    site, page = shared_site, browser_page
    assert site.app is not None
    created = site.app.state.sharing.create(
        patient=site.anna_patient, studies=None, created_by="anna", recipient="guesser"
    )
    page.goto(f"{site.url}{created.link}")
    for attempt in range(5):
        page.get_by_label("Access code").fill(f"WRONG-0000{attempt}")
        page.get_by_label("The patient's date of birth").fill(f"{ANNA['PatientBirthDate'][:4]}-02-14")
        page.get_by_role("button", name="Open the images").click()
        if attempt < 4:
            expect(page.get_by_role("alert")).to_contain_text(f"{4 - attempt} attempt")
    expect(page.get_by_role("alert")).to_contain_text("locked")
    page.goto(f"{site.url}{created.link}")
    expect(page.get_by_role("alert")).to_contain_text("locked")
    expect(page.get_by_label("Access code")).to_have_count(0)
    expect(page.get_by_text("Contact the patient")).to_be_visible()
    browser.screenshot(page, "portal-share-locked", "locked")
    # the right code no longer helps: the share stays locked until the patient unlocks it
    answer = page.request.post(
        f"{site.url}{created.link}", form={"code": created.code, "birth_date": "1980-02-14", "csrf": "x"}
    )
    assert answer.status in (400, 423)
    assert site.app.state.sharing.get(created.share.share_id).state().value == "locked"

    # the patient unlocks it on her Shares page; the recipient's right answer works again
    sign_in(page, site.url)
    page.goto(f"{site.url}/portal/shares")
    page.get_by_role("form", name="Unlock this share").get_by_role("button", name="Unlock").click()
    page.wait_for_url(f"{site.url}/portal/shares")
    assert site.app.state.sharing.get(created.share.share_id).state().value == "active"
    page.goto(f"{site.url}{created.link}")
    page.get_by_label("Access code").fill(created.code)
    page.get_by_label("The patient's date of birth").fill(
        f"{ANNA['PatientBirthDate'][:4]}-{ANNA['PatientBirthDate'][4:6]}-{ANNA['PatientBirthDate'][6:]}"
    )
    page.get_by_role("button", name="Open the images").click()
    page.wait_for_url(f"{site.url}{created.link}/studies")
