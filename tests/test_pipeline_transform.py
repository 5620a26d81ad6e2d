"""netvigil.pipeline.transform: measurement → verdict row + observation rows, per schema.py."""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from netvigil.pipeline.schema import OBSERVATION_SCHEMA, VERDICT_SCHEMA
from netvigil.pipeline.sources import OONI_TEST_NAMES
from netvigil.pipeline.transform import MeasurementError, transform
from netvigil.verdict.model import Verdict

DATA = Path(__file__).parent / "data" / "ooni_samples.jsonl"
LINES = DATA.read_bytes().splitlines()


def _sample(line: int) -> tuple[dict[str, Any], bytes]:
    raw = LINES[line - 1]
    return orjson.loads(raw), raw


def _counts(obs: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in obs:
        out[row["obs_type"]] = out.get(row["obs_type"], 0) + 1
    return out


def test_every_real_sample_gives_schema_valid_rows() -> None:
    assert len(LINES) == 109
    verdicts: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    for raw in LINES:
        row, obs = transform(orjson.loads(raw), "ooni_samples.jsonl", raw=raw)
        assert set(row) == set(VERDICT_SCHEMA.names)
        assert all(set(o) == set(OBSERVATION_SCHEMA.names) for o in obs)
        verdicts.append(row)
        observations.extend(obs)
    vt = pa.Table.from_pylist(verdicts, schema=VERDICT_SCHEMA)
    ot = pa.Table.from_pylist(observations, schema=OBSERVATION_SCHEMA)
    assert vt.num_rows == 109
    assert ot.num_rows == 1589  # pinned: a change in what counts as an observation shows here
    assert len(set(vt.column("measurement_uid").to_pylist())) == 109
    assert set(vt.column("test_name").to_pylist()) <= OONI_TEST_NAMES
    # The two blockpages among the samples are named by their fingerprints.
    fps = {r["fingerprint"] for r in verdicts if r["fingerprint"]}
    assert fps == {"ooni.id_lamanlabuh_kominfo", "cl.isp_ru_nevalink_forward"}
    for r in verdicts:
        assert r["technique"] == (r["outcome"].split("/")[0] if r["blocked"] else "")


def test_sample_1_by_hand() -> None:
    # archive.org from Indonesia: 1 A answer, 1 TCP connect, 2 requests (the blockpage the
    # redirect led to, and the 302 itself); no TLS.
    m, raw = _sample(1)
    row, obs = transform(m, "s", raw=raw)
    assert _counts(obs) == {"dns": 1, "tcp": 1, "http": 2}
    dns = obs[0]
    assert (dns["hostname"], dns["answer_type"], dns["answer"]) == (
        "archive.org",
        "A",
        "207.241.224.2",
    )
    tcp = next(o for o in obs if o["obs_type"] == "tcp")
    assert (tcp["ip"], tcp["port"], tcp["failure"]) == ("207.241.224.2", 80, None)
    http = [o for o in obs if o["obs_type"] == "http"]
    assert [(o["url"], o["status_code"]) for o in http] == [
        ("http://lamanlabuh.aduankonten.id/", 200),
        ("http://archive.org", 302),
    ]
    assert http[0]["hostname"] == "lamanlabuh.aduankonten.id"
    body = m["test_keys"]["requests"][0]["response"]["body"]
    assert http[0]["body_length"] == len(body.encode())
    assert row["domain"] == "archive.org"
    assert row["probe_cc"] == "ID" and row["probe_asn"] == 23693
    assert row["measurement_start_time"] == dt.datetime(2025, 5, 27, 23, 31, 8, tzinfo=dt.UTC)
    assert row["outcome"] == "http/blockpage" and row["technique"] == "http"
    assert row["fingerprint"] == "ooni.id_lamanlabuh_kominfo"
    # No measurement_uid in the file: the id is derived from the bytes as read.
    assert row["measurement_uid"] == "nv" + hashlib.sha256(raw).hexdigest()[:30]
    assert all(o["measurement_uid"] == row["measurement_uid"] for o in obs)


def test_sample_71_by_hand_tls_and_base64_body() -> None:
    # DoH to 8.8.4.4: no DNS query, 1 TCP connect, 1 TLS handshake (3 certificates), 1 request
    # whose body is recorded as base64.
    m, raw = _sample(71)
    _, obs = transform(m, "s", raw=raw)
    assert _counts(obs) == {"tcp": 1, "tls": 1, "http": 1}
    tls = next(o for o in obs if o["obs_type"] == "tls")
    leaf = m["test_keys"]["tls_handshakes"][0]["peer_certificates"][0]["data"]
    assert tls["cert_sha256"] == hashlib.sha256(base64.b64decode(leaf)).hexdigest()
    assert (tls["ip"], tls["port"], tls["server_name"], tls["tls_version"]) == (
        "8.8.4.4",
        443,
        "8.8.4.4",
        "TLSv1.3",
    )
    http = next(o for o in obs if o["obs_type"] == "http")
    body = m["test_keys"]["requests"][0]["response"]["body"]
    assert http["body_length"] == len(base64.b64decode(body["data"])) == 49


def test_sample_76_by_hand_many_answers() -> None:
    # youtube.com: 5 queries with 12 + 5 + 8 + 5 + 9 answers, 24 connects, 24 handshakes (IPv6
    # endpoints in brackets), 1 request.
    m, raw = _sample(76)
    row, obs = transform(m, "s", raw=raw)
    assert _counts(obs) == {"dns": 39, "tcp": 24, "tls": 24, "http": 1}
    assert row["domain"] == "www.youtube.com"
    v6 = [o for o in obs if o["obs_type"] == "tls" and o["ip"] == "2a00:1450:4002:403::200e"]
    assert len(v6) == 1 and v6[0]["port"] == 443
    cnames = [o["answer"] for o in obs if o["answer_type"] == "CNAME"]
    assert cnames == ["youtube-ui.l.google.com."] * 5
    resolvers = {o["resolver"] for o in obs if o["obs_type"] == "dns"}
    assert {"8.8.4.4:53", "https://dns.quad9.net/dns-query"} <= resolvers


def test_resolver_of_a_getaddrinfo_lookup_netvigil_asked_directly() -> None:
    # netvigil records the user's resolver as OONI records getaddrinfo (resolver_address ""),
    # and how it asked in x_resolver_address; OONI's own getaddrinfo lookups name no resolver.
    m, raw = _sample(76)
    queries = m["test_keys"]["queries"]
    queries[0].update(engine="getaddrinfo", resolver_address="", x_resolver_address="10.0.0.53:53")
    queries[1].update(engine="getaddrinfo", resolver_address="")
    queries[1].pop("x_resolver_address", None)
    _, obs = transform(m, "s", raw=raw)
    by_query = {o["resolver"] for o in obs if o["obs_type"] == "dns"}
    assert "10.0.0.53:53" in by_query and None in by_query


def test_ids_envelope_and_fallbacks() -> None:
    m, raw = _sample(14)  # meek (2015): own measurement_uid, input is a list, no probe_cc/asn
    row, _ = transform(m, "s", raw=raw)
    assert row["measurement_uid"] == "01201508281c027b0b3dbb5701351ae370852165"
    assert row["probe_cc"] == "ZZ" and row["probe_asn"] == 0
    assert row["domain"] == "" and row["input"] == orjson.dumps(m["input"]).decode()
    m, raw = _sample(81)  # dns_consistency (2015): only test_start_time
    row, _ = transform(m, "s", raw=raw)
    assert row["measurement_start_time"] == dt.datetime(2015, 11, 23, 16, 14, 28, tzinfo=dt.UTC)
    # Without raw bytes the id comes from the canonical JSON: the same for any key order.
    a = {"test_name": "tor", "measurement_start_time": "2024-01-01 00:00:00", "x": 1, "y": 2}
    b = {"y": 2, "x": 1, "measurement_start_time": "2024-01-01 00:00:00", "test_name": "tor"}
    assert transform(a, "s")[0]["measurement_uid"] == transform(b, "s")[0]["measurement_uid"]
    assert transform(a, "s", uid="collector-uid")[0]["measurement_uid"] == "collector-uid"


@pytest.mark.parametrize(
    ("url", "domain"),
    [
        ("https://WWW.Example.COM./path?q", "www.example.com"),
        ("http://[2001:db8::1]:8080/", "2001:db8::1"),
        ("example.org", "example.org"),
        ("", ""),
        # not a URL (a legacy bridge line): kept, but it names no site
        ("obfs4 1.2.3.4:443 cert=abc", ""),
    ],
)
def test_domain(url: str, domain: str) -> None:
    m = {"test_name": "web_connectivity", "measurement_start_time": "2024-01-01 00:00:00"}
    m["input"] = url
    assert transform(m, "s")[0]["domain"] == domain


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"test_name": "made_up_test"}, "unknown-test-name"),
        ({"test_name": 7}, "wrong-types"),
        ({"measurement_start_time": "yesterday"}, "invalid-start-time"),
        ({"measurement_start_time": "2024-13-01 00:00:00"}, "invalid-start-time"),
        ({"measurement_start_time": ["2024-01-01 00:00:00"]}, "wrong-types"),
        ({"probe_cc": 12}, "wrong-types"),
        ({"probe_asn": {"n": 1}}, "wrong-types"),
        ({"test_keys": [1, 2]}, "wrong-types"),
        ({"input": {"url": "x"}}, "wrong-types"),
        ({"measurement_uid": 5}, "wrong-types"),
    ],
)
def test_unusable_envelope_raises_with_reason(change: dict[str, Any], reason: str) -> None:
    m, _ = _sample(1)
    m.update(change)
    with pytest.raises(MeasurementError) as err:
        transform(m, "s")
    assert err.value.reason == reason


