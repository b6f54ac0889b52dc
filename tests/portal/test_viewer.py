"""OHIF at /viewer draws every kind of sample study: multi-frame, JPEG 2000, JPEG-LS, RLE, colour.

Each study is opened with the signed-in patient's token; the viewport's pixels are read back from
a screenshot of its canvas and must show an image (screenshots are kept under test-artifacts/).
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page

from tests import browser
from tests.portal.conftest import ANNA_FILES, Site
from tests.portal.helpers import drawn, sign_in, wait_for_image


def test_viewer_draws_every_sample_study(browser_page: Page, shared_site: Site, viewer_ready: None) -> None:
    page = browser_page
    sign_in(page, shared_site.url)
    timings = []
    for name, what in ANNA_FILES.items():
        study = shared_site.anna_studies[name]
        start = time.perf_counter()
        page.goto(f"{shared_site.url}/viewer/viewer?StudyInstanceUIDs={study}")
        pixels = wait_for_image(page)
        timings.append((what, time.perf_counter() - start))
        browser.screenshot(page, "portal-viewer", name.removesuffix(".dcm"))
        assert drawn(pixels), f"the viewer drew nothing for {name} ({what})"
    print("\nOHIF first image per study (seconds)")
    for what, secs in timings:
        print(f"  {what:<40} {secs:6.2f}")


def test_viewer_needs_a_session(browser_page: Page, shared_site: Site) -> None:
    answer = browser_page.request.get(f"{shared_site.url}/viewer/app-config.js")
    assert answer.headers["cache-control"] == "no-store"
    assert "Bearer" not in answer.text() and "/portal/sign-in" in answer.text()
    browser_page.goto(f"{shared_site.url}/viewer/viewer?StudyInstanceUIDs=1.2.3")
    assert browser_page.url.endswith("/portal/sign-in")


@pytest.mark.parametrize("path", ["/viewer/app.bundle.missing.js", "/viewer/nope.css"])
def test_missing_viewer_files_are_404(browser_page: Page, shared_site: Site, path: str) -> None:
    assert browser_page.request.get(f"{shared_site.url}{path}").status == 404
