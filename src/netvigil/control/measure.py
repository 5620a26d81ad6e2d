"""What the helper does for one request: DNS, then TCP/TLS to every endpoint and the HTTP fetch.

The order follows OONI's helper (oohelperd ``measure``): resolve the URL's host first, then
measure every endpoint (the probe's addresses and the helper's own, on the URL's ports) and
fetch the URL, all at once. Everything runs under one budget; whatever has not finished when it
runs out is reported as ``generic_timeout_error``, so a client always gets an answer in time.

The network is reached only through ``NetOps`` (``netops.py`` binds it to ``netvigil.net``), and
every address passes the ``AddressPolicy`` before anything is sent to it.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from netvigil.control.policy import AddressPolicy
from netvigil.control.protocol import (
    FORBIDDEN_ADDRESS,
    TIMEOUT,
    ControlRequest,
    Endpoint,
    IPAddress,
    dns_failure,
    failed_http,
    headers_map,
    http_failure,
    normalise_ip,
    page_title,
    tcp_failure,
)

log = logging.getLogger(__name__)

# ip_info flags (OONI's model.THIPInfoFlag*).
FLAG_RESOLVED_BY_PROBE = 1
FLAG_RESOLVED_BY_HELPER = 2
FLAG_BOGON = 4
FLAG_VALID_FOR_DOMAIN = 8


@dataclass(frozen=True)
class Resolved:
    addresses: list[str]
    failure: str | None  # netvigil failure string


@dataclass(frozen=True)
class Connected:
    tcp_failure: str | None
    tls_failure: str | None = None  # only meaningful when TLS was asked for and TCP succeeded
    # The chain the server presented (DER, leaf first), verified or not: the probe compares it
    # with its own to tell a forged certificate from the site's real one.
    peer_chain: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Fetched:
    """The last response of the redirect chain (status None: no response at all)."""

    status_code: int | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    failure: str | None = None
    failed_resolving: bool = False  # the failure happened while resolving a host name
    body_rate: float | None = None  # bytes/s on the wire (the probe's throttling reference)


class ForbiddenError(Exception):
    """A host of the fetch (first or redirected) has no address the policy permits."""

    def __init__(self, failure: str) -> None:
        super().__init__(failure)
        self.failure = failure


# (host, port) → addresses the fetch may connect to; raises ForbiddenError or ResolveError.
FetchResolver = Callable[[str, int], Awaitable[list[str]]]


class ResolveError(Exception):
    def __init__(self, failure: str) -> None:
        super().__init__(failure)
        self.failure = failure


class NetOps(Protocol):
    """The network, as the helper needs it. Implementations must honour every timeout."""

    async def resolve(self, host: str, *, timeout: float) -> Resolved: ...

    async def connect(
        self,
        ip: str,
        port: int,
        *,
        server_name: str | None,
        connect_timeout: float,
        tls_timeout: float,
    ) -> Connected:
        """TCP connect, then (server_name given) a verified TLS handshake; always closes."""
        ...

    async def fetch(
        self,
        url: str,
        *,
        headers: dict[str, list[str]],
        resolve: FetchResolver,
        timeout: float,
        max_body: int,
        max_redirects: int,
    ) -> Fetched: ...


@dataclass(frozen=True)
class MeasureConfig:
    budget: float = 15.0  # the whole request; the answer goes out by then, complete or not
    dns_timeout: float = 4.0
    connect_timeout: float = 5.0
    tls_timeout: float = 5.0
    http_timeout: float = 12.0
    max_body: int = 2 * 1024 * 1024
    max_redirects: int = 10
    max_addresses: int = 16  # of the helper's own DNS answer
    max_endpoints: int = 64
    # x_peer_certificates: per endpoint, and for the whole response (the probe's client reads
    # at most 1 MiB); the probe's own endpoints come first when the budget runs out.
    max_peer_certificates: int = 8
    max_peer_certificate_bytes: int = 16 * 1024
    peer_certificates_budget: int = 384 * 1024
    # Where the TLS check runs (OONI: port 443 only); tests serve TLS on a free port instead.
    tls_ports: frozenset[int] = frozenset({443})
    asn_lookup: Callable[[str], int] | None = None  # no GeoIP database: AS0, as OONI on failure


def _ip(text: str) -> IPAddress | None:
    try:
        return normalise_ip(ipaddress.ip_address(text))
    except ValueError:
        return None


class _Clock:
    def __init__(self, budget: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.deadline = self._loop.time() + budget

    def left(self, cap: float) -> float:
        """A step's timeout: its own cap, or less when the request's budget runs out first."""
        return max(0.01, min(cap, self.deadline - self._loop.time()))


async def _resolve_host(
    ops: NetOps, host: str, config: MeasureConfig, clock: _Clock
) -> tuple[list[IPAddress], str | None]:
    timeout = clock.left(config.dns_timeout)
    try:
        # The outer bound is a safety net: an implementation that ignores its timeout still
        # cannot hold the request past its budget.
        result = await asyncio.wait_for(ops.resolve(host, timeout=timeout), timeout + 0.5)
    except TimeoutError:
        return [], TIMEOUT
    addresses: list[IPAddress] = []
    for text in result.addresses:
        ip = _ip(text)
        if ip is not None and ip not in addresses:
            addresses.append(ip)
    addresses = addresses[: config.max_addresses]
    # Addresses won: "no answer" with addresses is not a failure worth reporting.
    failure = result.failure if not addresses else None
    return addresses, failure


def _endpoints(request: ControlRequest, helper_ips: list[IPAddress], limit: int) -> list[Endpoint]:
    out: list[Endpoint] = list(request.tcp_connect)
    probe_ips = [e.ip for e in request.tcp_connect]
    for ip in dict.fromkeys([*probe_ips, *helper_ips]):
        for port in request.url_ports:
            endpoint = Endpoint(ip, port)
            if endpoint not in out:
                out.append(endpoint)
    return out[:limit]


async def measure(
    request: ControlRequest,
    ops: NetOps,
    policy: AddressPolicy,
    config: MeasureConfig | None = None,
) -> dict[str, Any]:
    """The OONI test-helper response for `request`."""
    config = config or MeasureConfig()
    clock = _Clock(config.budget)

    # 1. DNS (not for an IP literal: OONI's helper then answers an empty list).
    helper_ips: list[IPAddress] = []
    precise_dns: str | None = None
    if request.host_ip is None:
        helper_ips, precise_dns = await _resolve_host(ops, request.host, config, clock)
    dns = {
        "failure": dns_failure(precise_dns),
        "addrs": [str(ip) for ip in helper_ips],
        "x_failure": precise_dns,
    }

    # 2. ip_info: who named each address, and whether it is a bogon.
    flags: dict[IPAddress, int] = {}
    for endpoint in request.tcp_connect:
        flags[endpoint.ip] = flags.get(endpoint.ip, 0) | FLAG_RESOLVED_BY_PROBE
    for ip in helper_ips:
        flags[ip] = flags.get(ip, 0) | FLAG_RESOLVED_BY_HELPER
    for ip in flags:
        if policy.is_bogon(ip):
            flags[ip] |= FLAG_BOGON

    # 3. TCP (+TLS on 443) to every endpoint, and the HTTP fetch, concurrently.
    endpoints = _endpoints(request, helper_ips, config.max_endpoints)
    tcp: dict[str, dict[str, Any]] = {}
    tls: dict[str, dict[str, Any]] = {}
    tasks: dict[asyncio.Task[Any], Endpoint | None] = {}
    for endpoint in endpoints:
        refused = policy.check(endpoint.ip, endpoint.port)
        if refused is not None:
            tcp[endpoint.key] = {"status": False, "failure": refused, "x_failure": refused}
            continue
        server_name = request.host if endpoint.port in config.tls_ports else None
        coro = ops.connect(
            str(endpoint.ip),
            endpoint.port,
            server_name=server_name,
            connect_timeout=clock.left(config.connect_timeout),
            tls_timeout=clock.left(config.tls_timeout),
        )
        tasks[asyncio.ensure_future(coro)] = endpoint
    http_task = asyncio.ensure_future(
        _fetch(request, ops, policy, (helper_ips, precise_dns), config, clock)
    )
    tasks[http_task] = None

    try:
        # A little grace past the budget: every step got a timeout that ends by the deadline.
        grace = clock.left(config.budget) + 0.25
        done, pending = await asyncio.wait(tasks, timeout=grace)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    if pending:
        # Let the cancelled steps close their sockets; bounded, should one ignore cancellation.
        await asyncio.wait(pending, timeout=1.0)

    valid: set[IPAddress] = set()
    chains: dict[str, tuple[bytes, ...]] = {}
    for task, target in tasks.items():
        if target is None:
            continue
        endpoint = target
        outcome: Connected
        if task in done and task.exception() is None:
            outcome = task.result()
        elif task in done:
            log.error("measuring %s failed", endpoint.key, exc_info=task.exception())
            outcome = Connected("unknown_failure: internal error")
        else:
            outcome = Connected(TIMEOUT)
        ok = outcome.tcp_failure is None
        tcp[endpoint.key] = {
            "status": ok,
            "failure": tcp_failure(outcome.tcp_failure),
            "x_failure": outcome.tcp_failure,
        }
        if ok and endpoint.port in config.tls_ports:
            tls[endpoint.key] = {
                "server_name": request.host,
                "status": outcome.tls_failure is None,
                "failure": outcome.tls_failure,
            }
            chains[endpoint.key] = outcome.peer_chain
            if outcome.tls_failure is None:
                valid.add(endpoint.ip)
    for ip in valid:
        if ip in flags:
            flags[ip] |= FLAG_VALID_FOR_DOMAIN
    # x_peer_certificates (an x_ key: OONI clients ignore it), the probe's endpoints first.
    budget = [config.peer_certificates_budget]
    probe_keys = {e.key for e in request.tcp_connect}
    for key in sorted(tls, key=lambda k: k not in probe_keys):
        tls[key]["x_peer_certificates"] = _peer_certificates(chains.get(key, ()), config, budget)

    if http_task in done and http_task.exception() is None:
        http: dict[str, Any] = http_task.result()
    elif http_task in done:
        log.error("fetching %s failed", request.url, exc_info=http_task.exception())
        http = failed_http("unknown_error", "unknown_failure: internal error")
    else:
        http = failed_http(TIMEOUT)

    lookup = config.asn_lookup
    return {
        "tcp_connect": tcp,
        "tls_handshake": tls,
        "quic_handshake": {},
        "http_request": http,
        "http3_request": None,
        "dns": dns,
        "ip_info": {
            str(ip): {"asn": lookup(str(ip)) if lookup else 0, "flags": value}
            for ip, value in flags.items()
        },
    }


def _peer_certificates(
    chain: tuple[bytes, ...], config: MeasureConfig, budget: list[int]
) -> list[dict[str, str]]:
    """The presented chain as OONI ``peer_certificates`` (base64 DER), capped in count, per
    certificate and against the response's remaining ``budget`` (a one-item list, updated)."""
    out: list[dict[str, str]] = []
    for der in chain[: config.max_peer_certificates]:
        if not der or len(der) > config.max_peer_certificate_bytes:
            break
        data = base64.b64encode(der).decode("ascii")
        if len(data) > budget[0]:
            break
        budget[0] -= len(data)
        out.append({"data": data, "format": "base64"})
    return out


