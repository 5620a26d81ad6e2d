"""The emulated web: every site of the plan over HTTP/HTTPS, and the ISP's blockpage server.

One small HTTP/1.1 server core (``HttpServer``: h11, bounded, keep-alive, optional TLS upgrade
after accept) serves two content providers:

- ``SiteContent`` (role ``sites``, `internet` namespace): the site is chosen by the *local
  address* of the accepted connection, as on the Internet where each site has its own address.
- ``BlockpageContent`` (role ``blockpage``, `censor` namespace): the ISP's warning page and the
  blockpages that ``dns-blockpage`` rules point names at.

"Down" sites are never served. In the testbed their addresses are on `internet`'s lo and its
nftables input chain rejects TCP to them with a reset (``topology.internet_ruleset``), so a
client's SYN draws an RST: "connection refused", as from a host with nothing listening. Should a
connection reach this server anyway (that rule missing), it is reset right after accept
(SO_LINGER 0): the client sees its connect succeed, then a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import html
import http
import logging
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11

from netvigil.net.listeners import Listeners, close_writer
from netvigil.testbed.agent import Stop
from netvigil.testbed.pki import site_cert_paths
from netvigil.testbed.plan import ISP_BLOCKPAGE, Plan, SitePlan
from netvigil.testbed.profile import blockpage_body

log = logging.getLogger(__name__)

WARNING_BLOCKPAGE = "isp_ru_rostelcom_warning"
DEFAULT_DNS_BLOCKPAGE = "dns_isp_ru_rkn_ertelecom"


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of one server: a testbed must survive a misbehaving probe or a fuzzer."""

    max_head: int = 16 * 1024
    max_body: int = 1024 * 1024
    idle_timeout: float = 30.0
    write_timeout: float = 30.0
    handshake_timeout: float = 10.0
    max_connections: int = 4096


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    host: str
    scheme: str  # "http" or "https"
    local_ip: str


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    delay: float = 0.0  # seconds to wait before the response head (a slow site)
    rate: int = 0  # bytes/s to send the body at (a site slow for everyone); 0: at once


class Content(Protocol):
    """What a server core asks its content provider."""

    def accepts(self, local_ip: str) -> bool:
        """False: reset the connection at once (nothing is served on this address)."""
        ...

    def respond(self, request: HttpRequest) -> HttpReply: ...

    def error(self, local_ip: str, status: int) -> HttpReply:
        """The reply to a request the core rejected (400, 413, 431)."""
        ...


TlsPicker = Callable[[str], "ssl.SSLContext | None"]


def http_date() -> str:
    return email.utils.formatdate(usegmt=True)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: what a client sees from a refused or killed connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Closed(Exception):
    """The client went away (or sent nothing) while we waited for a request."""


