"""The middlebox's decisions (which rule applies to an SNI or a request, what it answers), and the
proxy itself on loopback: hooks stand in for TPROXY's original destination, so no namespace is
needed. Every connection goes to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from netvigil.testbed import pki
from netvigil.testbed.middlebox import (
    Head,
    HttpRequest,
    Middlebox,
    blockpage_response,
    http_rule,
    normalize_host,
    parse_http_head,
    redirect_response,
    tls_rule,
)
from netvigil.testbed.plan import ISP_BLOCKPAGE, Plan, make_plan
from netvigil.testbed.profile import blockpage_body, parse_profile

PROFILE = """
name = "middlebox-test"
domains = ["open.example", "blocked.example", "timeout.example", "intercept.example",
           "www.intercept.example", "www.reset.example", "redirect.example", "kw.example"]

[[national_root]]
id = "kz"
subject = { C = "KZ", CN = "Qaznet Trust Network" }
intermediate = { CN = "Qaznet Intermediate" }
root_key = "ec-p256"

[[rule]]
action = "tls-reset"
sni = "www.reset.example"

[[rule]]
action = "tls-timeout"
domain = "timeout.example"

[[rule]]
action = "tls-intercept"
domain = ["intercept.example", "*.intercept.example"]
root = "kz"

[[rule]]
action = "tls-reset"
domain = "intercept.example"

[[rule]]
action = "http-blockpage"
host = "blocked.example"
status = 451
headers = { "X-Filter" = "rkn" }

[[rule]]
action = "http-reset"
keyword = "forbidden-word"

[[rule]]
action = "http-redirect"
domain = "redirect.example"