def test_not_an_object() -> None:
    with pytest.raises(MeasurementError) as err:
        transform([1, 2], "s")
    assert err.value.reason == "not-an-object"


def test_hostile_fields_become_nulls_not_errors() -> None:
    m: dict[str, Any] = {
        "test_name": "web_connectivity",
        "measurement_start_time": "2024-01-01 00:00:00",
        "probe_asn": "AS0",
        "input": "https://example.com/",
        "test_keys": {
            "queries": [
                "nope",
                {"hostname": 5, "answers": [1, None, {"answer_type": "A", "ipv4": ["x"]}]},
                {"hostname": "a.example", "answers": "many", "failure": "dns_nxdomain_error"},
            ],
            "tcp_connect": [{"ip": 5, "port": 99999}, {"ip": "1.2.3.4", "port": True}],
            "tls_handshakes": [
                {"address": 443, "peer_certificates": [{"data": "not base64!"}]},
                {"address": "1.2.3.4:http", "peer_certificates": "x", "t": float("nan")},
            ],
            "requests": [
                {"request": "GET", "response": {"code": "200", "body": {"format": "base64"}}},
                {"response": {"code": 2**40, "body": 12, "body_is_truncated": "yes"}},
                None,
            ],
        },
    }
    row, obs = transform(m, "s")
    assert row["probe_asn"] == 0
    assert _counts(obs) == {"dns": 2, "tcp": 2, "tls": 2, "http": 2}
    pa.Table.from_pylist(obs, schema=OBSERVATION_SCHEMA)
    dns = [o for o in obs if o["obs_type"] == "dns"]
    assert dns[0]["hostname"] is None and dns[0]["answer_type"] == "A" and dns[0]["answer"] is None
    assert dns[1]["failure"] == "dns_nxdomain_error" and dns[1]["answer"] is None
    assert [o["port"] for o in obs if o["obs_type"] == "tcp"] == [None, None]
    tls = [o for o in obs if o["obs_type"] == "tls"]
    assert [o["cert_sha256"] for o in tls] == [None, None]
    assert tls[1]["ip"] == "1.2.3.4" and tls[1]["port"] is None and tls[1]["t"] is None
    http = [o for o in obs if o["obs_type"] == "http"]
    assert [(o["status_code"], o["body_length"], o["body_truncated"]) for o in http] == [
        (None, None, None),
        (None, None, None),
    ]


