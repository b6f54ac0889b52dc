"""Steps the browser tests share: sign in, wait for the viewer to draw, read its pixels back, time steps."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image
from playwright.sync_api import Page

from tests.portal.conftest import PASSWORD

VIEWER_TIMEOUT_MS = 90_000


def sign_in(page: Page, base: str, username: str = "anna") -> None:
    page.goto(f"{base}/portal")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/portal")


def viewport_pixels(page: Page) -> np.ndarray:
    """The pixels of OHIF's main image viewport as drawn on screen (RGB array)."""
    canvas = page.locator("canvas.cornerstone-canvas").first
    canvas.wait_for(state="visible", timeout=VIEWER_TIMEOUT_MS)
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))


def wait_for_image(page: Page, timeout: float = VIEWER_TIMEOUT_MS / 1000) -> np.ndarray:
    """Poll the viewport until it shows an image (not one flat colour); returns the last pixels."""
    deadline = time.monotonic() + timeout
    pixels = viewport_pixels(page)
    while not drawn(pixels) and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        pixels = viewport_pixels(page)
    return pixels


def drawn(pixels: np.ndarray) -> bool:
    """An image, not a blank viewport: many distinct grey levels and real contrast."""
    grey = pixels.mean(axis=2)
    return bool(grey.std() > 8 and len(np.unique(grey.astype(np.uint8))) > 16 and (grey > 40).mean() > 0.02)


class Timings:
    """Wall-clock time of each journey step, printed as a table at the end (pytest -s)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.steps.append((name, time.perf_counter() - start))

    def report(self, title: str) -> str:
        lines = [f"{title} (seconds)"] + [f"  {name:<48} {secs:7.2f}" for name, secs in self.steps]
        lines.append(f"  {'total':<48} {sum(s for _, s in self.steps):7.2f}")
        return "\n".join(lines)
