"""The explorer in a real browser: Playwright (PyPI) driving Debian's Chromium, on loopback.

A person's walk (overview → country → domain → measurement → back) by clicks and by keyboard;
the charts are there and labelled; a hostile measurement (markup, ``onerror=``, ``javascript:``
URLs, a blockpage with JavaScript) changes nothing: no dialog, no title change, no script, no
request to anything but the explorer, no console error. The browser is told to resolve no name
but the loopback address (``--host-resolver-rules``) and to fetch nothing in the background.

Skipped only when Chromium is absent outside CI; in CI (``CI=true``) a missing browser fails.
Set ``NETVIGIL_EXPLORER_SCREENSHOTS=DIR`` to keep a screenshot of each page there (the README's
come from ``docs/explorer/``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from explorer_world import HOSTILE, build_world

CHROMIUM = os.environ.get("NETVIGIL_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"

if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
    if IN_CI:
        raise RuntimeError(f"CI: {CHROMIUM} is missing (scripts/setup.sh installs chromium)")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api") if not IN_CI else None
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, Request, sync_playwright  # noqa: E402

CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-pings",
    "--metrics-recording-only",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_world(tmp_path_factory.mktemp("explorer-browser"))


@pytest.fixture(scope="module")
def server(world: dict[str, Any]) -> Iterator[str]:
    """``netvigil explorer`` itself, as a user starts it, on a free loopback port."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netvigil.cli",
            "explorer",
            str(world["pipeline"]),
            "--collector-data",
            str(world["collector"]),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("netvigil explorer: http://127.0.0.1:"), line
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


class Watch:
    """Everything the page did that it should not: requests elsewhere, dialogs, errors."""

    def __init__(self, page: Page, base: str) -> None:
        self.base = base
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            self.errors.append(f"{msg.type}: {msg.text}")

    def assert_clean(self) -> None:
        assert self.dialogs == []
        assert self.errors == []
        foreign = [u for u in self.requests if not u.startswith(self.base + "/")]
        assert foreign == []


def _shot(page: Page, name: str) -> None:
    out = os.environ.get("NETVIGIL_EXPLORER_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


def _assert_charts_labelled(page: Page, minimum: int = 1) -> None:
    charts = page.locator("svg.chart[role=img]")
    assert charts.count() >= minimum
    for i in range(charts.count()):
        chart = charts.nth(i)
        label_ids = (chart.get_attribute("aria-labelledby") or "").split()
        assert len(label_ids) == 2
        title = page.locator(f"[id='{label_ids[0]}']").text_content() or ""
        desc = page.locator(f"[id='{label_ids[1]}']").text_content() or ""
        assert "measurements per day by outcome" in title
        assert "measurements over" in desc
        assert chart.locator("text.tick").count() >= 3  # y-axis and date ticks
        assert chart.locator("rect.bar").count() >= 1
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 60


def test_walk_overview_country_domain_measurement_and_back(
    browser: Browser, server: str, world: dict[str, Any]
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    watch = Watch(page, server)
    page.goto(server + "/")
    assert page.title() == "Overview · netvigil explorer"
    _assert_charts_labelled(page)
    _shot(page, "overview")
    page.get_by_role("link", name="KZ", exact=True).first.click()
    page.wait_for_url(server + "/country/KZ*")
    assert page.title() == "Country KZ · netvigil explorer"
    _assert_charts_labelled(page)
    assert page.locator("g.onset").count() >= 1  # the onset on news.example is marked
    _shot(page, "country")
    page.get_by_role("link", name="facebook.com", exact=True).first.click()
    page.wait_for_url(re.compile(r".*/domain/facebook\.com\?cc=KZ.*"))
    _assert_charts_labelled(page, minimum=2)  # one timeline per network
    _shot(page, "domain")
    uid = world["uids"]["interception"]
    page.locator(f"a[href='/measurement/{uid}']").first.click()
    page.wait_for_url(f"{server}/measurement/{uid}")
    body = page.locator("main").inner_text()
    assert "intercepted" in body and "Qaznet Trust Network" in body and "AS9198" in body
    assert "Inclusion proof verifies" in body
    assert f"netvigil verify {uid}.json" in body
    _shot(page, "measurement")
    page.go_back()
    page.wait_for_url(re.compile(r".*/domain/facebook\.com\?cc=KZ.*"))
    assert page.title().startswith("facebook.com in KZ")
    page.goto(server + "/search?cc=KZ&outcome=http/reset")
    assert page.locator("table tbody tr").count() >= 1
    _shot(page, "search")
    watch.assert_clean()
    page.close()


def test_hostile_measurement_changes_nothing(
    browser: Browser, server: str, world: dict[str, Any]
) -> None:
    page = browser.new_page()
    watch = Watch(page, server)
    uid = world["uids"]["hostile"]
    page.goto(f"{server}/measurement/{uid}")
    page.wait_for_load_state("networkidle")
    assert page.title() == f"Measurement {uid} · netvigil explorer"
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.querySelectorAll('iframe, img, object, embed').length") == 0
    on_attrs = page.evaluate(
        "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes])"
        ".filter(a => a.name.startsWith('on')).length"
    )
    assert on_attrs == 0
    hrefs = page.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
    assert all(h.startswith(server + "/") for h in hrefs), hrefs
    text = page.locator("main").inner_text()
    assert HOSTILE in text and "javascript:alert(document.cookie)" in text
    _shot(page, "measurement-hostile")
    watch.assert_clean()
    # The CSP is enforced, not only sent: a script injected now is refused by the browser.
    ran = page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__pwned = 1'; document.body.appendChild(s);"
        " return window.__pwned === 1 }"
    )
    assert ran is False
    page.close()


def test_keyboard_navigation(browser: Browser, server: str) -> None:
    page = browser.new_page()
    watch = Watch(page, server)
    page.goto(server + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for _ in range(80):  # bounded: Tab until the link to Kazakhstan's page has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == "/country/KZ":
            break
    else:
        pytest.fail("the country link is not reachable with Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible
    page.keyboard.press("Enter")
    page.wait_for_url(server + "/country/KZ")
    assert page.title() == "Country KZ · netvigil explorer"
    page.go_back()
    page.wait_for_url(re.compile(re.escape(server) + r"/(#main)?$"))
    assert page.title() == "Overview · netvigil explorer"
    # the search form is usable from the keyboard too
    page.goto(server + "/search")
    page.locator("input[name=cc]").focus()
    page.keyboard.type("KZ")
    page.keyboard.press("Enter")
    page.wait_for_url(server + "/search?cc=KZ*")
    assert page.locator("table tbody tr").count() >= 1
    watch.assert_clean()
    page.close()


def test_browser_is_debian_chromium() -> None:
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()
