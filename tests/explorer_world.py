"""A small world for the explorer's tests: measurements submitted to a real collector log and
run through the real pipeline (from the collector's database), so every page, proof and
verdict on them is computed by the code under test.

It holds: an interception of facebook.com on AS9198 on 5 January 2022 by a Qaznet-named root
with the control's real chain (the Kazakhstan 2019/2022 claim); a hostile blockpage whose
title, headers, body and URL carry ``<script>``, ``onerror=`` and ``javascript:``; and ordinary
measurements over three weeks in KZ and RU for the timelines.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from kz_certs import QAZNET, der, make_ca
from netvigil.cli import main as netvigil_main
from netvigil.collector.service import CollectorLog, validate
from netvigil.testbed.pki import forge_leaf, issue_leaf, name_from

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"
HOSTILE_URL = "http://blocked.example/?q=<script>alert(1)</script>&u=javascript:alert(1)"
WORLD_CA_START = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # before the world's 2022 measurements
BLOCKPAGE_BODY = (
    "<html><head><title>" + HOSTILE + "</title>"
    "<script>document.title='pwned';alert('blockpage');"
    "fetch('http://198.51.100.7/beacon');</script></head>"
    '<body onload="alert(\'onload\')"><a href="javascript:alert(2)">click</a>'
    '<iframe src="http://198.51.100.7/frame"></iframe>'
    "Access denied. Contact it-security-operations@etisalat.ae</body></html>"
)


def _b64(chain: list[bytes]) -> list[dict[str, str]]:
    return [{"data": base64.b64encode(d).decode(), "format": "base64"} for d in chain]


def _envelope(cc: str, asn: str, when: dt.datetime, url: str, tk: dict[str, Any]) -> dict[str, Any]:
    return {
        "data_format_version": "0.2.0",
        "test_name": "web_connectivity",
        "test_version": "0.5.28",
        "input": url,
        "report_id": f"{when:%Y%m%dT%H%M%SZ}_webconnectivity_{cc}_{asn}",
        "measurement_start_time": when.strftime("%Y-%m-%d %H:%M:%S"),
        "probe_cc": cc,
        "probe_asn": asn,
        "probe_ip": "127.0.0.1",
        "test_keys": tk,
    }


def interception(when: dt.datetime) -> dict[str, Any]:
    host = "facebook.com"
    web_root = make_ca(
        name_from({"C": "US", "O": "Web PKI", "CN": "Web Root"}), start=WORLD_CA_START
    )
    web_inter = make_ca(
        name_from({"C": "US", "CN": "Web Issuing CA"}), web_root, start=WORLD_CA_START
    )
    real, _ = issue_leaf(web_inter, host)
    national = make_ca(name_from(QAZNET.subject), start=WORLD_CA_START)
    inter = make_ca(name_from(QAZNET.intermediate_subject), national, start=WORLD_CA_START)
    key = rsa.generate_private_key(public_exponent=3, key_size=2048)
    forged = forge_leaf(real, inter, QAZNET, key)
    ip, ep = "157.240.1.35", "157.240.1.35:443"
    tk = {
        "queries": [
            {
                "hostname": host,
                "query_type": "A",
                "engine": "system",
                "failure": None,
                "answers": [{"answer_type": "A", "ipv4": ip, "ttl": 60}],
                "t": 0.01,
            }
        ],
        "tcp_connect": [
            {"ip": ip, "port": 443, "status": {"success": True, "failure": None}, "t": 0.05}
        ],
        "tls_handshakes": [
            {
                "address": ep,
                "server_name": host,
                "failure": "ssl_unknown_authority",
                "no_tls_verify": False,
                "t": 0.12,
                "peer_certificates": _b64([der(forged), der(inter.cert), der(national.cert)]),
            }
        ],
        "requests": [],
        "control_failure": None,
        "control": {
            "dns": {"failure": None, "addrs": [ip]},
            "tcp_connect": {ep: {"status": True, "failure": None}},
            "tls_handshake": {
                ep: {
                    "server_name": host,
                    "status": True,
                    "failure": None,
                    "x_peer_certificates": _b64([der(real), der(web_inter.cert)]),
                }
            },
            "http_request": {
                "failure": None,
                "status_code": 200,
                "body_length": 5000,
                "title": "Facebook",
                "headers": {"X-Site": "1"},
            },
        },
    }
    return _envelope("KZ", "AS9198", when, f"https://{host}/", tk)


def hostile_blockpage(when: dt.datetime) -> dict[str, Any]:
    ip = "203.0.113.9"
    headers = {
        "Server": HOSTILE,
        "Location": "javascript:alert(document.cookie)",
        "X-Evil": '"><svg onload=alert(3)>',
    }
    tk = {
        "queries": [
            {
                "hostname": "blocked.example",
                "query_type": "A",
                "engine": "system",
                "failure": None,
                "answers": [
                    {"answer_type": "A", "ipv4": ip, "ttl": 60},
                    {"answer_type": "CNAME", "hostname": HOSTILE, "ttl": 60},
                ],
            }
        ],
        "tcp_connect": [{"ip": ip, "port": 80, "status": {"success": True, "failure": None}}],
        "tls_handshakes": [],
        "requests": [
            {
                "failure": None,
                "request": {"url": HOSTILE_URL, "method": "GET", "headers": {"X": HOSTILE}},
                "response": {
                    "code": 200,
                    "body": BLOCKPAGE_BODY,
                    "body_is_truncated": False,
                    "headers": headers,
                },
            }
        ],
        "control_failure": None,
        "control": {
            "dns": {"failure": None, "addrs": [ip]},
            "tcp_connect": {f"{ip}:80": {"status": True, "failure": None}},
            "tls_handshake": {},
            "http_request": {
                "failure": None,
                "status_code": 200,
                "body_length": 8000,
                "title": "Blocked Example",
                "headers": {"X-Site": "1"},
            },
        },
    }
    return _envelope("RU", "AS12389", when, HOSTILE_URL, tk)


def ordinary(
    cc: str, asn: str, host: str, when: dt.datetime, *, reset: bool = False
) -> dict[str, Any]:
    ip = "192.0.2.10"
    tk: dict[str, Any] = {
        "queries": [
            {
                "hostname": host,
                "query_type": "A",
                "engine": "system",
                "failure": None,
                "answers": [{"answer_type": "A", "ipv4": ip, "ttl": 60}],
            }
        ],
        "tcp_connect": [{"ip": ip, "port": 80, "status": {"success": True, "failure": None}}],
        "tls_handshakes": [],
        "requests": [
            {
                "failure": "connection_reset" if reset else None,
                "request": {"url": f"http://{host}/", "method": "GET", "headers": {}},
                "response": None
                if reset
                else {
                    "code": 200,
                    "body": "<html><title>Site Page</title>" + "x" * 1000,
                    "body_is_truncated": False,
                    "headers": {"X-Site": "1"},
                },
            }
        ],
        "control_failure": None,
        "control": {
            "dns": {"failure": None, "addrs": [ip]},
            "tcp_connect": {f"{ip}:80": {"status": True, "failure": None}},
            "tls_handshake": {},
            "http_request": {
                "failure": None,
                "status_code": 200,
                "body_length": 1030,
                "title": "Site Page",
                "headers": {"X-Site": "1"},
            },
        },
    }
    return _envelope(cc, asn, when, f"http://{host}/", tk)


def build_world(root: Path, database_url: str | None = None) -> dict[str, Any]:
    """Collector data in ``root/collector`` (or, given ``database_url``, in that PostgreSQL
    database), pipeline output in ``root/pipeline``."""
    start = dt.datetime(2021, 12, 27, 8, 0, tzinfo=dt.UTC)
    measurements: list[tuple[str, dict[str, Any]]] = []
    for day in range(21):
        when = start + dt.timedelta(days=day)
        for asn in ("AS9198", "AS206026"):
            for i, host in enumerate(("example.kz", "news.example", "facebook.com")):
                blocked = host == "news.example" and day >= 9 and asn == "AS9198"
                # news.example on AS9198: measured often, so its onset is significant
                repeats = 4 if host == "news.example" and asn == "AS9198" else 1
                for k in range(repeats):
                    when_k = when + dt.timedelta(minutes=10 * i + k)
                    m = ordinary("KZ", asn, host, when_k, reset=blocked)
                    measurements.append((f"kz-{day}-{asn}-{host}-{k}", m))
        measurements.append((f"ru-{day}", ordinary("RU", "AS12389", "example.ru", when)))
    measurements.append(
        ("interception", interception(dt.datetime(2022, 1, 5, 12, 30, tzinfo=dt.UTC)))
    )
    measurements.append(
        ("hostile", hostile_blockpage(dt.datetime(2022, 1, 6, 9, 0, tzinfo=dt.UTC)))
    )
    log = CollectorLog(root / "collector", database_url=database_url)
    uids: dict[str, str] = {}
    try:
        for name, m in measurements:
            uids[name] = log.submit(validate(m)).result(timeout=30).uid
    finally:
        log.close()
    source = root / "collector" / "collector.sqlite3"
    if database_url is not None:
        # The pipeline reads no PostgreSQL: it gets the measurements as the collector serves
        # them (each with its collector uid as measurement_uid), so the ids are the log's.
        source = root / "submitted.jsonl"
        with source.open("w") as out:
            for name, m in measurements:
                out.write(json.dumps({**m, "measurement_uid": uids[name]}) + "\n")
    rc = netvigil_main(
        [
            "pipeline",
            "run",
            str(source),
            "--out",
            str(root / "pipeline"),
            "--overwrite",
        ]
    )
    assert rc == 0
    return {"uids": uids, "collector": root / "collector", "pipeline": root / "pipeline"}
