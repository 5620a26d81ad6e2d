"""The report's network-status band in a real browser (Playwright driving Debian's Chromium).

The page is opened from its file: nothing may be requested but the file itself, no console
error, and the band of the shut-down network must be drawn at a usable size with its offline
day visible, on a wide screen and on a phone. Skipped when Chromium is absent outside CI, as
the explorer's browser test is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from netvigil.pipeline import report
from netvigil.pipeline.local import run_local
from test_pipeline_network import _measurements

CHROMIUM = os.environ.get("NETVIGIL_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"

if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
    if IN_CI:
        raise RuntimeError(f"CI: {CHROMIUM} is missing (scripts/setup.sh installs chromium)")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api") if not IN_CI else None
from playwright.sync_api import Browser, sync_playwright  # noqa: E402

from test_explorer_browser import CHROMIUM_ARGS  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("report-browser")
    src = base / "in.jsonl"
    src.write_text("".join(json.dumps(m) + "\n" for m in _measurements()))
    run_local([src], base / "out", workers=1)
    report.write_report(base / "out", base / "r.html")
    return base / "r.html"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.parametrize("width", [1280, 420])
def test_network_band_is_drawn(browser: Browser, page_file: Path, width: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(page_file.as_uri())
        heading = page.locator("#network-status")
        assert heading.is_visible()
        band = page.locator("figure.net-band svg")
        assert band.count() == 1
        band.scroll_into_view_if_needed()
        box = band.bounding_box()
        assert box is not None and box["width"] >= min(width - 60, 480) * 0.8
        assert box["height"] >= 10
        offline = page.locator("figure.net-band rect.net-offline").first
        obox = offline.bounding_box()
        assert obox is not None and obox["width"] > 2 and obox["height"] > 5
        assert "offline" in page.locator("figure.net-band figcaption").inner_text()
        # the page never scrolls sideways
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert requests == [page_file.as_uri()]
        assert errors == []
    finally:
        page.close()
