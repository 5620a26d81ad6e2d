"""netvigil.net against small servers on 127.0.0.1 (DNS, TCP, TLS, HTTP, DoH, traces)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.resolver
import h11
import pytest
from cryptography import x509

from netvigil import net
from netvigil.net import dns as ndns
from netvigil.net import failures
from test_net_support import (
    LOOPBACK,
    a_reply,
    dns_tcp_handler,
    pki,
    server_context,
    simple_http,
    start_dns_udp,
    start_tcp,
)

# -- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "connection_reset"),
        (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), "connection_aborted"),
        (BrokenPipeError(errno.EPIPE, "pipe"), "connection_reset"),
        (TimeoutError(), "generic_timeout_error"),
        (TimeoutError(), "generic_timeout_error"),
        (OSError(errno.ETIMEDOUT, "timed out"), "generic_timeout_error"),
        (OSError(errno.EHOSTUNREACH, "no route"), "host_unreachable"),
        (OSError(errno.ENETUNREACH, "unreachable"), "network_unreachable"),
        (asyncio.IncompleteReadError(b"", 2), "eof_error"),
        (EOFError(), "eof_error"),
        (ssl.SSLEOFError(8, "eof"), "eof_error"),
        (
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "ssl_failed_handshake",
        ),
        (dns.resolver.NXDOMAIN(), "dns_nxdomain_error"),
        (dns.resolver.NoAnswer(), "dns_no_answer"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "dns_nxdomain_error"),
        (failures.NetFailure("dns_refused_error"), "dns_refused_error"),
    ],
)
def test_failure_string(exc: BaseException, expected: str) -> None:
    assert net.failure_string(exc) == expected


def test_failure_string_cert_verification() -> None:
    def verr(code: int) -> ssl.SSLCertVerificationError:
        exc = ssl.SSLCertVerificationError(1, "verify failed")
        exc.verify_code = code
        return exc

    assert net.failure_string(verr(20)) == "ssl_unknown_authority"
    assert net.failure_string(verr(19)) == "ssl_unknown_authority"
    assert net.failure_string(verr(62)) == "ssl_invalid_hostname"
    assert net.failure_string(verr(10)) == "ssl_invalid_certificate"


def test_failure_string_unknown_is_bounded() -> None:
    text = net.failure_string(RuntimeError("x" * 10_000))
    assert text.startswith("unknown_failure: RuntimeError: xxx")
    assert len(text) < 300


# -- DNS ------------------------------------------------------------------------------------------


def test_dns_udp_answer_and_trace() -> None:
    async def main() -> None:
        server = await start_dns_udp(lambda q: [(0, a_reply(q, "198.18.0.1", "198.18.0.2"))])
        trace = net.Trace()
        try:
            result = await net.resolve(
                "example.test", LOOPBACK, port=server.port, timeout=2, late_window=0.05, trace=trace
            )
        finally:
            server.close()
        assert result.failure is None
        assert sorted(result.addresses) == ["198.18.0.1", "198.18.0.2"]
        assert result.rcode == "NOERROR"
        assert result.late_replies == ()
        assert result.transaction_id == 1
        assert 0 <= result.t0 <= result.t < 1
        (query,) = trace.test_keys_fragment()["queries"]
        assert sorted(query["answers"], key=lambda a: a["ipv4"]) == [
            {"answer_type": "A", "ipv4": "198.18.0.1", "ttl": 300},
            {"answer_type": "A", "ipv4": "198.18.0.2", "ttl": 300},
        ]
        # As OONI records an extra UDP resolver: engine "udp", the port in the address only.
        assert query["resolver_address"] == f"{LOOPBACK}:{server.port}"
        assert query["resolver_port"] is None
        assert query["engine"] == "udp"
        assert "x_engine" not in query

    asyncio.run(main())


def test_dns_udp_as_system_is_recorded_as_ooni_records_getaddrinfo() -> None:
    """The user's own resolver: engine "getaddrinfo" and an empty resolver_address, as OONI's
    probes write the system resolver (the only lookups OONI's analysis trusts); how we really
    asked it stays in x_engine / x_resolver_address."""

    async def main() -> None:
        server = await start_dns_udp(lambda q: [(0, a_reply(q, "198.18.0.1"))])
        trace = net.Trace()
        try:
            result = await net.resolve(
                "example.test",
                LOOPBACK,
                port=server.port,
                timeout=2,
                late_window=0.05,
                trace=trace,
                as_system=True,
            )
        finally:
            server.close()
        assert result.engine == "udp" and result.addresses == ("198.18.0.1",)
        (query,) = trace.test_keys_fragment()["queries"]
        assert query["engine"] == "getaddrinfo" == net.SYSTEM_ENGINE
        assert query["resolver_address"] == ""
        assert query["resolver_hostname"] is None and query["resolver_port"] is None
        assert query["x_engine"] == "udp"
        assert query["x_resolver_address"] == f"{LOOPBACK}:{server.port}"
        assert query["answers"] == [{"answer_type": "A", "ipv4": "198.18.0.1", "ttl": 300}]

    asyncio.run(main())


def test_dns_udp_injection_both_replies_recorded() -> None:
    async def main() -> None:
        def handler(q: dns.message.Message) -> list[tuple[float, bytes]]:
            return [(0, a_reply(q, "10.10.34.35")), (0.1, a_reply(q, "198.18.0.7"))]

        server = await start_dns_udp(handler)
        try:
            result = await net.resolve(
                "blocked.test", LOOPBACK, port=server.port, timeout=2, late_window=0.5
            )
        finally:
            server.close()
        assert result.addresses == ("10.10.34.35",)
        assert len(result.late_replies) == 1
        late = result.late_replies[0]
        assert late.addresses == ("198.18.0.7",)
        assert late.t - result.t == pytest.approx(0.1, abs=0.08)
        out = result.to_ooni()["x_late_replies"]
        assert out == [
            {
                "answers": [{"answer_type": "A", "ipv4": "198.18.0.7", "ttl": 300}],
                "failure": None,
                "t": late.t,
                "rcode": "NOERROR",
            }
        ]

    asyncio.run(main())


def test_dns_udp_nxdomain_noanswer_refused() -> None:
    async def main() -> None:
        codes = {
            "nx.test.": dns.rcode.NXDOMAIN,
            "refused.test.": dns.rcode.REFUSED,
            "empty.test.": 0,
        }
        server = await start_dns_udp(
            lambda q: [(0, a_reply(q, rcode=codes[q.question[0].name.to_text()]))]
        )
        try:
            nx = await net.resolve("nx.test", LOOPBACK, port=server.port, late_window=0)
            ref = await net.resolve("refused.test", LOOPBACK, port=server.port, late_window=0)
            empty = await net.resolve("empty.test", LOOPBACK, port=server.port, late_window=0)
        finally:
            server.close()
        assert (nx.failure, nx.rcode) == ("dns_nxdomain_error", "NXDOMAIN")
        assert ref.failure == "dns_refused_error"
        assert empty.failure == "dns_no_answer"
        assert empty.to_ooni()["answers"] is None

    asyncio.run(main())


def test_dns_udp_timeout_and_retransmission() -> None:
    async def main() -> None:
        seen: list[int] = []

        def handler(q: dns.message.Message) -> list[tuple[float, bytes]]:
            seen.append(q.id)
            return []

        server = await start_dns_udp(handler)
        try:
            result = await net.resolve("slow.test", LOOPBACK, port=server.port, timeout=0.4)
        finally:
            server.close()
        assert result.failure == "generic_timeout_error"
        assert result.t == pytest.approx(0.4, abs=0.15)
        assert len(seen) == 2 and seen[0] != seen[1]  # one retry, with a fresh id

    asyncio.run(main())


def test_dns_udp_ignores_garbage_and_wrong_id() -> None:
    async def main() -> None:
        def handler(q: dns.message.Message) -> list[tuple[float, bytes]]:
            wrong = dns.message.make_query("other.test", "A")
            return [
                (0, b"\x00" * 3),
                (0, q.id.to_bytes(2, "big") + b"\xff" * 40),
                (0, a_reply(wrong, "10.0.0.1")),
                (0.02, a_reply(q, "198.18.0.9")),
            ]

        server = await start_dns_udp(handler)
        try:
            result = await net.resolve("ok.test", LOOPBACK, port=server.port, late_window=0.05)
        finally:
            server.close()
        assert result.failure is None
        assert result.addresses == ("198.18.0.9",)

    asyncio.run(main())


def test_dns_tcp() -> None:
    async def main() -> None:
        async def respond(q: dns.message.Message, writer: asyncio.StreamWriter) -> None:
            wire = a_reply(q, "198.18.1.1")
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()

        server, port = await start_tcp(dns_tcp_handler(respond))
        trace = net.Trace()
        try:
            result = await net.resolve("tcp.test", LOOPBACK, port=port, engine="tcp", trace=trace)
        finally:
            server.close()
        assert result.failure is None
        assert result.addresses == ("198.18.1.1",)
        assert trace.test_keys_fragment()["queries"][0]["engine"] == "tcp"

    asyncio.run(main())


def test_dns_tcp_refused() -> None:
    async def main() -> None:
        result = await net.resolve("x.test", LOOPBACK, port=_closed_port(), engine="tcp", timeout=2)
        assert result.failure == "connection_refused"

    asyncio.run(main())


def test_resolve_system_localhost() -> None:
    async def main() -> None:
        result = await net.resolve_system("localhost", timeout=5)
        assert result.engine == "getaddrinfo"  # OONI's name for the system resolver
        assert result.to_ooni()["resolver_address"] == ""
        assert result.failure is None
        assert all(a.startswith("127.") for a in result.addresses)
        assert result.to_ooni()["resolver_port"] is None

    asyncio.run(main())


def test_resolve_doh(tmp_path: Path) -> None:
    p = pki()
    ctx = server_context(tmp_path, [p.leaf, p.intermediate])

    async def doh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        path = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                path = event.target
                assert (b"content-type", b"application/dns-message") in list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert path == b"/dns-query"
        query = dns.message.from_wire(body)
        assert query.id == 0
        wire = a_reply(query, "198.18.2.2")
        headers = [("Content-Type", "application/dns-message"), ("Content-Length", str(len(wire)))]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        writer.write(conn.send(h11.Data(data=wire)) + conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def main() -> None:
        server, port = await start_tcp(doh, ssl_ctx=ctx)
        client = ssl.create_default_context(cadata=p.root.pem.decode())
        trace = net.Trace()
        try:
            result = await net.resolve_doh(
                "doh.test",
                f"https://site.test:{port}/dns-query",
                ssl_context=client,
                timeout=5,
                address=LOOPBACK,
                trace=trace,
            )
        finally:
            server.close()
        assert result.failure is None, result.failure
        assert result.addresses == ("198.18.2.2",)
        assert result.engine == "doh"
        assert trace.test_keys_fragment()["queries"][0]["resolver_address"].endswith("/dns-query")

    asyncio.run(main())


# -- TCP ------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def test_tcp_connect_ok_and_refused() -> None:
    async def main() -> None:
        async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(0.1)

        server, port = await start_tcp(idle)
        trace = net.Trace()
        try:
            ok, sock = await net.connect(LOOPBACK, port, trace=trace)
            assert ok.failure is None and sock is not None
            sock.close()
            refused, none = await net.connect(LOOPBACK, _closed_port(), timeout=2, trace=trace)
        finally:
            server.close()
        assert refused.failure == "connection_refused" and none is None
        entries = trace.test_keys_fragment()["tcp_connect"]
        assert entries[0]["status"] == {"blocked": False, "failure": None, "success": True}
        assert entries[1]["status"]["failure"] == "connection_refused"
        assert entries[1]["status"]["success"] is False
        assert [e["transaction_id"] for e in entries] == [1, 2]

    asyncio.run(main())


# -- TLS ------------------------------------------------------------------------------------------


async def _tls_server(ctx: ssl.SSLContext) -> tuple[asyncio.Server, int]:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    return await start_tcp(hold, ssl_ctx=ctx)


async def _shake(
    port: int, name: str, trust: net.TrustStore, trace: net.Trace | None = None
) -> tuple[net.TLSResult, net.TLSStream | None]:
    _tcp, sock = await net.connect(LOOPBACK, port, trace=trace)
    assert sock is not None
    return await net.handshake(sock, name, trust=trust, timeout=5, trace=trace)


def test_tls_ok(tmp_path: Path) -> None:
    p = pki()
    ctx = server_context(tmp_path, [p.leaf, p.intermediate])

    async def main() -> None:
        server, port = await _tls_server(ctx)
        try:
            result, stream = await _shake(port, "site.test", p.trust)
            assert stream is not None
            stream.close()
        finally:
            server.close()
        assert result.failure is None and result.verify_failure is None
        assert result.tls_version == "TLSv1.3"
        assert result.negotiated_protocol == "http/1.1"
        assert result.cipher_suite.startswith("TLS_")
        assert result.peer_chain == (p.leaf.der, p.intermediate.der)
        assert result.address == f"{LOOPBACK}:{port}"

    asyncio.run(main())


def test_connect_and_handshake_share_a_transaction_and_record_events(tmp_path: Path) -> None:
    """OONI's probes give a connection one transaction id; ooni/data's builder reads the TLS
    handshake's network events by it and requires the first one at the handshake's address."""
    p = pki()
    ctx = server_context(tmp_path, [p.leaf, p.intermediate])

    async def main() -> dict[str, list[dict[str, Any]]]:
        server, port = await _tls_server(ctx)
        trace = net.Trace()
        try:
            _, stream = await _shake(port, "site.test", p.trust, trace)
            assert stream is not None
            stream.close()
            _, refused = await net.connect(LOOPBACK, _closed_port(), timeout=2, trace=trace)
            assert refused is None
        finally:
            server.close()
        return trace.test_keys_fragment()

    keys = asyncio.run(main())
    ok, refused = keys["tcp_connect"]
    (h,) = keys["tls_handshakes"]
    assert h["transaction_id"] == ok["transaction_id"] != refused["transaction_id"]
    events = keys["network_events"]
    mine = sorted(
        (e for e in events if e["transaction_id"] == h["transaction_id"]), key=lambda e: e["t"]
    )
    assert [e["operation"] for e in mine] == [
        "connect",
        "tls_handshake_start",
        "tls_handshake_done",
    ]
    assert all(e["address"] == h["address"] and e["failure"] is None for e in mine)
    (failed,) = [e for e in events if e["transaction_id"] == refused["transaction_id"]]
    assert failed["operation"] == "connect" and failed["failure"] == "connection_refused"
    assert failed["t0"] <= failed["t"]


def test_tls_unknown_authority_captures_full_chain(tmp_path: Path) -> None:
    p = pki()
    ctx = server_context(tmp_path, [p.rogue_leaf, p.rogue_intermediate, p.rogue_root])

    async def main() -> None:
        server, port = await _tls_server(ctx)
        trace = net.Trace()
        try:
            result, stream = await _shake(port, "site.test", p.trust, trace)
        finally:
            server.close()
        assert stream is None
        assert result.failure == "ssl_unknown_authority"
        assert result.verify_failure
        assert result.peer_chain == (p.rogue_leaf.der, p.rogue_intermediate.der, p.rogue_root.der)
        entry = trace.test_keys_fragment()["tls_handshakes"][0]
        assert [base64.b64decode(c["data"]) for c in entry["peer_certificates"]] == list(
            result.peer_chain
        )
        assert entry["failure"] == "ssl_unknown_authority"
        assert entry["x_verify_failure"] == result.verify_failure
        leaf = x509.load_der_x509_certificate(result.peer_chain[0])
        assert leaf.issuer == p.rogue_intermediate.cert.subject

    asyncio.run(main())


def test_tls_hostname_mismatch(tmp_path: Path) -> None:
    p = pki()
    ctx = server_context(tmp_path, [p.leaf, p.intermediate])

    async def main() -> None:
        server, port = await _tls_server(ctx)
        try:
            result, stream = await _shake(port, "other.test", p.trust)
        finally:
            server.close()
        assert stream is None
        assert result.failure == "ssl_invalid_hostname"
        assert len(result.peer_chain) == 2

    asyncio.run(main())


def test_tls_expired_and_failure_order_of_go(tmp_path: Path) -> None:
    p = pki()
    # Direct verification: expired under a trusted root is invalid_certificate; a forged leaf
    # for the wrong name is invalid_hostname (Go checks the name before building a path), for
    # its own name unknown_authority. More classes in test_tls_failures.py.
    assert net.verify_chain([p.expired.der, p.intermediate.der], "site.test", p.trust)[0] == (
        "ssl_invalid_certificate"
    )
    assert net.verify_chain([p.rogue_leaf.der, p.rogue_intermediate.der], "other.test", p.trust)[
        0
    ] == ("ssl_invalid_hostname")
    assert net.verify_chain([p.rogue_leaf.der, p.rogue_intermediate.der], "site.test", p.trust)[
        0
    ] == ("ssl_unknown_authority")
    assert net.verify_chain([p.leaf.der, p.intermediate.der], "www.site.test", p.trust) == (
        None,
        None,
    )
    ctx = server_context(tmp_path, [p.expired, p.intermediate])

    async def main() -> None:
        server, port = await _tls_server(ctx)
        try:
            result, stream = await _shake(port, "site.test", p.trust)
        finally:
            server.close()
        assert stream is None
        assert result.failure == "ssl_invalid_certificate"

    asyncio.run(main())


def test_trust_store_from_pem_file_is_cached(tmp_path: Path) -> None:
    p = pki()
    path = tmp_path / "roots.pem"
    path.write_bytes(p.root.pem + p.rogue_root.pem)
    first = net.TrustStore.from_pem_file(path)
    assert len(first.roots) == 2
    assert net.TrustStore.from_pem_file(path) is first
    assert len(net.TrustStore.mozilla().roots) > 50


# -- HTTP -----------------------------------------------------------------------------------------


def test_http_round_trip() -> None:
    body = b"<html><head><title>Hello   world</title></head><body>hi</body></html>"
    routes = {"/": (200, [("Server", "test"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], body)}

    async def main() -> None:
        server, port = await start_tcp(simple_http(routes))
        trace = net.Trace()
        try:
            tcp, sock = await net.connect(LOOPBACK, port, trace=trace)
            assert sock is not None
            reader, writer = await asyncio.open_connection(sock=sock)
            result = await net.round_trip(
                reader, writer, f"http://{LOOPBACK}:{port}/", address=tcp.address, trace=trace
            )
            writer.close()
        finally:
            server.close()
        assert result.failure is None
        assert result.status_code == 200
        assert result.body == body
        assert result.body_is_truncated is False
        assert result.title == "Hello world"
        assert result.headers["Set-Cookie"] == "a=1"
        assert ("Set-Cookie", "b=2") in result.headers_list
        assert result.body_rate is None or result.body_rate > 0
        entry = trace.test_keys_fragment()["requests"][0]
        assert entry["response"]["body"] == body.decode()
        assert entry["response"]["code"] == 200
        assert entry["request"]["headers"]["Host"] == f"{LOOPBACK}:{port}"
        assert entry["request"]["headers_list"][0] == ["Host", f"{LOOPBACK}:{port}"]
        assert "Mozilla/5.0" in entry["request"]["headers"]["User-Agent"]

    asyncio.run(main())


def test_http_binary_body_is_base64() -> None:
    result = net.HTTPResult(
        url="http://x/",
        address="1.2.3.4:80",
        failure=None,
        status_code=200,
        headers_list=(),
        body=b"\xff\xfe\x00",
        body_is_truncated=False,
        body_rate=None,
        t0=0,
        t=0,
    )
    assert result.to_ooni()["response"]["body"] == {"data": "//4A", "format": "base64"}


def test_fetch_follows_redirects_to_https(tmp_path: Path) -> None:
    p = pki()
    ctx = server_context(tmp_path, [p.leaf, p.intermediate])

    async def main() -> None:
        final = b"<title>final</title>"
        https_server, https_port = await start_tcp(
            simple_http({"/final": (200, [], final)}), ssl_ctx=ctx
        )
        routes = {
            "/start": (301, [("Location", "/next?x=1")], b""),
            "/next?x=1": (302, [("Location", f"https://site.test:{https_port}/final")], b""),
        }
        http_server, http_port = await start_tcp(simple_http(routes))
        looked_up: list[str] = []

        async def resolve(host: str) -> list[str]:
            looked_up.append(host)
            return [LOOPBACK]

        trace = net.Trace()
        try:
            results = await net.fetch(
                f"http://site.test:{http_port}/start",
                resolve=resolve,
                trust=p.trust,
                timeout=5,
                max_body=1024,
                trace=trace,
            )
        finally:
            http_server.close()
            https_server.close()
        assert [r.status_code for r in results] == [301, 302, 200]
        assert results[1].url == f"http://site.test:{http_port}/next?x=1"
        assert results[-1].body == final
        assert results[-1].failure is None
        assert looked_up == ["site.test"] * 3
        keys = trace.test_keys_fragment()
        assert [r["response"]["code"] for r in keys["requests"]] == [200, 302, 301]  # newest first
        assert len(keys["tcp_connect"]) == 3
        assert len(keys["tls_handshakes"]) == 1
        assert keys["tls_handshakes"][0]["server_name"] == "site.test"

    asyncio.run(main())


def test_fetch_tls_failure_stops(tmp_path: Path) -> None:
    p = pki()
    ctx = server_context(tmp_path, [p.rogue_leaf, p.rogue_intermediate])

    async def main() -> None:
        server, port = await start_tcp(simple_http({"/": (200, [], b"forged")}), ssl_ctx=ctx)

        async def resolve(host: str) -> list[str]:
            return [LOOPBACK]

        trace = net.Trace()
        try:
            results = await net.fetch(
                f"https://site.test:{port}/", resolve=resolve, trust=p.trust, timeout=5, trace=trace
            )
        finally:
            server.close()
        assert len(results) == 1
        assert results[0].failure == "ssl_unknown_authority"
        assert results[0].status_code is None
        entry = trace.test_keys_fragment()["requests"][0]
        assert entry["failure"] == "ssl_unknown_authority"
        assert entry["response"]["code"] == 0

    asyncio.run(main())


# -- trace format ---------------------------------------------------------------------------------

QUERY_KEYS = {
    "answers",
    "engine",
    "failure",
    "hostname",
    "query_type",
    "resolver_address",
    "resolver_hostname",
    "resolver_port",
    "t0",
    "t",
    "transaction_id",
}
TCP_KEYS = {"ip", "port", "status", "t0", "t", "transaction_id"}
TLS_KEYS = {
    "address",
    "cipher_suite",
    "failure",
    "negotiated_protocol",
    "no_tls_verify",
    "peer_certificates",
    "server_name",
    "t0",
    "t",
    "tls_version",
    "transaction_id",
}
REQUEST_KEYS = {"failure", "request", "response", "t0", "t", "transaction_id"}
REQUEST_REQUEST_KEYS = {
    "body",
    "body_is_truncated",
    "headers_list",
    "headers",
    "method",
    "tor",
    "x_transport",
    "url",
}
REQUEST_RESPONSE_KEYS = {"body", "body_is_truncated", "code", "headers_list", "headers"}


def _core(keys: set[str]) -> set[str]:
    return {k for k in keys if not k.startswith("x_")}


def test_trace_matches_measurement_format(tmp_path: Path) -> None:
    p = pki()
    ctx = server_context(tmp_path, [p.leaf, p.intermediate])

    async def main() -> dict[str, list[dict[str, object]]]:
        dns_server = await start_dns_udp(lambda q: [(0, a_reply(q, LOOPBACK))])
        https_server, port = await start_tcp(simple_http({"/": (200, [], b"ok")}), ssl_ctx=ctx)
        trace = net.Trace()
        try:
            query = await net.resolve(
                "site.test", LOOPBACK, port=dns_server.port, late_window=0.01, trace=trace
            )

            async def resolve(host: str) -> list[str]:
                return list(query.addresses)

            await net.fetch(
                f"https://site.test:{port}/", resolve=resolve, trust=p.trust, timeout=5, trace=trace
            )
        finally:
            dns_server.close()
            https_server.close()
        return trace.test_keys_fragment()

    keys = asyncio.run(main())
    assert set(keys) == {"queries", "tcp_connect", "tls_handshakes", "requests", "network_events"}
    (q,) = keys["queries"]
    assert _core(set(q)) == QUERY_KEYS and "x_late_replies" in q
    (t,) = keys["tcp_connect"]
    assert set(t) == TCP_KEYS
    assert isinstance(t["status"], dict) and set(t["status"]) == {"blocked", "failure", "success"}
    (h,) = keys["tls_handshakes"]
    assert _core(set(h)) == TLS_KEYS and "x_verify_failure" in h
    (r,) = keys["requests"]
    assert _core(set(r)) == REQUEST_KEYS and "x_address" in r
    assert isinstance(r["request"], dict) and _core(set(r["request"])) == REQUEST_REQUEST_KEYS - {
        "x_transport"
    }
    assert r["request"]["x_transport"] == "tcp"
    assert r["request"]["tor"] == {"exit_ip": None, "exit_name": None, "is_tor": False}
    assert isinstance(r["response"], dict) and _core(set(r["response"])) == REQUEST_RESPONSE_KEYS
    ids = [q["transaction_id"], t["transaction_id"], h["transaction_id"], r["transaction_id"]]
    # the TLS handshake runs over the connect's connection: one transaction, as in OONI's probes
    assert ids == sorted(ids) and len(set(ids)) == 3 and t["transaction_id"] == h["transaction_id"]
    operations = [(e["operation"], e["transaction_id"]) for e in keys["network_events"]]
    assert operations == [
        ("connect", t["transaction_id"]),
        ("tls_handshake_start", h["transaction_id"]),
        ("tls_handshake_done", h["transaction_id"]),
    ]
    times = [q["t0"], t["t0"], h["t0"], r["t0"]]
    assert all(isinstance(x, float) for x in times) and times == sorted(times)
    assert ndns.MAX_ANSWERS == 100


def test_testbed_resolver_answers_a_burst_while_its_event_loop_is_busy() -> None:
    """Regression: measurements of names the censor leaves alone read ``dns/timeout``.

    The testbed's ISP resolver shares its agent's event loop with other roles (the middlebox
    forging certificates). asyncio's datagram transport reads one datagram per loop iteration, so
    while other work made each iteration long, a burst of queries drained one per iteration and
    the probe (5 s, one retry) gave up on the last ones. A resolver must answer a burst in the
    time of a few iterations, whatever else its loop does.
    """
    from netvigil.testbed.dns_servers import Answer, start_resolver

    async def main() -> None:
        server = await start_resolver(
            lambda name, rdtype: Answer(addresses=("198.18.0.7",)), LOOPBACK, 0
        )
        loop = asyncio.get_running_loop()
        busy_until = time.monotonic() + 5.0  # bounded, whatever happens below

        def other_role() -> None:  # ~10 ms of CPU in every loop iteration
            end = time.perf_counter() + 0.01
            while time.perf_counter() < end:
                pass
            if time.monotonic() < busy_until:
                loop.call_soon(other_role)

        loop.call_soon(other_role)
        try:
            results = await asyncio.gather(
                *(
                    net.resolve(
                        f"n{i}.test", LOOPBACK, port=server.udp_port, timeout=1.0, late_window=0
                    )
                    for i in range(150)
                )
            )
        finally:
            busy_until = 0.0
            await server.stop()
        late = [r for r in results if r.failure is not None or r.t - r.t0 > 0.5]
        assert not late, f"{len(late)} of 150 queries unanswered or late: {late[0]}"
        assert all(r.addresses == ("198.18.0.7",) for r in results)

    asyncio.run(main())


def test_dns_udp_reply_read_in_the_iteration_of_the_deadline_is_an_answer() -> None:
    """A reply that came in time but was read late (the loop was busy) is not a timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(3)

    def serve_one() -> None:
        with contextlib.suppress(OSError):
            data, client = sock.recvfrom(4096)
            time.sleep(0.1)  # the reply lands while the probe's loop is blocked
            sock.sendto(a_reply(dns.message.from_wire(data), "198.18.0.9"), client)

    server = threading.Thread(target=serve_one, daemon=True)
    server.start()

    async def main() -> ndns.DNSResult:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, time.sleep, 0.4)  # a busy loop: blocked across the deadline
        return await net.resolve(
            "busy.test", LOOPBACK, port=sock.getsockname()[1], timeout=0.2, late_window=0
        )

    try:
        result = asyncio.run(main())
    finally:
        server.join(5)
        sock.close()
    assert result.failure is None
    assert result.addresses == ("198.18.0.9",)
    assert result.to_ooni()["x_queries_sent"] == 1