def test_body_lengths() -> None:
    def body_length(body: Any) -> Any:
        m = {
            "test_name": "web_connectivity",
            "measurement_start_time": "2024-01-01 00:00:00",
            "test_keys": {"requests": [{"response": {"code": 200, "body": body}}]},
        }
        return transform(m, "s")[1][0]["body_length"]

    assert body_length("héllo") == 6  # bytes, not characters
    assert body_length("hello") == 5
    for n in range(6):
        data = base64.b64encode(b"x" * n).decode()
        assert body_length({"format": "base64", "data": data}) == n
    assert body_length(None) is None


def _verdict(**kw: Any) -> Verdict:
    base: dict[str, Any] = {f.name: None for f in dataclasses.fields(Verdict)}
    base.update(outcome="ok", confidence=0.5, blocked=False, evidence={})
    base.update(kw)
    return Verdict(**base)


def test_verdict_columns_from_evidence() -> None:
    m, raw = _sample(1)
    evidence = {
        "interception": {"known_root": {"match": "certificate", "root": {"name": "Qaznet"}}}
    }
    v = _verdict(outcome="tls/interception", confidence=0.9512, blocked=True, evidence=evidence)
    row, _ = transform(copy.deepcopy(m), "s", raw=raw, verdict=v)
    assert (row["outcome"], row["technique"], row["root"], row["confidence"]) == (
        "tls/interception",
        "tls",
        "Qaznet",
        0.951,
    )
    dns_fp = {"dns": {"fingerprint": {"name": "ooni.dns_fp"}}}
    v = _verdict(outcome="dns/bogus", blocked=True, blocking="dns", evidence=dns_fp)
    row, _ = transform(m, "s", raw=raw, verdict=v)
    assert (row["fingerprint"], row["blocking"], row["technique"]) == ("ooni.dns_fp", "dns", "dns")
    v = _verdict(outcome="captive-portal", blocking=False, accessible=True)
    row, _ = transform(m, "s", raw=raw, verdict=v)
    assert (row["technique"], row["blocking"], row["accessible"]) == ("", "false", True)


