"""The web_connectivity experiment: one URL, measured from here and from the control helper.

Steps (OONI's, done concurrently where OONI waits): resolve the host with the user's resolver
(and a second opinion when configured); as soon as the answers are in, ask the control helper
and, in parallel, connect to every address (TLS with the URL's SNI for https, capturing the
whole presented chain), fetch the page over the first good connection and follow redirects;
when an address looks wrong (not in the control's answers, no valid certificate), fetch
``http://<address>/`` with the site's Host to see what it serves (``x_dns_answer_pages``).
The result is an OONI-format measurement whose analysis keys come from the verdict engine.

The verdict engine is pure CPU (fingerprint scans of bodies, certificate parsing, and ~1 s to
load its databases on first use): it runs in one worker thread of the experiment's own, never
on the event loop, where it would delay reading the replies of the other URLs in flight and
turn answers that arrived in time into timeouts. One thread only: the engine's memos
(``verdict._read._UTF8_MEMO``, the fingerprint response cache) are written to by ``analyze``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import platform
import secrets
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from netvigil import __version__
from netvigil.control.client import query_control
from netvigil.net import dns as ndns
from netvigil.net import http as nhttp
from netvigil.net import tcp as ntcp
from netvigil.net import tls as ntls
from netvigil.net.trace import Clock, Trace
from netvigil.verdict import Verdict, analyze, load_fingerprints
from netvigil.verdict.roots import load_known_roots

TEST_NAME = "web_connectivity"
TEST_VERSION = "0.5.28"  # the OONI key set we follow (see docs/measurement-format.md)
SCRUBBED_IP = "127.0.0.1"
HTTP_BUDGET_MARGIN = 1.0  # seconds the HTTP steps leave of the URL's budget


@dataclass(frozen=True)
class ProbeConfig:
    """Where to resolve, whom to ask for control, what to trust, and how long to wait."""

    trust: ntls.TrustStore
    resolver: str | None = None  # an IP; None: the system resolver
    resolver_port: int = 53
    second_resolver: str | None = None  # an IP, asked over UDP as a second opinion
    doh_url: str | None = None  # a DoH resolver as second opinion (real networks)
    helper_url: str | None = None
    probe_cc: str = "ZZ"
    probe_asn: str = "AS0"
    dns_timeout: float = 5.0
    late_window: float = 0.5
    connect_timeout: float = 10.0
    tls_timeout: float = 10.0
    http_timeout: float = 15.0
    control_timeout: float = 30.0
    url_budget: float = 60.0
    max_body: int = 512 * 1024
    max_addresses: int = 4
    annotations: dict[str, str] = field(default_factory=dict)
    # The messaging experiments' endpoint override file (experiments/im_endpoints.py), if any.
    im_endpoints: str | None = None
    # Check the network around a run (netvigil.netstatus): the resolver, the helper, these.
    network_check: bool = False
    reference_urls: tuple[str, ...] = ()


def new_report_id(
    probe_cc: str, probe_asn: str, when: dt.datetime, test_name: str = "web_connectivity"
) -> str:
    """A report id as OONI's probes make them (every experiment of netvigil uses this one)."""
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    name = test_name.replace("_", "")
    return f"{stamp}_{name}_{probe_cc}_{probe_asn.removeprefix('AS')}_n1_{secrets.token_hex(8)}"


def ooni_time(when: dt.datetime) -> str:
    """A time as OONI's data format writes it (UTC, no zone)."""
    return when.strftime("%Y-%m-%d %H:%M:%S")


