"""Site-side detection with real browsers in the testbed (``netvigil testbed browse``).

Headless Chromium (and Firefox ESR when installed) in `client` visit sites in `internet`
served behind ``netvigil sitecheck front``; the site's verdict on each visit is compared with
what the profile's censor does. On kz-2019-interception the middlebox (Python's ssl over
OpenSSL) re-opens every intercepted connection; on clean nothing stands between browser and
site. scripts/setup.sh installs both browsers; CI runs these as root.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningTestbed, needs_testbed
from netvigil.testbed import control
from netvigil.testbed.browse import dnat_ruleset, visitable
from netvigil.testbed.middlebox import tls_rule
from netvigil.testbed.plan import make_plan
from netvigil.testbed.profile import load_profile

HAVE_CHROMIUM = shutil.which("chromium") is not None
HAVE_FIREFOX = shutil.which("firefox-esr") is not None or shutil.which("firefox") is not None
needs_chromium = pytest.mark.skipif(
    not HAVE_CHROMIUM, reason="chromium is missing: scripts/setup.sh installs it"
)


def browse(bed: RunningTestbed, *args: str, timeout: float = 240) -> list[dict[str, Any]]:
    """Run the browse role inside `client` of a running testbed; its JSON lines."""
    done = control.exec_command(
        bed.info,
        "client",
        [sys.executable, "-m", "netvigil.testbed.browse", "--json", *args],
        capture_output=True,
        timeout=timeout,
    )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    assert lines and "summary" in lines[-1], done.stderr.decode(errors="replace")[-2000:]
    return lines


def browsers() -> str:
    return "chromium,firefox" if HAVE_FIREFOX else "chromium"


# -- without a testbed ----------------------------------------------------------------------


def test_visitable_truth_is_the_censors_tls_rule() -> None:
    plan = make_plan(load_profile("kz-2019-interception"))
    sites = visitable(plan)
    intercepted = [url for url, truth in sites if truth]
    assert len(intercepted) >= 20 and len(sites) - len(intercepted) >= 5
    for url, truth in sites:
        host = url.split("/")[2]
        rule = tls_rule(plan, host)
        assert truth == (rule is not None and rule.action == "tls-intercept")
    clean = make_plan(load_profile("clean"))
    assert clean.sites and not any(truth for _, truth in visitable(clean))
    # Down, slow, 403 and CDN sites are not visited: no page, or not one address.
    honest = {s.domain for s in clean.sites if s.kind in ("down", "slow", "forbidden", "cdn")}
    assert not honest & {url.split("/")[2] for url, _ in visitable(clean)}


def test_dnat_puts_the_front_on_the_sites_address() -> None:
    from netvigil.testbed.browse import Front

    plan = make_plan(load_profile("clean"))
    site = plan.site("www.bbc.com")
    assert site is not None
    front = Front(site, 18443, Path("/nonexistent"), None)  # type: ignore[arg-type]
    text = dnat_ruleset([front])
    address = site.addresses[0]
    assert f"ip daddr {address} tcp dport 443 dnat to {address}:18443" in text
    assert "type nat hook prerouting" in text


def test_browse_refuses_urls_the_profile_does_not_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    from netvigil.testbed import browse as role

    plan = make_plan(load_profile("clean"))
    for url in ("https://not-a-site.example/", "http://www.bbc.com/"):
        with pytest.raises(ValueError, match="not an https URL of a site"):
            role.run_visits(plan, [url], ["chromium"])
    monkeypatch.delenv("NETVIGIL_TESTBED_STATE", raising=False)
    assert role.main(["https://www.bbc.com/"]) == 2  # outside a testbed: a usage error


# -- in the testbed -------------------------------------------------------------------------


@needs_testbed
@needs_chromium
@pytest.mark.testbed
@pytest.mark.timeout(400)
def test_every_intercepted_visit_is_flagged_and_names_the_middleboxs_library(
    testbed: Callable[[str], RunningTestbed],
) -> None:
    bed = testbed("kz-2019-interception")
    lines = browse(bed, "--browser", browsers())
    visits, summary = lines[:-1], lines[-1]["summary"]
    assert {v["browser"] for v in visits} == set(browsers().split(","))
    assert any(v["intercepted"] for v in visits) and any(not v["intercepted"] for v in visits)
    for visit in visits:
        # The visitor trusts the Qaznet root: the page loads, the interception is invisible.
        assert visit["status"] == "ok", visit
        assert visit["connections"] >= 1, visit
        if visit["browser"] == "chromium":
            assert "news, services and community" in visit["page_title"], visit
        if visit["intercepted"]:
            assert set(visit["verdicts"]) == {"likely-intercepted"}, visit
            assert visit["best_match"] and all(
                m.startswith("Python ssl (OpenSSL") for m in visit["best_match"]
            ), visit
            # The browser's traits are gone: OpenSSL's own extensions and groups appear.
            assert {"extension-never-sent", "group-never-sent"} <= set(visit["reasons"]), visit
            if visit["browser"] == "chromium":
                assert "grease-absent" in visit["reasons"], visit
        else:
            assert set(visit["verdicts"]) == {"consistent"}, visit
            assert not visit["reasons"], visit
    assert summary["false_positives"] == 0 and summary["false_negatives"] == 0, summary
    assert summary["precision"] == 1.0 and summary["recall"] == 1.0


@needs_testbed
@needs_chromium
@pytest.mark.testbed
@pytest.mark.timeout(400)
def test_no_visit_is_flagged_on_a_clean_network(
    testbed: Callable[[str], RunningTestbed],
) -> None:
    bed = testbed("clean")
    lines = browse(bed, "--browser", browsers())
    visits, summary = lines[:-1], lines[-1]["summary"]
    assert len(visits) >= 5
    for visit in visits:
        assert not visit["intercepted"] and visit["connections"] >= 1, visit
        assert set(visit["verdicts"]) == {"consistent"}, visit
        agents = " ".join(visit["user_agents"])
        assert ("HeadlessChrome/" if visit["browser"] == "chromium" else "Firefox/") in agents
    assert summary["true_positives"] == summary["false_positives"] == 0


def _session(visit: dict[str, Any]) -> tuple[Any, ...]:
    tls = visit["tls"]
    assert tls.get("sessions"), visit
    sessions = {tuple(sorted(s.items())) for s in tls["sessions"]}
    chains = {tuple(c) for c in tls["certificate_chains"]}
    return (frozenset(sessions), frozenset(chains))


@needs_testbed
@needs_chromium
@pytest.mark.testbed
@pytest.mark.timeout(300)
def test_the_front_never_alters_the_browsers_tls_session(
    testbed: Callable[[str], RunningTestbed], tmp_path: Path
) -> None:
    """Chromium's own NetLog, visiting one site through the front and then directly (same
    testbed, same certificate): the same version, cipher suite, key-exchange group, ALPN,
    server signature algorithm and certificate chain; and the ClientHello the front judged is
    byte for byte one that Chromium says it sent."""
    bed = testbed("clean")
    url = "https://www.bbc.com/"
    fronted = browse(bed, "--browser", "chromium", "--netlog-dir", str(tmp_path / "a"), url)[0]
    direct = browse(
        bed, "--browser", "chromium", "--no-front", "--netlog-dir", str(tmp_path / "b"), url
    )[0]
    assert fronted["connections"] >= 1 and direct["connections"] == 0  # the site saw no front
    assert fronted["page_title"] and fronted["page_title"] == direct["page_title"]
    assert _session(fronted) == _session(direct)
    sent = set(fronted["tls"]["client_hellos"])
    for record in fronted["front_client_hellos"]:
        raw = bytes.fromhex(record)
        assert raw[0] == 0x16 and int.from_bytes(raw[3:5], "big") == len(raw) - 5  # one record
        assert raw[5:].hex() in sent


def test_setup_installs_the_browsers() -> None:
    setup = (Path(__file__).resolve().parent.parent / "scripts" / "setup.sh").read_text()
    assert "need_apt+=(chromium)" in setup and "need_apt+=(firefox-esr)" in setup
