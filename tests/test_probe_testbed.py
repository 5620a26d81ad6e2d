"""The probe against the ground truth, on every shipped profile, from inside `client`.

Each URL the profile serves is measured with the real probe (DNS, TCP, TLS, HTTP, control
helper); its verdict's outcome must equal what `testbed truth` says the censor does. Honest
cases (down, slow, 403, CDN) must not be called censorship, and `clean` yields nothing blocked.
Every measurement written must load with oonidata (OONI's own parser).
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningTestbed, needs_testbed
from netvigil.experiments.web_connectivity import WebConnectivity
from netvigil.measure import probe_config, run_measurements
from netvigil.testbed.plan import CONTROL_HELPER, ISP_RESOLVER, PUBLIC_RESOLVER, SERVICE_PORT, Plan
from netvigil.testbed.profile import builtin_profiles
from netvigil.testbed.score import compare, technique_table
from netvigil.testbed.truth import ground_truth

pytestmark = [needs_testbed, pytest.mark.testbed]
OONIDATA = Path(__file__).resolve().parent.parent / ".venv-oonidata" / "bin" / "python"

_runs: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}


def measured(bed: RunningTestbed) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(verdicts, measurements) for every truth URL of the testbed's profile (cached)."""
    profile = bed.info.profile
    if profile not in _runs:
        plan = Plan.load(bed.info.public_dir)
        config = probe_config(
            ca_bundle=str(bed.info.trust_anchor),
            resolver=ISP_RESOLVER,
            second_resolver=PUBLIC_RESOLVER,
            helper=f"http://{CONTROL_HELPER}:{SERVICE_PORT}/",
            no_doh=True,
            timeout=8.0,
        )
        urls = [row.url for row in ground_truth(plan)]
        sink = io.StringIO()

        def job() -> list[dict[str, Any]]:
            result = asyncio.run(
                run_measurements(WebConnectivity(config), urls, concurrency=100, output=sink)
            )
            return result.verdicts

        verdicts = bed.in_client(job, timeout=240)
        assert isinstance(verdicts, list)
        measurements = [json.loads(line) for line in sink.getvalue().splitlines()]
        _runs[profile] = (verdicts, measurements)
    return _runs[profile]


@pytest.mark.parametrize("profile", builtin_profiles())
def test_every_verdict_agrees_with_the_ground_truth(
    testbed: Callable[[str], RunningTestbed], profile: str
) -> None:
    bed = testbed(profile)
    verdicts, _ = measured(bed)
    plan = Plan.load(bed.info.public_dir)
    scores = compare(ground_truth(plan), verdicts)
    table = "\n".join(
        f"  {truth:18} {agree:4}/{total:<4} {'; '.join(bad)}"
        for truth, total, agree, bad in technique_table(scores)
    )
    wrong = [s for s in scores if not s.agrees]
    assert not wrong, f"{len(wrong)} verdicts disagree with the truth on {profile}:\n{table}"


def test_clean_yields_no_blocked_verdict_and_honest_sites_are_not_censorship(
    testbed: Callable[[str], RunningTestbed],
) -> None:
    verdicts, _ = measured(testbed("clean"))
    assert verdicts
    blocked = [v for v in verdicts if v.get("blocked")]
    assert not blocked, blocked
    assert all(v.get("blocking") in (False, None) for v in verdicts)


def test_honest_cases_in_all_techniques_are_not_censorship(
    testbed: Callable[[str], RunningTestbed],
) -> None:
    bed = testbed("all-techniques")
    verdicts, _ = measured(bed)
    plan = Plan.load(bed.info.public_dir)
    honest = {s.domain for s in plan.sites if s.kind in ("down", "slow", "forbidden", "cdn")}
    assert len(honest) == 5
    for verdict in verdicts:
        host = str(verdict["input"]).split("/")[2]
        if host in honest:
            assert not verdict["blocked"], verdict
            assert verdict["outcome"] in ("ok", "down"), verdict


def _by_input(items: list[dict[str, Any]], host: str) -> list[dict[str, Any]]:
    return [x for x in items if str(x.get("input", "")).split("/")[2] == host]


def test_throttle_slower_than_the_budget_is_decided_from_the_rate(
    testbed: Callable[[str], RunningTestbed],
) -> None:
    """32 kbit/s (4 kB/s) on a 300 kB page: ~75 s, far past the probe's budget. Bytes still
    flow when the budget ends the transfer: http/throttled with the measured rate."""
    verdicts, measurements = measured(testbed("all-techniques"))
    found = _by_input(verdicts, "crawling-video.kz")
    assert len(found) == 2
    for verdict in found:
        assert verdict["outcome"] == "http/throttled", verdict
        throttle = verdict["evidence"]["throttle"]
        assert 0 < throttle["rate"] < 8_000, throttle  # a 4 kB/s shaper, TLS records included
        assert throttle["control_rate"] is None or throttle["control_rate"] > 8 * throttle["rate"]
        assert verdict["evidence"]["http"]["transfer"]["flowing"] is True
    for measurement in _by_input(measurements, "crawling-video.kz"):
        request = measurement["test_keys"]["requests"][0]
        assert request["failure"] == "generic_timeout_error"  # OONI's string, unchanged
        transfer = request["x_body_transfer"]
        assert 0 < transfer["bytes"] < 300 * 1024 and not transfer["complete"]
        assert 2 <= len(transfer["samples"]) <= 64
        assert request["response"]["code"] == 200


def test_a_site_slow_for_everyone_stays_ok(testbed: Callable[[str], RunningTestbed]) -> None:
    """The same 4 kB/s, sent so by the server itself: the control's fetch is as slow."""
    verdicts, measurements = measured(testbed("all-techniques"))
    found = _by_input(verdicts, "slow-mirror.kz")
    assert len(found) == 2
    for verdict in found:
        assert verdict["outcome"] == "ok", verdict
        assert verdict["blocked"] is False and verdict["blocking"] is False
    for measurement in _by_input(measurements, "slow-mirror.kz"):
        transfer = measurement["test_keys"]["requests"][0]["x_body_transfer"]
        assert transfer["bytes"] > 0


@pytest.mark.skipif(not OONIDATA.exists(), reason="run ./scripts/setup.sh to create .venv-oonidata")
@pytest.mark.parametrize("profile", ["all-techniques", "kz-2019-interception"])
def test_every_measurement_loads_with_oonidata(
    testbed: Callable[[str], RunningTestbed], profile: str, tmp_path: Path
) -> None:
    _, measurements = measured(testbed(profile))
    path = tmp_path / "measurements.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in measurements))
    script = (
        "import json, sys\n"
        "from oonidata.dataclient import load_measurement\n"
        "n = 0\n"
        "for line in open(sys.argv[1]):\n"
        "    m = load_measurement(msmt=json.loads(line))\n"
        "    assert type(m).__name__ == 'WebConnectivity', type(m)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    out = subprocess.run(
        [str(OONIDATA), "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) == len(measurements) > 0