class _Reject(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class HttpServer:
    """The shared server core: listeners, connection bookkeeping, and the h11 request loop."""

    content: Content
    tls: TlsPicker | None = None
    limits: HttpLimits = field(default_factory=HttpLimits)
    # Addresses that speak plain HTTP on a TLS listener's port (Telegram's data centres on 443).
    plain_on_tls: Callable[[str], bool] | None = None
    _listeners: Listeners = field(default_factory=Listeners)

    @property
    def _tasks(self) -> set[asyncio.Task[Any]]:
        return self._listeners.tasks

    async def listen(self, hosts: str | Sequence[str], port: int, *, tls: bool = False) -> int:
        """Listen on every host at `port` (0: a free port, the same on every host); returns it."""
        if tls and self.tls is None:
            raise ValueError("a TLS listener needs a TlsPicker")
        for host in [hosts] if isinstance(hosts, str) else list(hosts):

            async def on_connect(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool = tls
            ) -> None:
                await self._connection(reader, writer, tls)

            port = await self._listeners.listen(on_connect, host, port)
        return port

    async def stop(self) -> None:
        await self._listeners.stop()

    @property
    def connections(self) -> int:
        return len(self._tasks)

    # -- one connection -----------------------------------------------------------------------
    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool
    ) -> None:
        task = asyncio.current_task()
        if task is None or len(self._tasks) >= self.limits.max_connections:
            _reset(writer)
            return
        self._tasks.add(task)
        try:
            local_ip = str(writer.get_extra_info("sockname")[0])
            if not self.content.accepts(local_ip):
                _reset(writer)
                return
            if tls and self.plain_on_tls is not None and self.plain_on_tls(local_ip):
                tls = False
            if tls:
                assert self.tls is not None
                context = self.tls(local_ip)
                if context is None:
                    _reset(writer)
                    return
                await writer.start_tls(context, ssl_handshake_timeout=self.limits.handshake_timeout)
            await self._http(reader, writer, local_ip, "https" if tls else "http")
        except (OSError, ssl.SSLError, TimeoutError, h11.LocalProtocolError) as exc:
            # Clients that vanish, fail the handshake or stall are routine here.
            log.debug("connection ended: %r", exc)
        except Exception:  # a bug in a content provider must cost one connection, not the server
            log.exception("serving a connection on %s failed", writer.get_extra_info("sockname"))
        finally:
            self._tasks.discard(task)
            await close_writer(writer)

    async def _http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local_ip: str, scheme: str
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        while True:
            try:
                request = await self._read_request(conn, reader, writer)
            except _Closed:
                return
            except h11.RemoteProtocolError as exc:
                reply = self.content.error(local_ip, exc.error_status_hint)
                await self._send(conn, writer, "GET", reply)
                return
            except _Reject as exc:
                await self._send(conn, writer, "GET", self.content.error(local_ip, exc.status))
                return
            reply = self.content.respond(_request_info(request, local_ip, scheme))
            if reply.delay > 0:
                await asyncio.sleep(reply.delay)
            method = request.method.decode("ascii", "replace")
            await self._send(conn, writer, method, reply)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # MUST_CLOSE (Connection: close, HTTP/1.0) or an aborted body
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> h11.Request:
        """The next request, its body read and dropped; bounded in size and in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.idle_timeout
        request: h11.Request | None = None
        head_bytes = body_bytes = 0
        sent_continue = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                # h11 only bounds an *incomplete* head; a complete oversized one arriving in
                # one read would slip through, so count the head bytes ourselves too.
                if request is None and head_bytes > self.limits.max_head:
                    raise _Reject(431)
                waiting = request is not None and conn.client_is_waiting_for_100_continue
                if waiting and not sent_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                    sent_continue = True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _Closed
                try:
                    data = await asyncio.wait_for(reader.read(8192), remaining)
                except TimeoutError:
                    raise _Closed from None
                if request is None:
                    head_bytes += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body_bytes += len(event.data)
                if body_bytes > self.limits.max_body:
                    raise _Reject(413)
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request
            else:  # ConnectionClosed, or PAUSED (cannot happen: each cycle is finished first)
                raise _Closed

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str, reply: HttpReply
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = list(reply.headers)
        if reply.status >= 400 and reply.status not in (403, 404):
            headers.append(("Connection", "close"))
        response = h11.Response(
            status_code=reply.status, headers=headers, reason=_reason(reply.status)
        )
        data = conn.send(response)
        if method != "HEAD" and reply.body and reply.rate > 0:
            writer.write(data)
            await self._paced(conn, writer, reply.body, reply.rate)
            data = b""
        elif method != "HEAD" and reply.body:
            data += conn.send(h11.Data(data=reply.body))
        data += conn.send(h11.EndOfMessage())
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.limits.write_timeout)

    async def _paced(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, body: bytes, rate: int
    ) -> None:
        """The body at ``rate`` bytes/s: a tenth of a second's worth every tenth of a second,
        on a schedule (not sleep after write), so the mean rate is the site's own. Ends when the
        body is sent or the client goes away (the write fails)."""
        step = max(1, rate // 10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for number, offset in enumerate(range(0, len(body), step)):
            writer.write(conn.send(h11.Data(data=body[offset : offset + step])))
            await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
            await asyncio.sleep(max(0.0, started + (number + 1) / 10 - loop.time()))


def _request_info(request: h11.Request, local_ip: str, scheme: str) -> HttpRequest:
    target = request.target.decode("latin-1")
    host = ""
    for name, value in request.headers:
        if name == b"host":
            host = value.decode("latin-1")
            break
    if target.startswith(("http://", "https://")):  # absolute-form, as sent to proxies
        parts = urlsplit(target)
        host = host or parts.netloc
        target = parts.path or "/"
    path = target.split("?", 1)[0].split("#", 1)[0] or "/"
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return HttpRequest(
        method=request.method.decode("ascii", "replace"),
        path=path,
        host=host.lower().rstrip("."),
        scheme=scheme,
        local_ip=local_ip,
    )


def tls_context(chain: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(chain, key)
    return context


# --------------------------------------------------------------------------------------------
# Sites


_WORDS = (
    "network",
    "community",
    "service",
    "update",
    "report",
    "archive",
    "support",
    "project",
    "release",
    "people",
    "policy",
    "weather",
    "market",
    "science",
    "culture",
    "travel",
    "health",
    "open",
    "daily",
    "local",
    "global",
    "review",
    "guide",
    "story",
    "video",
    "photo",
    "event",
    "forum",
    "school",
    "library",
    "music",
    "sport",
    "energy",
    "city",
    "mobile",
    "privacy",
    "research",
    "partner",
    "museum",
    "garden",
    "river",
    "street",
)


def _sentences(seed: str) -> list[str]:
    """Deterministic filler text: the same site always has the same bytes, sites differ."""
    out: list[str] = []
    digest = hashlib.sha256(seed.encode()).digest()
    for _ in range(8):
        digest = hashlib.sha256(digest).digest()
        words = [_WORDS[b % len(_WORDS)] for b in digest[:10]]
        out.append(" ".join(words).capitalize() + ".")
    return out


@lru_cache(maxsize=256)
def site_page(site: SitePlan, page: str, size: int) -> bytes:
    """The HTML of one page of a site, padded to exactly `size` bytes when it is smaller."""
    domain = html.escape(site.domain)
    title = html.escape(site.title)
    titles = {"home": title, "about": f"About us | {title}", "news": f"News | {title}"}
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{titles.get(page, title)}</title>\n"
        f'<meta name="description" content="{title} at {domain}">\n'
        f'<link rel="canonical" href="https://{domain}/{"" if page == "home" else page}">\n'
        "</head>\n<body>\n"
        f'<header><h1>{title}</h1><nav><a href="/">Home</a> <a href="/news">News</a> '
        '<a href="/about">About</a></nav></header>\n<main>\n'
    )
    if page == "about":
        intro = f"<h2>About {domain}</h2>\n<p>{domain} has been online since 2009.</p>\n"
    elif page == "news":
        intro = f"<h2>Latest news from {domain}</h2>\n<p>Stories published on {domain} today.</p>\n"
    else:
        intro = f"<h2>Welcome to {domain}</h2>\n<p>Thank you for visiting {domain}.</p>\n"
    tail = (
        f"</main>\n<footer><p>&copy; 2024 {domain}. All rights reserved.</p></footer>\n"
        "</body>\n</html>\n"
    )
    parts = [head.encode(), intro.encode()]
    used = sum(len(p) for p in parts) + len(tail.encode())
    number = 0
    while True:
        words = " ".join(_sentences(f"{site.domain}/{page}/{number}"))
        section = f"<h3>{domain}: section {number + 1}</h3>\n<p>{words}</p>\n".encode()
        if used + len(section) > size or number >= 100_000:
            break
        parts.append(section)
        used += len(section)
        number += 1
    gap = size - used
    if gap >= 9:  # an HTML comment fills the rest to the exact byte
        filler = (" ".join(_sentences(f"{site.domain}/{page}/pad")) + " ") * (gap // 200 + 1)
        parts.append(b"<!--" + filler.replace("-", " ").encode()[: gap - 8] + b"-->\n")
    elif gap > 0:
        parts.append(b"\n" * gap)
    parts.append(tail.encode())
    return b"".join(parts)


def _simple_page(status: int, text: str, server: str) -> bytes:
    """The short status pages a web server generates itself (nginx style)."""
    line = f"{status} {_reason(status).decode()}"
    return (
        f"<html>\r\n<head><title>{line}</title></head>\r\n<body>\r\n<center><h1>{html.escape(text)}"
        f"</h1></center>\r\n<hr><center>{html.escape(server)}</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


class SiteContent:
    """Which site answers (by local address) and what it says.

    Precedence of site flags: ``redirect_to`` (every request), then status 403 (every
    request), then ``https_redirect`` (plain HTTP only), then the paths.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def accepts(self, local_ip: str) -> bool:
        site = self.plan.site_at(local_ip)
        return site is not None and site.kind != "down"

    def _site(self, local_ip: str) -> SitePlan:
        site = self.plan.site_at(local_ip)
        assert site is not None  # accepts() was asked first
        return site

    def _edge(self, site: SitePlan, local_ip: str) -> str:
        if site.kind == "cdn":
            return f"{site.domain}-edge-{'a' if local_ip == site.addresses[0] else 'b'}"
        return f"{site.domain}-edge"

    def _headers(
        self, site: SitePlan, local_ip: str, body: bytes, *extra: tuple[str, str]
    ) -> tuple[tuple[str, str], ...]:
        return (
            ("Server", site.server_header),
            ("Date", http_date()),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "max-age=0, private, must-revalidate"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Served-By", self._edge(site, local_ip)),
            *extra,
        )

    def _page(
        self, site: SitePlan, local_ip: str, status: int, body: bytes, *extra: tuple[str, str]
    ) -> HttpReply:
        return HttpReply(
            status,
            self._headers(site, local_ip, body, *extra),
            body,
            site.delay_ms / 1000,
            site.serve_rate_bps,
        )

    def _redirect(self, site: SitePlan, local_ip: str, location: str) -> HttpReply:
        body = _simple_page(301, "301 Moved Permanently", site.server_header)
        return self._page(site, local_ip, 301, body, ("Location", location))

    def respond(self, request: HttpRequest) -> HttpReply:
        site, ip = self._site(request.local_ip), request.local_ip
        if site.im_app and site.plain_on_443:
            # a Telegram data centre: its nginx answers OONI's POST / with a 404 page
            return self._page(site, ip, 404, _simple_page(404, "404 Not Found", "nginx/0.3.33"))
        if site.redirect_to:
            return self._redirect(site, ip, site.redirect_to)
        if site.status == 403:
            body = _simple_page(403, "Access denied", site.server_header)
            return self._page(site, ip, 403, body)
        if site.https_redirect and request.scheme == "http":
            return self._redirect(site, ip, f"https://{site.domain}{request.path}")
        if request.path == "/":
            cookie = hashlib.sha256(f"session/{site.domain}".encode()).hexdigest()[:24]
            secure = "; Secure" if request.scheme == "https" else ""
            set_cookie = ("Set-Cookie", f"sid={cookie}; Path=/; HttpOnly; SameSite=Lax{secure}")
            return self._page(site, ip, 200, site_page(site, "home", site.body_bytes), set_cookie)
        if request.path == "/about":
            return self._page(site, ip, 200, site_page(site, "about", site.body_bytes // 4))
        if request.path == "/news":
            return self._page(site, ip, 200, site_page(site, "news", site.body_bytes // 2))
        if request.path == "/old":
            return self._redirect(site, ip, "/")
        return self._page(site, ip, 404, _simple_page(404, "404 Not Found", site.server_header))

    def error(self, local_ip: str, status: int) -> HttpReply:
        site = self._site(local_ip)
        body = _simple_page(status, f"{status} {_reason(status).decode()}", site.server_header)
        return HttpReply(status, self._headers(site, local_ip, body), body)


class SiteTls:
    """Per-address TLS contexts, built lazily (a plan may have hundreds of sites)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}

    def __call__(self, local_ip: str) -> ssl.SSLContext | None:
        site = self.plan.site_at(local_ip)
        if site is None or site.kind == "down":
            return None
        variant = ""
        if site.kind == "cdn":  # a CDN's edges hold different (valid) certificates
            variant = "a" if local_ip == site.addresses[0] else "b"
        return self.context(site, variant)

    def context(self, site: SitePlan, variant: str) -> ssl.SSLContext:
        key = (site.domain, variant)
        context = self._contexts.get(key)
        if context is None:
            context = tls_context(*site_cert_paths(self.plan.pki_dir, site.domain, variant))

            def on_sni(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                self._switch(sslobj, name, site)

            context.sni_callback = on_sni
            self._contexts[key] = context
        return context

    def _switch(self, sslobj: ssl.SSLObject, name: str | None, site: SitePlan) -> None:
        """SNI naming another site switches to its certificate; an unknown one keeps ours."""
        if not name:
            return
        other = self.plan.site(name)
        if other is None or other.kind == "down" or other.domain == site.domain:
            return
        try:
            sslobj.context = self.context(other, "a" if other.kind == "cdn" else "")
        except (OSError, ssl.SSLError):
            # An exception here would abort the handshake; a missing cert is a setup fault.
            log.exception("no certificate for %s", other.domain)


class _PortContent:
    """The sites' content on a messaging endpoint's own port (WhatsApp's 5222): only the
    endpoints reached on that port accept there."""

    def __init__(self, content: SiteContent, port: int) -> None:
        self.content, self.port = content, port

    def accepts(self, local_ip: str) -> bool:
        site = self.content.plan.site_at(local_ip)
        return site is not None and self.port in site.extra_ports

    def respond(self, request: HttpRequest) -> HttpReply:
        return self.content.respond(request)

    def error(self, local_ip: str, status: int) -> HttpReply:
        return self.content.error(local_ip, status)


def _plain_on_443(plan: Plan) -> Callable[[str], bool]:
    def plain(local_ip: str) -> bool:
        site = plan.site_at(local_ip)
        return site is not None and site.plain_on_443

    return plain


async def start_extra_ports(
    plan: Plan, hosts: str | Sequence[str] = "0.0.0.0", limits: HttpLimits | None = None
) -> list[HttpServer]:
    """Plain listeners on the messaging endpoints' own ports (what a TCP connect needs)."""
    servers: list[HttpServer] = []
    content = SiteContent(plan)
    try:
        for port in sorted({p for s in plan.sites for p in s.extra_ports}):
            server = HttpServer(_PortContent(content, port), None, limits or HttpLimits())
            servers.append(server)
            await server.listen(hosts, port)
    except BaseException:
        for server in servers:
            await server.stop()
        raise
    return servers


async def start_site_server(
    plan: Plan,
    hosts: str | Sequence[str] = "0.0.0.0",
    http_port: int = 80,
    https_port: int = 443,
    limits: HttpLimits | None = None,
) -> tuple[HttpServer, int, int]:
    """The sites server on explicit addresses: (server, http port, https port)."""
    server = HttpServer(
        SiteContent(plan), SiteTls(plan), limits or HttpLimits(), plain_on_tls=_plain_on_443(plan)
    )
    try:
        http_port = await server.listen(hosts, http_port)
        https_port = await server.listen(hosts, https_port, tls=True)
    except BaseException:
        await server.stop()
        raise
    return server, http_port, https_port


async def start_sites(plan: Plan) -> Stop:
    """Serve every live site on :80 and :443 of the `internet` namespace (down sites: see top)."""
    down = [a for s in plan.sites if s.kind == "down" for a in s.addresses]
    if down:
        log.info("not serving down site addresses: %s", ", ".join(down))
    server, _, _ = await start_site_server(plan)
    extra = await start_extra_ports(plan)

    async def stop() -> None:
        for one in (server, *extra):
            await one.stop()

    return stop


# --------------------------------------------------------------------------------------------
# The ISP's blockpage server


@lru_cache(maxsize=32)
def _blockpage(name: str) -> bytes:
    return blockpage_body(name)


class BlockpageContent:
    """The warning page on /warning…; for other paths, the blockpage of the name's rule."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def accepts(self, local_ip: str) -> bool:
        return True

    def _reply(self, status: int, body: bytes) -> HttpReply:
        headers = (
            ("Server", "nginx"),
            ("Date", http_date()),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
        )
        return HttpReply(status, headers, body)

    def respond(self, request: HttpRequest) -> HttpReply:
        if request.path.startswith("/warning"):
            return self._reply(200, _blockpage(WARNING_BLOCKPAGE))
        rule = self.plan.first_rule(("dns-blockpage",), request.host) if request.host else None
        name = DEFAULT_DNS_BLOCKPAGE
        if rule is not None:
            name = str(rule.params.get("blockpage", DEFAULT_DNS_BLOCKPAGE))
        return self._reply(200, _blockpage(name))

    def error(self, local_ip: str, status: int) -> HttpReply:
        body = _simple_page(status, f"{status} {_reason(status).decode()}", "nginx")
        return self._reply(status, body)


async def start_blockpage_http(
    plan: Plan,
    host: str = ISP_BLOCKPAGE,
    http_port: int = 80,
    https_port: int = 443,
    limits: HttpLimits | None = None,
) -> tuple[HttpServer, int, int]:
    """The blockpage server on an explicit address: (server, http port, https port)."""
    context = tls_context(plan.pki_dir / "isp-blockpage.pem", plan.pki_dir / "isp-blockpage.key")
    server = HttpServer(BlockpageContent(plan), lambda _ip: context, limits or HttpLimits())
    try:
        http_port = await server.listen(host, http_port)
        https_port = await server.listen(host, https_port, tls=True)
    except BaseException:
        await server.stop()
        raise
    return server, http_port, https_port


async def start_blockpage_server(plan: Plan) -> Stop:
    server, _, _ = await start_blockpage_http(plan)
    return server.stop
