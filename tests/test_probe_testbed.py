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
from netvigil.testbed.score import compare, compare_by_time, technique_table
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
    verdicts, measurements = measured(bed)
    plan = Plan.load(bed.info.public_dir)
    if plan.phases:  # each measurement meets the censor in force when it was made
        scores, straddles = compare_by_time(plan, measurements, bed.info.started_at)
        assert len(scores) + straddles == len(measurements) and len(scores) > straddles
    else:
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


# -- what OONI's pipeline reads ----------------------------------------------------------------
# ooni/data's observation builder (oonipipeline transforms/measurement_transformer.py) and its web
# analysis (analysis/web_analysis.py) read these fields; the shape below is what probe-cli's
# webconnectivitylte 0.5.28 writes (see docs/measurement-format.md, "What OONI's pipeline reads").
# Run scripts/ooni-referee.sh for OONI's own verdicts on these measurements.


def _is_time(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and value >= 0


def _check_query(q: dict[str, Any], host: str) -> None:
    assert q["resolver_hostname"] is None and q["resolver_port"] is None, q
    assert q["query_type"] == "A" and isinstance(q["hostname"], str), q
    assert _is_time(q["t0"]) and _is_time(q["t"]) and q["t0"] <= q["t"], q
    assert isinstance(q["transaction_id"], int) and q["transaction_id"] > 0, q
    for answer in q["answers"] or []:
        assert answer["answer_type"] in ("A", "AAAA", "CNAME"), answer
        assert answer.get("ipv4") or answer.get("ipv6") or answer.get("hostname"), answer
    if q["engine"] == "getaddrinfo":
        # the user's resolver, as OONI records the system resolver: the only DNS OONI trusts
        assert q["resolver_address"] == "" and q["tags"] == ["classic"], q
        assert q["x_engine"] == "udp" and q["x_resolver_address"] == f"{ISP_RESOLVER}:53", q
        assert "x_second_opinion" not in q, q
    else:
        # the second opinion, as OONI records its extra UDP resolver
        assert q["engine"] == "udp" and q["resolver_address"] == f"{PUBLIC_RESOLVER}:53", q
        assert q["x_second_opinion"] is True and q["tags"] == [], q


def _check_connections(tk: dict[str, Any]) -> None:
    tcp_ids = {}
    for c in tk["tcp_connect"]:
        assert isinstance(c["ip"], str) and isinstance(c["port"], int), c
        assert set(c["status"]) >= {"failure", "success"}, c
        assert c["status"]["success"] is (c["status"]["failure"] is None), c
        assert _is_time(c["t0"]) and c["t0"] <= c["t"] and c["tags"] == ["classic"], c
        tcp_ids[c["transaction_id"]] = f"{c['ip']}:{c['port']}"
    events = tk["network_events"]
    for h in tk["tls_handshakes"]:
        assert h["network"] == "tcp" and h["tags"] == ["classic"] and h["no_tls_verify"] is False
        assert isinstance(h["server_name"], str) and isinstance(h["tls_version"], str), h
        assert all(c["format"] == "base64" and c["data"] for c in h["peer_certificates"]), h
        assert _is_time(h["t0"]) and h["t0"] <= h["t"], h
        # one transaction per connection, as OONI's probes: the handshake shares the connect's id
        assert tcp_ids.get(h["transaction_id"]) == h["address"], (h["address"], tcp_ids)
        # the builder takes the events of the handshake's transaction and asserts the first
        # (by time) is at the handshake's address; without them it fails on the measurement
        mine = sorted(
            (e for e in events if e["transaction_id"] == h["transaction_id"]), key=lambda e: e["t"]
        )
        assert mine and mine[0]["address"] == h["address"], (h, mine)
        assert [e["operation"] for e in mine][-1] == "tls_handshake_done", mine
    for e in events:
        assert e["operation"] in ("connect", "tls_handshake_start", "tls_handshake_done"), e
        assert _is_time(e["t"]) and isinstance(e["transaction_id"], int), e
    for x in tk["requests"]:
        assert x["network"] == "tcp" and x["tags"] == ["classic"], x
        assert x["address"] == (x["x_address"] or None) and isinstance(x["request"]["url"], str), x
        assert _is_time(x["t0"]) and x["t0"] <= x["t"], x
        if x["response"]["code"]:  # it went over a connection: that connection's transaction
            assert tcp_ids.get(x["transaction_id"]) == x["address"], (x["address"], tcp_ids)


def _check_control(tk: dict[str, Any], probe_addrs: list[str]) -> None:
    control = tk["control"]
    assert tk["control_failure"] is None, tk["control_failure"]
    assert isinstance(control["dns"]["addrs"], list), control["dns"]
    for key in ("tcp_connect", "tls_handshake"):
        for address, entry in control.get(key, {}).items():
            assert ":" in address and isinstance(entry["status"], bool), (key, entry)
            assert entry["status"] is (entry["failure"] is None), (key, entry)
    for entry in control.get("tls_handshake", {}).values():
        assert isinstance(entry["server_name"], str), entry
    info = control["ip_info"]
    for ip, entry in info.items():
        assert isinstance(entry["asn"], int) and isinstance(entry["flags"], int), (ip, entry)
    for ip in probe_addrs[:4]:  # OONI's THIPInfoFlagResolvedByProbe
        assert info[ip]["flags"] & 1, (ip, info)
    for ip in control["dns"]["addrs"]:  # ...ResolvedByTH
        assert info[ip]["flags"] & 2, (ip, info)


@pytest.mark.parametrize("profile", builtin_profiles())
def test_measurements_carry_what_oonis_pipeline_reads(
    testbed: Callable[[str], RunningTestbed], profile: str
) -> None:
    _, measurements = measured(testbed(profile))
    assert measurements
    for m in measurements:
        assert m["test_name"] == "web_connectivity" and m["test_version"] == "0.5.28"
        assert m["data_format_version"] == "0.2.0" and m["probe_asn"].startswith("AS")
        assert m["resolver_ip"] == ISP_RESOLVER == m["test_keys"]["client_resolver"]
        tk = m["test_keys"]
        host = m["input"].split("/")[2]
        for q in tk["queries"]:
            _check_query(q, host)
        own = [q for q in tk["queries"] if q["hostname"] == host and q["engine"] == "getaddrinfo"]
        second = [q for q in tk["queries"] if q["hostname"] == host and q["engine"] == "udp"]
        assert len(own) == 1 and len(second) == 1, tk["queries"]
        # OONI's dns_experiment_failure: the user's resolver's own failure
        assert tk["dns_experiment_failure"] == own[0]["failure"], m["input"]
        _check_connections(tk)
        probe_addrs = [a["ipv4"] for a in own[0]["answers"] or [] if a.get("ipv4")]
        _check_control(tk, probe_addrs)