def test_a_handshake_keeps_its_endpoint_and_transaction_when_the_socket_forgot_its_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A socket disconnected by a reset can no longer say its peer (getpeername fails: seen in
    CI on all-techniques as a handshake recorded at address ''). The handshake must still be
    recorded at the endpoint the probe connected to, in that connection's transaction (OONI's
    builder ties them by id)."""
    from netvigil.net import tcp as ntcp
    from netvigil.net import tls as ntls
    from netvigil.net.trace import Trace

    monkeypatch.setattr(ntls, "_peer_address", lambda sock: "")  # the socket forgot its peer

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        try:
            trace = Trace()
            connected, sock = await ntcp.connect("127.0.0.1", port, timeout=2, trace=trace)
            assert sock is not None, connected
            accepted, _ = listener.accept()
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            accepted.close()  # linger 0: a reset, as a censor sends
            result, stream = await ntls.handshake(
                sock,
                "site.test",
                trust=ntls.TrustStore.from_pem_bytes(pki().root.pem),
                timeout=2,
                trace=trace,
                address=ntcp.format_address("127.0.0.1", port),
            )
            assert stream is None and result.failure is not None
            fragment = trace.test_keys_fragment()
            return fragment["tcp_connect"][0], fragment["tls_handshakes"][0]
        finally:
            listener.close()

    connect, shake = asyncio.run(main())
    assert shake["address"] == f"127.0.0.1:{connect['port']}"
    assert shake["transaction_id"] == connect["transaction_id"]
