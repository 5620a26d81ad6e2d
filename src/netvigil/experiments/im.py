"""What the four messaging-app experiments share: measuring endpoints the way OONI's urlgetter
does, and writing the OONI measurement.

Each endpoint of an app's list (``im_endpoints``) is one *target*, measured as OONI's probes
measure it (probe-cli's ``urlgetter``, which telegram, whatsapp, signal and facebook_messenger
are built on):

- ``dnslookup://host``: resolve the name.
- ``tcpconnect://host:port``: resolve, then connect to the answers in order until one accepts.
- ``http(s)://…``: resolve, connect, TLS (https; SNI = the URL's host, the chain verified against
  the probe's roots, plus the app's pinned CA), one request (GET, or POST for Telegram's data
  centres) whose response may have any status, redirects followed (at most 10).

A target ends with ``failure`` (an OONI failure string, None on success) and ``failed_operation``
(``resolve``, ``connect``, ``tls_handshake``, ``http_round_trip``), which the apps' rules read.
Every step is bounded by the probe's timeouts and the whole experiment by its budget; a target
the budget cuts short ends with ``generic_timeout_error`` at the step it was in.

All targets share one ``Trace``: the OONI lists (queries, tcp_connect, tls_handshakes, requests,
network_events) are rendered from it as for web_connectivity. ``x_endpoints`` (netvigil's own)
says, per endpoint, what was measured, where the probe actually connected (an override may map an
IP literal to a testbed address) and how it ended.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from cryptography import x509

from netvigil.experiments.im_endpoints import AppEndpoints, Endpoint, Overrides, load_app
from netvigil.experiments.web_connectivity import (
    ProbeConfig,
    WebConnectivity,
    is_ip_address,
    new_report_id,
    ooni_envelope,
)
from netvigil.net import dns as ndns
from netvigil.net import http as nhttp
from netvigil.net import tcp as ntcp
from netvigil.net import tls as ntls
from netvigil.net.failures import GENERIC_TIMEOUT, TOO_MANY_REDIRECTS
from netvigil.net.trace import Clock, Trace

__all__ = [
    "CONNECT",
    "HTTP_ROUND_TRIP",
    "RESOLVE",
    "TLS_HANDSHAKE",
    "MessagingExperiment",
    "TargetResult",
]

# OONI's operation names (netxlite), as failed_operation says them.
RESOLVE = "resolve"
CONNECT = "connect"
TLS_HANDSHAKE = "tls_handshake"
HTTP_ROUND_TRIP = "http_round_trip"

MAX_REDIRECTS = 10
PARALLELISM = 8  # OONI runs 3 targets at once; more keeps a censored run within its budget
DEFAULT_BUDGET = 60.0  # OONI's per-experiment timeout
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# OONI's probes record an empty extension table; readers use it to know which lists to expect.
EXTENSIONS = {
    "dnst": 0,
    "httpt": 0,
    "netevents": 0,
    "tcpconnect": 0,
    "tlshandshake": 0,
    "tunnel": 0,
}


@dataclass
class TargetResult:
    """How one endpoint's measurement ended (OONI's per-target urlgetter test keys)."""

    endpoint: Endpoint
    failure: str | None = None
    failed_operation: str | None = None
    queries: list[ndns.DNSResult] = field(default_factory=list)
    dialled: list[str] = field(default_factory=list)  # "ip:port" the probe connected to
    status_code: int | None = None
    operation: str = RESOLVE  # the step in progress (for a cut-short target)

    def fail(self, failure: str, operation: str) -> TargetResult:
        self.failure, self.failed_operation = failure, operation
        return self

    def to_x_endpoint(self, app: str) -> dict[str, Any]:
        return {
            "app": app,
            "endpoint": self.endpoint.name,
            "target": self.endpoint.target,
            "kind": self.endpoint.kind,
            "addresses": self.dialled,
            "failure": self.failure,
            "failed_operation": self.failed_operation,
            "status_code": self.status_code,
        }


class MessagingExperiment:
    """One messaging-app experiment. Subclasses say which app and how its keys are computed."""

    APP = ""

    def __init__(
        self,
        config: ProbeConfig,
        overrides: Overrides | None = None,
        *,
        report_id: str | None = None,
        budget: float | None = None,
    ) -> None:
        self.config = config
        self.overrides = overrides or Overrides()
        self.endpoints: AppEndpoints = load_app(self.APP, self.overrides)
        # Whose network an answer lies in: Facebook's (AS32934) is the one OONI asks about.
        self.networks: AppEndpoints = (
            self.endpoints
            if self.APP == "facebook_messenger"
            else load_app("facebook_messenger", self.overrides)
        )
        self.started = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.report_id = report_id or new_report_id(
            config.probe_cc, config.probe_asn, self.started, self.endpoints.test_name
        )
        self.budget = budget if budget is not None else min(DEFAULT_BUDGET, config.url_budget)
        self._trust = self._trust_store()

    # -- what subclasses provide ---------------------------------------------------------------
    def app_keys(self, results: list[TargetResult]) -> dict[str, Any]:
        """OONI's per-app test keys from the targets' results (in the data file's order)."""
        raise NotImplementedError

    # -- measuring -----------------------------------------------------------------------------
    def _trust_store(self) -> ntls.TrustStore:
        if not self.endpoints.pinned_ca:
            return self.config.trust
        try:
            pinned = x509.load_pem_x509_certificates(self.endpoints.pinned_ca)
        except ValueError:
            return self.config.trust
        return ntls.TrustStore([*self.config.trust.roots, *pinned])

    async def _resolve(self, host: str, trace: Trace, result: TargetResult) -> list[str] | None:
        """The host's IPv4 answers; None (and the result failed at ``resolve``) on failure."""
        cfg = self.config
        result.operation = RESOLVE
        if cfg.resolver is None:
            lookup = await ndns.resolve_system(host, timeout=cfg.dns_timeout, trace=trace)
        else:
            lookup = await ndns.resolve(
                host,
                cfg.resolver,
                port=cfg.resolver_port,
                timeout=cfg.dns_timeout,
                late_window=cfg.late_window,
                trace=trace,
                as_system=True,  # the user's resolver, recorded as OONI records the system's
            )
        result.queries.append(lookup)
        addresses = [a for a in lookup.addresses if ":" not in a][: cfg.max_addresses]
        if lookup.failure is not None or not addresses:
            result.fail(lookup.failure or "dns_no_answer", RESOLVE)
            return None
        return addresses

    async def _connect(
        self, addresses: list[str], port: int, trace: Trace, result: TargetResult
    ) -> tuple[Any, str] | None:
        """The first address that accepts: (socket, "ip:port" dialled); None after failing
        the result with the first failure (as netxlite reduces a dialer's errors)."""
        result.operation = CONNECT
        first: str | None = None
        for ip in addresses:
            dial_ip, dial_port = self.overrides.dial(ip, port)
            address = ntcp.format_address(dial_ip, dial_port)
            result.dialled.append(address)
            connected, sock = await ntcp.connect(
                dial_ip, dial_port, timeout=self.config.connect_timeout, trace=trace
            )
            if sock is not None:
                return sock, address
            first = first or connected.failure or "connection_refused"
        result.fail(first or "dns_no_answer", CONNECT)
        return None

    async def _tcp(self, endpoint: Endpoint, trace: Trace, result: TargetResult) -> None:
        addresses = await self._addresses(endpoint.host, trace, result)
        if addresses is None:
            return
        opened = await self._connect(addresses, endpoint.port, trace, result)
        if opened is not None:
            opened[0].close()

    async def _addresses(self, host: str, trace: Trace, result: TargetResult) -> list[str] | None:
        return [host] if is_ip_address(host) else await self._resolve(host, trace, result)

    async def _http(self, endpoint: Endpoint, trace: Trace, result: TargetResult) -> None:
        url, method = endpoint.url, endpoint.method
        for _hop in range(MAX_REDIRECTS + 1):
            location = await self._hop(url, method, trace, result)
            if location is None:
                return
            url = urljoin(url, location)
            if method == "POST":  # as Go's client: a redirected POST becomes a GET
                method = "GET"
        result.fail(TOO_MANY_REDIRECTS, HTTP_ROUND_TRIP)

    async def _hop(self, url: str, method: str, trace: Trace, result: TargetResult) -> str | None:
        """One request; the next URL when it redirects, else None (the result is final)."""
        cfg = self.config
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            host = (parts.hostname or "").lower()
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            result.fail("unknown_failure: bad URL", RESOLVE)
            return None
        if scheme not in ("http", "https") or not host:
            result.fail("unknown_failure: unsupported URL", RESOLVE)
            return None
        addresses = await self._addresses(host, trace, result)
        if addresses is None:
            nhttp.failed_request(
                url, "", result.failure or "", Clock(trace), nhttp.DEFAULT_HEADERS, trace, method
            )
            return None
        opened = await self._connect(addresses, port, trace, result)
        if opened is None:
            address = result.dialled[-1] if result.dialled else ""
            nhttp.failed_request(
                url,
                address,
                result.failure or "",
                Clock(trace),
                nhttp.DEFAULT_HEADERS,
                trace,
                method,
            )
            return None
        sock, address = opened
        if scheme == "https":
            result.operation = TLS_HANDSHAKE
            shake, stream = await ntls.handshake(
                sock, host, trust=self._trust, timeout=cfg.tls_timeout, trace=trace, address=address
            )
            if stream is None:
                failure = shake.failure or "ssl_failed_handshake"
                result.fail(failure, TLS_HANDSHAKE)
                nhttp.failed_request(
                    url, address, failure, Clock(trace), nhttp.DEFAULT_HEADERS, trace, method
                )
                return None
            reader, writer = stream.reader, stream.writer
        else:
            try:
                reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
            except OSError:
                sock.close()
                result.fail("connection_reset", HTTP_ROUND_TRIP)
                return None
        result.operation = HTTP_ROUND_TRIP
        try:
            response = await nhttp.round_trip(
                reader,
                writer,
                url,
                address=address,
                max_body=cfg.max_body,
                timeout=cfg.http_timeout,
                trace=trace,
                method=method,
            )
        finally:
            writer.transport.abort()
        if response.failure is not None:
            result.fail(response.failure, HTTP_ROUND_TRIP)
            return None
        result.status_code = response.status_code
        location = response.location
        if response.status_code in _REDIRECT_CODES and location:
            return location.strip()
        return None

    async def _target(self, endpoint: Endpoint, trace: Trace, result: TargetResult) -> None:
        if endpoint.kind == "dns":
            await self._resolve(endpoint.host, trace, result)
        elif endpoint.kind == "tcp":
            await self._tcp(endpoint, trace, result)
        else:
            await self._http(endpoint, trace, result)

    async def _run_all(self, trace: Trace) -> list[TargetResult]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        gate = asyncio.Semaphore(PARALLELISM)
        results = [TargetResult(e) for e in self.endpoints.endpoints]

        async def one(result: TargetResult) -> None:
            async with gate:
                left = deadline - loop.time()
                try:
                    if left <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(left):
                        await self._target(result.endpoint, trace, result)
                except TimeoutError:
                    # The budget ended this target: the step it was in failed by timeout.
                    if result.failure is None:
                        result.fail(GENERIC_TIMEOUT, result.operation)

        await asyncio.gather(*(one(r) for r in results))
        return results

    async def measure(self) -> dict[str, Any]:
        """Measure every endpoint and return the OONI measurement (without a verdict)."""
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        trace = Trace()
        results = await self._run_all(trace)
        return self.assemble(start, trace, results)

    # -- the measurement -----------------------------------------------------------------------
    def _annotate_answers(self, queries: list[dict[str, Any]]) -> None:
        """``asn`` and ``as_org_name`` on every answer, as OONI writes them: Facebook's for an
        address in its network (the only one whose ownership the experiments ask about), 0 and
        "" (OONI's "not known") for every other."""
        net = self.networks
        for query in queries:
            for answer in query.get("answers") or ():
                address = answer.get("ipv4") or answer.get("ipv6")
                known = isinstance(address, str) and net.in_network(address)
                answer["asn"] = net.asn if known else 0
                answer["as_org_name"] = net.as_org_name if known else ""

    def assemble(
        self, start: dt.datetime, trace: Trace, results: list[TargetResult]
    ) -> dict[str, Any]:
        cfg = self.config
        fragment = trace.test_keys_fragment()
        self._annotate_answers(fragment["queries"])
        # What OONI's probes write besides the primitives' keys (tags, network, a request's
        # address and ALPN, a request carrying its connection's transaction id), as for
        # web_connectivity, so OONI's pipeline joins a request to its connect the same way.
        WebConnectivity._ooni_tags_and_links(fragment)
        test_keys: dict[str, Any] = {
            "agent": "redirect",
            "failed_operation": None,
            "failure": None,
            **fragment,
            **self.app_keys(results),
            "x_endpoints": [r.to_x_endpoint(self.APP) for r in results],
            "x_endpoints_source": {
                "source": self.endpoints.source,
                "retrieved": self.endpoints.retrieved,
            },
        }
        return ooni_envelope(
            cfg,
            report_id=self.report_id,
            test_name=self.endpoints.test_name,
            test_version=self.endpoints.test_version,
            input=None,
            start=start,
            started=self.started,
            runtime=trace.elapsed(),
            test_helpers={},
            test_keys=test_keys,
            extensions=EXTENSIONS,
        )


ExperimentFactory = Callable[..., MessagingExperiment]
