"""The sites server and the blockpage server, run for real on loopback addresses.

Each site of the plan is moved to its own 127.0.0.x address, so "which site answers is decided
by the local address" is exercised exactly as in the testbed. No name is ever resolved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest

from netvigil.testbed import pki
from netvigil.testbed.plan import Plan, SitePlan, make_plan
from netvigil.testbed.profile import blockpage_body, parse_profile
from netvigil.testbed.sites import (
    HttpLimits,
    HttpServer,
    SiteTls,
    start_blockpage_http,
    start_site_server,
)

PROFILE = """
name = "sites-test"
isp = "Test ISP"
domains = ["news.example", "shop.example"]

[[site]]
domain = "slow.example"
kind = "slow"
delay_ms = 300

[[site]]
domain = "forbidden.example"
kind = "forbidden"

[[site]]
domain = "cdn.example"
kind = "cdn"

[[site]]
domain = "secure.example"
https_redirect = true

[[site]]
domain = "example.org"
redirect_to = "https://www.example.org/"

[[site]]
domain = "www.example.org"
title = "Example Org Home"
body_kb = 20

[[site]]
domain = "dead.example"
kind = "down"

[[rule]]
action = "dns-blockpage"
domain = "shop.example"
blockpage = "isp_by_beltelecom_block"

