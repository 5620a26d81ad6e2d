"""The protest-day demo end to end, on a short phased profile (about 100 s): a probe every few
seconds inside `client`, its measurements through the outbox to the collector (waiting there
during the shutdown), the pipeline over the collector's log, and a report whose timeline has the
messaging onset first, then the shutdown, then restoration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import needs_testbed
from netvigil.testbed.plan import make_plan
from netvigil.testbed.profile import load_profile
from netvigil.testbed.protest import run_protest_demo
from netvigil.testbed.protest_report import build_timeline, load_verdict_rows

pytestmark = [needs_testbed, pytest.mark.testbed]

PROFILE = """
name = "short-protest"
domains = ["news.example", "web.chat.example", "calm.example"]

[[phase]]
name = "before"
start = "0s"
description = "the baseline"

[[phase]]
name = "messaging"
start = "16s"
description = "the chat app restricted"

[[phase.rule]]
action = "tls-reset"
sni = "web.chat.example"

[[phase.rule]]
action = "http-reset"
host = "web.chat.example"

[[phase]]
name = "shutdown"
start = "32s"
shutdown = true

[[phase]]
name = "restored"
start = "77s"
"""


def test_the_protest_day_demo_tells_the_story(tmp_path: Path) -> None:
    profile = tmp_path / "short-protest.toml"
    profile.write_text(PROFILE)
    out = tmp_path / "demo"
    status = run_protest_demo(
        str(profile), make_plan(load_profile(str(profile))), out, every=4, tail=8
    )
    assert status == 0
    meta = json.loads((out / "timeline.json").read_text())
    rounds = meta["rounds"]
    phases = [r["phase"] for r in rounds]
    assert phases[0] == "before" and phases[-1] == "restored" and "shutdown" in phases
    # A run in the shutdown finds its network off and blames no site. (Its network watch
    # holds the failures until a check answers, so such a run ends when the network is back,
    # and its own upload finds the collector; the outbox holds whatever a run could not send.)
    off = [r for r in rounds if r["phase"] == "shutdown"]
    assert off and all(set(r["outcomes"]) == {"network/offline"} for r in off), off
    # Nothing is lost: every measurement reached the collector, nothing waits at the end.
    assert rounds[-1]["pending"] == 0
    assert sum(r["measured"] for r in rounds) == sum(r["uploaded"] for r in rounds)
    # What the censor did, as the probe saw it, per phase.
    for r in rounds:
        if r["phase"] == "messaging":
            assert r["outcomes"].get("tls/reset") == 1 and r["outcomes"].get("http/reset") == 1
        if r["phase"] in ("before", "restored"):
            assert set(r["outcomes"]) == {"ok"}, r
    # The report: the event rule finds the chat app's onset first, and restoration at the end.
    timeline = build_timeline(load_verdict_rows(out / "pipeline"), meta)
    first = min(timeline.onsets, key=lambda o: o.start_round)
    assert first.domain == "web.chat.example"
    assert phases[first.start_round] == "messaging"
    assert phases[first.start_round - 1] == "before"
    restored = timeline.restored_round()
    assert restored is not None and phases[restored] == "restored"
    story = timeline.story()
    assert "onset of blocking (1): web.chat.example" in story[0]
    assert "restored" in story[-1]
    report = (out / "report.html").read_text()
    assert "web.chat.example" in report and "onset" in report
    assert (out / "pipeline" / "verdicts").is_dir()
    assert (out / "collector" / "collector.sqlite3").is_file()
