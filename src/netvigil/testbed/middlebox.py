"""The censor's middlebox: a transparent TCP proxy that applies the tls-* and http-* rules.

It runs in the ``censor`` namespace. The supervisor's nftables rules divert subscriber TCP to
live site addresses on ports 80 and 443 with TPROXY to ``MIDDLEBOX_TCP_PORT``; the listener has
IP_TRANSPARENT, so an accepted socket's ``getsockname()`` is the address the subscriber dialled.
Upstream connections are ordinary sockets from the censor's own address.

Per flow:

- port 443: wait (by peeking, nothing is consumed) for a complete ClientHello, then apply the
  first tls-* rule whose names match the SNI: reset, black-hole (Kazakhstan 2024) or intercept
  with a forged certificate (Kazakhstan 2019). Anything else is relayed untouched.
- port 80: wait for the first request head, then apply the first http-* rule matching its Host
  or a keyword: a blockpage, a reset or a redirect. Anything else is relayed untouched.

Peeking (MSG_PEEK) instead of reading keeps the client socket pristine: a relayed flow sends the
ClientHello or request from the kernel buffer as if the middlebox were not there, and the TLS
server side of an interception is plain asyncio TLS on the accepted socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import html
import http
import logging
import re
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from netvigil.testbed import pki
from netvigil.testbed.agent import Stop
from netvigil.testbed.clienthello import ClientHello, Verdict, parse_client_hello
from netvigil.testbed.plan import ISP_BLOCKPAGE, Plan, RulePlan
from netvigil.testbed.profile import blockpage_body
from netvigil.testbed.topology import MIDDLEBOX_TCP_PORT

log = logging.getLogger("netvigil.testbed.middlebox")

IP_TRANSPARENT: Final[int] = int(getattr(socket, "IP_TRANSPARENT", 19))
BACKLOG: Final = 4096
MAX_CONNECTIONS: Final = 4096

HEAD_LIMIT: Final = 16 * 1024  # ClientHello / request head: bytes inspected at most
HEAD_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 10.0
HANDSHAKE_TIMEOUT: Final = 10.0
IDLE_TIMEOUT: Final = 60.0  # no byte in either direction for this long closes a relay
TLS_TIMEOUT_HOLD: Final = 300.0  # how long a tls-timeout flow is held open
CLOSE_TIMEOUT: Final = 5.0  # graceful close (flush, TLS close_notify) before aborting
ANSWER_LINGER: Final = 2.0  # after an HTTP answer, how long to drain the client before closing
CHUNK: Final = 64 * 1024
PREGEN_WAIT: Final = 30.0  # start() waits this long at most for the rules' forged keys
PREGEN_WORKERS: Final = 4  # keys made at once (threads; within asyncio's default executor)
CACHE_LIMIT: Final = 2048  # forged keys / contexts kept; a wildcard rule could see many names

TLS_ACTIONS: Final = ("tls-reset", "tls-timeout", "tls-intercept")
HTTP_ACTIONS: Final = ("http-blockpage", "http-reset", "http-redirect")
DEFAULT_BLOCKPAGE: Final = "isp_ru_rostelcom_block"
ALPN: Final = ["http/1.1"]

_TCP_CLOSE_WAIT: Final = 8  # tcp_info.tcpi_state once the peer has sent its FIN
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What the upstream TLS client accepts as server_hostname; a wildcard rule matches any prefix.
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")

Address = tuple[str, int]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_T = TypeVar("_T")
_K = TypeVar("_K")


# ----------------------------------------------------------------------------------------------
# Decisions: pure functions, unit-tested without a network


def tls_rule(plan: Plan, sni: str | None) -> RulePlan | None:
    """The first tls-* rule (profile order) whose names match `sni`; none without an SNI."""
    if not sni:
        return None
    for rule in plan.rules:
        if rule.action in TLS_ACTIONS and rule.matches_name(sni):
            return rule
    return None


class Head(enum.Enum):
    """Why ``parse_http_head`` returned no request."""

    INCOMPLETE = "incomplete"
    NOT_HTTP = "not-http"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    version: str
    host: str  # without port, lowercased, no trailing dot; "" when the request names none


def normalize_host(value: str) -> str:
    """A Host header (or authority) without its port, lowercased, without a trailing dot."""
    value = value.strip()
    if value.startswith("["):  # IPv6 literal: the port, if any, follows the bracket
        end = value.find("]")
        host = value[1:end] if end > 0 else value[1:]
    else:
        host = value.partition(":")[0]
    return host.lower().rstrip(".")


def _head_end(data: bytes) -> int:
    """Offset just past the blank line ending the head, or -1."""
    ends = [i + n for i, n in ((data.find(b"\r\n\r\n"), 4), (data.find(b"\n\n"), 2)) if i >= 0]
    return min(ends) if ends else -1


def parse_http_head(data: bytes) -> HttpRequest | Head:
    """The request line and Host of the first request in `data`, or why there is none (yet)."""
    line_end = data.find(b"\n")
    first_line = data if line_end < 0 else data[:line_end]
    space = first_line.find(b" ")
    method = first_line if space < 0 else first_line[:space]
    # Reject non-HTTP (a ClientHello on :80, binary junk) at once instead of waiting 10 s.
    if space == 0 or (method and not _TOKEN.fullmatch(method)) or (space < 0 and len(method) > 32):
        return Head.NOT_HTTP
    end = _head_end(data)
    if end < 0:
        return Head.INCOMPLETE
    lines = data[:end].split(b"\n")
    parts = lines[0].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[1] or not parts[2].startswith(b"HTTP/"):
        return Head.NOT_HTTP
    method_s, target, version = (p.decode("latin-1") for p in parts)
    host: str | None = None
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if not line or line[:1] in (b" ", b"\t"):  # blank, or an obsolete folded line
            continue
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("latin-1")
            break
    if host is None and "://" in target:  # absolute-form target (a request to a proxy)
        with contextlib.suppress(ValueError):
            host = urlsplit(target).netloc.rpartition("@")[2]
    return HttpRequest(method_s, target, version, normalize_host(host or ""))


def http_rule(plan: Plan, request: HttpRequest) -> RulePlan | None:
    """The first http-* rule (profile order) that matches the request's Host or a keyword.

    A keyword matches as a substring of the request target (as sent) or of the Host (which is
    lowercased, so the keyword is compared lowercased there).
    """
    for rule in plan.rules:
        if rule.action not in HTTP_ACTIONS:
            continue
        if rule.matcher == "keyword":
            if any(v in request.target or v.lower() in request.host for v in rule.values):
                return rule
        elif request.host and rule.matches_name(request.host):
            return rule
    return None


@lru_cache(maxsize=64)
def _blockpage(name: str) -> bytes:
    return blockpage_body(name)


def _header_value(value: object) -> str:
    # Header values come from the profile; a CR or LF would let it inject headers.
    return re.sub(r"[\r\n]+", " ", str(value))


def _response(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{_header_value(k)}: {_header_value(v)}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def blockpage_response(rule: RulePlan) -> bytes:
    """The whole HTTP response of an http-blockpage rule."""
    status = rule.params.get("status", 403)
    body = _blockpage(str(rule.params.get("blockpage", DEFAULT_BLOCKPAGE)))
    headers = [
        ("Server", "nginx"),
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    extra = rule.params.get("headers")
    if isinstance(extra, dict):
        headers += [(str(k), str(v)) for k, v in extra.items()]
    return _response(int(status), headers, body)


def redirect_response(rule: RulePlan) -> bytes:
    """The whole HTTP response of an http-redirect rule."""
    location = str(rule.params.get("location", f"http://{ISP_BLOCKPAGE}/warning"))
    body = (
        "<html><head><title>302 Found</title></head><body><h1>302 Found</h1>"
        f'<a href="{html.escape(location)}">{html.escape(location)}</a></body></html>\n'
    ).encode()
    headers = [
        ("Server", "nginx"),
        ("Location", location),
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    return _response(302, headers, body)


# ----------------------------------------------------------------------------------------------
# Socket helpers


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a DPI box's injected reset looks to the client."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


def _abort(writer: asyncio.StreamWriter, rst: bool) -> None:
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the peer has sent its FIN: peeking cannot tell, TCP_INFO can."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == _TCP_CLOSE_WAIT
    except (OSError, IndexError):
        return False


async def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def peek_head(sock: socket.socket, complete: Callable[[bytes], bool]) -> tuple[bytes, str]:
    """Peek at the first bytes of a flow until `complete(data)`, HEAD_LIMIT or HEAD_TIMEOUT.

    Returns (data, why) with why one of complete, overflow, timeout, eof. Nothing is consumed.
    While waiting for a second segment the socket stays readable (the first is still queued),
    so the wait polls with a backoff; that is the rare case, a split head.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEAD_TIMEOUT
    data = b""
    delay = 0.002
    while True:
        try:
            peeked: bytes | None = sock.recv(HEAD_LIMIT, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            peeked = None
        if peeked is not None:
            if not peeked:
                return data, "eof"
            data = peeked
            if complete(data):
                return data, "complete"
            if len(data) >= HEAD_LIMIT:
                return data, "overflow"
            if _peer_closed(sock):
                return data, "eof"
        remaining = deadline - loop.time()
        if remaining <= 0:
            return data, "timeout"
        if peeked is None:
            if not await _wait_readable(sock, remaining):
                return data, "timeout"
        else:
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)


