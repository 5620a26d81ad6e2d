"""The network-status override: an offline network blames no site (docs/verdict.md §8).

The probe writes ``test_keys.x_network_status`` = {"status": "online"|"degraded"|"offline",
"evidence": [checks]} on every measurement of a run (``netvigil.netstatus``). The engine asks
this module first, for every test (web and messaging alike):

- ``offline``: every check failed: ``network/offline``, whatever the measurement shows.
- ``degraded``: some checks failed. The test's own verdict stands, unless it is a blocking
  outcome that one of the failing checks would get too: a site that fails exactly as the
  network's own references fail is not singled out (``network/degraded``).
- ``online`` or absent (OONI's measurements, older probes): no override.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from netvigil.verdict import _read as r
from netvigil.verdict.model import NOT_BLOCKED, TCP_FAILURE_OUTCOMES, Verdict

OFFLINE = "network/offline"
DEGRADED = "network/degraded"
MAX_EVIDENCE = 64  # checks kept from a (possibly hostile) status

# The outcome a failed check stands for, by the stage it failed at and its failure string:
# the same words the stage walk uses for a site (model.TCP_FAILURE_OUTCOMES, the TLS and HTTP
# tables).
_DNS = {
    "generic_timeout_error": "dns/timeout",
    "dns_nxdomain_error": "dns/nxdomain",
    "dns_no_answer": "dns/nxdomain",
}
_TCP = TCP_FAILURE_OUTCOMES
_TLS = {"generic_timeout_error": "tls/timeout", "connection_reset": "tls/reset"}
_HTTP = {"generic_timeout_error": "http/timeout", "connection_reset": "http/reset"}


def check_outcome(stage: str, failure: str) -> str:
    """What a site failing as this check did would be called."""
    if stage == "dns":
        return _DNS.get(failure, "dns/failure")
    if stage == "tcp":
        return _TCP.get(failure, "tcp/failure")
    if stage == "tls":
        return _TLS.get(failure, "tls/failure")
    return _HTTP.get(failure, "http/failure")


def read_status(measurement: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """(status, evidence) from ``test_keys.x_network_status``; None when absent or unreadable."""
    test_keys = measurement.get("test_keys")
    if not isinstance(test_keys, Mapping):
        return None
    raw = test_keys.get("x_network_status")
    if not isinstance(raw, Mapping):
        return None
    status = raw.get("status")
    if status not in ("online", "degraded", "offline"):
        return None
    evidence = raw.get("evidence")
    checks = [
        {
            "check": r.s(c.get("check")),
            "target": r.s(c.get("target")),
            "stage": r.s(c.get("stage")),
            "failure": r.s(c.get("failure")),
            "t": r.s(c.get("t")),
        }
        for c in (evidence if isinstance(evidence, list) else [])[:MAX_EVIDENCE]
        if isinstance(c, Mapping)
    ]
    return str(status), checks


def _failed(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in checks if c["failure"]]


def judge(
    measurement: Mapping[str, Any], analyze_test: Callable[[Mapping[str, Any]], Verdict]
) -> Verdict | None:
    """The verdict when the network status decides it or adds to it; None: no status."""
    found = read_status(measurement)
    if found is None or found[0] == "online":
        return None
    status, checks = found
    network = {"status": status, "evidence": checks}
    if status == "offline":
        return _offline(measurement, network)
    test_keys = measurement.get("test_keys")
    assert isinstance(test_keys, Mapping)  # read_status checked it
    inner = analyze_test(
        {
            **measurement,
            "test_keys": {k: v for k, v in test_keys.items() if k != "x_network_status"},
        }
    )
    site = inner.outcome.split(":", 1)[0]
    matched = [
        c
        for c in _failed(checks)
        # the control helper is ours, not the network's way out: its failure excuses no site
        if c["check"] != "control" and check_outcome(c["stage"] or "", c["failure"] or "") == site
    ]
    if site in NOT_BLOCKED or not matched:
        return replace(inner, evidence={**inner.evidence, "network_status": network})
    return replace(
        inner,
        blocking=None,
        accessible=None,
        outcome=DEGRADED,
        confidence=min(inner.confidence, 0.7),
        blocked=False,
        evidence={
            "reason": f"the network's own checks failed as this measurement did ({site}): "
            "not a block of this input",
            "network_status": network,
            "matched_checks": matched,
            "test_outcome": inner.outcome,
            "ooni_blocking": inner.blocking,
        },
    )


def _offline(measurement: Mapping[str, Any], network: dict[str, Any]) -> Verdict:
    return Verdict(
        input=r.s(measurement.get("input")),
        report_id=r.s(measurement.get("report_id")),
        measurement_uid=r.s(measurement.get("measurement_uid")),
        test_name=r.s(measurement.get("test_name")),
        probe_cc=r.s(measurement.get("probe_cc")),
        probe_asn=r.s(measurement.get("probe_asn")),
        measurement_start_time=r.s(measurement.get("measurement_start_time")),
        blocking=None,
        accessible=None,
        dns_consistency=None,
        body_length_match=None,
        body_proportion=None,
        status_code_match=None,
        headers_match=None,
        title_match=None,
        outcome=OFFLINE,
        confidence=0.9,
        blocked=False,
        evidence={
            "reason": "nothing answered the probe around this measurement (not the resolver, "
            "not the control, not a reference target): the network was offline",
            "network_status": network,
        },
    )