def _web(**fields: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "test_name": "web_connectivity",
        "measurement_start_time": "2024-01-01 00:00:00",
        "probe_cc": "KZ",
        "probe_asn": "AS9198",
        "input": "https://example.com/",
        "test_keys": {},
    }
    m.update(fields)
    return m


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # issue 12: a country of 39 characters with markup reached the report's cards
        ({"probe_cc": "<b>KZ</b>" + "x" * 30}, "invalid-country"),
        ({"probe_cc": "kz"}, "invalid-country"),
        ({"probe_cc": "KAZ"}, "invalid-country"),
        ({"probe_cc": "K1"}, "invalid-country"),
        ({"probe_cc": ""}, "invalid-country"),
        ({"probe_cc": "ÄB"}, "invalid-country"),
        ({"probe_asn": "ASxyz"}, "invalid-asn"),
        ({"probe_asn": "9198"}, "invalid-asn"),
        ({"probe_asn": "as9198"}, "invalid-asn"),
        ({"probe_asn": "AS"}, "invalid-asn"),
        ({"probe_asn": "AS99999999999"}, "invalid-asn"),
        ({"probe_asn": "AS4294967296"}, "invalid-asn"),
        ({"probe_asn": "AS١٢٣"}, "invalid-asn"),  # Arabic-Indic digits pass str.isdigit
        ({"probe_asn": -1}, "invalid-asn"),
        ({"input": "https://<script>alert(1)</script>/"}, "invalid-host"),
        ({"input": "http://[bad"}, "invalid-host"),
        ({"input": "http:///no-host"}, "invalid-host"),
        ({"input": "https://" + "a" * 64 + ".example/"}, "invalid-host"),
        ({"input": "https://" + "a." * 130 + "example/"}, "invalid-host"),
        ({"input": "https://exa mple.com/"}, "invalid-host"),
        ({"measurement_start_time": "2011-12-31 23:59:59"}, "invalid-start-time"),
        ({"measurement_start_time": "2999-01-01 00:00:00"}, "invalid-start-time"),
        ({"measurement_start_time": "2024-01-01T00:00:00"}, "invalid-start-time"),
    ],
)
def test_invalid_envelope_values_are_rejected(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(MeasurementError) as err:
        transform(_web(**change), "s")
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("change", "cc", "asn", "domain"),
    [
        ({}, "KZ", 9198, "example.com"),
        ({"probe_cc": "ZZ", "probe_asn": "AS0"}, "ZZ", 0, "example.com"),
        ({"probe_cc": None, "probe_asn": None}, "ZZ", 0, "example.com"),
        ({"probe_asn": "AS4294967295"}, "KZ", 4294967295, "example.com"),
        ({"probe_asn": 9198}, "KZ", 9198, "example.com"),
        ({"input": "http://[2001:db8::1]:8080/"}, "KZ", 9198, "2001:db8::1"),
        ({"input": "https://_dmarc.example.org./x"}, "KZ", 9198, "_dmarc.example.org"),
        ({"input": "https://пример.рф/"}, "KZ", 9198, "пример.рф"),
        ({"input": "https://xn--e1afmkfd.xn--p1ai/"}, "KZ", 9198, "xn--e1afmkfd.xn--p1ai"),
        ({"input": "example.org"}, "KZ", 9198, "example.org"),
        ({"input": None}, "KZ", 9198, ""),
    ],
)
def test_valid_envelope_values_pass(change: dict[str, Any], cc: str, asn: int, domain: str) -> None:
    row, _ = transform(_web(**change), "s")
    assert (row["probe_cc"], row["probe_asn"], row["domain"]) == (cc, asn, domain)
