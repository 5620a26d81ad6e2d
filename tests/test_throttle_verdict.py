"""The `http/throttled` rule on crafted measurements: judged from the body's rate, not the clock.

Each measurement is what the probe records for a body the time budget cut
(`generic_timeout_error`, a partial body, `x_body_rate` and `x_body_transfer`), with a control
that fetched the page (with or without the rate it saw), timed out too, or is missing.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from netvigil.verdict import analyze
from netvigil.verdict.engine import THROTTLE_CEILING, THROTTLE_FLOOR

URL = "http://files.example/"
PAGE = 300 * 1024


def transfer(
    rate: float, *, duration: float = 12.0, idle: float = 0.2, burst: int = 16_000
) -> dict[str, Any]:
    """An x_body_transfer: a start-up burst, then ``rate`` bytes/s until ``duration - idle``."""
    flowing_until = duration - idle
    samples = [[0.0, burst]]
    t = 0.5
    while t < flowing_until:
        samples.append([round(t, 3), int(burst + rate * t)])
        t += 0.5
    received = int(burst + rate * flowing_until)
    samples.append([duration, received])
    return {
        "bytes": received,
        "head_after": 0.3,
        "duration": duration,
        "idle_at_end": idle,
        "complete": False,
        "mean_rate": received / duration,
        "sustained_rate": rate * (flowing_until - duration / 2) / (duration / 2),
        "slice": 0.5,
        "samples": samples,
    }


def measurement(
    *,
    body_transfer: dict[str, Any] | None,
    failure: str | None = "generic_timeout_error",
    control: str = "fetched",  # fetched | timeout | missing
    control_rate: Any = None,
) -> dict[str, Any]:
    received = body_transfer["bytes"] if body_transfer else 0
    body = "<html><title>Files</title>" + "x" * max(0, received - 40)
    request = {
        "failure": failure,
        "request": {"url": URL, "method": "GET", "headers": {}},
        "response": {
            "code": 200,
            "body": body,
            "body_is_truncated": False,
            "headers": {"Content-Length": str(PAGE)},
        },
        "x_address": "198.18.40.7:80",
        "x_body_rate": body_transfer["mean_rate"] if body_transfer else None,
        "x_body_transfer": body_transfer,
    }
    tk: dict[str, Any] = {
        "queries": [
            {
                "hostname": "files.example",
                "query_type": "A",
                "engine": "system",
                "failure": None,
                "answers": [{"answer_type": "A", "ipv4": "198.18.40.7", "ttl": 60}],
            }
        ],
        "tcp_connect": [
            {
                "ip": "198.18.40.7",
                "port": 80,
                "status": {"success": True, "failure": None, "blocked": False},
            }
        ],
        "tls_handshakes": [],
        "requests": [request],
        "control_failure": None,
    }
    if control == "missing":
        tk["control"] = {}
        tk["control_failure"] = "generic_timeout_error"
    else:
        http: dict[str, Any] = (
            {
                "failure": None,
                "status_code": 200,
                "body_length": PAGE,
                "title": "Files",
                "headers": {"Content-Length": str(PAGE)},
            }
            if control == "fetched"
            else {"failure": "generic_timeout_error", "status_code": -1, "body_length": -1}
        )
        if control_rate is not None:
            http["x_body_rate"] = control_rate
        tk["control"] = {
            "dns": {"failure": None, "addrs": ["198.18.40.7"]},
            "tcp_connect": {"198.18.40.7:80": {"status": True, "failure": None}},
            "http_request": http,
        }
    return {
        "test_name": "web_connectivity",
        "test_version": "0.5.28",
        "input": URL,
        "report_id": "r1",
        "measurement_start_time": "2026-12-06 22:00:00",
        "probe_cc": "ZZ",
        "probe_asn": "AS0",
        "test_keys": tk,
    }


def test_rate_far_below_the_controls_is_throttled_with_both_rates_as_evidence() -> None:
    v = analyze(measurement(body_transfer=transfer(4_000), control_rate=5_000_000.0))
    assert v.outcome == "http/throttled"
    assert v.blocked and v.blocking == "http-failure"
    assert v.evidence["throttle"]["rate"] == pytest.approx(4_000, rel=0.05)
    assert v.evidence["throttle"]["control_rate"] == 5_000_000.0
    assert v.evidence["http"]["transfer"]["flowing"] is True


def test_rate_under_the_floor_is_throttled_when_the_control_recorded_no_rate() -> None:
    v = analyze(measurement(body_transfer=transfer(4_000)))  # OONI's helper: no rate
    assert v.outcome == "http/throttled"
    assert v.evidence["throttle"]["rate"] < THROTTLE_FLOOR
    assert v.evidence["throttle"]["control_rate"] is None


def test_the_sustained_rate_decides_not_the_start_up_burst() -> None:
    # 260 kB in the first instant, then 3 kB/s: the mean looks fast, the transfer is not.
    body_transfer = transfer(3_000, burst=260_000)
    assert body_transfer["mean_rate"] > THROTTLE_FLOOR
    v = analyze(measurement(body_transfer=body_transfer))
    assert v.outcome == "http/throttled"
    assert v.evidence["throttle"]["rate"] < THROTTLE_FLOOR


def test_bytes_that_stopped_flowing_are_a_timeout_not_throttling() -> None:
    stalled = transfer(4_000, idle=9.0)  # nothing came for the last 9 s of 12
    v = analyze(measurement(body_transfer=stalled, control_rate=5_000_000.0))
    assert v.outcome == "http/timeout"
    assert v.evidence["http"]["transfer"]["flowing"] is False
    assert "stall" in v.evidence["http"]["transfer"]["note"]


def test_a_retransmission_gap_at_the_end_is_still_a_flowing_transfer() -> None:
    # Behind a shaper's deep queue TCP waits seconds for its retransmission timer.
    v = analyze(measurement(body_transfer=transfer(4_000, idle=4.5), control_rate=5_000_000.0))
    assert v.outcome == "http/throttled"


def test_a_burst_then_silence_is_a_stall_even_when_the_mean_is_low() -> None:
    burst = transfer(0, idle=11.5, burst=16_000)  # 16 kB, then nothing for 11.5 s of 12
    v = analyze(measurement(body_transfer=burst))
    assert v.outcome == "http/timeout"


def test_no_control_is_unknown_with_the_rate_as_evidence() -> None:
    v = analyze(measurement(body_transfer=transfer(4_000), control="missing"))
    assert v.outcome == "unknown"
    assert not v.blocked
    assert v.evidence["http"]["transfer"]["rate"] == pytest.approx(4_000, rel=0.05)


def test_slow_for_the_control_too_is_ok() -> None:
    v = analyze(measurement(body_transfer=transfer(4_000), control="timeout"))
    assert v.outcome == "ok"
    assert v.blocking is False
    assert "slow for everyone" in v.evidence["reason"]


def test_a_rate_comparable_to_the_controls_is_not_throttling() -> None:
    v = analyze(measurement(body_transfer=transfer(4_000), control_rate=6_000.0))
    assert v.outcome == "ok"
    assert not v.blocked
    # OONI still calls the probe's timeout http-failure: one judgement, the difference explained
    if v.blocking == "http-failure":
        assert v.evidence["ooni_differs"]["case"] == "slow-for-everyone"


def test_far_below_the_control_but_a_usable_rate_is_not_throttling() -> None:
    fast = THROTTLE_CEILING * 2
    v = analyze(measurement(body_transfer=transfer(fast), control_rate=fast * 100))
    assert v.outcome == "http/timeout"


def test_a_rate_over_the_floor_without_a_control_rate_is_a_timeout() -> None:
    v = analyze(measurement(body_transfer=transfer(THROTTLE_FLOOR * 2)))
    assert v.outcome == "http/timeout"


def test_a_small_slow_page_that_completes_is_ok() -> None:
    done = transfer(4_000, duration=5.0, idle=0.0, burst=1_000)
    done["complete"] = True
    m = measurement(body_transfer=done, failure=None, control_rate=5_000_000.0)
    m["test_keys"]["control"]["http_request"]["body_length"] = done["bytes"]
    v = analyze(m)
    assert v.outcome == "ok"


@pytest.mark.parametrize(
    "hostile",
    [math.nan, math.inf, -5.0, "4000", None, True, [1], {"a": 1}, 10**400],
)
def test_hostile_rate_values_never_crash_and_never_throttle(hostile: Any) -> None:
    body_transfer = transfer(4_000)
    for key in ("sustained_rate", "mean_rate", "idle_at_end", "duration"):
        body_transfer[key] = hostile
    m = measurement(body_transfer=body_transfer, control_rate=hostile)
    m["test_keys"]["requests"][0]["x_body_rate"] = None
    v = analyze(m)
    assert v.outcome in ("http/timeout", "http/throttled", "ok")
    if v.outcome == "http/throttled":
        # Only a finite, non-negative recorded rate can decide it.
        assert math.isfinite(v.evidence["throttle"]["rate"])


def test_older_files_with_only_x_body_rate_keep_their_verdict() -> None:
    m = measurement(body_transfer=transfer(4_000))
    m["test_keys"]["requests"][0]["x_body_transfer"] = None
    m["test_keys"]["requests"][0]["x_body_rate"] = 8_000.0
    v = analyze(m)
    assert v.outcome == "http/throttled"
    assert v.evidence["throttle"]["rate"] == 8_000.0