async def _pump(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, activity: list[float]
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await src.read(CHUNK)
        if not data:
            break
        activity[0] = loop.time()
        dst.write(data)
        await dst.drain()
    # Half-close: TCP passes the FIN on and keeps the other direction; a TLS stream cannot
    # half-close (close_notify ends it), so it is closed, which ends the other pump too.
    if dst.can_write_eof():
        dst.write_eof()
    else:
        dst.close()


def _remember(cache: dict[_K, asyncio.Task[_T]], key: _K, task: asyncio.Task[_T]) -> None:
    cache[key] = task
    if len(cache) > CACHE_LIMIT:  # dicts keep insertion order: drop the oldest finished one
        for old_key, old in list(cache.items()):
            if old.done():
                del cache[old_key]
                break


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Awaiters use shield(), so a failure may have nobody left to see it: mark it seen here.
    if not task.cancelled() and task.exception() is not None:
        log.debug("background task failed: %r", task.exception())


def _usable(task: asyncio.Task[_T] | None) -> bool:
    return task is not None and not (task.done() and (task.cancelled() or task.exception()))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64]


class _Flow:
    """One subscriber connection and everything it owns, so every path can clean up."""

    def __init__(self, client: socket.socket, peer: Address, dst: Address) -> None:
        self.client = client
        self.peer = peer
        self.dst = dst
        self.client_raw = True  # False once an asyncio transport owns the client socket
        self.writers: list[asyncio.StreamWriter] = []

    def describe(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]} -> {self.dst[0]}:{self.dst[1]}"

    def cleanup(self) -> None:
        for writer in self.writers:
            if not writer.transport.is_closing():
                writer.transport.abort()
        if self.client_raw:
            self.client.close()


