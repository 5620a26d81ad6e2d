"""The verdict: OONI-compatible keys plus netvigil's precise outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OUTCOMES = (
    "ok",
    "down",
    "unknown",
    "unsupported",
    "dns/nxdomain",
    "dns/bogon",
    "dns/bogus",
    "dns/blockpage",
    "dns/timeout",
    "dns/injected",
    "tcp/timeout",
    "tcp/reset",
    "tcp/unreachable",
    "tls/reset",
    "tls/timeout",
    "tls/interception",
    "tls/failure",
    "http/blockpage",
    "http/reset",
    "http/timeout",
    "http/failure",
    "http/throttled",
    "http/diff",
    "captive-portal",
    "network/offline",
    "network/degraded",
)
# What a failed TCP connect is called, by OONI's failure string (a site's stage walk, the
# messaging endpoints and the network checks say it in the same words).
TCP_FAILURE_OUTCOMES = {
    "generic_timeout_error": "tcp/timeout",
    "connection_refused": "tcp/reset",
    "connection_reset": "tcp/reset",
    "host_unreachable": "tcp/unreachable",
    "network_unreachable": "tcp/unreachable",
}
# captive-portal: the network asks for a login before anything else; not censorship.
# network/*: the probe's own network was off (or failing as this input did): no site is blamed.
NOT_BLOCKED = frozenset(
    {
        "ok",
        "down",
        "unknown",
        "unsupported",
        "captive-portal",
        "network/offline",
        "network/degraded",
    }
)

Blocking = bool | str | None

# One judgement, two views: the precise ``outcome`` and OONI's ``blocking``. Each outcome (its
# base, before ``:<fingerprint>``; a ``stage/`` prefix stands for every outcome of that stage)
# allows these ``blocking`` values; docs/verdict.md §5 explains each row.
ALLOWED_PAIRS: dict[str, frozenset[Blocking]] = {
    "ok": frozenset({False}),
    "down": frozenset({False}),
    "unknown": frozenset({None}),
    "unsupported": frozenset({None}),
    "captive-portal": frozenset({False, None}),
    "network/": frozenset({None}),  # like OONI's probe when its control fails: no judgement
    "dns/": frozenset({"dns"}),
    # tcp_ip: a connect to the input's own addresses failed; http-failure: the connect belonged
    # to the fetch (a redirect hop: OONI has no TCP control for it; v0.4 and MK report a refused
    # fetch as http-failure)
    "tcp/": frozenset({"tcp_ip", "http-failure"}),
    "tls/": frozenset({"http-failure"}),
    "http/blockpage": frozenset({"http-diff"}),
    "http/diff": frozenset({"http-diff"}),
    "http/": frozenset({"http-failure"}),  # reset, timeout, failure, throttled
}

# Messaging-app tests (telegram, whatsapp, signal, facebook_messenger): OONI's verdict is one
# anomaly flag, so ``blocking`` is that flag as OONI Explorer sets it (True/False; None where
# Explorer marks the measurement failed). docs/verdict.md, "Messaging apps".
IM_TEST_NAMES = frozenset({"telegram", "whatsapp", "signal", "facebook_messenger"})
ALLOWED_IM_PAIRS: dict[str, frozenset[Blocking]] = {
    "ok": frozenset({False}),
    "unknown": frozenset({None}),
    "dns/": frozenset({True}),
    "tcp/": frozenset({True}),
    "tls/": frozenset({True}),
    "http/": frozenset({True}),
}

# Where OONI's own logic forces another pair, the verdict keeps its outcome and says why in
# ``evidence["ooni_differs"]`` = {"case": <one of these>, "reason": ..., "ooni_rule": ...}.
OONI_DIFFERS = {
    "ooni-null": "OONI's rule gives no verdict here (blocking null); netvigil's outcome rests "
    "on evidence that does not need it",
    "dns-overrides": "OONI reports dns whenever the probe's DNS answers are inconsistent with "
    "the control's, whatever happened next; netvigil names the step that decided",
    "fingerprint": "OONI judged the page to be the site's (same page, or fetched over HTTPS); "
    "its content matches a known blockpage",
    "redirect-hop": "OONI 0.5.0-0.5.26 judged only the last recorded request (ooni/probe#2641): "
    "a step that failed after a successful redirect is invisible to it",
    "interception-evidence": "the certificate chain shows interception (a known interception "
    "root, or a key and issuer other than the control saw), evidence OONI does not use",
    "captive-portal": "OONI counts the failed handshake as http-failure; the certificate is "
    "publicly trusted for another name: a captive portal, not censorship",
    "site-certificate": "OONI counts a handshake failure the control did not see as "
    "http-failure; the probe was shown the site's own certificate key (the control saw the "
    "same): a misconfigured site or the probe's own trust store, not interception",
    "slow-for-everyone": "OONI counts the probe's timed-out fetch as http-failure; the "
    "control's fetch was as slow (or timed out too) while bytes kept flowing: the site is slow "
    "for everyone, not throttled on this network",
    "im-threshold": "OONI Explorer's score for this app stays under its anomaly threshold "
    "(e.g. one Facebook indicator, or a minority of Telegram's connects failed); netvigil names "
    "the endpoints the app needs that failed",
    "im-not-network": "OONI flags an answer it did not expect (status code, redirect, page "
    "title) or counts a minority of failed connects; every endpoint the app needs answered",
    "im-empty": "OONI Explorer's score counts a test that measured nothing (no connect, no "
    "request) as failed (Telegram: 0.5 for no connects plus 0.5 for no requests)",
    "im-unverifiable": "OONI's legacy probe judged the DNS answers against its own list of "
    "the app's networks, which the measurement does not carry; the answers are no bogons, so "
    "netvigil cannot confirm them either way",
    "probe-error": "OONI counted a failure of the probe's own software (an unknown_failure, "
    "not a network error) as blocking; nothing was measured to judge",
}


def allowed_blockings(outcome: str, test_name: str | None = None) -> frozenset[Blocking]:
    """The ``blocking`` values the outcome allows (ALLOWED_PAIRS, or ALLOWED_IM_PAIRS for a
    messaging-app test; the longest key wins)."""
    table = ALLOWED_IM_PAIRS if test_name in IM_TEST_NAMES else ALLOWED_PAIRS
    base = outcome.split(":", 1)[0]
    found = table.get(base)
    if found is not None:
        return found
    stage = base.split("/", 1)[0] + "/" if "/" in base else ""
    return table.get(stage, frozenset())


def pair_allowed(outcome: str, blocking: Blocking, test_name: str | None = None) -> bool:
    if blocking is not None and type(blocking) is not bool and type(blocking) is not str:
        return False  # 0 == False: only the very values OONI writes
    return blocking in allowed_blockings(outcome, test_name)


@dataclass(frozen=True)
class Verdict:
    """What a measurement says. ``outcome`` may carry ``:<fingerprint>`` (http/blockpage)."""

    input: str | None
    report_id: str | None
    measurement_uid: str | None
    test_name: str | None
    probe_cc: str | None
    probe_asn: str | None
    measurement_start_time: str | None
    blocking: Blocking
    accessible: bool | None
    dns_consistency: str | None
    body_length_match: bool | None
    body_proportion: float | None
    status_code_match: bool | None
    headers_match: bool | None
    title_match: bool | None
    outcome: str
    confidence: float
    blocked: bool
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome_base(self) -> str:
        """The outcome without its ``:<fingerprint>`` suffix (``http/blockpage``)."""
        return self.outcome.split(":", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input": self.input,
            "report_id": self.report_id,
        }
        if self.measurement_uid is not None:
            out["measurement_uid"] = self.measurement_uid
        out.update(
            {
                "test_name": self.test_name,
                "probe_cc": self.probe_cc,
                "probe_asn": self.probe_asn,
                "measurement_start_time": self.measurement_start_time,
                "blocking": self.blocking,
                "accessible": self.accessible,
                "dns_consistency": self.dns_consistency,
                "body_length_match": self.body_length_match,
                "body_proportion": self.body_proportion,
                "status_code_match": self.status_code_match,
                "headers_match": self.headers_match,
                "title_match": self.title_match,
                "outcome": self.outcome,
                "confidence": round(self.confidence, 3),
                "blocked": self.blocked,
                "evidence": self.evidence,
            }
        )
        return out
