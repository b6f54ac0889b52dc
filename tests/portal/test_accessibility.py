"""axe-core (WCAG 2.x A/AA rules) finds no violation on the portal's pages, desktop and phone width."""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

from tests import browser
from tests.portal.conftest import Site
from tests.portal.helpers import sign_in

WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


def violations(page: Page) -> list[str]:
    results = Axe().run(page, options=WCAG)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
    ]


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_patient_pages_pass_axe(browser_page: Page, shared_site: Site, viewport: str) -> None:
    page, site = browser_page, shared_site
    page.set_viewport_size(browser.PHONE if viewport == "phone" else browser.DESKTOP)  # type: ignore[arg-type]
    page.goto(f"{site.url}/portal/sign-in")
    found = {"sign-in": violations(page)}
    sign_in(page, site.url)
    ct = site.anna_studies["CT_small.dcm"]
    for name, path in {
        "study list": "/portal",
        "quick look": f"/portal/studies/{ct}",
        "share form": f"/portal/shares/new?study={ct}",
        "shares": "/portal/shares",
        "access log": "/portal/access-log",
        "not found": "/portal/studies/1.2.3",
    }.items():
        page.goto(f"{site.url}{path}")
        found[name] = violations(page)
    page.goto(f"{site.url}/portal/shares/new?study={ct}")
    page.get_by_role("button", name="Create the share").click()
    found["share created"] = violations(page)
    link = page.locator("#share-link").inner_text().strip()
    page.goto(link)
    found["recipient's code page"] = violations(page)
    assert {k: v for k, v in found.items() if v} == {}


def test_admin_page_passes_axe(browser_page: Page, shared_site: Site) -> None:
    sign_in(browser_page, shared_site.url, "admin")
    browser_page.goto(f"{shared_site.url}/portal/admin")
    assert violations(browser_page) == []
