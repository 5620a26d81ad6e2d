"""A TLS-terminating front for a site: fingerprints each visitor's ClientHello, serves TLS,
and forwards the HTTP request upstream with ``X-Netvigil-TLS-*`` headers.

The ClientHello is read with ``MSG_PEEK`` before the TLS stack sees the socket, so the
handshake is exactly the client's: the front never alters, replays or re-sends a byte of it.
Then the accepted socket is handed to asyncio's TLS (``connect_accepted_socket``), the request
head is read (bounded), judged with its User-Agent, and sent upstream over plain HTTP with the
verdict headers added; any ``X-Netvigil-TLS-*`` header the client sent is dropped first, so a
visitor cannot forge its own verdict. One request per connection is forwarded with
``Connection: close`` (keep-alive and HTTP/2 are not offered: ALPN is ``http/1.1``).

Every wait is bounded (``Limits``); a connection that fails any step is closed and counted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from netvigil.sitecheck.clienthello import ClientHello, ParseFailure, parse_client_hello
from netvigil.sitecheck.logs import truncate_address
from netvigil.sitecheck.reference import ReferenceDB
from netvigil.sitecheck.verdict import Verdict, judge

HEADER_PREFIX = b"x-netvigil-tls-"
PEEK_LIMIT = 1 << 16


@dataclass(frozen=True, slots=True)
class Limits:
    hello_timeout: float = 10.0
    handshake_timeout: float = 10.0
    head_timeout: float = 15.0
    max_head: int = 1 << 16
    idle_timeout: float = 60.0
    max_connections: int = 512
    defer_accept: int = 5  # seconds the kernel holds a connection until its first bytes (0: off)


@dataclass(slots=True)
class FrontStats:
    connections: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    judge_seconds: float = 0.0  # time spent parsing and judging, the front's own overhead


async def peek_client_hello(
    sock: socket.socket, timeout: float, limit: int = PEEK_LIMIT
) -> tuple[ClientHello | ParseFailure, bytes]:
    """The ClientHello waiting on ``sock`` and the bytes it was parsed from, read with
    MSG_PEEK (left in the socket for the TLS stack)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = -1
    # The hello has often arrived by the time the connection is accepted: try before waiting,
    # which saves an event-loop round trip per connection.
    try:
        data = sock.recv(limit, socket.MSG_PEEK)
    except BlockingIOError:
        data = b""
    except OSError as exc:
        return ParseFailure(f"socket error: {exc.strerror or exc}"), b""
    if data:
        parsed = parse_client_hello(data)
        if isinstance(parsed, ClientHello) or not parsed.need_more:
            return parsed, data
        seen = len(data)
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return ParseFailure("timed out waiting for the ClientHello"), b""
        ready: asyncio.Future[None] = loop.create_future()

        def wake(future: asyncio.Future[None] = ready) -> None:
            if not future.done():
                future.set_result(None)

        # A timer on the future, not asyncio.wait_for: no extra task per wait.
        loop.add_reader(sock.fileno(), wake)
        timer = loop.call_later(remaining, wake)
        try:
            await ready
        finally:
            timer.cancel()
            loop.remove_reader(sock.fileno())
        try:
            data = sock.recv(limit, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        except OSError as exc:
            return ParseFailure(f"socket error: {exc.strerror or exc}"), b""
        if not data:
            return ParseFailure("connection closed before a ClientHello"), b""
        parsed = parse_client_hello(data)
        if isinstance(parsed, ClientHello) or not parsed.need_more:
            return parsed, data
        if len(data) >= limit:
            return ParseFailure("ClientHello larger than the peek limit"), b""
        if len(data) == seen:
            # The socket stays readable while unread bytes wait: pause instead of spinning.
            await asyncio.sleep(0.002)
        seen = len(data)


def verdict_headers(hello: ClientHello, verdict: Verdict, raw_hello: bytes) -> list[bytes]:
    """The ``X-Netvigil-TLS-*`` header lines (ASCII, no CR/LF) for one connection."""

    def clean(text: str) -> str:
        # Printable ASCII only: nothing a client controls can split or end a header line.
        # (ASCII and printable is exactly 0x20-0x7e; the common case costs no Python loop:
        # a 2.6 kB base64 ClientHello cost ~0.2 ms per connection character by character.)
        if text.isascii() and text.isprintable():
            return text
        return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)

    lines = [
        ("Verdict", verdict.verdict),
        ("JA4", verdict.ja4),
        ("JA3", verdict.ja3),
        ("Family", verdict.family),
        ("Reasons", ",".join(r.rule for r in verdict.reasons)),
        ("Claimed", verdict.claimed or ""),
        ("Match", verdict.best_match.name if verdict.best_match else ""),
        ("ClientHello", base64.b64encode(raw_hello[: hello.length]).decode("ascii")),
    ]
    return [f"X-Netvigil-TLS-{name}: {clean(value)}".encode() for name, value in lines if value]


def log_record(
    hello: ClientHello, verdict: Verdict, raw_hello: bytes, user_agent: str, peer: str
) -> dict[str, object]:
    """One connection as the front's ``--log`` keeps it: a JSON object that ``netvigil
    sitecheck logs`` reads back (``client_hello`` hex, ``user_agent``, ``time``, ``client_ip``).

    The client's address is kept only as its network: ``client_ip`` is the first address of
    its /24 (IPv4) or /48 (IPv6), so the log mode finds the same prefix and nothing more.
    """
    prefix = truncate_address(peer)
    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "client_ip": prefix.split("/", 1)[0] if prefix else "",
        "sni": hello.sni or "",
        "user_agent": user_agent,
        "client_hello": raw_hello[: hello.length].hex(),
        **verdict.to_json(),
    }