[[rule]]
action = "dns-blockpage"
domain = "news.example"
"""

TIMEOUT = 5.0


def loopback_plan(plan: Plan) -> Plan:
    """The same plan with every site address moved to its own 127.0.0.x."""
    sites: list[SitePlan] = []
    host = 10
    for site in plan.sites:
        addresses = tuple(f"127.0.0.{host + i}" for i in range(len(site.addresses)))
        host += len(site.addresses)
        sites.append(dataclasses.replace(site, addresses=addresses))
    return dataclasses.replace(plan, sites=tuple(sites), _by_domain={}, _by_addr={})


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    state = tmp_path_factory.mktemp("sites")
    base = make_plan(parse_profile(PROFILE), state_dir=str(state))
    pki.build_testbed_pki(base)
    return loopback_plan(base)


def root_ctx(plan: Plan) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(plan.pki_dir / pki.WEBPKI_ROOT_FILE))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    cert: dict[str, Any] | None = None
    alpn: str | None = None


def _connect(ip: str, port: int, tls: ssl.SSLContext | None, sni: str | None) -> socket.socket:
    sock = socket.create_connection((ip, port), timeout=TIMEOUT)
    if tls is not None:
        return tls.wrap_socket(sock, server_hostname=sni)
    return sock


def exchange(
    sock: socket.socket,
    requests: list[tuple[str, str, str]],
    extra: list[tuple[str, str]] | None = None,
) -> list[Reply]:
    """Send (method, path, host) requests one after another on one connection."""
    conn = h11.Connection(h11.CLIENT)
    replies: list[Reply] = []
    for method, path, host in requests:
        headers = [("Host", host), ("User-Agent", "test"), *(extra or [])]
        sock.sendall(conn.send(h11.Request(method=method, target=path, headers=headers)))
        sock.sendall(conn.send(h11.EndOfMessage()))
        status, hdrs, body = 0, {}, b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                hdrs = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
        alpn = sock.selected_alpn_protocol() if isinstance(sock, ssl.SSLSocket) else None
        replies.append(Reply(status, hdrs, body, cert, alpn))
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            break
        conn.start_next_cycle()
    return replies


def fetch(
    ip: str,
    port: int,
    path: str = "/",
    host: str = "",
    method: str = "GET",
    tls: ssl.SSLContext | None = None,
    sni: str | None = None,
) -> Reply:
    with _connect(ip, port, tls, sni) as sock:
        return exchange(sock, [(method, path, host or ip)])[0]


def title(body: bytes) -> str:
    match = re.search(rb"<title>(.*?)</title>", body)
    assert match, body[:200]
    return match.group(1).decode()


def run_sites(
    plan: Plan,
    check: Callable[[HttpServer, int, int], Awaitable[None]],
    limits: HttpLimits | None = None,
) -> None:
    async def main() -> None:
        hosts = [a for s in plan.sites for a in s.addresses]
        server, http_port, https_port = await start_site_server(plan, hosts, 0, 0, limits)
        try:
            await asyncio.wait_for(check(server, http_port, https_port), 20)
        finally:
            await server.stop()

    asyncio.run(main())


def site(plan: Plan, domain: str) -> SitePlan:
    found = plan.site(domain)
    assert found is not None
    return found


# --------------------------------------------------------------------------------------------


def test_pages_differ_per_site_and_match_the_plan(plan: Plan) -> None:
    news, shop = site(plan, "news.example"), site(plan, "shop.example")

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        assert isinstance(server.tls, SiteTls)
        assert not server.tls._contexts, "TLS contexts must be built lazily"
        seen = {}
        for s in (news, shop):
            reply = await asyncio.to_thread(fetch, s.addresses[0], http_port, "/", s.domain)
            assert reply.status == 200
            assert title(reply.body) == s.title
            assert s.domain.encode() in reply.body
            assert len(reply.body) == s.body_bytes == int(reply.headers["content-length"])
            assert reply.headers["server"] == s.server_header
            assert reply.headers["x-served-by"] == f"{s.domain}-edge"
            assert reply.headers["content-type"] == "text/html; charset=utf-8"
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert "cache-control" in reply.headers and "date" in reply.headers
            assert reply.headers["set-cookie"].startswith("sid=")
            seen[s.domain] = reply.body
            # The page is deterministic: same bytes on a second visit.
            again = await asyncio.to_thread(fetch, s.addresses[0], http_port, "/", s.domain)
            assert again.body == reply.body
        assert seen[news.domain] != seen[shop.domain]
        assert news.title != shop.title

    run_sites(plan, check)


def test_paths_about_news_old_and_404(plan: Plan) -> None:
    news = site(plan, "news.example")
    ip = news.addresses[0]

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        home = await asyncio.to_thread(fetch, ip, http_port, "/")
        about = await asyncio.to_thread(fetch, ip, http_port, "/about")
        assert about.status == 200 and len(about.body) < len(home.body)
        assert about.body != home.body and "set-cookie" not in about.headers
        news_page = await asyncio.to_thread(fetch, ip, http_port, "/news?page=2")
        assert news_page.status == 200 and b"Latest news" in news_page.body
        old = await asyncio.to_thread(fetch, ip, http_port, "/old")
        assert old.status == 301 and old.headers["location"] == "/"
        missing = await asyncio.to_thread(fetch, ip, http_port, "/no/such/page")
        assert missing.status == 404 and b"404 Not Found" in missing.body
        assert missing.headers["server"] == news.server_header

    run_sites(plan, check)


def test_head_and_keep_alive(plan: Plan) -> None:
    shop = site(plan, "shop.example")

    def run(port: int) -> list[Reply]:
        with _connect(shop.addresses[0], port, None, None) as sock:
            return exchange(
                sock,
                [
                    ("HEAD", "/", shop.domain),
                    ("GET", "/about", shop.domain),
                    ("GET", "/", shop.domain),
                ],
            )

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        head, about, home = await asyncio.to_thread(run, http_port)
        assert head.status == 200 and head.body == b""
        assert int(head.headers["content-length"]) == shop.body_bytes
        assert about.status == 200 and home.status == 200
        assert len(home.body) == shop.body_bytes

    run_sites(plan, check)


def test_redirect_flags_and_forbidden(plan: Plan) -> None:
    secure, apex = site(plan, "secure.example"), site(plan, "example.org")
    forbidden = site(plan, "forbidden.example")
    ctx = root_ctx(plan)

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        plain = await asyncio.to_thread(
            fetch, secure.addresses[0], http_port, "/news", secure.domain
        )
        assert plain.status == 301 and plain.headers["location"] == "https://secure.example/news"
        tls = await asyncio.to_thread(
            fetch, secure.addresses[0], https_port, "/", secure.domain, "GET", ctx, secure.domain
        )
        assert tls.status == 200 and title(tls.body) == secure.title
        for port, tls_ctx in ((http_port, None), (https_port, ctx)):
            moved = await asyncio.to_thread(
                fetch, apex.addresses[0], port, "/about", apex.domain, "GET", tls_ctx, apex.domain
            )
            assert moved.status == 301 and moved.headers["location"] == "https://www.example.org/"
            denied = await asyncio.to_thread(
                fetch,
                forbidden.addresses[0],
                port,
                "/",
                forbidden.domain,
                "GET",
                tls_ctx,
                forbidden.domain,
            )
            assert denied.status == 403 and b"Access denied" in denied.body

    run_sites(plan, check)


def test_slow_site_waits_before_answering(plan: Plan) -> None:
    slow, fast = site(plan, "slow.example"), site(plan, "news.example")
    assert slow.delay_ms == 300

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        start = time.monotonic()
        reply = await asyncio.to_thread(fetch, slow.addresses[0], http_port, "/")
        assert reply.status == 200 and time.monotonic() - start >= 0.28
        start = time.monotonic()
        await asyncio.to_thread(fetch, fast.addresses[0], http_port, "/")
        assert time.monotonic() - start < 0.25

    run_sites(plan, check)


def _issuer_cn(cert: dict[str, Any]) -> str:
    return next(v for rdn in cert["issuer"] for k, v in rdn if k == "commonName")


def _subject_cn(cert: dict[str, Any]) -> str:
    return next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")


def test_cdn_edges_present_different_valid_certificates(plan: Plan) -> None:
    cdn = site(plan, "cdn.example")
    assert len(cdn.addresses) == 2
    ctx = root_ctx(plan)

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        edges = []
        for ip in cdn.addresses:
            reply = await asyncio.to_thread(
                fetch, ip, https_port, "/", cdn.domain, "GET", ctx, cdn.domain
            )
            assert reply.status == 200 and reply.cert is not None and reply.alpn == "http/1.1"
            edges.append((_issuer_cn(reply.cert), reply.headers["x-served-by"], reply.body))
        assert edges[0][0] != edges[1][0]  # two intermediates
        assert edges[0][1] == "cdn.example-edge-a" and edges[1][1] == "cdn.example-edge-b"
        assert edges[0][2] == edges[1][2]  # same site, same content

    run_sites(plan, check)


def test_sni_switches_certificate_and_unknown_sni_keeps_the_address_default(plan: Plan) -> None:
    news, shop = site(plan, "news.example"), site(plan, "shop.example")
    verified = root_ctx(plan)
    lax = root_ctx(plan)
    lax.check_hostname = False  # still verifies the chain; lets us look at a mismatched name

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        # On news' address, SNI shop.example: a valid certificate for shop.example.
        other = await asyncio.to_thread(
            fetch, news.addresses[0], https_port, "/", shop.domain, "GET", verified, shop.domain
        )
        assert other.cert is not None and _subject_cn(other.cert) == shop.domain
        assert other.headers["x-served-by"] == "news.example-edge"  # the address decides content
        unknown = await asyncio.to_thread(
            fetch,
            news.addresses[0],
            https_port,
            "/",
            "unknown.invalid",
            "GET",
            lax,
            "unknown.invalid",
        )
        assert unknown.cert is not None and _subject_cn(unknown.cert) == news.domain
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(
                fetch, news.addresses[0], https_port, "/", "x", "GET", verified, "unknown.invalid"
            )
        no_sni = await asyncio.to_thread(
            fetch, news.addresses[0], https_port, "/", "x", "GET", lax, None
        )
        assert no_sni.cert is not None and _subject_cn(no_sni.cert) == news.domain
        assert server.connections <= 1

    run_sites(plan, check)


def test_oversized_head_gets_431_and_server_survives(plan: Plan) -> None:
    news = site(plan, "news.example")

    def big(port: int) -> bytes:
        with _connect(news.addresses[0], port, None, None) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: news.example\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
            )
            data = b""
            while len(data) < 100_000:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
            return data

    def garbage(port: int) -> bytes:
        with _connect(news.addresses[0], port, None, None) as sock:
            sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")
            return sock.recv(65536)

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        answer = await asyncio.to_thread(big, http_port)
        assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer[:80]
        bad = await asyncio.to_thread(garbage, http_port)
        assert bad.startswith(b"HTTP/1.1 400"), bad[:80]
        ok = await asyncio.to_thread(fetch, news.addresses[0], http_port, "/")
        assert ok.status == 200

    run_sites(plan, check)


def test_idle_connection_is_closed(plan: Plan) -> None:
    news = site(plan, "news.example")

    def idle(port: int) -> bytes:
        with _connect(news.addresses[0], port, None, None) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x")  # never finished
            return sock.recv(100)

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        start = time.monotonic()
        assert await asyncio.to_thread(idle, http_port) == b""
        assert time.monotonic() - start < 2

    run_sites(plan, check, HttpLimits(idle_timeout=0.3))


def test_connection_limit_resets_extra_connections(plan: Plan) -> None:
    news = site(plan, "news.example")

    def two(port: int) -> bytes | None:
        with _connect(news.addresses[0], port, None, None) as first:
            first.sendall(b"GET / HTTP/1.1\r\nHost: x")  # holds the only slot
            time.sleep(0.2)
            with _connect(news.addresses[0], port, None, None) as second:
                try:
                    second.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    refused = second.recv(100)
                except ConnectionResetError:
                    refused = None
        return refused

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        assert await asyncio.to_thread(two, http_port) in (None, b"")
        for _ in range(100):  # the server notices the first client's close
            if server.connections == 0:
                break
            await asyncio.sleep(0.02)
        after = await asyncio.to_thread(fetch, news.addresses[0], http_port, "/")
        assert after.status == 200

    run_sites(plan, check, HttpLimits(max_connections=1, idle_timeout=1))


def test_down_site_is_not_served(plan: Plan) -> None:
    dead = site(plan, "dead.example")

    def attempt(port: int) -> bytes | None:
        try:
            with _connect(dead.addresses[0], port, None, None) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: dead.example\r\n\r\n")
                return sock.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            return None

    async def check(server: HttpServer, http_port: int, https_port: int) -> None:
        for port in (http_port, https_port):
            assert await asyncio.to_thread(attempt, port) in (None, b"")

    run_sites(plan, check)


# --------------------------------------------------------------------------------------------
# The blockpage server


def test_blockpage_server(plan: Plan) -> None:
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE

    async def main() -> None:
        server, http_port, https_port = await start_blockpage_http(plan, "127.0.0.1", 0, 0)
        try:
            warning = await asyncio.to_thread(
                fetch, "127.0.0.1", http_port, "/warning?x=1", "any.example"
            )
            assert warning.status == 200
            assert warning.body == blockpage_body("isp_ru_rostelcom_warning")
            shop = await asyncio.to_thread(fetch, "127.0.0.1", http_port, "/", "shop.example")
            assert shop.body == blockpage_body("isp_by_beltelecom_block")
            assert shop.headers["server"] == "nginx"
            news = await asyncio.to_thread(fetch, "127.0.0.1", http_port, "/a", "NEWS.example:80")
            assert news.body == blockpage_body("dns_isp_ru_rkn_ertelecom")
            tls = await asyncio.to_thread(
                fetch, "127.0.0.1", https_port, "/", "shop.example", "GET", lax, "shop.example"
            )
            assert tls.body == blockpage_body("isp_by_beltelecom_block")
            # Its certificate matches no site: a browser trusting the web PKI refuses it.
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.to_thread(
                    fetch,
                    "127.0.0.1",
                    https_port,
                    "/",
                    "shop.example",
                    "GET",
                    root_ctx(plan),
                    "shop.example",
                )
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_many_sites_start_fast(tmp_path: Path) -> None:
    """500 sites: start-up must not build 500 TLS contexts (no certificates needed to start)."""
    domains = ", ".join(f'"s{i}.example"' for i in range(500))
    plan = make_plan(
        parse_profile(f'name = "big"\ndomains = [{domains}]\n'), state_dir=str(tmp_path)
    )

    async def main() -> None:
        start = time.monotonic()
        server, _, _ = await start_site_server(plan, "127.0.0.1", 0, 0)
        try:
            assert time.monotonic() - start < 1.0
        finally:
            await server.stop()

    asyncio.run(main())