async def _fetch(
    request: ControlRequest,
    ops: NetOps,
    policy: AddressPolicy,
    helper_dns: tuple[list[IPAddress], str | None],
    config: MeasureConfig,
    clock: _Clock,
) -> dict[str, Any]:
    helper_ips, helper_failure = helper_dns
    first_port = request.port or (443 if request.scheme == "https" else 80)
    if first_port not in policy.ports:
        return failed_http("x_forbidden_port")

    async def resolve(host: str, port: int) -> list[str]:
        """Addresses for one hop of the fetch, after the policy; never the system resolver."""
        if port not in policy.ports:
            raise ForbiddenError("x_forbidden_port")
        literal = _ip(host.strip("[]"))
        if literal is not None:
            candidates = [literal]
        elif host.lower().rstrip(".") == request.host.rstrip("."):
            # The URL's own host: reuse this request's answer rather than asking again.
            candidates = helper_ips
            if not candidates:
                raise ResolveError(helper_failure or "dns_no_answer")
        else:
            found, failure = await _resolve_host(ops, host, config, clock)
            if not found:
                raise ResolveError(failure or "dns_no_answer")
            candidates = found
        allowed = [str(ip) for ip in candidates if policy.permits_address(ip)]
        if not allowed:
            raise ForbiddenError(FORBIDDEN_ADDRESS)
        return allowed

    try:
        fetched = await ops.fetch(
            request.url,
            headers=request.headers,
            resolve=resolve,
            timeout=clock.left(config.http_timeout),
            max_body=config.max_body,
            max_redirects=config.max_redirects,
        )
    except ForbiddenError as exc:
        return failed_http(exc.failure)
    except ResolveError as exc:
        return failed_http("dns_lookup_error", exc.failure)
    failure = http_failure(fetched.failure, during_dns=fetched.failed_resolving)
    if fetched.status_code is None:
        return failed_http(failure, fetched.failure)
    answer = {
        "body_length": len(fetched.body),
        "discovered_h3_endpoint": "",
        "failure": failure,
        "title": page_title(fetched.body),
        "headers": headers_map(fetched.headers),
        "status_code": fetched.status_code,
        "x_failure": fetched.failure,
    }
    if fetched.body_rate is not None:
        answer["x_body_rate"] = round(fetched.body_rate, 1)
    return answer