def _split_head(head: bytes) -> tuple[bytes, list[bytes]]:
    lines = head.split(b"\r\n")
    return lines[0], [line for line in lines[1:] if line]


class Front:
    """The front's server: ``await Front(...).serve()`` or ``start()``/``close()``."""

    def __init__(
        self,
        listen: tuple[str, int],
        context: ssl.SSLContext,
        upstream: str,
        db: ReferenceDB | None = None,
        limits: Limits | None = None,
        fingerprint: bool = True,
        on_record: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        """``fingerprint=False`` makes a plain TLS-terminating proxy (the benchmark's baseline);
        ``on_record`` is given each judged connection's ``log_record`` (``--log``)."""
        target = urlsplit(upstream)
        if target.scheme != "http" or not target.hostname:
            raise ValueError("upstream must be http://HOST:PORT")
        self.upstream = (target.hostname, target.port or 80)
        self.listen = listen
        self.context = context
        self.db = db if db is not None else ReferenceDB.shipped()
        self.limits = limits or Limits()
        self.stats = FrontStats()
        self.fingerprint = fingerprint
        self.on_record = on_record
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(self.limits.max_connections)
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.listen)
        if self.limits.defer_accept > 0 and hasattr(socket, "TCP_DEFER_ACCEPT"):
            # Linux: accept() returns once the client's first bytes (its ClientHello) are in,
            # so the peek finds them at once instead of costing an event-loop wake-up per
            # connection. The client sees an ordinary TCP handshake; one that connects and
            # stays silent is accepted after a few seconds and then meets hello_timeout.
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, self.limits.defer_accept
                )
        sock.listen(256)
        sock.setblocking(False)
        self._sock = sock
        self._task = asyncio.create_task(self._accept_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()

    async def serve(self, on_listening: Callable[[], None] | None = None) -> None:
        await self.start()
        if on_listening is not None:
            on_listening()
        assert self._task is not None
        await self._task

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            await self._slots.acquire()
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError:
                self._slots.release()
                await asyncio.sleep(0.05)
                continue
            task = asyncio.create_task(self._handle(conn))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
            task.add_done_callback(lambda _: self._slots.release())

    async def _handle(self, conn: socket.socket) -> None:
        self.stats.connections += 1
        conn.setblocking(False)
        # The response and the close_notify leave as separate small writes: without NODELAY,
        # Nagle holds the second behind the client's delayed ACK (~40 ms).
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer: asyncio.StreamWriter | None = None
        try:
            hello: ClientHello | None = None
            raw = b""
            if self.fingerprint:
                peeked, raw = await peek_client_hello(conn, self.limits.hello_timeout)
                if not isinstance(peeked, ClientHello):
                    self.stats.failures[peeked.reason] += 1
                    conn.close()
                    return
                hello = peeked
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=self.limits.max_head)
            transport, _ = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader),
                conn,
                ssl=self.context,
                ssl_handshake_timeout=self.limits.handshake_timeout,
            )
            protocol = transport.get_protocol()
            assert isinstance(protocol, asyncio.StreamReaderProtocol)
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.head_timeout)
            await self._forward(hello, raw, head, reader, writer)
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.stats.failures[type(exc).__name__] += 1
        except asyncio.LimitOverrunError:
            self.stats.failures["request head too large"] += 1
        except Exception as exc:  # one bad connection must never take the front down
            self.stats.failures[f"internal error: {type(exc).__name__}"] += 1
        finally:
            if writer is not None:
                writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
                except (OSError, ssl.SSLError, TimeoutError):
                    # The client did not answer our close_notify: drop the socket now
                    # rather than hold it for asyncio's 30 s TLS shutdown timeout.
                    writer.transport.abort()
            else:
                conn.close()

    async def _forward(
        self,
        hello: ClientHello | None,
        raw: bytes,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        request_line, headers = _split_head(head[:-4])
        user_agent = ""
        kept: list[bytes] = []
        for line in headers:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered.startswith(HEADER_PREFIX) or lowered in (b"connection", b"keep-alive"):
                continue  # never let a client forge its verdict; one request per connection
            if lowered == b"user-agent":
                user_agent = value.strip().decode("latin-1")
            kept.append(line)
        added: list[bytes] = []
        if hello is not None:
            started = time.perf_counter()
            verdict = judge(hello, user_agent, self.db)
            added = verdict_headers(hello, verdict, raw)
            self.stats.judge_seconds += time.perf_counter() - started
            self.stats.verdicts[verdict.verdict] += 1
            if self.on_record is not None:
                peer = writer.get_extra_info("peername")
                address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
                self.on_record(log_record(hello, verdict, raw, user_agent, address))
        upstream_head = b"\r\n".join([request_line, *kept, *added, b"Connection: close"])
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(*self.upstream), self.limits.head_timeout
        )
        # The request body flows up while the response flows back; the exchange ends when
        # the upstream closes (it was asked to), never on the client's half-close, which
        # some servers take for an abort.
        to_upstream = asyncio.create_task(_pipe(reader, up_writer, self.limits.idle_timeout))
        try:
            up_writer.write(upstream_head + b"\r\n\r\n")
            await _pipe(up_reader, writer, self.limits.idle_timeout)
        finally:
            to_upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await to_upstream
            up_writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, idle: float) -> None:
    """Copy until end of stream or ``idle`` seconds without data."""
    try:
        while True:
            chunk = await asyncio.wait_for(source.read(1 << 16), idle)
            if not chunk:
                break
            sink.write(chunk)
            await sink.drain()
    except (OSError, TimeoutError, ssl.SSLError):
        pass


def server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context
