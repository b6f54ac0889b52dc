"""Debian Chromium driven by Playwright, for tests of the pages people see.

``playwright install`` cannot download browsers here, so the tests always launch the system's
``/usr/bin/chromium`` (``make test`` installs it). Each test gets a fresh context (no cookies
shared between tests); when a test fails, a screenshot of every page it left open is saved under
``test-artifacts/`` so the failure can be looked at.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, Playwright

CHROMIUM = os.environ.get("IMAGEBRIDGE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # WebGL through SwiftShader, for viewers that draw with it (OHIF, cornerstone).
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


class ChromiumMissing(RuntimeError):
    """The system Chromium is not installed."""


def chromium_path() -> str:
    """The Chromium executable, or a clear error saying how to get it."""
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not found:
        raise ChromiumMissing(
            f"Chromium is not installed at {CHROMIUM}: run `make test` (it installs the Debian "
            "'chromium' package) or `apt-get install -y chromium`"
        )
    return found


def launch(playwright: Playwright) -> Browser:
    """Headless Debian Chromium with the flags that work on this kind of machine."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=list(ARGS))


def artifact_path(test_id: str, suffix: str) -> Path:
    """A file under ``test-artifacts/`` named after the test (safe for any parametrized id)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', test_id).strip('_')}{suffix}"


def screenshot(page: Page, test_id: str, label: str = "") -> Path:
    """Save a full-page screenshot of ``page`` for ``test_id`` and return where it went."""
    path = artifact_path(test_id, f"{'-' + label if label else ''}.png")
    page.screenshot(path=str(path), full_page=True)
    return path


@contextmanager
def fresh_context(browser: Browser, **options: object) -> Iterator[BrowserContext]:
    """A new browser context (own cookies and storage), closed afterwards."""
    context = browser.new_context(**options)  # type: ignore[arg-type]
    try:
        yield context
    finally:
        context.close()


def save_failure_screenshots(context: BrowserContext, test_id: str) -> list[Path]:
    """Screenshots of every open page of ``context``; errors while taking them are not the test's."""
    saved = []
    for number, page in enumerate(context.pages):
        if page.is_closed():
            continue
        try:
            saved.append(screenshot(page, test_id, f"failure{number}"))
        except Exception:  # a page that cannot be drawn must not hide the real failure
            continue
    return saved
