"""The messaging apps against a censor that changes: in every phase, each app's verdict equals
the testbed's truth for that phase, and a shutdown gives no app (and no site) a blocking verdict.

One testbed, four phases of 25-45 s: open → the apps blocked, each a different way → a
shutdown → open again. In each phase the probe measures the four apps (and a site) from
`client`, as the protest-day demo does: the network is checked around the apps, so an offline
network is recorded on their measurements and the verdict blames none of them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import needs_testbed
from netvigil.testbed import control
from netvigil.testbed.plan import Plan
from netvigil.testbed.truth import OFFLINE, messaging_truth

pytestmark = [needs_testbed, pytest.mark.testbed]

PROFILE = """
name = "im-phases"
domains = ["news.example"]
messaging_apps = ["telegram", "whatsapp", "signal", "facebook_messenger"]

[[phase]]
name = "open"
start = "0s"

[[phase]]
name = "blocked"
start = "25s"

# Telegram: its web app and every data centre. The testbed dials a data centre's IP literal at
# a mapped address (tcp_connect names it, the request names the literal): x_endpoints says
# where, and the verdict pairs them through it.

[[phase.rule]]
action = "ip-reject"
domain = ["149.154.175.50", "149.154.167.51", "149.154.175.100", "149.154.167.91",
          "149.154.171.5", "95.161.76.100"]

[[phase.rule]]
action = "tls-reset"
domain = ["web.telegram.org", "web.whatsapp.com", "*.signal.org"]

[[phase.rule]]
action = "dns-nxdomain"
domain = ["v.whatsapp.net"]

[[phase.rule]]
action = "ip-reject"
domain = ["*.whatsapp.net"]

[[phase.rule]]
action = "dns-bogus"
domain = ["b-api.facebook.com"]

[[phase]]
name = "off"
start = "50s"
shutdown = true

[[phase]]
name = "back"
start = "100s"
"""


class Bed:
    def __init__(self, info: control.TestbedInfo, tmp: Path) -> None:
        self.info = info
        self.tmp = tmp
        self.plan = Plan.load(info.public_dir)

    def offset(self) -> float:
        return time.time() - self.info.started_at

    def wait_for(self, phase: str, settle: float = 0.5) -> None:
        start = next(p.start_seconds for p in self.plan.phases if p.name == phase)
        delay = self.info.started_at + start + settle - time.time()
        assert delay > -2, f"phase {phase} began {-delay:.1f} s ago: the test ran late"
        if delay > 0:
            time.sleep(delay)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    path = Path(tmp_path_factory.mktemp("im-phases")) / "im-phases.toml"
    path.write_text(PROFILE)
    info = control.up(str(path), name=f"pytest-im-phases-{id(path)}")
    running = Bed(info, path.parent)
    try:
        yield running
    finally:
        control.down(info.name)


def _measure(bed: Bed, phase: str) -> tuple[float, float, list[dict[str, Any]]]:
    """One round of the protest demo's probe (the site and every app), run inside `client`
    with the testbed's own environment (resolver, helper, endpoint map, reference targets)."""
    out = bed.tmp / f"{phase}.jsonl"
    before = bed.offset()
    done = control.exec_command(
        bed.info,
        "client",
        [sys.executable, "-m", "netvigil.testbed.protest", "--once", str(out)],
        capture_output=True,
        timeout=120,
    )
    after = bed.offset()
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return before, after, [json.loads(line) for line in out.read_text().splitlines()]


def _compare(
    bed: Bed, phase: str, before: float, after: float, ms: list[dict[str, Any]]
) -> list[str]:
    assert bed.plan.phase_index_at(before) == bed.plan.phase_index_at(after), (phase, before, after)
    censor = bed.plan.at(before)
    assert censor.phase == phase
    truth = {t.app: t for t in messaging_truth(censor)}
    problems: list[str] = []
    by_app = {m["test_name"]: m for m in ms if m["test_name"] != "web_connectivity"}
    assert set(by_app) == set(truth), sorted(by_app)
    for app, t in truth.items():
        verdict = by_app[app]["test_keys"]["x_netvigil_verdict"]
        outcome = str(verdict.get("outcome", ""))
        if censor.shutdown:
            if outcome.split(":", 1)[0] != OFFLINE or verdict.get("blocked"):
                problems.append(f"{phase} {app}: {outcome} blocked={verdict.get('blocked')}")
            continue
        if bool(verdict.get("blocked")) != t.anomaly:
            problems.append(f"{phase} {app}: blocked={verdict.get('blocked')}, truth {t.anomaly}")
        ooni = (verdict.get("evidence") or {}).get("ooni") or {}
        for key, expected in t.ooni_keys.items():
            if key in ooni and ooni[key] != expected:
                problems.append(f"{phase} {app}: {key}={ooni[key]!r}, truth {expected!r}")
        measured = {
            str(e.get("endpoint")): str(e.get("outcome", "")).split(":", 1)[0]
            for e in (verdict.get("evidence") or {}).get("endpoints") or []
        }
        for e in t.endpoints:
            if e.endpoint in measured and measured[e.endpoint] != e.outcome:
                problems.append(
                    f"{phase} {app} {e.endpoint}: {measured[e.endpoint]}, truth {e.outcome}"
                )
    web = [m for m in ms if m["test_name"] == "web_connectivity"]
    for m in web:
        verdict = m["test_keys"]["x_netvigil_verdict"]
        if censor.shutdown and (
            verdict.get("blocked") or not str(verdict.get("outcome")).startswith("network/")
        ):
            problems.append(f"{phase} {m['input']}: {verdict.get('outcome')} in a shutdown")
    return problems


def test_each_messaging_verdict_equals_the_truth_in_every_phase(bed: Bed) -> None:
    problems: list[str] = []
    for phase in ("open", "blocked", "off", "back"):
        bed.wait_for(phase, settle=0.0 if phase == "open" else 0.5)
        problems += _compare(bed, phase, *_measure(bed, phase))
    assert not problems, "\n".join(problems)
