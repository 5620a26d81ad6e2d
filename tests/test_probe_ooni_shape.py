"""The probe's measurement in the shape OONI's probes write it, on loopback (no testbed, no root).

OONI's analysis (probe 0.5.27+, ooni/data's web analysis) takes DNS only from lookups recorded
as the system resolver's (engine "getaddrinfo"); ooni/data's observation builder pairs a
connection's TCP connect, TLS handshake and HTTP round trip by transaction id and reads the
handshake's network events by it. ``tests/test_probe_testbed.py`` checks the same on every testbed
profile; ``scripts/ooni-referee.sh`` runs OONI's pipeline itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from netvigil.experiments.web_connectivity import ProbeConfig, WebConnectivity
from netvigil.net.tls import TrustStore
from test_net_support import (
    LOOPBACK,
    a_reply,
    pki,
    server_context,
    simple_http,
    start_dns_udp,
    start_tcp,
)


def _measure(tmp_path: Path) -> tuple[dict[str, Any], int, int]:
    """One https URL that redirects once on the same site: (measurement, DNS port, site port)."""
    p = pki()

    async def main() -> tuple[dict[str, Any], int, int]:
        dns_server = await start_dns_udp(lambda q: [(0.0, a_reply(q, LOOPBACK))])
        routes: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}
        site, port = await start_tcp(
            simple_http(routes), ssl_ctx=server_context(tmp_path, [p.leaf, p.intermediate])
        )
        routes["/"] = (302, [("Location", f"https://site.test:{port}/end")], b"")
        routes["/end"] = (200, [], b"<title>end</title>hello")
        config = ProbeConfig(
            trust=TrustStore.from_pem_bytes(p.root.pem),
            resolver=LOOPBACK,
            resolver_port=dns_server.port,
            dns_timeout=2,
            late_window=0.05,
            connect_timeout=2,
            tls_timeout=2,
            http_timeout=3,
            url_budget=10,
        )
        try:
            with WebConnectivity(config) as probe:
                measurement = await probe.measure(f"https://site.test:{port}/")
        finally:
            site.close()
            dns_server.close()
        return measurement, dns_server.port, port

    return asyncio.run(main())


def test_the_users_resolver_is_recorded_as_ooni_records_getaddrinfo(tmp_path: Path) -> None:
    m, dns_port, _ = _measure(tmp_path)
    assert m["test_version"] == "0.5.28" and m["resolver_ip"] == LOOPBACK
    tk = m["test_keys"]
    (q,) = tk["queries"]  # the redirect stays on the same name: no second lookup
    assert q["engine"] == "getaddrinfo" and q["resolver_address"] == ""
    assert q["resolver_hostname"] is None and q["resolver_port"] is None
    assert q["x_engine"] == "udp" and q["x_resolver_address"] == f"{LOOPBACK}:{dns_port}"
    assert q["tags"] == ["classic"] and "x_second_opinion" not in q
    assert q["answers"] == [{"answer_type": "A", "ipv4": LOOPBACK, "ttl": 300}]
    assert tk["dns_experiment_failure"] is None and tk["client_resolver"] == LOOPBACK


def test_a_connection_is_one_transaction_with_its_events(tmp_path: Path) -> None:
    m, _, port = _measure(tmp_path)
    tk = m["test_keys"]
    address = f"{LOOPBACK}:{port}"
    connects = tk["tcp_connect"]
    assert len(connects) == 2 and all(c["status"]["success"] for c in connects)  # page, redirect
    tcp_ids = [c["transaction_id"] for c in connects]
    assert len(set(tcp_ids)) == 2 and tk["queries"][0]["transaction_id"] not in tcp_ids
    # each handshake and each request shares the id of the connection it went over
    assert sorted(h["transaction_id"] for h in tk["tls_handshakes"]) == sorted(tcp_ids)
    assert sorted(r["transaction_id"] for r in tk["requests"]) == sorted(tcp_ids)
    for h in tk["tls_handshakes"]:
        assert h["address"] == address and h["network"] == "tcp" and h["tags"] == ["classic"]
    for r in tk["requests"]:
        assert r["address"] == address and r["network"] == "tcp" and r["alpn"] == "http/1.1"
        assert r["tags"] == ["classic"]
    assert [r["response"]["code"] for r in tk["requests"]] == [200, 302]  # newest first
    for tid in tcp_ids:
        events = sorted(
            (e for e in tk["network_events"] if e["transaction_id"] == tid), key=lambda e: e["t"]
        )
        assert [e["operation"] for e in events] == [
            "connect",
            "tls_handshake_start",
            "tls_handshake_done",
        ]
        assert all(e["address"] == address and e["failure"] is None for e in events)


def test_every_lookup_but_the_users_is_a_second_opinion() -> None:
    queries: list[dict[str, Any]] = [
        {"engine": "getaddrinfo", "resolver_address": ""},
        {"engine": "udp", "resolver_address": "198.18.20.53:53"},
        {"engine": "doh", "resolver_address": "https://doh.test/dns-query"},
    ]
    WebConnectivity._mark_second_opinions(queries)
    assert [q.get("x_second_opinion") for q in queries] == [None, True, True]
