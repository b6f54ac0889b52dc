"""``/portal/import`` in Chromium: a zip resumes an upload the server already half holds, a picked
folder is packed into a zip in the browser, and the result page lists the studies found."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from imagebridge.auth.users import Role
from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.browser import DESKTOP, fresh_context, save_failure_screenshots
from tests.conftest import make_archive
from tests.media.test_sources import DICOMDIR_TESTS
from tests.media.test_uploads import PASSWORD, Api

STAMP = 1_700_000_000


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Api]:
    archive: Archive = make_archive(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite3'}")
    app = create_app(archive)
    running = BackgroundServer(app).start()
    app.state.authorization.users.add("rad", PASSWORD, Role.CLINICIAN, display_name="Dr Rad")
    yield Api(running.url, app.state.authorization, archive)
    running.stop()
    archive.close()


def _disc(tmp_path: Path) -> Path:
    root = tmp_path / "CDROM"
    shutil.copytree(DICOMDIR_TESTS, root, ignore=shutil.ignore_patterns("DICOMDIR-*", "TINY_ALPHA"))
    (root / "VIEWER.EXE").write_bytes(b"MZ" + b"\0" * 100)
    return root


def _sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/portal/sign-in")
    page.get_by_label("User name").fill("rad")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/portal")


def test_resume_a_zip_then_pack_a_folder(
    site: Api, tmp_path: Path, request: pytest.FixtureRequest, chromium: Browser
) -> None:
    disc = _disc(tmp_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(disc.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(disc).as_posix())
    data = buffer.getvalue()
    archive_file = tmp_path / "disc.zip"
    archive_file.write_bytes(data)
    os.utime(archive_file, (STAMP, STAMP))
    staff = site.token("user/*.cruds", subject="rad")
    with httpx.Client(base_url=site.base) as client:  # an upload that stopped half way (tab closed)
        upload_id = client.post(
            "/api/uploads", json={"name": "disc.zip", "size": len(data)}, headers=staff
        ).json()["id"]
        half = len(data) // 2
        client.patch(
            f"/api/uploads/{upload_id}", content=data[:half], headers={**staff, "Upload-Offset": "0"}
        )

    with fresh_context(chromium, viewport=DESKTOP) as context:
        try:
            page = context.new_page()
            _sign_in(page, site.base)
            page.goto(f"{site.base}/portal/import")
            key = f"ib-upload:disc.zip:{len(data)}:{STAMP * 1000}"
            page.evaluate("([k, v]) => localStorage.setItem(k, v)", [key, upload_id])
            page.set_input_files("#pick-file", str(archive_file))
            page.wait_for_url(f"{site.base}/portal/import/{upload_id}", timeout=60_000)
            assert "31 stored, 0 already here" in page.content()
            assert page.get_by_role("table", name="Studies found").locator("tbody tr").count() == 6

            page.goto(f"{site.base}/portal/import")
            page.set_input_files("#pick-folder", str(disc))
            page.wait_for_url(lambda url: "/portal/import/" in url and upload_id not in url, timeout=60_000)
            text = page.content()
            assert "0 stored, 31 already here" in text and "CDROM.zip" in text
            assert "not a DICOM file: viewer program" in text
        except Exception:
            save_failure_screenshots(context, request.node.nodeid)
            raise