# ----------------------------------------------------------------------------------------------
# The proxy


class Middlebox:
    """The transparent proxy. ``start_middlebox`` is the role entry point; tests may build one
    on loopback with ``transparent=False`` and hooks for the original destination and for where
    upstream connections really go."""

    def __init__(
        self,
        plan: Plan,
        *,
        listen: Address = ("0.0.0.0", MIDDLEBOX_TCP_PORT),
        transparent: bool = True,
        original_dst: Callable[[socket.socket], Address] | None = None,
        upstream_addr: Callable[[Address], Address] | None = None,
    ) -> None:
        self.plan = plan
        self._listen = listen
        self._transparent = transparent
        self._original_dst = original_dst or _sockname
        self._upstream_addr = upstream_addr or (lambda dst: dst)
        self._dir = Path(plan.state_dir) / "middlebox"
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._pregen_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._cas: dict[str, tuple[pki.CA, pki.CA]] = {}
        self._keys: dict[tuple[str, str], asyncio.Task[rsa.RSAPrivateKey]] = {}
        self._contexts: dict[tuple[str, str], asyncio.Task[ssl.SSLContext]] = {}
        self._upstream_ctx: ssl.SSLContext | None = None

    @property
    def address(self) -> Address:
        if self._listener is None:
            raise RuntimeError("not started")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        roots = sorted({str(r.params["root"]) for r in self._intercept_rules()})
        # The national CAs must exist before the first handshake; the first run makes an
        # RSA-4096 root (seconds), later runs read the per-user cache.
        for root_id in roots:
            self._cas[root_id] = await asyncio.to_thread(pki.national_ca, self.plan.root(root_id))
        self._listener = self._bind()
        loop = asyncio.get_running_loop()
        self._accept_task = loop.create_task(self._serve())
        self._pregen_task = loop.create_task(self._pregenerate())
        # Ready means ready to forge: with the keys still being made, the first handshakes
        # queue behind RSA key generation (~0.15 s each on an idle core, several times that on
        # a loaded one; 37 names for kz-2019) and a client's handshake timeout expires first.
        # The keys outlive the run (per-user cache), so only a first run waits; a key not made
        # within PREGEN_WAIT is made in the background (or on demand) as before.
        began = loop.time()
        await asyncio.wait({self._pregen_task}, timeout=PREGEN_WAIT)
        log.info(
            "listening on %s:%d (%d national root(s)); forged keys ready in %.1f s%s",
            *self.address,
            len(roots),
            loop.time() - began,
            "" if self._pregen_task.done() else " (still making keys in the background)",
        )

    async def stop(self) -> None:
        self._stopping = True  # from here on, cleanups abort instead of closing gracefully
        background = [t for t in (self._accept_task, self._pregen_task) if t is not None]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        flows = list(self._tasks)
        for task in flows:
            task.cancel()
        await asyncio.gather(*flows, return_exceptions=True)
        for cached in (*self._keys.values(), *self._contexts.values()):
            cached.cancel()

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._transparent:
                # Before bind: lets the socket accept flows addressed to any (site) address.
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.bind(self._listen)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _intercept_rules(self) -> list[RulePlan]:
        # Every phase's: the national CAs must be loaded before the first phase needs them.
        return [
            r for r in self.plan.all_rules if r.action == "tls-intercept" and "root" in r.params
        ]

    async def _serve(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, peer = await loop.sock_accept(self._listener)
            except OSError as exc:
                # EMFILE and the like: back off rather than spin; the backlog holds the clients.
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if len(self._tasks) >= MAX_CONNECTIONS:
                log.warning("%s:%s: over %d connections, reset", peer[0], peer[1], MAX_CONNECTIONS)
                _reset(client)
                continue
            task = loop.create_task(self._handle(client, (str(peer[0]), int(peer[1]))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- one flow ------------------------------------------------------------------------------
    async def _handle(self, client: socket.socket, peer: Address) -> None:
        try:
            dst = self._original_dst(client)
        except OSError:
            client.close()
            return
        flow = _Flow(client, peer, dst)
        try:
            if dst[1] == 443:
                await self._on_tls(flow)
            elif dst[1] == 80:
                await self._on_http(flow)
            else:
                self._decide(flow, "-", "", "relay", None)
                await self._relay(flow)
        except Exception as exc:  # one flow's failure must not reach the server
            log.warning("%s: %s: %s", flow.describe(), type(exc).__name__, exc)
        finally:
            flow.cleanup()

    def _decide(
        self, flow: _Flow, kind: str, name: str, action: str, rule: RulePlan | None
    ) -> None:
        log.info(
            "%s %s=%s action=%s rule=%s",
            flow.describe(),
            kind,
            name or "-",
            action,
            rule.id if rule else "-",
        )

    async def _on_tls(self, flow: _Flow) -> None:
        data, why = await peek_head(
            flow.client, lambda d: parse_client_hello(d) is not Verdict.NEED_MORE
        )
        if not data:
            log.debug("%s: closed before sending anything", flow.describe())
            return
        hello = parse_client_hello(data)
        if hello is Verdict.NOT_TLS and isinstance(parse_http_head(data), HttpRequest):
            # Plain HTTP on 443 (Telegram's data centres): the DPI reads it as HTTP.
            await self._on_http(flow)
            return
        if not isinstance(hello, ClientHello):
            reason = "not-tls" if hello is Verdict.NOT_TLS else f"incomplete-clienthello({why})"
            self._decide(flow, "sni", "", f"relay({reason})", None)
            await self._relay(flow)
            return
        sni = hello.sni or ""
        rule = tls_rule(self.plan.now(), hello.sni)
        if rule is None:
            self._decide(flow, "sni", sni, "relay", None)
            await self._relay(flow)
        elif rule.action == "tls-reset":
            self._decide(flow, "sni", sni, rule.action, rule)
            flow.client_raw = False
            _reset(flow.client)
        elif rule.action == "tls-timeout":
            self._decide(flow, "sni", sni, rule.action, rule)
            await self._blackhole(flow)
        else:
            await self._intercept(flow, sni, rule)

    async def _on_http(self, flow: _Flow) -> None:
        # Only the first request of a connection is inspected: later keep-alive requests are
        # relayed unseen, as by a DPI box that classifies a flow once.
        data, why = await peek_head(
            flow.client, lambda d: parse_http_head(d) is not Head.INCOMPLETE
        )
        if not data:
            log.debug("%s: closed before sending anything", flow.describe())
            return
        request = parse_http_head(data)
        if not isinstance(request, HttpRequest):
            reason = "not-http" if request is Head.NOT_HTTP else f"incomplete-head({why})"
            self._decide(flow, "host", "", f"relay({reason})", None)
            await self._relay(flow)
            return
        rule = http_rule(self.plan.now(), request)
        self._decide(flow, "host", request.host, rule.action if rule else "relay", rule)
        if rule is None:
            await self._relay(flow)
        elif rule.action == "http-reset":
            flow.client_raw = False
            _reset(flow.client)
        elif rule.action == "http-blockpage":
            await self._answer(flow, blockpage_response(rule))
        else:
            await self._answer(flow, redirect_response(rule))

    async def _answer(self, flow: _Flow, response: bytes) -> None:
        """Send a whole response, then close the way nginx does: FIN, drain, close.

        Draining matters: closing with the request still unread makes the kernel send an RST,
        which can destroy the response before the client reads it.
        """
        loop = asyncio.get_running_loop()
        sock = flow.client
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_sendall(sock, response)
            sock.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(ANSWER_LINGER):
                while await loop.sock_recv(sock, CHUNK):
                    pass

    async def _blackhole(self, flow: _Flow) -> None:
        """tls-timeout: never answer, swallow what the client sends, hold the flow open."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(TLS_TIMEOUT_HOLD):
                while await loop.sock_recv(flow.client, CHUNK):
                    pass

    # -- upstream and relaying ---------------------------------------------------------------
    async def _connect(self, flow: _Flow) -> socket.socket | None:
        """A connected socket to the flow's original destination, or None after resetting the
        client: a failed connect looks to the client like the real path refusing it."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, self._upstream_addr(flow.dst))
        except (OSError, TimeoutError) as exc:
            sock.close()
            log.info("%s: upstream connect failed (%s), reset", flow.describe(), exc or "timeout")
            flow.client_raw = False
            _reset(flow.client)
            return None
        except BaseException:
            sock.close()
            raise
        return sock

    async def _client_stream(self, flow: _Flow, tls: ssl.SSLContext | None = None) -> Stream:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        # From this call on the transport owns the socket (asyncio closes it on any failure).
        flow.client_raw = False
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol,
            flow.client,
            ssl=tls,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if tls else None,
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        flow.writers.append(writer)
        return reader, writer

    async def _relay(self, flow: _Flow) -> None:
        """Splice the client and the original destination, bytes unchanged (the peeked head
        is still in the kernel buffer, so it goes first by itself)."""
        upstream = await self._connect(flow)
        if upstream is None:
            return
        up_reader, up_writer = await asyncio.open_connection(sock=upstream, limit=CHUNK)
        flow.writers.append(up_writer)
        client = await self._client_stream(flow)
        await self._splice(client, (up_reader, up_writer))

    async def _splice(self, a: Stream, b: Stream) -> None:
        loop = asyncio.get_running_loop()
        activity = [loop.time()]
        pumps = {
            loop.create_task(_pump(a[0], b[1], activity)),
            loop.create_task(_pump(b[0], a[1], activity)),
        }
        failed = False
        try:
            pending = set(pumps)
            while pending:
                idle_left = activity[0] + IDLE_TIMEOUT - loop.time()
                if idle_left <= 0:
                    break
                done, pending = await asyncio.wait(pending, timeout=idle_left)
                if any(not t.cancelled() and t.exception() is not None for t in done):
                    # A reset (or TLS error) on one side: reset the other, as the real path would.
                    failed = True
                    break
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if failed or self._stopping:
                _abort(a[1], rst=failed)
                _abort(b[1], rst=failed)
            else:
                await asyncio.gather(_close(a[1]), _close(b[1]))

    # -- interception --------------------------------------------------------------------------
    def _upstream_tls(self) -> ssl.SSLContext:
        if self._upstream_ctx is None:
            # The testbed's web PKI plays the browsers' root store: the real middlebox only
            # intercepted sites whose genuine certificate it could verify.
            ctx = ssl.create_default_context(cafile=str(self.plan.pki_dir / pki.WEBPKI_ROOT_FILE))
            # Signal's servers chain to Signal's own CA: a box that intercepts Signal knows it.
            signal_ca = self.plan.pki_dir / pki.SIGNAL_CA_FILE
            if signal_ca.is_file():
                ctx.load_verify_locations(cafile=str(signal_ca))
            ctx.set_alpn_protocols(ALPN)
            self._upstream_ctx = ctx
        return self._upstream_ctx

    async def _intercept(self, flow: _Flow, sni: str, rule: RulePlan) -> None:
        root_id = str(rule.params.get("root", ""))
        if root_id not in self._cas or not _HOSTNAME.fullmatch(sni.lower().rstrip(".")):
            why = "unknown root" if root_id not in self._cas else "SNI is not a host name"
            self._decide(flow, "sni", sni, f"relay(intercept skipped: {why})", rule)
            await self._relay(flow)
            return
        upstream = await self._connect(flow)
        if upstream is None:
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                sock=upstream,
                ssl=self._upstream_tls(),
                server_hostname=sni,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                limit=CHUNK,
            )
        except (OSError, ValueError) as exc:  # SSLError and idna errors are among these
            untrusted = isinstance(exc, ssl.SSLCertVerificationError)
            why = "untrusted upstream certificate" if untrusted else type(exc).__name__
            self._decide(flow, "sni", sni, f"relay(intercept skipped: {why})", rule)
            await self._relay(flow)
            return
        flow.writers.append(up_writer)
        ssl_object = up_writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            self._decide(flow, "sni", sni, "relay(intercept skipped: no certificate)", rule)
            _abort(up_writer, rst=False)
            await self._relay(flow)
            return
        try:
            ctx = await self._forged_context(bytes(der), sni, root_id)
        except Exception as exc:  # a forging bug should not cost the flow
            log.warning("%s: forging for %s failed: %r", flow.describe(), sni, exc)
            self._decide(flow, "sni", sni, "relay(intercept skipped: forging failed)", rule)
            _abort(up_writer, rst=False)
            await self._relay(flow)
            return
        self._decide(flow, "sni", sni, rule.action, rule)
        try:
            client = await self._client_stream(flow, ctx)
        except (OSError, ValueError) as exc:
            # The usual outcome for a client without the national root: it refuses the chain.
            log.debug("%s: client refused the forged certificate: %s", flow.describe(), exc)
            _abort(up_writer, rst=False)
            return
        await self._splice(client, (up_reader, up_writer))

    def _leaf_key(self, sni: str, root_id: str) -> Awaitable[rsa.RSAPrivateKey]:
        """The per-host forged key (RSA-2048, e=3 by default), made once per name and root."""
        key = (sni.lower().rstrip("."), root_id)
        task = self._keys.get(key)
        if task is None or not _usable(task):
            root = self.plan.root(root_id)
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(pki.forged_leaf_key, root, key[0])
            )
            task.add_done_callback(_retrieve)
            _remember(self._keys, key, task)
        return asyncio.shield(task)

    async def _forged_context(self, der: bytes, sni: str, root_id: str) -> ssl.SSLContext:
        fingerprint = hashlib.sha256(der).hexdigest()
        key = (fingerprint, root_id)
        task = self._contexts.get(key)
        if task is None or not _usable(task):
            task = asyncio.get_running_loop().create_task(
                self._build_context(der, fingerprint, sni, root_id)
            )
            task.add_done_callback(_retrieve)
            _remember(self._contexts, key, task)
        return await asyncio.shield(task)

    async def _build_context(
        self, der: bytes, fingerprint: str, sni: str, root_id: str
    ) -> ssl.SSLContext:
        leaf_key = await self._leaf_key(sni, root_id)
        root = self.plan.root(root_id)
        inter = self._cas[root_id][1]
        stem = self._dir / f"{fingerprint[:24]}-{_safe_name(root_id)}"

        def build() -> ssl.SSLContext:
            real = x509.load_der_x509_certificate(der)
            forged = pki.forge_leaf(real, inter, root, leaf_key)
            chain_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
            # The client gets [forged leaf, intermediate]; it must hold the root itself.
            pki.write_chain(chain_path, key_path, forged, leaf_key, inter.cert)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = ssl.TLSVersion.TLSv1_3
            ctx.load_cert_chain(chain_path, key_path)
            ctx.set_alpn_protocols(ALPN)
            return ctx

        return await asyncio.to_thread(build)

    async def _pregenerate(self) -> None:
        """Make the forged keys of every exact name of a tls-intercept rule, PREGEN_WORKERS at
        a time, so the first handshakes do not wait for a key. Key generation releases the
        GIL: measured at load 9 on 2 cores, 8 keys took 4.4 s one at a time, 1.6 s four at a
        time (37 keys one at a time: 41 s at load 8)."""
        names = [(v, str(r.params["root"])) for r in self._intercept_rules() for v in r.values]
        gate = asyncio.Semaphore(PREGEN_WORKERS)

        async def one(name: str, root_id: str) -> None:
            async with gate:
                try:
                    await self._leaf_key(name, root_id)
                except Exception as exc:  # made again on demand; nothing else to do
                    log.warning("pre-generating a key for %s failed: %s", name, exc)

        exact = dict.fromkeys(n for n in names if not n[0].startswith("*."))
        await asyncio.gather(*(one(name, root_id) for name, root_id in exact))


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close after flushing, bounded: a peer that never reads cannot hold the flow."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
    except Exception:  # the flow is over; how the peer ended it does not matter
        writer.transport.abort()


def _sockname(sock: socket.socket) -> Address:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


async def start_middlebox(plan: Plan) -> Stop:
    """The ``middlebox`` role: listen on MIDDLEBOX_TCP_PORT (TPROXY target) in the censor."""
    box = Middlebox(plan)
    await box.start()
    return box.stop