[[rule]]
action = "http-blockpage"
domain = "www.reset.example"
"""


def make_test_plan(state_dir: str = "") -> Plan:
    return make_plan(parse_profile(PROFILE), state_dir=state_dir)


def request(host: str, target: str = "/") -> HttpRequest:
    return HttpRequest("GET", target, "HTTP/1.1", normalize_host(host))


# ----------------------------------------------------------------------------------------------
# Pure decisions


def test_tls_rule_first_match_in_profile_order() -> None:
    plan = make_test_plan()
    rule = tls_rule(plan, "intercept.example")
    assert rule is not None and rule.action == "tls-intercept"  # not the later tls-reset
    wild = tls_rule(plan, "WWW.Intercept.Example.")
    assert wild is not None and wild.action == "tls-intercept"
    reset = tls_rule(plan, "www.reset.example")
    assert reset is not None and reset.action == "tls-reset"
    timeout = tls_rule(plan, "timeout.example")
    assert timeout is not None and timeout.action == "tls-timeout"


def test_tls_rule_misses() -> None:
    plan = make_test_plan()
    assert tls_rule(plan, None) is None
    assert tls_rule(plan, "") is None
    assert tls_rule(plan, "open.example") is None
    assert tls_rule(plan, "reset.example") is None  # the rule names www. only
    assert tls_rule(plan, "blocked.example") is None  # an http rule, not a tls one
    assert tls_rule(plan, "xintercept.example") is None


def test_http_rule_by_host() -> None:
    plan = make_test_plan()
    for host in ("blocked.example", "BLOCKED.example:80", "blocked.example."):
        rule = http_rule(plan, request(host))
        assert rule is not None and rule.action == "http-blockpage", host
    redirect = http_rule(plan, request("redirect.example"))
    assert redirect is not None and redirect.action == "http-redirect"
    assert http_rule(plan, request("open.example")) is None
    assert http_rule(plan, request("")) is None
    # tls-* rules never apply at the HTTP stage.
    assert http_rule(plan, request("intercept.example")) is None


def test_http_rule_by_keyword() -> None:
    plan = make_test_plan()
    in_target = http_rule(plan, request("open.example", "/search?q=forbidden-word"))
    assert in_target is not None and in_target.action == "http-reset"
    in_host = http_rule(plan, request("forbidden-word.open.example"))
    assert in_host is not None and in_host.action == "http-reset"
    assert http_rule(plan, request("open.example", "/forbidden_word")) is None


def test_parse_http_head() -> None:
    head = b"GET /a?b=c HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  Blocked.Example:8080 \r\n\r\nbody"
    parsed = parse_http_head(head)
    assert parsed == HttpRequest("GET", "/a?b=c", "HTTP/1.1", "blocked.example")
    lf_only = parse_http_head(b"HEAD / HTTP/1.0\nHost: open.example\n\n")
    assert isinstance(lf_only, HttpRequest) and lf_only.host == "open.example"
    absolute = parse_http_head(b"GET http://user@kw.example:81/x HTTP/1.1\r\n\r\n")
    assert isinstance(absolute, HttpRequest) and absolute.host == "kw.example"
    no_host = parse_http_head(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(no_host, HttpRequest) and no_host.host == ""
    v6 = parse_http_head(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
    assert isinstance(v6, HttpRequest) and v6.host == "::1"


def test_parse_http_head_incomplete_and_garbage() -> None:
    assert parse_http_head(b"") is Head.INCOMPLETE
    assert parse_http_head(b"GE") is Head.INCOMPLETE
    assert parse_http_head(b"GET / HTTP/1.1\r\nHost: a") is Head.INCOMPLETE
    assert parse_http_head(b"\x16\x03\x01\x02\x00") is Head.NOT_HTTP  # a ClientHello on :80
    assert parse_http_head(b" GET / HTTP/1.1\r\n\r\n") is Head.NOT_HTTP
    assert parse_http_head(b"A" * 40) is Head.NOT_HTTP
    assert parse_http_head(b"GET /\r\n\r\n") is Head.NOT_HTTP  # HTTP/0.9
    assert parse_http_head(b"GET  / HTTP/1.1\r\n\r\n") is Head.NOT_HTTP


def test_blockpage_response() -> None:
    plan = make_test_plan()
    rule = http_rule(plan, request("blocked.example"))
    assert rule is not None
    response = blockpage_response(rule)
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 451 Unavailable For Legal Reasons"
    assert "Server: nginx" in lines
    assert "Content-Type: text/html; charset=utf-8" in lines
    assert "Connection: close" in lines
    assert "X-Filter: rkn" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert body == blockpage_body("isp_ru_rostelcom_block")


def test_blockpage_defaults_and_header_injection() -> None:
    plan = make_test_plan()
    rule = plan.rules[-1]
    assert rule.action == "http-blockpage" and not rule.params
    assert blockpage_response(rule).startswith(b"HTTP/1.1 403 Forbidden\r\n")
    evil = type(rule)(**{**rule.__dict__, "params": {"headers": {"X-A": "1\r\nSet-Cookie: x"}}})
    head = blockpage_response(evil).partition(b"\r\n\r\n")[0]
    assert b"\r\nSet-Cookie" not in head


def test_redirect_response() -> None:
    plan = make_test_plan()
    rule = http_rule(plan, request("redirect.example"))
    assert rule is not None
    response = redirect_response(rule)
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 302 Found"
    assert f"Location: http://{ISP_BLOCKPAGE}/warning" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert "Connection: close" in lines
    custom = type(rule)(**{**rule.__dict__, "params": {"location": "http://warn.example/x"}})
    assert b"Location: http://warn.example/x\r\n" in redirect_response(custom)


# ----------------------------------------------------------------------------------------------
# The proxy on loopback

SITE_IP = "198.19.0.1"  # what the client "dialled"; every connection really goes to 127.0.0.1
SITE_BODY = b"hello from the site"


async def _site_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(SITE_BODY)
            + SITE_BODY
        )
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
        pass
    finally:
        writer.close()


class Bed:
    def __init__(self, plan: Plan, box: Middlebox, dst: list[tuple[str, int]]) -> None:
        self.plan, self.box, self._dst = plan, box, dst

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._dst[0] = (SITE_IP, port)
        return await asyncio.open_connection(*self.box.address)

    async def tls(
        self, sni: str, cafile: Path, check: bool = True
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._dst[0] = (SITE_IP, 443)
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.check_hostname = check
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        return await asyncio.open_connection(
            *self.box.address, ssl=ctx, server_hostname=sni, ssl_handshake_timeout=5
        )


@asynccontextmanager
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    plan = make_test_plan(str(tmp_path))
    pki.build_testbed_pki(plan)
    chain, key = pki.site_cert_paths(plan.pki_dir, "intercept.example")
    site_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    site_tls.load_cert_chain(chain, key)
    http_server = await asyncio.start_server(_site_http, "127.0.0.1", 0)
    https_server = await asyncio.start_server(_site_http, "127.0.0.1", 0, ssl=site_tls)
    ports = {
        80: http_server.sockets[0].getsockname()[1],
        443: https_server.sockets[0].getsockname()[1],
    }
    dst: list[tuple[str, int]] = [(SITE_IP, 443)]
    box = Middlebox(
        plan,
        listen=("127.0.0.1", 0),
        transparent=False,
        original_dst=lambda _sock: dst[0],
        upstream_addr=lambda d: ("127.0.0.1", ports[d[1]]),
    )
    await box.start()
    try:
        yield Bed(plan, box, dst)
    finally:
        await asyncio.wait_for(box.stop(), 5)
        for server in (http_server, https_server):
            server.close()


def run(tmp_path: Path, test: Callable[[Bed], Awaitable[None]]) -> None:
    async def main() -> None:
        async with asyncio.timeout(30), bed(tmp_path) as testbed:
            await test(testbed)

    asyncio.run(main())


@pytest.fixture(autouse=True)
def _private_root_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> bytes:
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_proxy_relays_http_and_https(tmp_path: Path) -> None:
    async def test(b: Bed) -> None:
        assert (await _get(*await b.connect(80), "open.example")).endswith(SITE_BODY)
        # The test site's certificate is for intercept.example: the relay does not care.
        r, w = await b.tls("open.example", b.plan.pki_dir / pki.WEBPKI_ROOT_FILE, check=False)
        assert (await _get(r, w, "open.example")).endswith(SITE_BODY)

    run(tmp_path, test)


def test_proxy_http_blockpage_and_reset(tmp_path: Path) -> None:
    async def test(b: Bed) -> None:
        page = await _get(*await b.connect(80), "blocked.example")
        assert page.startswith(b"HTTP/1.1 451 ")
        assert page.endswith(blockpage_body("isp_ru_rostelcom_block"))
        reader, writer = await b.connect(80)
        writer.write(b"GET /forbidden-word HTTP/1.1\r\nHost: open.example\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()

    run(tmp_path, test)


def test_proxy_tls_reset_with_a_split_client_hello(tmp_path: Path) -> None:
    async def test(b: Bed) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls = ctx.wrap_bio(
            ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="www.reset.example"
        )
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = out.read()
        reader, writer = await b.connect(443)
        writer.write(hello[:7])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(hello[7:])
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()

    run(tmp_path, test)


def test_proxy_tls_timeout_holds_then_stop_ends_it(tmp_path: Path) -> None:
    async def test(b: Bed) -> None:
        webpki = b.plan.pki_dir / pki.WEBPKI_ROOT_FILE
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.tls("timeout.example", webpki), 1)
        _reader, writer = await b.connect(443)
        writer.write(b"\x16\x03\x01")  # never completes: held, then relayed after 10 s
        await asyncio.sleep(0.1)
        assert b.box._tasks
        await asyncio.wait_for(b.box.stop(), 3)
        assert not b.box._tasks
        writer.close()

    run(tmp_path, test)


def test_proxy_intercepts_with_a_forged_chain(tmp_path: Path) -> None:
    async def test(b: Bed) -> None:
        root_ca, inter_ca = pki.national_ca(b.plan.root("kz"))
        national = tmp_path / "national-root.pem"
        national.write_bytes(pki.cert_pem(root_ca.cert))
        for _ in range(2):  # the second handshake uses the cached context
            reader, writer = await b.tls("intercept.example", national)
            tls = writer.get_extra_info("ssl_object")
            assert tls.selected_alpn_protocol() == "http/1.1"
            der = tls.getpeercert(binary_form=True)
            forged = x509.load_der_x509_certificate(der)
            assert forged.issuer == inter_ca.cert.subject
            assert forged.subject.rfc4514_string() == "CN=intercept.example"
            public = forged.public_key()
            assert isinstance(public, rsa.RSAPublicKey) and public.public_numbers().e == 3
            assert (await _get(reader, writer, "intercept.example")).endswith(SITE_BODY)
        # A client that trusts only the web PKI sees the forgery.
        with pytest.raises(ssl.SSLCertVerificationError):
            await b.tls("intercept.example", b.plan.pki_dir / pki.WEBPKI_ROOT_FILE)
        assert list((tmp_path / "middlebox").glob("*.pem"))

    run(tmp_path, test)


def test_proxy_does_not_intercept_an_untrusted_upstream(tmp_path: Path) -> None:
    async def test(b: Bed) -> None:
        # img.intercept.example matches the wildcard, but the site's real certificate does not
        # cover it: the middlebox cannot verify it, so it relays and the client sees the real one.
        webpki = b.plan.pki_dir / pki.WEBPKI_ROOT_FILE
        reader, writer = await b.tls("img.intercept.example", webpki, check=False)
        cert = x509.load_der_x509_certificate(
            writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        )
        assert "Testbed Issuing CA" in cert.issuer.rfc4514_string()
        assert (await _get(reader, writer, "img.intercept.example")).endswith(SITE_BODY)

    run(tmp_path, test)


def test_proxy_resets_when_upstream_refuses(tmp_path: Path) -> None:
    async def test(b: Bed) -> None:
        with socket.socket() as probe:  # a port with nobody listening
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        b.box._upstream_addr = lambda _d: ("127.0.0.1", closed_port)
        reader, writer = await b.connect(80)
        writer.write(b"GET / HTTP/1.1\r\nHost: open.example\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()

    run(tmp_path, test)
