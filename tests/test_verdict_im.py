"""Messaging-app verdicts (netvigil.verdict.im): each generation's rule, one failure at a time.

Scenarios are real measurements from ``tests/data/conformance_im`` with one event changed, so
every rule is checked on the events a real probe wrote. The hypothesis test mutates them at
random and holds every verdict to one judgement (the pair rule of ``model.ALLOWED_IM_PAIRS``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netvigil.verdict import analyze
from netvigil.verdict.im import OONI_KEYS
from netvigil.verdict.model import OONI_DIFFERS, allowed_blockings, pair_allowed

DATA = Path(__file__).parent / "data" / "conformance_im"
ROWS = [
    json.loads(line)
    for line in (DATA / "messaging.jsonl").read_text("utf-8").splitlines()
    if line.strip()
]


def _row(test: str, version: str, cc: str | None = None) -> dict[str, Any]:
    for m in ROWS:
        same_cc = cc is None or m["probe_cc"] == cc
        if m["test_name"] == test and m["test_version"] == version and same_cc:
            out = copy.deepcopy(m)
            for key in OONI_KEYS[test]:
                out["test_keys"].pop(key, None)  # the verdict must not need them
            return out
    raise LookupError((test, version, cc))


def _endpoint(v: Any, name: str) -> dict[str, Any]:
    return next(e for e in v.evidence["endpoints"] if e["endpoint"] == name)


def test_im_pairs_are_their_own_table() -> None:
    assert allowed_blockings("tcp/timeout", "telegram") == frozenset({True})
    assert allowed_blockings("ok", "signal") == frozenset({False})
    assert allowed_blockings("unknown", "whatsapp") == frozenset({None})
    # the web table is unchanged: True is never a web_connectivity blocking
    assert not pair_allowed("tcp/timeout", True) and pair_allowed("tcp/timeout", "tcp_ip")
    assert not pair_allowed("ok", 0, "signal")


def test_telegram_every_access_point_refused_is_tcp_blocking() -> None:
    m = _row("telegram", "0.3.0")
    tk = m["test_keys"]
    for c in tk["tcp_connect"]:
        if c["ip"] != "149.154.167.99":  # web.telegram.org keeps working
            c["status"] = {"failure": "connection_refused", "success": False}
    for x in tk["requests"]:
        if x["request"]["method"] == "POST":
            x["failure"], x["response"] = "connection_refused", None
    v = analyze(m)
    keys = v.evidence["ooni"]
    assert keys["telegram_tcp_blocking"] is True and keys["telegram_http_blocking"] is True
    assert keys["telegram_web_status"] == "ok"
    assert v.outcome == "tcp/reset" and v.blocked and v.blocking is True
    assert _endpoint(v, "149.154.175.50:443")["outcome"] == "tcp/reset"
    assert _endpoint(v, "https://web.telegram.org/")["outcome"] == "ok"


def test_telegram_one_access_point_down_is_not_the_app_blocked() -> None:
    m = _row("telegram", "0.3.0")
    tk = m["test_keys"]
    target = next(c for c in tk["tcp_connect"] if c["ip"] == "149.154.175.50")
    target["status"] = {"failure": "generic_timeout_error", "success": False}
    for x in tk["requests"]:
        if x["request"]["url"] == f"http://149.154.175.50:{target['port']}/".replace(":80/", "/"):
            x["failure"], x["response"] = "generic_timeout_error", None
    v = analyze(m)
    assert v.evidence["ooni"]["telegram_tcp_blocking"] is False
    assert v.outcome == "ok" and not v.blocked  # the app fails over to the other DCs
    bad = [e for e in v.evidence["endpoints"] if e["outcome"] != "ok"]
    assert [e["outcome"] for e in bad] == ["tcp/timeout"]


def test_telegram_web_tls_reset_is_web_blocking() -> None:
    m = _row("telegram", "0.3.0")
    tk = m["test_keys"]
    for h in tk["tls_handshakes"]:
        h["failure"] = "connection_reset"
    for x in tk["requests"]:
        if x["request"]["url"].startswith("https://web.telegram.org"):
            x["failure"], x["response"] = "connection_reset", None
    v = analyze(m)
    assert v.evidence["ooni"]["telegram_web_status"] == "blocked"
    assert v.evidence["ooni"]["telegram_web_failure"] == "connection_reset"
    assert v.outcome == "tls/reset" and v.blocking is True


def test_whatsapp_registration_timeout_and_legacy_status_rule() -> None:
    m = _row("whatsapp", "0.9.0", "US")
    tk = m["test_keys"]
    reg = next(x for x in tk["requests"] if x["request"]["url"].endswith("/v2/register"))
    reg["failure"], reg["response"] = "generic_timeout_error", None
    v = analyze(m)
    assert v.evidence["ooni"]["registration_server_status"] == "blocked"
    assert v.evidence["ooni"]["registration_server_failure"] == "generic_timeout_error"
    assert v.blocking is True and v.outcome.startswith(("http/", "tls/", "tcp/"))


def test_whatsapp_bad_status_is_ooni_only_before_0_10() -> None:
    # 0.9.0 wanted a 302 from http://web.whatsapp.com/: the IE sample got a 403 (a probe-side
    # anomaly, not a network failure: Explorer does not flag it, netvigil says ok)
    m = _row("whatsapp", "0.9.0", "IE")
    v = analyze(m)
    assert v.evidence["ooni"]["whatsapp_web_status"] == "blocked"
    assert v.evidence["ooni"]["whatsapp_web_failure"] == "http_unexpected_status_code"
    assert v.evidence["ooni_anomaly"]["probe"] is True and v.blocking is False
    assert v.outcome == "ok"
    m["test_version"] = "0.10.0"  # the same events read by the newer rule
    assert analyze(m).evidence["ooni"]["whatsapp_web_status"] == "ok"


def test_whatsapp_all_endpoints_refused() -> None:
    m = _row("whatsapp", "0.9.0", "US")
    for c in m["test_keys"]["tcp_connect"]:
        c["status"] = {"failure": "connection_refused", "success": False}
    v = analyze(m)
    keys = v.evidence["ooni"]
    assert keys["whatsapp_endpoints_status"] == "blocked"
    assert len(keys["whatsapp_endpoints_blocked"]) == 16
    assert v.outcome == "tcp/reset" and v.blocking is True


def test_signal_one_backend_nxdomain() -> None:
    m = _row("signal", "0.2.5")
    tk = m["test_keys"]
    x = tk["requests"][0]
    host = x["request"]["url"].split("/")[2]
    x["failure"], x["response"] = "dns_nxdomain_error", None
    for q in tk["queries"]:
        if q["hostname"] == host:
            q["failure"], q["answers"] = "dns_nxdomain_error", None
    v = analyze(m)
    assert v.evidence["ooni"] == {
        "signal_backend_status": "blocked",
        "signal_backend_failure": "dns_nxdomain_error",
    }
    assert v.outcome == "dns/nxdomain"
    assert _endpoint(v, f"https://{host}/")["outcome"] == "dns/nxdomain"


def test_facebook_go_bogon_answers_are_dns_bogon() -> None:
    v = analyze(_row("facebook_messenger", "0.2.1"))
    assert v.outcome == "dns/bogon" and v.blocking is True
    assert v.evidence["ooni"]["facebook_dns_blocking"] is True
    assert v.evidence["ooni"]["facebook_b_api_reachable"] is None  # not tested: DNS lied
    assert _endpoint(v, "stun.fbsbx.com")["outcome"] == "ok"


def test_facebook_legacy_keys_without_events_are_read_and_said_so() -> None:
    m = copy.deepcopy(next(r for r in ROWS if r["test_version"] == "0.5.0"))
    v = analyze(m)
    sources = v.evidence["ooni_key_sources"]
    assert sources["facebook_b_api_dns_consistent"] == "probe"
    # the legacy probe called Facebook's own addresses inconsistent; no ASN to check it by
    assert v.outcome == "unknown" and v.blocking is True
    assert v.evidence["ooni_differs"]["case"] == "im-unverifiable"


def test_hostile_shapes_never_crash() -> None:
    for tk in (
        {"requests": "x", "tcp_connect": 3, "queries": [None, 1, {"hostname": 5}]},
        {"requests": [{"request": {"url": "http://[::1"}, "failure": 7}] * 3000},
        {"tcp_connect": [{"ip": "999.1.1.1", "port": "80", "status": "up"}]},
        {"queries": [{"hostname": "e1.whatsapp.net", "answers": [{"ipv4": ["x"]}] * 500}]},
    ):
        for test in OONI_KEYS:
            v = analyze({"test_name": test, "test_version": "9.9.9", "test_keys": tk})
            json.dumps(v.to_dict())
            assert len(v.evidence["endpoints"]) <= 2100


FAILURES = [
    None,
    "dns_nxdomain_error",
    "generic_timeout_error",
    "connection_refused",
    "connection_reset",
    "eof_error",
    "ssl_unknown_authority",
    "unknown_failure 'ascii' codec",
]
LISTS = ("queries", "tcp_connect", "tls_handshakes", "requests")


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    m = copy.deepcopy(draw(st.sampled_from(ROWS)))
    tk = m["test_keys"]
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.integers(0, 3))
        events = [e for k in LISTS for e in (tk.get(k) or []) if isinstance(e, dict)]
        if action == 0 and events:
            event = draw(st.sampled_from(events))
            failure = draw(st.sampled_from(FAILURES))
            if isinstance(event.get("status"), dict):
                event["status"] = {"failure": failure, "success": failure is None}
            else:
                event["failure"] = failure
        elif action == 1:
            tk[draw(st.sampled_from(LISTS))] = []
        elif action == 2:
            m["test_version"] = draw(
                st.sampled_from(["0.0.3", "0.2.0", "0.3.0", "0.9.0", "0.10.0"])
            )
        elif action == 3 and tk:
            tk.pop(draw(st.sampled_from(sorted(tk))), None)
    return m


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_measurements_are_one_judgement(m: dict[str, Any]) -> None:
    v = analyze(m)
    if pair_allowed(v.outcome, v.blocking, v.test_name):
        assert "ooni_differs" not in v.evidence
    else:
        differs = v.evidence["ooni_differs"]
        assert differs["reason"] == OONI_DIFFERS[differs["case"]]
        assert differs["ooni_blocking"] == v.blocking
    assert (v.blocking is None) == (v.accessible is None)
    assert v.blocked == (v.outcome_base not in ("ok", "down", "unknown", "unsupported"))
    json.dumps(v.to_dict())


# --- netvigil analyze ----------------------------------------------------------------------------


def test_analyze_lists_failing_endpoints_in_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netvigil.verdict.cli import main

    m = _row("signal", "0.2.5")
    x = m["test_keys"]["requests"][0]
    x["request"]["url"] = "https://\x1b[2Jevil\u202e" + "x" * 200 + ".signal.org/"
    x["failure"] = "connection_reset"
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(m) + "\n", "utf-8")
    assert main([str(path), "--all"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "(signal)" in lines[1]
    endpoint_lines = [line for line in lines if line.startswith("    ")]
    assert any(line.split()[0] == "tcp/reset" for line in endpoint_lines)
    assert any("endpoint(s) ok" in line for line in endpoint_lines)
    assert all(len(line) <= 80 for line in endpoint_lines)
    assert "\x1b" not in out and "\u202e" not in out
    assert main([str(path), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["evidence"]["endpoints"] and verdict["test_name"] == "signal"


def test_signal_known_breakage_is_not_blocking() -> None:
    # Armenia, 0.2.0 on 2022-10-27: five backends fail on Signal's new root CA, which the
    # probe's pinned CA predates (ooni/probe#2344): not a network interfering
    ca = next(r for r in ROWS if r["test_name"] == "signal" and r["probe_cc"] == "AM")
    v = analyze(copy.deepcopy(ca))
    assert v.evidence["ooni"]["signal_backend_status"] == "blocked"  # what the probe said
    assert v.outcome == "unknown" and not v.blocked and v.blocking is None
    # the same failures before Signal changed its CA are what they look like
    early = copy.deepcopy(ca)
    early["measurement_start_time"] = "2022-10-01 00:03:16"
    assert analyze(early).outcome == "tls/failure"
    # US, 2023-05-30: api.directory.signal.org was retired (ooni/backend#679): down, not blocked
    gone = next(r for r in ROWS if r["test_name"] == "signal" and r["probe_cc"] == "US")
    v = analyze(copy.deepcopy(gone))
    assert _endpoint(v, "https://api.directory.signal.org/")["outcome"] == "down"
    assert v.outcome == "ok" and not v.blocked
