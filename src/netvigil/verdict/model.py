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
)
# captive-portal: the network asks for a login before anything else; not censorship.
NOT_BLOCKED = frozenset({"ok", "down", "unknown", "unsupported", "captive-portal"})

Blocking = bool | str | None


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
