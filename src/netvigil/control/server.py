"""The control helper's HTTP server (asyncio + h11), and its testbed role.

Routes: ``POST /`` (OONI's test-helper protocol, see ``protocol.py``), ``GET /`` (name and
version), ``GET /healthz``. One request per connection (``Connection: close``): probes send one
query per URL, and a connection that cannot linger cannot be used to hold resources.

Bounds, because the helper is a public service that connects wherever it is asked:

- request head ≤ 16 KiB (431), body ≤ 64 KiB (413), the head within 10 s, the body within 10 s;
- at most ``max_inflight`` measurements at once; up to ``max_queue`` more wait (at most
  ``queue_timeout``); beyond that, or after waiting too long, 503 with ``Retry-After`` at once —
  shedding load early keeps the answers that do go out within their budget;
- every measurement answers within its budget (``MeasureConfig.budget``), complete or not;
- the address policy (``policy.py``) decides every connection; nothing is cached between
  requests except the trust store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h11

from netvigil.control.measure import MeasureConfig, NetOps, measure
from netvigil.control.policy import AddressPolicy
from netvigil.control.protocol import (
    HELPER_NAME,
    HELPER_VERSION,
    ProtocolError,
    RequestLimits,
    error_body,
    parse_request,
)
from netvigil.net.listeners import Listeners, close_writer

if TYPE_CHECKING:
    from netvigil.testbed.plan import Plan

log = logging.getLogger(__name__)

Stop = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ServerLimits:
    max_head: int = 16 * 1024
    max_body: int = 64 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    write_timeout: float = 10.0
    max_inflight: int = 64
    max_queue: int = 256
    queue_timeout: float = 10.0
    # Connections still sending their request count too: bound them so a flood of slow
    # clients cannot exhaust file descriptors before admission control even sees them.
    max_connections: int = 2048
    retry_after: int = 5


@dataclass
class HelperConfig:
    ops: NetOps
    policy: AddressPolicy
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    limits: ServerLimits = field(default_factory=ServerLimits)
    request_limits: RequestLimits = field(default_factory=RequestLimits)


class _Admission:
    """At most `slots` holders; at most `queue` waiters (FIFO); refuse beyond, at once."""

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self.busy = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.shed = 0

    async def acquire(self, timeout: float) -> bool:
        if self.busy < self.slots and not self.waiters:
            self.busy += 1
            return True
        if len(self.waiters) >= self.queue:
            self.shed += 1
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            # shield: a timeout must not cancel the waiter itself, only our wait for it.
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            self._abandon(waiter)
            self.shed += 1
            return False
        except BaseException:  # cancelled (server stopping): give up the place, propagate
            self._abandon(waiter)
            raise
        return True  # release() handed its slot over: `busy` is unchanged

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self.release()  # the slot was handed over just as we gave up: pass it on
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self.waiters.remove(waiter)

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy -= 1


class _Reply(Exception):
    """Stop reading the request and answer this at once."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message)
        self.headers = headers or []


class _Gone(Exception):
    """The client left, or sent nothing usable in time: close without an answer."""


