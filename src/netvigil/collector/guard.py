"""A connection guard in front of uvicorn's HTTP protocol: the collector's slowloris defence.

uvicorn alone has no deadline for a request's headers (a connection that sends one header byte
every few seconds is kept forever) and its only cap, ``limit_concurrency``, counts every
connection of every client: 2,000 slow connections from one address make it answer 503 to
everybody. This guard runs at the asyncio-protocol level, before any request is parsed:

* at most ``max_per_client`` connections per client address (an IPv6 /64 is one client) and ``max_connections`` in all;
  a connection over either cap gets a short 503 and is closed at once;
* a request's headers must arrive within ``header_timeout`` of the connection opening (or of
  its first byte after a previous response), and be at most ``max_header_bytes``; otherwise
  408/431 and close;
* a request's body must arrive within ``body_timeout`` (the app answers 408 itself at
  ``CollectorConfig.body_timeout``; this is the backstop for a handler that never reads it);
* idle keep-alive connections are closed by uvicorn's ``timeout_keep_alive``.

Closed and refused connections are counted and logged as one summary line at most every
``LOG_EVERY`` seconds, so an attack cannot flood the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("netvigil.collector")

LOG_EVERY = 10.0
_IDLE, _HEADERS, _BODY, _APP = "idle", "headers", "body", "app"


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 4096
    max_per_client: int = 128
    header_timeout: float = 10.0
    body_timeout: float = 35.0  # the app's own 408 comes first, at CollectorConfig.body_timeout
    max_header_bytes: int = 64 * 1024
    keep_alive: float = 5.0


def _raw_response(status: int, reason: str, error: str, extra: str = "") -> bytes:
    body = f'{{"error": "{error}", "detail": "{reason.lower()}"}}'.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


REFUSED = _raw_response(503, "Too Many Connections", "too_many_connections", "retry-after: 1\r\n")
HEADER_TIMEOUT = _raw_response(408, "Request Timeout", "timeout")
HEADERS_TOO_LARGE = _raw_response(431, "Request Header Fields Too Large", "too_large")


def client_key(address: str) -> str:
    """What counts as one client: an IPv4 address, or an IPv6 /64 (one host's usual share)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionGuard:
    """Counts connections per client and in all; shared by every connection of one server."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.per_client: dict[str, int] = {}
        self.total = 0
        self.refused = 0
        self.timed_out = 0
        self.too_large = 0
        self._logged = (0, 0, 0)
        self._last_log = 0.0

    def admit(self, client: str) -> bool:
        count = self.per_client.get(client, 0)
        if self.total >= self.limits.max_connections or count >= self.limits.max_per_client:
            self.refused += 1
            self.maybe_log()
            return False
        self.per_client[client] = count + 1
        self.total += 1
        return True

    def release(self, client: str) -> None:
        self.total -= 1
        count = self.per_client.get(client, 0) - 1
        if count > 0:
            self.per_client[client] = count
        else:
            self.per_client.pop(client, None)

    def maybe_log(self) -> None:
        now = time.monotonic()
        counts = (self.refused, self.timed_out, self.too_large)
        if counts == self._logged or now - self._last_log < LOG_EVERY:
            return
        refused, timed_out, too_large = (a - b for a, b in zip(counts, self._logged, strict=True))
        self._logged, self._last_log = counts, now
        log.warning(
            "connection guard: %d refused (over %d per client or %d in all), %d closed for"
            " slow headers or body, %d for oversized headers; %d open",
            refused,
            self.limits.max_per_client,
            self.limits.max_connections,
            timed_out,
            too_large,
            self.total,
        )


class _GuardedProtocol:
    """Mixed in before uvicorn's HTTP protocol class (h11 or httptools); see the module doc."""

    guard: ConnectionGuard
    # set by uvicorn's protocol classes
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: Any) -> None:  # asyncio's or uvloop's transport
        peer = transport.get_extra_info("peername")
        client = client_key(str(peer[0])) if isinstance(peer, tuple) and peer else "unknown"
        self._guard_client: str | None = None
        if not self.guard.admit(client):
            transport.write(REFUSED)
            transport.close()
            return
        self._guard_client = client
        super().connection_made(transport)  # type: ignore[misc]
        self._guard_state: tuple[int, str] = (0, _HEADERS)
        self._guard_deadline: float | None = self.loop.time() + self.guard.limits.header_timeout
        self._guard_header_bytes = 0
        self._guard_timer: asyncio.TimerHandle | None = None
        self._guard_arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard_client is None:
            return  # refused: uvicorn's side was never set up
        self.guard.release(self._guard_client)
        self._guard_client = None
        if self._guard_timer is not None:
            self._guard_timer.cancel()
            self._guard_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._guard_client is None:
            return
        super().data_received(data)  # type: ignore[misc]
        if self._guard_client is None or self.transport.is_closing():
            return
        self._guard_update()
        if self._guard_state[1] == _HEADERS:
            self._guard_header_bytes += len(data)
            if self._guard_header_bytes > self.guard.limits.max_header_bytes:
                self.guard.too_large += 1
                self._guard_close(HEADERS_TOO_LARGE)

    # -- internals ----------------------------------------------------------------------------

    def _guard_update(self) -> None:
        """Recompute the request's phase; a new phase gets its own deadline."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            # between requests: uvicorn's keep-alive timer closes an idle connection, but once a
            # byte of the next request arrives it cancels that timer, so the deadline is ours
            phase = _HEADERS if self._guard_awaiting_bytes() else _IDLE
        elif cycle.more_body:
            phase = _BODY
        else:
            phase = _APP
        state = (id(cycle), phase)
        if state == self._guard_state:
            return
        self._guard_state = state
        limits = self.guard.limits
        now = self.loop.time()
        if phase == _HEADERS:
            self._guard_header_bytes = 0
            self._guard_deadline = now + limits.header_timeout
        elif phase == _BODY:
            self._guard_deadline = now + limits.body_timeout
        else:
            self._guard_deadline = None

    def _guard_awaiting_bytes(self) -> bool:
        # True once the connection has received part of a request not yet parsed: uvicorn
        # cancels its keep-alive timer on every byte, so a cancelled (None) timer after a
        # complete response means the next request has begun.
        return getattr(self, "timeout_keep_alive_task", None) is None

    def _guard_arm(self) -> None:
        if self._guard_timer is not None:
            self._guard_timer.cancel()
        deadline = self._guard_deadline
        delay = (
            self.guard.limits.header_timeout if deadline is None else deadline - self.loop.time()
        )
        self._guard_timer = self.loop.call_later(max(delay, 0.0), self._guard_check)

    def _guard_check(self) -> None:
        self._guard_timer = None
        if self._guard_client is None or self.transport.is_closing():
            return
        self._guard_update()
        deadline = self._guard_deadline
        if deadline is not None and self.loop.time() >= deadline:
            self.guard.timed_out += 1
            self._guard_close(HEADER_TIMEOUT if self._guard_state[1] == _HEADERS else b"")
            return
        self._guard_arm()

    def _guard_close(self, answer: bytes) -> None:
        if answer:
            self.transport.write(answer)
        self.transport.close()
        self.guard.maybe_log()


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (httptools if installed, else h11) behind ``guard``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - httptools is a dependency of uvicorn[standard]
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    cls = type("GuardedHttpProtocol", (_GuardedProtocol, base), {"guard": guard})
    return cls


def raise_open_file_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (within the hard limit); return it.

    When accept() fails with EMFILE, asyncio stops accepting for a whole second: the guard's
    caps must stay below the descriptors the process may open.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else wanted


def fit_limits(limits: ConnectionLimits) -> ConnectionLimits:
    """``limits`` with ``max_connections`` lowered to what the descriptor limit allows."""
    nofile = raise_open_file_limit(limits.max_connections + 256)
    room = max(nofile - 128, 16)
    if limits.max_connections <= room:
        return limits
    return ConnectionLimits(
        max_connections=room,
        max_per_client=min(limits.max_per_client, room),
        header_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        max_header_bytes=limits.max_header_bytes,
        keep_alive=limits.keep_alive,
    )


def listen_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A bound, listening TCP socket (raises OSError with the reason)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def uvicorn_server(app: Any, sock: socket.socket, limits: ConnectionLimits) -> Any:
    """A ``uvicorn.Server`` for ``app`` on ``sock`` with the guard in front; ``.run(sockets=…)``."""
    import uvicorn

    guard = ConnectionGuard(limits)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(guard),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=int(max(limits.keep_alive, 1)),
        timeout_graceful_shutdown=10,
        # the guard caps connections; this only bounds in-flight requests on top of it
        limit_concurrency=limits.max_connections + 1,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.guard = guard  # type: ignore[attr-defined]
    return server
