"""The control helper for real on loopback: its own DNS server, HTTP and HTTPS sites, a test CA.

Everything listens on 127.0.0.0/8 on free ports. The helper's allow-list is 127.0.0.0/8 and its
port list the test's ports, so "forbidden" addresses (TEST-NET 192.0.2.0/24) are outside both
the allow-list and the network guard: a helper that connected anyway would fail the test twice.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netvigil.control import protocol
from netvigil.control.client import (
    HTTP_FAILED,
    INVALID_JSON,
    INVALID_RESPONSE,
    TOO_LARGE,
    query_control,
)
from netvigil.control.measure import Connected, MeasureConfig
from netvigil.control.netops import NetvigilOps, ResolverSpec
from netvigil.control.policy import AddressPolicy
from netvigil.control.protocol import ProtocolError, parse_endpoint, parse_request
from netvigil.control.server import HelperConfig, ServerLimits, start_helper
from netvigil.testbed.sites import HttpReply, HttpRequest, HttpServer, tls_context

DOMAIN = "site.test"
TITLE = "The Control Site Test Page"
FORBIDDEN = "192.0.2.7"  # TEST-NET-1: outside the allow-list and the network guard


def run(coro: Any, timeout: float = 30.0) -> Any:
    """Every scenario is bounded: a hang fails the test instead of stalling the suite."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# -- a test PKI ---------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], name: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        san = x509.DNSName(name)
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Pki:
    root: Path
    good_chain: Path
    good_key: Path
    bad_chain: Path
    bad_key: Path
    ip_chain: Path
    ip_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("control-pki")
    trusted = _ca("netvigil test root")
    rogue = _ca("rogue root nobody trusts")
    good_cert, good_key = _leaf(trusted, DOMAIN)
    bad_cert, bad_key = _leaf(rogue, DOMAIN)
    paths = Pki(
        root=folder / "root.pem",
        good_chain=folder / "good.pem",
        good_key=folder / "good.key",
        bad_chain=folder / "bad.pem",
        bad_key=folder / "bad.key",
        ip_chain=folder / "ip.pem",
        ip_key=folder / "ip.key",
    )
    ip_cert, ip_key = _leaf(trusted, "127.0.0.1")
    paths.ip_chain.write_bytes(_pem(ip_cert) + _pem(trusted[0]))
    paths.ip_key.write_bytes(_key_pem(ip_key))
    paths.root.write_bytes(_pem(trusted[0]))
    paths.good_chain.write_bytes(_pem(good_cert) + _pem(trusted[0]))
    paths.good_key.write_bytes(_key_pem(good_key))
    paths.bad_chain.write_bytes(_pem(bad_cert) + _pem(rogue[0]))
    paths.bad_key.write_bytes(_key_pem(bad_key))
    return paths


# -- a tiny DNS server --------------------------------------------------------------------------


