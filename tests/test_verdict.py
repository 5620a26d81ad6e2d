"""The verdict engine: OONI agreement on real samples, precise outcomes, hostile inputs."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from netvigil.verdict import OUTCOMES, analyze, load_fingerprints
from netvigil.verdict.fingerprints import Fingerprint, build_fingerprints

DATA = Path(__file__).parent / "data" / "ooni_web_connectivity.jsonl"
BLOCKPAGE = (
    Path(__file__).parents[1] / "src/netvigil/testbed/blockpages/isp_ru_rostelcom_block.html"
)


def _samples() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text("utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# A tiny builder of web_connectivity measurements


def build(
    url: str = "https://example.org/",
    answers: list[str] | None = None,
    dns_failure: str | None = None,
    control_answers: list[str] | None = None,
    control_dns_failure: str | None = None,
    connect: str | None = None,
    control_connect: bool = True,
    tls: str | None = None,
    control_tls: bool = True,
    certs: list[Any] | None = None,
    http_failure: str | None = None,
    status: int = 200,
    body: str = "<html><title>Example Domain Page</title>" + "x" * 1000 + "</html>",
    headers: dict[str, str] | None = None,
    control_status: int = 200,
    control_http_failure: str | None = None,
    control: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    host = url.split("/")[2]
    https = url.startswith("https")
    port = 443 if https else 80
    answers = ["93.184.216.34"] if answers is None else answers
    control_answers = ["93.184.216.34"] if control_answers is None else control_answers
    ip = answers[0] if answers else None
    tk: dict[str, Any] = {
        "queries": [
            {
                "hostname": host,
                "query_type": "A",
                "engine": "system",
                "failure": dns_failure,
                "answers": None
                if dns_failure
                else [{"answer_type": "A", "ipv4": a, "ttl": 60} for a in answers],
            }
        ],
        "tcp_connect": [],
        "tls_handshakes": [],
        "requests": [],
        "control_failure": None,
    }
    if ip and not dns_failure:
        tk["tcp_connect"].append(
            {
                "ip": ip,
                "port": port,
                "status": {"success": connect is None, "failure": connect, "blocked": False},
            }
        )
        if https and connect is None:
            tk["tls_handshakes"].append(
                {
                    "address": f"{ip}:{port}",
                    "server_name": host,
                    "failure": tls,
                    "no_tls_verify": False,
                    "peer_certificates": certs or [],
                }
            )
        if connect is None and tls is None:
            tk["requests"].append(
                {
                    "failure": http_failure,
                    "request": {"url": url, "method": "GET", "headers": {}},
                    "response": {
                        "code": 0 if http_failure else status,
                        "body": body,
                        "body_is_truncated": False,
                        "headers": headers if headers is not None else {"X-Site": "1"},
                    },
                }
            )
    if control:
        ep = f"{control_answers[0]}:{port}" if control_answers else f"{ip}:{port}"
        tk["control"] = {
            "dns": {"failure": control_dns_failure, "addrs": control_answers},
            "tcp_connect": {
                ep: {"status": control_connect, "failure": None if control_connect else "x"}
            },
            "tls_handshake": {ep: {"server_name": host, "status": control_tls, "failure": None}}
            if https
            else {},
            "http_request": {
                "failure": control_http_failure,
                "status_code": -1 if control_http_failure else control_status,
                "body_length": -1 if control_http_failure else len(body),
                "title": "Example Domain Page",
                "headers": {"X-Site": "1"},
            },
        }
    else:
        tk["control"] = {}
        tk["control_failure"] = "generic_timeout_error"
    tk.update(extra)
    return {
        "test_name": "web_connectivity",
        "test_version": "0.5.28",
        "input": url,
        "report_id": "r1",
        "measurement_start_time": "2026-11-27 18:00:00",
        "probe_cc": "ZZ",
        "probe_asn": "AS0",
        "test_keys": tk,
    }


def _self_signed_der(cn: str) -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "KZ"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------
# OONI compatibility


def test_agreement_with_ooni_on_real_samples() -> None:
    samples = _samples()
    assert len(samples) == 29
    agree = 0
    disagreements = []
    for m in samples:
        expected = (m.get("test_keys") or {}).get("blocking")
        got = analyze(m).blocking
        if got == expected and type(got) is type(expected):
            agree += 1
        else:
            disagreements.append((m.get("input"), expected, got))
    assert agree / len(samples) >= 0.95, disagreements


def test_every_sample_gives_a_known_outcome_and_json() -> None:
    for m in _samples():
        v = analyze(m)
        assert v.outcome.split(":")[0] in OUTCOMES
        json.dumps(v.to_dict())
        assert 0.0 <= v.confidence <= 1.0


def test_indonesian_redirect_to_blockpage_is_named() -> None:
    archive = next(m for m in _samples() if m.get("input") == "http://archive.org")
    v = analyze(archive)
    assert v.blocking is False  # what OONI said
    assert v.outcome.startswith("http/blockpage:")


def test_unsupported_test_name() -> None:
    v = analyze({"test_name": "dash", "test_keys": {}})
    assert v.outcome == "unsupported" and v.blocking is None and not v.blocked


def test_empty_messaging_measurement_is_unknown_not_unsupported() -> None:
    # nothing measured: no endpoint, no key; Explorer's Telegram score still flags it (0.5+0.5)
    v = analyze({"test_name": "telegram", "test_keys": {}})
    assert v.outcome == "unknown" and not v.blocked
    assert v.evidence["endpoints"] == [] and v.evidence["ooni"]["telegram_tcp_blocking"] is None
    assert v.blocking is True and v.evidence["ooni_differs"]["case"] == "im-empty"


# ---------------------------------------------------------------------------------------------
# Precise outcomes


def test_ok() -> None:
    v = analyze(build())
    assert v.outcome == "ok" and v.blocking is False and v.accessible is True


def test_dns_nxdomain() -> None:
    v = analyze(build(dns_failure="dns_nxdomain_error"))
    assert v.outcome == "dns/nxdomain" and v.blocking == "dns"


def test_dns_timeout() -> None:
    assert analyze(build(dns_failure="generic_timeout_error")).outcome == "dns/timeout"


def test_down_when_control_cannot_resolve_either() -> None:
    v = analyze(
        build(
            dns_failure="dns_nxdomain_error",
            control_answers=[],
            control_dns_failure="dns_name_error",
        )
    )
    assert v.outcome == "down" and not v.blocked


def test_dns_bogon() -> None:
    v = analyze(build(answers=["127.0.0.1"], connect="connection_refused"))
    assert v.outcome == "dns/bogon" and v.blocking == "dns"


def test_testbed_network_is_not_a_bogon() -> None:
    m = build(
        url="http://example.org/",
        answers=["198.18.30.1"],
        control_answers=["198.18.40.7"],
        connect="generic_timeout_error",
    )
    v = analyze(m)
    assert v.outcome == "dns/bogus" and v.blocking == "dns"


def test_tls_valid_answers_are_consistent() -> None:
    # (public addresses: OONI's own bogon list, unlike netvigil's, holds 198.18.0.0/15)
    m = build(answers=["151.101.1.69"], control_answers=["151.101.65.69"])
    m["test_version"] = "0.5.26"  # the original engine: a verified handshake vouches for it
    v = analyze(m)
    assert v.dns_consistency == "consistent" and v.outcome == "ok" and v.blocking is False
    # the classic engine (0.5.27+) compares addresses and ASNs only (minipipeline
    # dnsComputeSuccessMetricsClassic), but a final response over TLS is not blocking
    v = analyze(build(answers=["198.18.30.1"], control_answers=["198.18.40.7"]))
    assert v.dns_consistency == "inconsistent" and v.outcome == "ok" and v.blocking is False


def test_dns_blockpage_via_answer_page() -> None:
    page = {
        "failure": None,
        "request": {"url": "http://198.18.10.80/"},
        "response": {"code": 200, "body": BLOCKPAGE.read_text("utf-8"), "headers": {}},
    }
    v = analyze(
        build(url="http://example.org/", answers=["198.18.10.80"], x_dns_answer_pages=[page])
    )
    assert v.outcome == "dns/blockpage"
    assert v.evidence["fingerprint"]["name"]


def test_dns_injected() -> None:
    m = build(answers=["198.18.30.2"], connect="generic_timeout_error")
    m["test_keys"]["queries"][0]["x_late_replies"] = [
        {"answers": [{"answer_type": "A", "ipv4": "93.184.216.34"}], "failure": None, "t": 0.05}
    ]
    v = analyze(m)
    assert v.outcome == "dns/injected"
    assert v.evidence["first_reply"]["answers"] == ["198.18.30.2"]


def test_cdn_answers_are_ok_when_page_matches() -> None:
    v = analyze(build(url="http://example.org/", answers=["93.184.216.99"]))
    assert v.outcome == "ok"


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        ("generic_timeout_error", "tcp/timeout"),
        ("connection_refused", "tcp/reset"),
        ("connection_reset", "tcp/reset"),
        ("host_unreachable", "tcp/unreachable"),
    ],
)
def test_tcp(failure: str, outcome: str) -> None:
    v = analyze(build(connect=failure))
    assert v.outcome == outcome and v.blocked


def test_tcp_down_when_control_fails_too() -> None:
    assert analyze(build(connect="generic_timeout_error", control_connect=False)).outcome == "down"


def test_tls_interception_with_chain_evidence() -> None:
    der = _self_signed_der("Qaznet Trust Network")
    certs = [{"data": base64.b64encode(der).decode(), "format": "base64"}]
    v = analyze(build(tls="ssl_unknown_authority", certs=certs))
    assert v.outcome == "tls/interception" and v.blocking == "http-failure"
    chain = v.evidence["tls"]["chain"]["certificates"]
    assert "Qaznet" in chain[0]["issuer"]


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [("connection_reset", "tls/reset"), ("generic_timeout_error", "tls/timeout")],
)
def test_tls_failures(failure: str, outcome: str) -> None:
    assert analyze(build(tls=failure)).outcome == outcome


def test_tls_down_when_control_fails_too() -> None:
    assert analyze(build(tls="ssl_invalid_certificate", control_tls=False)).outcome == "down"


def test_http_blockpage() -> None:
    v = analyze(build(url="http://example.org/", body=BLOCKPAGE.read_text("utf-8")))
    assert v.outcome.startswith("http/blockpage:") and v.blocked


def test_http_redirect_to_warning_page() -> None:
    m = build(url="http://example.org/")
    hop = copy.deepcopy(m["test_keys"]["requests"][0])
    hop["response"].update(code=302, body="", headers={"Location": "http://warning.rt.ru/?id=1"})
    m["test_keys"]["requests"].append(hop)  # requests are newest first: the hop is older
    m["test_keys"]["requests"][0]["response"]["body"] = "<html>notice</html>"
    v = analyze(m)
    assert v.outcome.startswith("http/blockpage:")


def test_http_reset_timeout_failure() -> None:
    assert analyze(build(http_failure="connection_reset")).outcome == "http/reset"
    assert analyze(build(http_failure="generic_timeout_error", body="")).outcome == "http/timeout"
    assert analyze(build(http_failure="eof_error")).outcome == "http/failure"


def test_http_throttled() -> None:
    m = build(url="http://example.org/", http_failure="generic_timeout_error", body="x" * 5000)
    m["test_keys"]["requests"][0]["x_body_rate"] = 8000.0
    assert analyze(m).outcome == "http/throttled"


def test_http_diff() -> None:
    v = analyze(build(url="http://example.org/", status=200, control_status=404, headers={}))
    assert v.outcome == "http/diff" and v.blocking == "http-diff"


def test_403_for_everyone_is_ok() -> None:
    v = analyze(build(url="http://example.org/", status=403, control_status=403, body="no"))
    assert v.outcome == "ok" and not v.blocked


def test_no_control() -> None:
    assert analyze(build(control=False, url="http://example.org/")).outcome == "unknown"
    v = analyze(build(control=False, url="http://example.org/", answers=["10.10.34.36"]))
    assert v.outcome == "dns/bogon" and v.blocking is None
    assert v.evidence["ooni_differs"]["case"] == "ooni-null"
    # a private address that served the page over verified TLS is split-horizon DNS: OONI's
    # classic engine says not blocking (a final response over TLS), and so do we
    v = analyze(build(control=False, answers=["10.10.34.36"]))
    assert v.outcome == "ok" and v.blocking is False
    v = analyze(build(control=False, url="http://example.org/", body=BLOCKPAGE.read_text("utf-8")))
    assert v.outcome.startswith("http/blockpage:")


# ---------------------------------------------------------------------------------------------
# Hostile inputs


@pytest.mark.parametrize(
    "m",
    [
        {},
        {"test_name": "web_connectivity"},
        {"test_name": "web_connectivity", "test_keys": None},
        {"test_name": "web_connectivity", "test_keys": []},
        {"test_name": "web_connectivity", "input": 5, "test_keys": {"queries": "x"}},
        {
            "test_name": "web_connectivity",
            "input": "http://[::1",
            "test_keys": {
                "queries": [None, 1, {"answers": [None, {"ipv4": 7}]}],
                "tcp_connect": [
                    {"ip": "x", "port": "80"},
                    {"ip": "1.2.3.4", "port": 80, "status": 3},
                ],
                "tls_handshakes": [{"peer_certificates": "nope"}],
                "requests": [{"response": {"body": {"data": "%%%", "format": "base64"}}}],
                "control": {"dns": [], "tcp_connect": {"a": None}, "ip_info": {"1.2.3.4": 9}},
            },
        },
    ],
)
def test_hostile_shapes_do_not_crash(m: dict[str, Any]) -> None:
    v = analyze(m)
    json.dumps(v.to_dict())


def test_huge_chain_is_bounded_and_malformed_certs_are_unparseable() -> None:
    junk = [{"data": base64.b64encode(b"\x30\x82\xff\xff" + bytes(40)).decode()}] * 10_000
    junk[1] = {"data": "!!!not base64!!!"}
    junk[2] = {"data": None}
    start = time.perf_counter()
    v = analyze(build(tls="ssl_unknown_authority", certs=junk))
    assert time.perf_counter() - start < 2.0
    chain = v.evidence["tls"]["chain"]
    assert chain["count"] == 10_000 and chain["decoded"] <= 16
    assert all(c.get("error") == "unparseable" for c in chain["certificates"])


def test_fingerprints_can_be_passed_in() -> None:
    tiny = build_fingerprints([Fingerprint("t.one", "test", "body", "contains", "BLOCKED-BY-TEST")])
    v = analyze(build(url="http://example.org/", body="..BLOCKED-BY-TEST.."), tiny)
    assert v.outcome == "http/blockpage:t.one"
    assert load_fingerprints() is load_fingerprints()