class ControlHelperServer:
    def __init__(self, config: HelperConfig) -> None:
        self.config = config
        self.limits = config.limits
        self._admission = _Admission(self.limits.max_inflight, self.limits.max_queue)
        self._listeners = Listeners()
        self._tasks = self._listeners.tasks

    # -- life cycle ---------------------------------------------------------------------------
    async def listen(self, host: str, port: int) -> int:
        """Start serving on host:port (0: a free port); returns the port."""
        return await self._listeners.listen(self._connection, host, port)

    async def stop(self) -> None:
        await self._listeners.stop()

    @property
    def stats(self) -> dict[str, int]:
        return {
            "connections": len(self._tasks),
            "inflight": self._admission.busy,
            "queued": len(self._admission.waiters),
            "shed": self._admission.shed,
        }

    # -- one connection -----------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:
            writer.close()
            return
        self._tasks.add(task)
        try:
            if len(self._tasks) > self.limits.max_connections:
                await self._write_raw(writer, self._overloaded())
                return
            await self._serve(reader, writer)
        except (OSError, TimeoutError, _Gone, h11.LocalProtocolError) as exc:
            log.debug("connection ended: %r", exc)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("serving a control request failed")
        finally:
            self._tasks.discard(task)
            await close_writer(writer)

    def _overloaded(self) -> tuple[int, list[tuple[str, str]], bytes]:
        return (
            503,
            [("Retry-After", str(self.limits.retry_after))],
            error_body("overloaded, retry later"),
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        try:
            request, body = await self._read(conn, reader, writer)
        except _Reply as reply:
            await self._send(conn, writer, (reply.status, reply.headers, reply.body))
            return
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
            message = "request head too large" if status == 431 else "malformed HTTP request"
            await self._send(conn, writer, (status, [], error_body(message)))
            return
        method = request.method.decode("ascii", "replace")
        await self._send(conn, writer, await self._route(request, body), method)

    async def _read(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[h11.Request, bytes]:
        """The request and its body, bounded in size and in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.head_timeout
        request: h11.Request | None = None
        head_bytes = 0
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                # h11 bounds only an *incomplete* head: count what arrived before it, too.
                if request is None and head_bytes > self.limits.max_head:
                    raise _Reply(431, "request head too large")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    if request is None:
                        raise _Gone("no request head in time")
                    raise _Reply(408, "request body not received in time")
                try:
                    data = await asyncio.wait_for(reader.read(16 * 1024), remaining)
                except TimeoutError:
                    continue  # the check above answers or closes
                if request is None:
                    head_bytes += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
                # A complete head can arrive past the byte count above in one read: measure it.
                size = len(event.method) + len(event.target) + 12
                size += sum(len(name) + len(value) + 4 for name, value in event.headers.raw_items())
                if size > self.limits.max_head:
                    raise _Reply(431, "request head too large")
                self._check_length(request)
                deadline = loop.time() + self.limits.body_timeout
                if conn.client_is_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body:
                    raise _Reply(413, f"request body larger than {self.limits.max_body} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            else:  # ConnectionClosed before a whole request
                raise _Gone("client closed")

    def _check_length(self, request: h11.Request) -> None:
        for name, value in request.headers:
            # h11 already checked it is a number; refuse before reading a byte of the body.
            if name == b"content-length" and int(value) > self.limits.max_body:
                raise _Reply(413, f"request body larger than {self.limits.max_body} bytes")

    # -- routing --------------------------------------------------------------------------------
    async def _route(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        method = request.method.decode("ascii", "replace")
        path = request.target.decode("latin-1").split("?", 1)[0]
        if path == "/healthz":
            if method in ("GET", "HEAD"):
                return 200, [], json.dumps({"status": "ok", **self.stats}).encode()
            return 405, [("Allow", "GET")], error_body("method not allowed")
        if path != "/":
            return 404, [], error_body("not found")
        if method in ("GET", "HEAD"):
            info = {"name": HELPER_NAME, "version": HELPER_VERSION}
            return 200, [], json.dumps(info).encode()
        if method != "POST":
            return 405, [("Allow", "GET, POST")], error_body("method not allowed")
        try:
            parsed = parse_request(body, self.config.request_limits)
        except ProtocolError as exc:
            return exc.status, [], error_body(exc.message)
        if not await self._admission.acquire(self.limits.queue_timeout):
            return self._overloaded()
        try:
            response = await measure(
                parsed, self.config.ops, self.config.policy, self.config.measure
            )
        finally:
            self._admission.release()
        return 200, [], json.dumps(response).encode()

    # -- writing ----------------------------------------------------------------------------------
    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        reply: tuple[int, list[tuple[str, str]], bytes],
        method: str = "POST",
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status, extra, body = reply
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            ("Server", f"{HELPER_NAME}/{HELPER_VERSION}"),
            *extra,
        ]
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        if method != "HEAD":
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.limits.write_timeout)

    async def _write_raw(
        self, writer: asyncio.StreamWriter, reply: tuple[int, list[tuple[str, str]], bytes]
    ) -> None:
        """An answer without reading the request (over the connection limit)."""
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
        await self._send(conn, writer, reply, "GET")


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def start_helper(
    config: HelperConfig, host: str, port: int
) -> tuple[ControlHelperServer, int]:
    server = ControlHelperServer(config)
    bound = await server.listen(host, port)
    return server, bound


async def start_control_helper(plan: Plan) -> Stop:
    """Testbed role ``control-helper`` (namespace `internet`): an uncensored vantage point.

    It resolves with the testbed's public resolver, verifies TLS against the testbed's web PKI
    root only, and connects only inside the testbed (198.18.0.0/15).
    """
    from netvigil.control.netops import NetvigilOps, ResolverSpec
    from netvigil.testbed.plan import CONTROL_HELPER, PUBLIC_RESOLVER, SERVICE_PORT

    ops = NetvigilOps.from_trust_file(
        ResolverSpec(PUBLIC_RESOLVER), plan.pki_dir / "webpki-root.pem"
    )
    policy = AddressPolicy.only(["198.18.0.0/15"])
    server, _ = await start_helper(
        HelperConfig(ops=ops, policy=policy), CONTROL_HELPER, SERVICE_PORT
    )
    log.info("control helper listening on %s:%d", CONTROL_HELPER, SERVICE_PORT)
    return server.stop