class _Dns(asyncio.DatagramProtocol):
    """A → 127.0.0.1 for site.test, NXDOMAIN for anything else."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        if name == DOMAIN:
            if question.rdtype == dns.rdatatype.A:
                response.answer.append(
                    dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1")
                )
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


# -- the site -----------------------------------------------------------------------------------


@dataclass
class _Site:
    """What the HTTP(S) servers answer; the redirect target is set once ports are known."""

    forbidden_location: str = ""
    hits: list[str] = field(default_factory=list)

    def accepts(self, local_ip: str) -> bool:
        return True

    def respond(self, request: HttpRequest) -> HttpReply:
        self.hits.append(request.path)
        if request.path == "/slow":
            return self._page(delay=3.0)
        if request.path == "/redirect":
            return HttpReply(302, (("Location", "/"), ("Content-Length", "0")), b"")
        if request.path == "/escape":
            location = self.forbidden_location
            return HttpReply(302, (("Location", location), ("Content-Length", "0")), b"")
        return self._page()

    def _page(self, delay: float = 0.0) -> HttpReply:
        body = f"<html><head><title>{TITLE}</title></head><body>{'x' * 2000}</body></html>"
        data = body.encode()
        headers = (
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("server", "test-site"),
            ("X-Test", "first"),
            ("x-test", "second"),
        )
        return HttpReply(200, headers, data, delay)

    def error(self, local_ip: str, status: int) -> HttpReply:
        return HttpReply(status, (("Content-Length", "0"),), b"")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Env:
    helper_port: int
    http_port: int
    https_port: int
    bad_port: int
    closed_port: int
    site: _Site
    connects: list[tuple[str, int]]
    server: Any

    @property
    def helper_url(self) -> str:
        return f"http://127.0.0.1:{self.helper_port}/"

    def url(self, path: str = "/", https: bool = True) -> str:
        if https:
            return f"https://{DOMAIN}:{self.https_port}{path}"
        return f"http://{DOMAIN}:{self.http_port}{path}"


class _CountingOps(NetvigilOps):
    """The real primitives, with every TCP connection the helper makes recorded."""

    connects: list[tuple[str, int]]

    async def connect(
        self,
        ip: str,
        port: int,
        *,
        server_name: str | None,
        connect_timeout: float,
        tls_timeout: float,
    ) -> Connected:
        self.connects.append((ip, port))
        return await super().connect(
            ip,
            port,
            server_name=server_name,
            connect_timeout=connect_timeout,
            tls_timeout=tls_timeout,
        )


@asynccontextmanager
async def environment(
    pki: Pki, *, limits: ServerLimits | None = None, budget: float = 8.0
) -> AsyncIterator[Env]:
    loop = asyncio.get_running_loop()
    dns_transport, _ = await loop.create_datagram_endpoint(_Dns, local_addr=("127.0.0.1", 0))
    dns_port = dns_transport.get_extra_info("sockname")[1]
    site = _Site()
    good = tls_context(pki.good_chain, pki.good_key)
    bad = tls_context(pki.bad_chain, pki.bad_key)
    http_server = HttpServer(site, tls=lambda local_ip: bad if local_ip == "127.0.0.2" else good)
    http_port = await http_server.listen("127.0.0.1", 0)
    https_port = await http_server.listen("127.0.0.1", 0, tls=True)
    bad_port = await http_server.listen("127.0.0.2", 0, tls=True)
    closed_port = _free_port()
    site.forbidden_location = f"http://{FORBIDDEN}:{http_port}/"

    ops = _CountingOps.from_trust_file(ResolverSpec("127.0.0.1", dns_port), pki.root)
    assert isinstance(ops, _CountingOps)
    ops.connects = []
    ports = {http_port, https_port, bad_port, closed_port}
    config = HelperConfig(
        ops=ops,
        policy=AddressPolicy.only(["127.0.0.0/8"], ports=ports),
        measure=MeasureConfig(
            budget=budget,
            connect_timeout=2.0,
            tls_timeout=2.0,
            http_timeout=budget - 1.0,
            tls_ports=frozenset({https_port, bad_port}),
        ),
        limits=limits or ServerLimits(),
    )
    server, helper_port = await start_helper(config, "127.0.0.1", 0)
    try:
        yield Env(
            helper_port=helper_port,
            http_port=http_port,
            https_port=https_port,
            bad_port=bad_port,
            closed_port=closed_port,
            site=site,
            connects=ops.connects,
            server=server,
        )
    finally:
        await server.stop()
        await http_server.stop()
        dns_transport.close()


async def raw_request(
    port: int,
    data: bytes,
    *,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to 127.0.0.1:port; (status, headers, body) of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(4 * 1024 * 1024), timeout)
        while True:
            more = await asyncio.wait_for(reader.read(65536), timeout)
            if not more:
                break
            raw += more
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def post(body: bytes, content_length: int | None = None) -> bytes:
    length = len(body) if content_length is None else content_length
    head = (
        "POST / HTTP/1.1\r\nHost: helper\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


def control_body(url: str, endpoints: list[str]) -> bytes:
    return json.dumps(protocol.build_request(url, endpoints)).encode()


# -- the helper end to end --------------------------------------------------------------------


def test_normal_request_gives_a_full_ooni_response(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            endpoint = f"127.0.0.1:{env.https_port}"
            response, failure = await query_control(env.helper_url, env.url(), [endpoint])
            assert failure is None and response is not None
            assert set(response) >= {
                "tcp_connect",
                "tls_handshake",
                "quic_handshake",
                "http_request",
                "http3_request",
                "dns",
                "ip_info",
            }
            assert response["dns"] == {"failure": None, "addrs": ["127.0.0.1"], "x_failure": None}
            assert response["tcp_connect"][endpoint]["status"] is True
            assert response["tcp_connect"][endpoint]["failure"] is None
            tls = dict(response["tls_handshake"][endpoint])
            chain = tls.pop("x_peer_certificates")
            assert tls == {"server_name": DOMAIN, "status": True, "failure": None}
            # The chain the helper saw (an x_ key OONI clients ignore): leaf, then the root.
            ders = [base64.b64decode(c["data"], validate=True) for c in chain]
            assert [c["format"] for c in chain] == ["base64", "base64"]
            good = x509.load_pem_x509_certificates(pki.good_chain.read_bytes())
            assert ders == [c.public_bytes(serialization.Encoding.DER) for c in good]
            assert x509.load_der_x509_certificate(ders[0]).subject.rfc4514_string() == (
                f"CN={DOMAIN}"
            )
            http = response["http_request"]
            assert http["status_code"] == 200
            assert http["failure"] is None
            assert http["title"] == TITLE
            assert http["body_length"] > 2000
            assert http["discovered_h3_endpoint"] == ""
            # The rate the helper saw (an x_ key): the probe's throttling reference.
            assert isinstance(http["x_body_rate"], float) and http["x_body_rate"] > 0
            # Go-canonical names, first value wins (as OONI's helper prints them).
            assert http["headers"]["Server"] == "test-site"
            assert http["headers"]["X-Test"] == "first"
            assert response["http3_request"] is None
            # 1 probe + 2 helper + 8 valid TLS for the domain; loopback is "the Internet" here.
            assert response["ip_info"] == {"127.0.0.1": {"asn": 0, "flags": 11}}

    run(scenario())


def test_redirects_are_followed(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            response, failure = await query_control(env.helper_url, env.url("/redirect"), [])
            assert failure is None and response is not None
            assert response["http_request"]["status_code"] == 200
            assert response["http_request"]["title"] == TITLE
            assert env.site.hits.count("/redirect") == 1 and "/" in env.site.hits
            # The helper's own address on the URL's port, measured though the probe sent none.
            assert f"127.0.0.1:{env.https_port}" in response["tcp_connect"]

    run(scenario())


def test_refused_port(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            endpoint = f"127.0.0.1:{env.closed_port}"
            url = env.url(https=False)
            response, failure = await query_control(env.helper_url, url, [endpoint])
            assert failure is None and response is not None
            entry = response["tcp_connect"][endpoint]
            assert entry["status"] is False
            assert entry["failure"] == "connection_refused_error"  # OONI helper vocabulary
            assert entry["x_failure"] == "connection_refused"
            assert endpoint not in response["tls_handshake"]
            assert response["http_request"]["status_code"] == 200

    run(scenario())


def test_wrong_certificate(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            endpoint = f"127.0.0.2:{env.bad_port}"
            response, failure = await query_control(env.helper_url, env.url(), [endpoint])
            assert failure is None and response is not None
            assert response["tcp_connect"][endpoint]["status"] is True
            tls = response["tls_handshake"][endpoint]
            assert tls["status"] is False
            assert tls["server_name"] == DOMAIN
            assert tls["failure"].startswith("ssl_")
            assert tls["failure"] == "ssl_unknown_authority"
            # The unverified chain is kept too: it is what the probe compares its own with.
            bad = x509.load_pem_x509_certificates(pki.bad_chain.read_bytes())
            assert [base64.b64decode(c["data"]) for c in tls["x_peer_certificates"]] == [
                c.public_bytes(serialization.Encoding.DER) for c in bad
            ]
            info = response["ip_info"]["127.0.0.2"]
            assert info["flags"] & 8 == 0
            assert info["flags"] & 1 == 1
            assert response["ip_info"]["127.0.0.1"]["flags"] & 8 == 8

    run(scenario())


def test_forbidden_address_is_never_contacted(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            endpoints = [f"{FORBIDDEN}:{env.https_port}", f"{FORBIDDEN}:{env.http_port}"]
            response, failure = await query_control(env.helper_url, env.url(), endpoints)
            assert failure is None and response is not None
            for endpoint in endpoints:
                entry = response["tcp_connect"][endpoint]
                assert entry == {
                    "status": False,
                    "failure": "x_forbidden_address",
                    "x_failure": "x_forbidden_address",
                }
                assert endpoint not in response["tls_handshake"]
            assert all(ip != FORBIDDEN for ip, _ in env.connects)
            # Outside the allow-list and not global: a bogon, resolved by the probe.
            assert response["ip_info"][FORBIDDEN]["flags"] == 1 | 4

            # A redirect towards it is refused too (an IP literal never meets a resolver).
            response, failure = await query_control(env.helper_url, env.url("/escape"), [])
            assert failure is None and response is not None
            assert response["http_request"]["failure"] == "x_forbidden_address"
            assert response["http_request"]["status_code"] == -1
            assert response["http_request"]["body_length"] == -1
            assert all(ip != FORBIDDEN for ip, _ in env.connects)

    run(scenario())


def test_forbidden_port_is_never_contacted(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            response, failure = await query_control(
                env.helper_url, env.url(), ["127.0.0.1:22", f"127.0.0.1:{env.https_port}"]
            )
            assert failure is None and response is not None
            assert response["tcp_connect"]["127.0.0.1:22"]["failure"] == "x_forbidden_port"
            assert ("127.0.0.1", 22) not in env.connects

    run(scenario())


def test_dns_failure_in_ooni_vocabulary(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            url = f"https://nx.test:{env.https_port}/"
            response, failure = await query_control(env.helper_url, url, [])
            assert failure is None and response is not None
            assert response["dns"]["failure"] == "dns_name_error"
            assert response["dns"]["x_failure"] == "dns_nxdomain_error"
            assert response["dns"]["addrs"] == []
            assert response["http_request"]["failure"] == "dns_lookup_error"
            assert response["http_request"]["x_failure"] == "dns_nxdomain_error"
            assert response["http_request"]["status_code"] == -1
            assert response["tcp_connect"] == {}

    run(scenario())


def test_oversized_body_is_413(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            # Announced too large: refused before a byte of it is read.
            status, _, body = await raw_request(env.helper_port, post(b"", 70_000))
            assert status == 413
            assert "error" in json.loads(body)
            # Chunked, no length announced: refused once it grows past the limit.
            chunk = b"x" * 20_000
            data = (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                + (b"4e20\r\n" + chunk + b"\r\n") * 4
                + b"0\r\n\r\n"
            )
            status, _, _ = await raw_request(env.helper_port, data)
            assert status == 413

    run(scenario())


def test_bad_requests_are_400_with_a_json_error(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            bad_bodies = [
                b"{not json",
                b"[1, 2]",
                control_body("ftp://site.test/", []),
                control_body("http:///no-host", []),
                control_body("javascript:alert(1)", []),
                json.dumps({"http_request": "https://site.test/", "tcp_connect": ["x"]}).encode(),
                control_body("https://site.test/", [f"127.0.0.1:{n}" for n in range(1, 40)]),
            ]
            for body in bad_bodies:
                status, headers, answer = await raw_request(env.helper_port, post(body))
                assert status == 400, body
                assert headers["content-type"] == "application/json"
                error = json.loads(answer)["error"]
                assert "Traceback" not in error
            assert env.connects == []

    run(scenario())


def test_info_health_and_unknown_routes(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki) as env:
            status, _, body = await raw_request(
                env.helper_port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            assert status == 200
            assert json.loads(body)["name"] == "netvigil-control-helper"
            status, _, body = await raw_request(
                env.helper_port, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            assert status == 200 and json.loads(body)["status"] == "ok"
            status, _, _ = await raw_request(
                env.helper_port, b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            assert status == 404
            status, headers, _ = await raw_request(
                env.helper_port, b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
            )
            assert status == 405 and "POST" in headers["allow"]
            status, _, _ = await raw_request(env.helper_port, b"\x16\x03\x01garbage\r\n\r\n")
            assert status == 400
            big_head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
            status, _, _ = await raw_request(env.helper_port, big_head)
            assert status == 431

    run(scenario())


def test_slow_request_head_is_cut_off(pki: Pki) -> None:
    async def scenario() -> None:
        limits = ServerLimits(head_timeout=0.5, body_timeout=0.5)
        async with environment(pki, limits=limits) as env:
            # Slowloris: a head that never ends is dropped at the deadline, without an answer.
            reader, writer = await asyncio.open_connection("127.0.0.1", env.helper_port)
            started = time.monotonic()
            writer.write(b"POST / HTTP/1.1\r\nHost: h\r\n")
            data = await asyncio.wait_for(reader.read(), 5)
            assert data == b""
            assert time.monotonic() - started < 2.0
            writer.close()
            # A body that stops half-way: 408 at the body deadline.
            status, _, _ = await raw_request(env.helper_port, post(b'{"http_', 100), timeout=5)
            assert status == 408
            assert env.server.stats["connections"] == 0

    run(scenario())


def test_load_shedding(pki: Pki) -> None:
    async def scenario() -> None:
        limits = ServerLimits(max_inflight=1, max_queue=1, queue_timeout=10.0)
        async with environment(pki, limits=limits) as env:
            body = post(control_body(env.url("/slow"), []))

            async def timed() -> tuple[int, float, dict[str, str]]:
                started = time.monotonic()
                status, headers, _ = await raw_request(env.helper_port, body, timeout=20)
                return status, time.monotonic() - started, headers

            first = asyncio.create_task(timed())
            await asyncio.sleep(0.3)  # the first is measuring (the slow site takes 3 s)
            second = asyncio.create_task(timed())
            await asyncio.sleep(0.3)  # the second is queued
            shed = await asyncio.gather(*(timed() for _ in range(4)))
            for status, elapsed, headers in shed:
                assert status == 503
                assert elapsed < 1.0
                assert int(headers["retry-after"]) > 0
            assert (await first)[0] == 200
            assert (await second)[0] == 200
            assert env.server.stats["shed"] == 4

    run(scenario(), timeout=40)


def test_budget_answers_with_what_it_has(pki: Pki) -> None:
    async def scenario() -> None:
        async with environment(pki, budget=1.5) as env:
            started = time.monotonic()
            response, failure = await query_control(
                env.helper_url, env.url("/slow"), [f"127.0.0.1:{env.https_port}"]
            )
            assert time.monotonic() - started < 3.0
            assert failure is None and response is not None
            assert response["http_request"]["failure"] == "generic_timeout_error"
            assert response["tcp_connect"][f"127.0.0.1:{env.https_port}"]["status"] is True

    run(scenario())


# -- the client against misbehaving helpers ------------------------------------------------------


@asynccontextmanager
async def fake_helper(
    answer: bytes, *, stall: bool = False, tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(65536), 5)
            if stall:
                await asyncio.sleep(10)
            writer.write(answer)
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


def _http(status: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def test_client_against_misbehaving_helpers() -> None:
    async def scenario() -> None:
        cases = [
            (_http(200, b"hello, not json"), INVALID_JSON),
            (_http(200, b'{"dns": []}'), INVALID_RESPONSE),
            (_http(503, b'{"error": "overloaded"}'), HTTP_FAILED),
            (_http(200, b"[" * 2 * 1024 * 1024), TOO_LARGE),
            (b"\x00\x01\x02 this is not HTTP at all\r\n\r\n", None),
        ]
        for answer, expected in cases:
            async with fake_helper(answer) as url:
                response, failure = await query_control(url, "https://site.test/", [], timeout=5)
                assert response is None
                assert failure is not None
                if expected is not None:
                    assert failure == expected
        async with fake_helper(b"", stall=True) as url:
            started = time.monotonic()
            response, failure = await query_control(url, "https://site.test/", [], timeout=0.5)
            assert (response, failure) == (None, "generic_timeout_error")
            assert time.monotonic() - started < 2.0
        response, failure = await query_control(
            f"http://127.0.0.1:{_free_port()}/", "https://site.test/", [], timeout=2
        )
        assert (response, failure) == (None, "connection_refused")
        response, failure = await query_control("ftp://127.0.0.1/", "https://site.test/", [])
        assert response is None and failure is not None

    run(scenario())


def test_client_streams_at_most_a_mebibyte() -> None:
    async def scenario() -> None:
        # A chunked body with no end: the client must stop at its bound, not read 2 MiB.
        chunk = b"x" * 65536
        endless = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 32
        )
        async with fake_helper(endless) as url:
            response, failure = await query_control(url, "https://site.test/", [], timeout=5)
            assert (response, failure) == (None, TOO_LARGE)

    run(scenario())


# -- pure parts -----------------------------------------------------------------------------------


def test_endpoint_parsing() -> None:
    assert parse_endpoint("1.2.3.4:443").key == "1.2.3.4:443"
    assert parse_endpoint("[2001:db8::1]:80").key == "[2001:db8::1]:80"
    # An IPv4-mapped IPv6 address is its IPv4 address: the allow-list cannot be dodged.
    assert parse_endpoint("[::ffff:10.0.0.1]:443").key == "10.0.0.1:443"
    for bad in ("1.2.3.4", "1.2.3.4:0", "1.2.3.4:99999", "host:443", "::1:443", "[::1]443"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_request_validation_keeps_only_safe_headers() -> None:
    body = json.dumps(
        {
            "http_request": "https://Site.TEST/path",
            "http_request_headers": {
                "User-Agent": ["ua"],
                "Cookie": ["secret"],
                "Host": ["evil"],
                "Accept": None,
            },
            "tcp_connect": ["127.0.0.1:443", "127.0.0.1:443"],
        }
    ).encode()
    request = parse_request(body)
    assert request.host == "site.test"
    assert request.headers == {"User-Agent": ["ua"]}
    assert len(request.tcp_connect) == 1
    assert request.url_ports == (443,)
    with pytest.raises(ProtocolError):
        parse_request(
            json.dumps(
                {"http_request": "https://a.test/", "http_request_headers": {"Accept": ["a\r\nb"]}}
            ).encode()
        )
    with pytest.raises(ProtocolError):
        parse_request(json.dumps({"http_request": "https://" + "a" * 300 + ".test/"}).encode())
    assert parse_request(json.dumps({"http_request": "http://x.test/"}).encode()).url_ports == (
        80,
        443,
    )


def test_policy() -> None:
    public = AddressPolicy.public()
    ip = ipaddress.ip_address
    assert public.check(ip("8.8.8.8"), 443) is None  # checked, never contacted
    assert public.check(ip("10.1.2.3"), 443) == "x_forbidden_address"
    assert public.check(ip("127.0.0.1"), 80) == "x_forbidden_address"
    assert public.check(ip("169.254.169.254"), 80) == "x_forbidden_address"
    assert public.check(ip("::ffff:192.168.1.1"), 80) == "x_forbidden_address"
    assert public.check(ip("8.8.8.8"), 22) == "x_forbidden_port"
    assert public.is_bogon(ip("10.1.2.3")) and not public.is_bogon(ip("8.8.8.8"))
    testbed = AddressPolicy.only(["198.18.0.0/15"])
    assert testbed.check(ip("198.19.1.1"), 443) is None
    assert testbed.check(ip("8.8.8.8"), 443) == "x_forbidden_address"
    assert not testbed.is_bogon(ip("198.18.30.1"))
    assert testbed.is_bogon(ip("127.0.0.1"))


def test_failure_mapping_and_title() -> None:
    assert protocol.dns_failure("dns_nxdomain_error") == "dns_name_error"
    assert protocol.dns_failure("dns_no_answer") is None
    assert protocol.dns_failure("dns_refused_error") == "dns_server_failure"
    assert protocol.tcp_failure("connection_reset") == "connect_error"
    assert protocol.tcp_failure("generic_timeout_error") == "generic_timeout_error"
    assert protocol.http_failure("ssl_unknown_authority") == "unknown_error"
    assert protocol.http_failure("dns_nxdomain_error") == "dns_lookup_error"
    assert protocol.page_title(b"<TITLE>A &amp; B</TITLE>") == "A &amp; B"
    assert protocol.page_title(b"<title></title>") == ""
    assert protocol.canonical_header("x-frame-options") == "X-Frame-Options"


def test_client_over_https(pki: Pki) -> None:
    answer: dict[str, Any] = {
        "dns": {"failure": None, "addrs": []},
        "http_request": {},
        "tcp_connect": {},
    }

    async def scenario() -> None:
        good = tls_context(pki.ip_chain, pki.ip_key)
        async with fake_helper(_http(200, json.dumps(answer).encode()), tls=good) as url:
            response, failure = await query_control(url, "https://a.test/", [], trust=pki.root)
            assert (response, failure) == (answer, None)
        # A certificate for another name: refused, the request is never sent.
        wrong = tls_context(pki.good_chain, pki.good_key)
        async with fake_helper(_http(200, json.dumps(answer).encode()), tls=wrong) as url:
            response, failure = await query_control(url, "https://a.test/", [], trust=pki.root)
            assert (response, failure) == (None, "ssl_invalid_hostname")

    run(scenario())


def test_testbed_role_starts_and_answers(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """The role as the agent starts it, moved to loopback (no DNS query is sent here)."""
    from netvigil.control import server as server_module
    from netvigil.testbed import plan as plan_module

    async def scenario(folder: Path) -> None:
        port = _free_port()
        monkeypatch.setattr(plan_module, "CONTROL_HELPER", "127.0.0.1")
        monkeypatch.setattr(plan_module, "SERVICE_PORT", port)
        stop = await server_module.start_control_helper(_FakePlan(folder))  # type: ignore[arg-type]
        try:
            status, _, body = await raw_request(port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert status == 200 and json.loads(body)["name"] == "netvigil-control-helper"
            # Outside 198.18.0.0/15: refused without a packet, whatever the probe asks.
            status, _, body = await raw_request(
                port, post(control_body("http://127.0.0.1/", ["127.0.0.1:80"]))
            )
            assert status == 200
            answer = json.loads(body)
            assert answer["tcp_connect"]["127.0.0.1:80"]["failure"] == "x_forbidden_address"
            assert answer["http_request"]["failure"] == "x_forbidden_address"
            assert answer["ip_info"]["127.0.0.1"]["flags"] & 4 == 4
        finally:
            await stop()

    folder = pki.root.parent / "testbed-pki"
    folder.mkdir(exist_ok=True)
    (folder / "webpki-root.pem").write_bytes(pki.root.read_bytes())
    run(scenario(folder))


@dataclass(frozen=True)
class _FakePlan:
    pki_dir: Path


def test_peer_certificates_are_capped() -> None:
    from netvigil.control.measure import _peer_certificates

    config = MeasureConfig(peer_certificates_budget=3000)
    chain = tuple(bytes([n]) * 500 for n in range(1, 21))
    budget = [10**9]
    out = _peer_certificates(chain, config, budget)
    assert len(out) == 8  # at most 8 per endpoint
    assert [base64.b64decode(c["data"]) for c in out] == list(chain[:8])
    budget = [config.peer_certificates_budget]
    assert len(_peer_certificates(chain, config, budget)) == 4  # 4 x 668 base64 chars fit
    assert _peer_certificates(chain, config, budget) == []  # the response's budget is spent
    huge = (b"x" * (config.max_peer_certificate_bytes + 1),)
    assert _peer_certificates(huge, config, [10**9]) == []