def ooni_envelope(
    cfg: ProbeConfig,
    *,
    report_id: str,
    test_name: str,
    test_version: str,
    input: str | None,
    start: dt.datetime,
    started: dt.datetime,
    runtime: float,
    test_helpers: dict[str, Any],
    test_keys: dict[str, Any],
    extensions: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A measurement in OONI's data format around ``test_keys`` (every experiment of netvigil
    writes this one): never the user's address, the probe's network as configured."""
    measurement: dict[str, Any] = {
        "annotations": {
            "engine_name": "netvigil",
            "engine_version": __version__,
            "platform": platform.system().lower(),
            "architecture": platform.machine(),
            **cfg.annotations,
        },
        "data_format_version": "0.2.0",
    }
    if extensions is not None:
        measurement["extensions"] = dict(extensions)
    measurement.update(
        {
            "input": input,
            "measurement_start_time": ooni_time(start),
            "probe_asn": cfg.probe_asn,
            "probe_cc": cfg.probe_cc,
            "probe_ip": SCRUBBED_IP,
            "probe_network_name": "",
            "report_id": report_id,
            "resolver_asn": "AS0",
            "resolver_ip": cfg.resolver or "",
            "resolver_network_name": "",
            "software_name": "netvigil",
            "software_version": __version__,
            "test_helpers": test_helpers,
            "test_name": test_name,
            "test_runtime": round(runtime, 6),
            "test_start_time": ooni_time(started),
            "test_version": test_version,
            "test_keys": test_keys,
        }
    )
    return measurement


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _load_verdict_databases() -> None:
    """What the first ``analyze`` would load (both cached); a failure shows there, not here."""
    load_fingerprints()
    load_known_roots()


class WebConnectivity:
    """Measures URLs with one configuration; safe to use for many URLs concurrently.

    Verdicts are computed in a worker thread started on first use; ``close()`` (or ``with``)
    stops it. Without ``close()`` the idle thread ends with the object or at exit."""

    # OONI's analysis keys, copied from the verdict into test_keys (in this order)
    ANALYSIS_KEYS = (
        "dns_consistency",
        "body_length_match",
        "body_proportion",
        "status_code_match",
        "headers_match",
        "title_match",
        "blocking",
        "accessible",
    )

    def __init__(self, config: ProbeConfig, report_id: str | None = None) -> None:
        self.config = config
        self.started = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.report_id = report_id or new_report_id(config.probe_cc, config.probe_asn, self.started)
        self._verdict_pool: ThreadPoolExecutor | None = None
        self._verdict_lock = threading.Lock()

    def __enter__(self) -> WebConnectivity:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the verdict thread: verdicts not started are cancelled, a running one (at most
        one, milliseconds once the engine is loaded) is waited for. Measuring again restarts it."""
        with self._verdict_lock:
            pool, self._verdict_pool = self._verdict_pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _verdict_executor(self) -> ThreadPoolExecutor:
        with self._verdict_lock:
            if self._verdict_pool is None:
                self._verdict_pool = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="netvigil-verdict"
                )
            return self._verdict_pool

    async def prepare(self) -> None:
        """Load the verdict engine's databases (~1 s of CPU, once per process) before any URL is
        in flight. Loaded in the thread while replies arrive, they would still take the GIL from
        the loop in 5 ms slices at every socket call (measured: 0.1-0.2 s lags at 100 URLs)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._verdict_executor(), _load_verdict_databases)

    async def _analyze(self, measurement: dict[str, Any]) -> Verdict:
        """``analyze(measurement)`` in the verdict thread; the loop keeps serving other URLs."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._verdict_executor(), analyze, measurement)

    async def _resolve(self, host: str, trace: Trace) -> list[str]:
        cfg = self.config
        if cfg.resolver is None:
            main = ndns.resolve_system(host, timeout=cfg.dns_timeout, trace=trace)
        else:
            main = ndns.resolve(
                host,
                cfg.resolver,
                port=cfg.resolver_port,
                timeout=cfg.dns_timeout,
                late_window=cfg.late_window,
                trace=trace,
                # the user's own resolver: recorded as OONI records the system resolver, whose
                # lookups are the only ones OONI's analysis (probe 0.5.27+, ooni/data) trusts
                as_system=True,
            )
        extra: list[Awaitable[Any]] = []
        if cfg.second_resolver:
            extra.append(
                ndns.resolve(
                    host,
                    cfg.second_resolver,
                    timeout=cfg.dns_timeout,
                    late_window=cfg.late_window,
                    trace=trace,
                )
            )
        if cfg.doh_url:
            extra.append(
                ndns.resolve_doh(
                    host,
                    cfg.doh_url,
                    ssl_context=ntls.client_context(("h2", "http/1.1")),
                    timeout=cfg.dns_timeout,
                    trace=trace,
                )
            )
        results = await asyncio.gather(main, *extra)
        # The user's resolver decides where the browser goes: measure what it answered.
        return [a for a in results[0].addresses if ":" not in a]

    async def measure(self, url: str) -> dict[str, Any]:
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        trace = Trace()
        extra: dict[str, Any] = {}
        control: dict[str, Any] | None = None
        control_failure: str | None = None
        # The HTTP steps end before the URL's budget does (see _http_timeout): a slow transfer
        # is then recorded by its own timeout, with the bytes and the rate it had reached.
        deadline = asyncio.get_running_loop().time() + self.config.url_budget
        try:
            async with asyncio.timeout(self.config.url_budget):
                control, control_failure = await self._measure(url, trace, extra, deadline)
        except TimeoutError:
            extra["x_measurement_failure"] = "generic_timeout_error"
            control_failure = control_failure or (
                "generic_timeout_error" if control is None else None
            )
        measurement = self._assemble(url, start, trace, control, control_failure, extra)
        # Not on the loop: see the module's docstring. `measurement` is not shared until
        # returned, so the thread reads it alone.
        self._add_verdict(measurement, await self._analyze(measurement))
        return measurement

    async def _measure(
        self, url: str, trace: Trace, extra: dict[str, Any], deadline: float
    ) -> tuple[dict[str, Any] | None, str | None]:
        cfg = self.config
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        addresses = [host] if is_ip_address(host) else await self._resolve(host, trace)
        addresses = addresses[: cfg.max_addresses]
        endpoints = [ntcp.format_address(a, port) for a in addresses]

        control_task: asyncio.Task[tuple[dict[str, Any] | None, str | None]] | None = None
        if cfg.helper_url:
            control_task = asyncio.create_task(
                query_control(cfg.helper_url, url, endpoints, timeout=cfg.control_timeout)
            )
        else:
            extra["x_control_skipped"] = "no control helper configured"

        streams = await self._endpoints(addresses, host, port, scheme, trace)
        verified_addresses = {ip for ip, _ in streams}
        await self._http(url, host, port, scheme, streams, addresses, trace, deadline)

        control: dict[str, Any] | None = None
        control_failure: str | None = None if control_task else "x_no_control_helper"
        if control_task is not None:
            try:
                control, control_failure = await control_task
            except Exception as exc:  # the client returns failures; this is a last resort
                control_failure = f"unknown_failure: {type(exc).__name__}"
        await self._check_suspicious_answers(
            host, addresses, verified_addresses, scheme, control, trace, extra
        )
        return control, control_failure

    async def _endpoints(
        self, addresses: list[str], host: str, port: int, scheme: str, trace: Trace
    ) -> list[tuple[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
        """Connect (and TLS) to every address at once; the usable streams, in address order."""
        cfg = self.config

        async def one(ip: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
            _, sock = await ntcp.connect(ip, port, timeout=cfg.connect_timeout, trace=trace)
            if sock is None:
                return None
            if scheme == "https":
                _, stream = await ntls.handshake(
                    sock,
                    host,
                    trust=cfg.trust,
                    timeout=cfg.tls_timeout,
                    trace=trace,
                    address=ntcp.format_address(ip, port),
                )
                return (stream.reader, stream.writer) if stream is not None else None
            try:
                return await asyncio.open_connection(sock=sock, limit=64 * 1024)
            except OSError:
                sock.close()
                return None

        opened = await asyncio.gather(*(one(ip) for ip in addresses))
        return [(ip, s) for ip, s in zip(addresses, opened, strict=True) if s is not None]

    async def _http(
        self,
        url: str,
        host: str,
        port: int,
        scheme: str,
        streams: list[tuple[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
        addresses: list[str],
        trace: Trace,
        deadline: float,
    ) -> None:
        cfg = self.config
        try:
            if not streams:
                failure = self._first_failure(trace) or (
                    "dns_no_answer" if not addresses else "unknown_failure"
                )
                address = ntcp.format_address(addresses[0], port) if addresses else ""
                nhttp.failed_request(
                    url, address, failure, Clock(trace), nhttp.DEFAULT_HEADERS, trace
                )
                return
            ip, (reader, writer) = streams[0]
            first = await nhttp.round_trip(
                reader,
                writer,
                url,
                address=ntcp.format_address(ip, port),
                max_body=cfg.max_body,
                timeout=self._http_timeout(deadline),
                trace=trace,
            )
            location = first.location
            if (
                first.failure is None
                and first.status_code in (301, 302, 303, 307, 308)
                and location
            ):
                from urllib.parse import urljoin

                cache: dict[str, list[str]] = {host: addresses}

                async def resolve(name: str) -> list[str]:
                    if name not in cache:
                        cache[name] = await self._resolve(name, trace)
                    return cache[name]

                await nhttp.fetch(
                    urljoin(url, location),
                    resolve=resolve,
                    trust=cfg.trust,
                    max_redirects=9,
                    timeout=self._http_timeout(deadline),
                    max_body=cfg.max_body,
                    trace=trace,
                )
        finally:
            for _, (_, w) in streams:
                w.transport.abort()

    def _http_timeout(self, deadline: float) -> float:
        """The HTTP step's own timeout, cut so that it ends a little before the URL's budget.

        Past the budget the whole measurement is cancelled; the exchange in flight would be
        recorded as a bare timeout (net.http records a cancelled exchange too, but the budget
        also has to leave time for the control's answer and the verdict)."""
        left = deadline - asyncio.get_running_loop().time() - HTTP_BUDGET_MARGIN
        return max(0.5, min(self.config.http_timeout, left))

    @staticmethod
    def _first_failure(trace: Trace) -> str | None:
        for record in (*trace.tls_handshakes, *trace.tcp_connect, *trace.queries):
            failure = getattr(record, "failure", None)
            if failure:
                return str(failure)
        return None

    async def _check_suspicious_answers(
        self,
        host: str,
        addresses: list[str],
        verified: set[str],
        scheme: str,
        control: dict[str, Any] | None,
        trace: Trace,
        extra: dict[str, Any],
    ) -> None:
        """Fetch http://<address>/ for answers the control did not give and no valid cert vouches
        for: a DNS blockpage server shows itself there, a bogus address does not."""
        control_addrs = set(((control or {}).get("dns") or {}).get("addrs") or [])
        if not control_addrs:
            return
        suspicious = [
            a
            for a in addresses
            if a not in control_addrs and (scheme != "https" or a not in verified)
        ]
        pages = []
        for ip in suspicious[:2]:

            async def only(name: str, ip: str = ip) -> list[str]:
                return [ip]

            # A trace of its own: these fetches are evidence, not part of OONI's request chain.
            page_trace = Trace(t0=trace.t0)
            results = await nhttp.fetch(
                f"http://{host}/",
                resolve=only,
                trust=self.config.trust,
                max_redirects=0,
                timeout=5.0,
                max_body=64 * 1024,
                trace=page_trace,
            )
            pages += [r.to_ooni() for r in results]
        if pages:
            extra["x_dns_answer_pages"] = pages

    @staticmethod
    def _mark_second_opinions(queries: list[dict[str, Any]]) -> None:
        """Every lookup not through the user's resolver (getaddrinfo) is a second opinion:
        evidence, not what the user's browser got (OONI's extra UDP/DoH resolvers)."""
        for query in queries:
            if query.get("engine") != ndns.SYSTEM_ENGINE:
                query["x_second_opinion"] = True

    @staticmethod
    def _ooni_tags_and_links(fragment: dict[str, list[dict[str, Any]]]) -> None:
        """What OONI's probes (webconnectivitylte 0.5.28) write besides our keys: ``tags``
        ("classic": derived from the system resolver's addresses, which is all we connect to),
        ``network`` on handshakes and requests, and a request's ``address``/``alpn``; a request
        takes the transaction id of the connection it went over (the latest successful connect
        to its address before it started), as OONI's probes give a connection one id."""
        connects: dict[str, list[tuple[float, int]]] = {}
        for entry in fragment["tcp_connect"]:
            if entry["status"]["success"]:
                endpoint = ntcp.format_address(str(entry["ip"]), int(entry["port"]))
                connects.setdefault(endpoint, []).append((entry["t"], entry["transaction_id"]))
        for query in fragment["queries"]:
            query["tags"] = ["classic"] if query.get("engine") == ndns.SYSTEM_ENGINE else []
        for entry in fragment["tcp_connect"]:
            entry["tags"] = ["classic"]
        alpn: dict[str, str | None] = {}
        for handshake in fragment["tls_handshakes"]:
            handshake["network"] = "tcp"
            handshake["tags"] = ["classic"]
            if handshake.get("failure") is None:
                alpn[str(handshake.get("address"))] = handshake.get("negotiated_protocol")
        for request in fragment["requests"]:
            request["tags"] = ["classic"]
            address = request.get("x_address")
            before = [c for c in connects.get(str(address), ()) if c[0] <= request["t0"]]
            if before:
                request["transaction_id"] = max(before)[1]
            request.setdefault("network", "tcp")
            request.setdefault("address", address or None)
            https = str((request.get("request") or {}).get("url", "")).startswith("https:")
            request.setdefault("alpn", alpn.get(str(address)) if https else None)

    @staticmethod
    def _dns_failure(url: str, queries: list[dict[str, Any]]) -> str | None:
        """OONI's dns_experiment_failure: the user's resolver's failure for the input's host."""
        host = (urlsplit(url).hostname or "").lower()
        for query in queries:
            if query.get("hostname") == host and not query.get("x_second_opinion"):
                failure = query.get("failure")
                return str(failure) if failure else None
        return None

    def _assemble(
        self,
        url: str,
        start: dt.datetime,
        trace: Trace,
        control: dict[str, Any] | None,
        control_failure: str | None,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """The measurement without its verdict (``_add_verdict`` adds it)."""
        cfg = self.config
        fragment = trace.test_keys_fragment()
        self._mark_second_opinions(fragment["queries"])
        self._ooni_tags_and_links(fragment)
        test_keys: dict[str, Any] = {
            **fragment,
            "dns_experiment_failure": self._dns_failure(url, fragment["queries"]),
            "client_resolver": cfg.resolver or "",
            "control": control or {},
            "control_failure": control_failure,
            **extra,
        }
        measurement = ooni_envelope(
            cfg,
            report_id=self.report_id,
            test_name=TEST_NAME,
            test_version=TEST_VERSION,
            input=url,
            start=start,
            started=self.started,
            runtime=trace.elapsed(),
            test_helpers={"backend": {"address": cfg.helper_url, "type": "https"}}
            if cfg.helper_url
            else {},
            test_keys=test_keys,
        )
        return measurement

    async def reverdict(self, measurement: dict[str, Any]) -> None:
        """Judge ``measurement`` again (its ``x_network_status`` was set after it was measured)."""
        self._add_verdict(measurement, await self._analyze(measurement))

    @staticmethod
    def _add_verdict(measurement: dict[str, Any], verdict: Verdict) -> None:
        """OONI's analysis keys and ``x_netvigil_verdict``, from the verdict, into test_keys."""
        test_keys = measurement["test_keys"]
        summary = verdict.to_dict()
        for key in WebConnectivity.ANALYSIS_KEYS:
            if key in summary:
                test_keys[key] = summary[key]
        test_keys["x_netvigil_verdict"] = summary
