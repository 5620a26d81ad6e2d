"""One verdict, no contradictions: every (outcome, blocking) pair is allowed or explained.

``netvigil.verdict.model.ALLOWED_PAIRS`` lists the pairs; where OONI's own logic forces another
one, the verdict says why in ``evidence["ooni_differs"]`` (one of ``OONI_DIFFERS``). Checked on
every measurement of the conformance corpus and the real samples, and on measurements mutated by
hypothesis (keys dropped, failures swapped, answers changed, control removed, versions moved).
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netvigil.verdict import OUTCOMES, analyze
from netvigil.verdict.model import NOT_BLOCKED, OONI_DIFFERS, Verdict, pair_allowed
from ooni_verdict_keys import VERDICT_KEYS

DATA = Path(__file__).parent / "data"


def _corpus() -> list[dict[str, Any]]:
    out = []
    for path in sorted((DATA / "conformance").glob("*.jsonl*")):
        raw = path.read_bytes()
        text = gzip.decompress(raw) if path.name.endswith(".gz") else raw
        out += [json.loads(line) for line in text.splitlines() if line.strip()]
    for name in ("ooni_web_connectivity.jsonl",):
        lines = (DATA / name).read_text("utf-8").splitlines()
        out += [json.loads(line) for line in lines if line.strip()]
    for m in out:
        tk = m.get("test_keys")
        if isinstance(tk, dict):
            for key in VERDICT_KEYS:
                tk.pop(key, None)
    return out


CORPUS = _corpus()


def assert_one_judgement(v: Verdict) -> None:
    if pair_allowed(v.outcome, v.blocking):
        assert "ooni_differs" not in v.evidence
    else:
        differs = v.evidence.get("ooni_differs")
        assert isinstance(differs, dict), (v.outcome, v.blocking, v.evidence)
        assert differs["case"] in OONI_DIFFERS, differs
        assert differs["reason"] == OONI_DIFFERS[differs["case"]]
        assert differs["ooni_blocking"] == v.blocking
    # OONI's own pair: a blocking string is never accessible; null goes with null
    if isinstance(v.blocking, str):
        assert v.accessible is False
    assert (v.blocking is None) == (v.accessible is None), (v.blocking, v.accessible)
    assert v.blocked == (v.outcome_base not in NOT_BLOCKED)
    json.dumps(v.to_dict())


def test_every_outcome_has_a_row() -> None:
    for outcome in OUTCOMES:
        values = (False, None, "dns", "tcp_ip", "http-failure", "http-diff")
        assert any(pair_allowed(outcome, b) for b in values), outcome
    assert not pair_allowed("ok", 0) and not pair_allowed("dns/bogon", False)


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_corpus_verdicts_are_one_judgement(index: int) -> None:
    assert_one_judgement(analyze(CORPUS[index]))


FAILURES = [
    None,
    "dns_nxdomain_error",
    "android_dns_cache_no_data",
    "dns_no_answer",
    "generic_timeout_error",
    "connection_refused",
    "connection_reset",
    "eof_error",
    "ssl_unknown_authority",
    "ssl_invalid_hostname",
    "host_unreachable",
    "unknown_failure 'ascii' codec",
]
ADDRESSES = ["127.0.0.1", "10.10.34.36", "93.184.216.34", "::1", "2001:db8::1", "not-an-ip"]
VERSIONS = ["0.0.1", "0.1.0", "0.3.0", "0.4.2", "0.4.3", "0.5.20", "0.5.26", "0.5.27", "0.5.28"]
LISTS = ("queries", "tcp_connect", "tls_handshakes", "requests")


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    m = copy.deepcopy(draw(st.sampled_from(CORPUS)))
    tk = m.get("test_keys")
    if not isinstance(tk, dict):
        return m
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.integers(0, 8))
        if action == 0 and tk:  # drop a key
            tk.pop(draw(st.sampled_from(sorted(tk))), None)
        elif action == 1:  # swap a failure
            events = [e for k in LISTS for e in (tk.get(k) or []) if isinstance(e, dict)]
            if events:
                event = draw(st.sampled_from(events))
                failure = draw(st.sampled_from(FAILURES))
                if isinstance(event.get("status"), dict):
                    event["status"]["failure"] = failure
                    event["status"]["success"] = failure is None
                else:
                    event["failure"] = failure
        elif action == 2:  # change an answer
            answers = [
                a
                for q in tk.get("queries") or []
                if isinstance(q, dict)
                for a in q.get("answers") or []
                if isinstance(a, dict)
            ]
            if answers:
                answer = draw(st.sampled_from(answers))
                address = draw(st.sampled_from(ADDRESSES))
                answer["ipv6" if ":" in address else "ipv4"] = address
        elif action == 3:  # the control fails
            tk["control"] = None
            tk["control_failure"] = "generic_timeout_error"
        elif action == 4:  # another generation read the same events
            m["test_version"] = draw(st.sampled_from(VERSIONS))
        elif action == 5:  # tags lost
            for k in LISTS:
                for e in tk.get(k) or []:
                    if isinstance(e, dict):
                        e.pop("tags", None)
        elif action == 6:  # an event list emptied
            tk[draw(st.sampled_from(LISTS))] = []
        elif action == 7:  # the control's DNS fails or changes
            control = tk.get("control")
            if isinstance(control, dict) and isinstance(control.get("dns"), dict):
                if draw(st.booleans()):
                    control["dns"] = {"failure": "dns_name_error", "addrs": []}
                else:
                    control["dns"]["addrs"] = [draw(st.sampled_from(ADDRESSES))]
        elif action == 8:  # an event's order changes (newest first matters for requests)
            key = draw(st.sampled_from(LISTS))
            if isinstance(tk.get(key), list):
                tk[key] = list(reversed(tk[key]))
    return m


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_verdicts_are_one_judgement(m: dict[str, Any]) -> None:
    assert_one_judgement(analyze(m))
