"""Shared fixtures: real servers on 127.0.0.1 port 0, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from imagebridge.config import Settings
from imagebridge.index.db import scratch_database
from imagebridge.services.archive import Archive, open_archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PG_ADMIN_URL = os.environ.get("IMAGEBRIDGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]

# The CLI's tables and summaries (rich) wrap at the terminal width; under pytest-xdist there is no
# terminal and temporary paths are longer, so tests that read CLI output see one wide terminal.
os.environ["COLUMNS"] = "200"


@pytest.fixture(scope="session", autouse=True)
def _quiet_pydicom() -> None:
    # pydicom warns about odd values in its own deliberately odd sample files.
    warnings.filterwarnings("ignore", module="pydicom")


def _temporary_pg_database() -> Iterator[str]:
    yield from scratch_database(PG_ADMIN_URL, "ib_test")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty index database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        yield from _temporary_pg_database()


def make_archive(tmp_path: Path, database_url: str, **settings: object) -> Archive:
    """An archive for archive-core tests: DICOMweb without tokens (``dicomweb_anonymous``) unless
    a test says ``dicomweb_anonymous=False`` (the default of a real server; tests/auth do)."""
    settings.setdefault("dicomweb_anonymous", True)
    return open_archive(Settings(data_dir=tmp_path / "data", database_url=database_url, **settings))  # type: ignore[arg-type]


def archive_per_backend(backend: str, tmp: Path, **settings: object) -> Iterator[Archive]:
    """An archive on ``backend`` ("sqlite" or "postgresql") for a longer-lived fixture."""
    if backend == "sqlite":
        archive = make_archive(tmp, f"sqlite:///{tmp / 'index.sqlite3'}", **settings)
        yield archive
        archive.close()
        return
    for url in _temporary_pg_database():
        archive = make_archive(tmp, url, **settings)
        yield archive
        archive.close()


@pytest.fixture
def archive(tmp_path: Path, database_url: str) -> Iterator[Archive]:
    archive = make_archive(tmp_path, database_url)
    yield archive
    archive.close()


@pytest.fixture
def server(archive: Archive) -> Iterator[BackgroundServer]:
    """A real HTTP server on 127.0.0.1, port 0, over ``archive``."""
    running = BackgroundServer(create_app(archive)).start()
    yield running
    running.stop()


@pytest.fixture
def dicomweb_url(server: BackgroundServer) -> str:
    return f"{server.url}/dicomweb"


# --- Browser (Playwright driving Debian Chromium; see tests/browser.py) ----------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the session; fails (never skips) with how to install it if missing."""
    from playwright.sync_api import sync_playwright

    from tests import browser

    try:
        executable = browser.chromium_path()
    except browser.ChromiumMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with sync_playwright() as playwright:
        launched = browser.launch(playwright)
        assert launched.version, f"{executable} did not start"
        yield launched
        launched.close()


@pytest.fixture
def browser_page(chromium: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context (no cookies from other tests); screenshots under test-artifacts/ on failure."""
    from tests import browser

    with browser.fresh_context(chromium, viewport=browser.DESKTOP) as context:
        page = context.new_page()
        yield page
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            for path in browser.save_failure_screenshots(context, request.node.nodeid):
                print(f"screenshot of the failed test: {path}")
