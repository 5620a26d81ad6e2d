"""Is the network itself up? The checks a run makes around its measurements.

A site that fails while nothing else answers either is not blocked: the network is off (a
shutdown, a cut cable, a laptop without Wi-Fi). Before it measures, a run asks the resolver it
uses, the control helper and a few reference targets; it asks again when failures pile up and
at the end of the run if any failure is still waiting for a judgement. Every measurement of the
run gets ``test_keys.x_network_status`` = {"status": "online"|"degraded"|"offline",
"evidence": [checks]}, and the verdict engine turns an offline (or matching degraded) status
into ``network/offline`` / ``network/degraded`` instead of blaming the site.
docs/verdict.md §"Network status" states the rule.

Nothing here records the user's own address: a check keeps its target (ours, configured), the
stage that failed, the failure string and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from netvigil.net import dns as ndns
from netvigil.net import http as nhttp
from netvigil.net import tls as ntls
from netvigil.net.trace import Trace

ONLINE, DEGRADED, OFFLINE = "online", "degraded", "offline"
_RANK = {ONLINE: 0, DEGRADED: 1, OFFLINE: 2}
# Real networks: big, rarely blocked connectivity-check endpoints of three vendors, one an IP
# literal so that a dead resolver alone does not read as "offline". Any HTTP answer counts.
DEFAULT_REFERENCES = (
    "http://captive.apple.com/hotspot-detect.html",
    "http://www.msftconnecttest.com/connecttest.txt",
    "http://1.1.1.1/",
)
# Inside the testbed: `testbed_environment` names its references in this variable.
REFERENCES_ENV = "NETVIGIL_REFERENCE_URLS"
MAX_REFERENCES = 8
# A name the resolver check asks when no reference or helper has one (RFC 2606).
FALLBACK_NAME = "example.com"
# The resolver answered even if the name has no address: only silence or a refusal fail it.
_RESOLVER_ANSWERED = frozenset({"dns_nxdomain_error", "dns_no_answer"})


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Check:
    """One check: ``stage`` and ``failure`` are None when it passed."""

    check: str  # "resolver" | "control" | "reference"
    target: str
    stage: str | None  # dns | tcp | tls | http
    failure: str | None
    t: str  # UTC, "YYYY-MM-DD HH:MM:SS" as OONI writes times

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "target": self.target,
            "ok": self.ok,
            "stage": self.stage,
            "failure": self.failure,
            "t": self.t,
        }


def judge(checks: Sequence[Check]) -> str:
    """offline: every check failed; degraded: some did; online: none did (or no checks)."""
    failed = sum(1 for c in checks if not c.ok)
    if checks and failed == len(checks):
        return OFFLINE
    return DEGRADED if failed else ONLINE


@dataclass(frozen=True)
class NetworkStatus:
    status: str
    checks: tuple[Check, ...] = ()

    @classmethod
    def of(cls, checks: Sequence[Check]) -> NetworkStatus:
        return cls(judge(checks), tuple(checks))

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "evidence": [c.to_dict() for c in self.checks]}


def worse(a: NetworkStatus, b: NetworkStatus) -> NetworkStatus:
    """The worse status of the checks around a measurement, with the evidence of both."""
    status = a.status if _RANK[a.status] >= _RANK[b.status] else b.status
    seen: dict[tuple[str, str, str], Check] = {}
    for check in (*a.checks, *b.checks):
        seen.setdefault((check.check, check.target, check.t), check)
    return NetworkStatus(status, tuple(seen.values()))


def parse_references(values: Sequence[str]) -> tuple[str, ...]:
    """Reference targets from the user or the environment: http(s):// URLs or dns://IP.

    ValueError (one line) for anything else."""
    found: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            parts = urlsplit(item)
            try:
                host = parts.hostname
                _ = parts.port
            except ValueError:
                host = None
            if parts.scheme == "dns":
                if not host or not _is_ip(host):
                    raise ValueError(f"reference {item!r}: dns:// needs a resolver IP address")
            elif parts.scheme not in ("http", "https") or not host:
                raise ValueError(f"reference {item!r}: give http(s)://host/ or dns://IP")
            found.append(item)
    if len(found) > MAX_REFERENCES:
        raise ValueError(f"at most {MAX_REFERENCES} reference targets")
    return tuple(dict.fromkeys(found))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


Resolver = Callable[[str, Trace], Awaitable[ndns.DNSResult]]


@dataclass
class NetworkChecker:
    """The checks of one run: the probe's resolver, its control helper, its references."""

    resolve: Resolver  # the probe's own resolver (the one its measurements use)
    resolver_name: str  # what the evidence calls it: its address, or "system"
    trust: ntls.TrustStore
    helper_url: str | None = None
    references: tuple[str, ...] = ()
    step_timeout: float = 5.0  # each network step of a check
    budget: float = 10.0  # a whole check round, whatever happens

    def _probe_name(self) -> str:
        for url in (*self.references, self.helper_url or ""):
            host = urlsplit(url).hostname or ""
            if host and not _is_ip(host) and urlsplit(url).scheme != "dns":
                return host
        return FALLBACK_NAME

    async def check(self) -> NetworkStatus:
        """One round: every check at once, the whole round bounded by ``budget``."""
        Job = Callable[[list[str]], Awaitable[tuple[str, str] | None]]
        jobs: list[tuple[str, str, Job]] = [("resolver", self.resolver_name, self._resolver)]
        if self.helper_url:
            jobs.append(("control", self.helper_url, functools.partial(self._url, self.helper_url)))
        for ref in self.references:
            method = self._dns_reference if ref.startswith("dns://") else self._url
            jobs.append(("reference", ref, functools.partial(method, ref)))

        async def run(
            kind: str,
            target: str,
            job: Callable[[list[str]], Awaitable[tuple[str, str] | None]],
        ) -> Check:
            stage = ["dns"]  # the step in progress, for a check the budget cuts
            try:
                async with asyncio.timeout(self.budget):
                    failed = await job(stage)
            except TimeoutError:
                failed = (stage[0], "generic_timeout_error")
            except Exception as exc:  # a check never crashes a run
                failed = (stage[0], f"unknown_failure: {type(exc).__name__}")
            when = now_text()
            if failed is None:
                return Check(kind, target, None, None, when)
            return Check(kind, target, failed[0], failed[1], when)

        checks = await asyncio.gather(*(run(k, t, j) for k, t, j in jobs))
        return NetworkStatus.of(checks)

    async def _resolver(self, stage: list[str]) -> tuple[str, str] | None:
        result = await self.resolve(self._probe_name(), Trace())
        if result.failure is None or result.failure in _RESOLVER_ANSWERED:
            return None
        return ("dns", result.failure)

    async def _dns_reference(self, ref: str, stage: list[str]) -> tuple[str, str] | None:
        ip = urlsplit(ref).hostname or ""
        port = urlsplit(ref).port or 53
        result = await ndns.resolve(
            self._probe_name(), ip, port=port, timeout=self.step_timeout, trace=Trace()
        )
        # Any reply is an answer: this resolver is only a reference, not the user's.
        if result.rcode is not None or result.failure in _RESOLVER_ANSWERED:
            return None
        return ("dns", result.failure or "unknown_failure")

    async def _url(self, url: str, stage: list[str]) -> tuple[str, str] | None:
        """GET ``url`` without following redirects: any HTTP response is an answer."""
        host = urlsplit(url).hostname or ""
        dns_failure: list[str] = []

        async def resolve(name: str) -> list[str]:
            if _is_ip(name):
                return [name]
            result = await self.resolve(name, Trace())
            if result.failure and not result.addresses:
                dns_failure.append(result.failure)
            return [a for a in result.addresses if ":" not in a]

        trace = Trace()
        if not _is_ip(host):
            addresses = await resolve(host)
            if not addresses:
                return ("dns", dns_failure[0] if dns_failure else "dns_no_answer")
        stage[0] = "tcp"
        results = await nhttp.fetch(
            url,
            resolve=resolve,
            trust=self.trust,
            max_redirects=0,
            timeout=self.step_timeout,
            max_body=4096,
            trace=trace,
            max_addresses=2,
        )
        if any(r.status_code is not None for r in results):
            return None
        failure = next((r.failure for r in results if r.failure), None) or "unknown_failure"
        return (_failed_stage(trace), failure)


def _failed_stage(trace: Trace) -> str:
    """Where a failed fetch stopped: no connect succeeded (tcp), a handshake failed (tls),
    else the HTTP exchange."""
    connects = trace.tcp_connect
    if not connects or all(getattr(c, "failure", None) for c in connects):
        return "tcp"
    if any(getattr(h, "failure", None) for h in trace.tls_handshakes):
        return "tls"
    return "http"


# ---------------------------------------------------------------------------------------------
# A run's watch: when to check again, and which status each measurement gets.


@dataclass
class _Held:
    measurement: dict[str, Any]
    before: NetworkStatus  # the latest check when the measurement started
    reached_site: bool  # an ok verdict or an HTTP response: the network carried it


@dataclass
class NetworkWatch:
    """Checks before a run, when failures pile up, and at its end; gives every measurement the
    status of the checks around it.

    A measurement that reached its site (an ok verdict, or any HTTP response: the network
    carried it) while the latest check was not offline is released at once with that check's
    status. Any other is held until a check that started after it ended: a failure then gets
    the worse of the check before it started and that one (a failure just before a cut is not
    blamed on its site either); a measurement that reached its site gets that check's status,
    never offline (something answered): at worst degraded. Held measurements trigger a new
    check when ``pile_up`` of them wait, or the oldest has waited ``max_hold`` seconds."""

    checker: NetworkChecker
    release: Callable[[dict[str, Any], NetworkStatus], Awaitable[None]]
    pile_up: int = 8
    max_hold: float = 30.0
    latest: NetworkStatus = field(default_factory=lambda: NetworkStatus(ONLINE))
    history: list[NetworkStatus] = field(default_factory=list)
    _held: list[tuple[float, _Held]] = field(default_factory=list)
    _checking: list[tuple[float, _Held]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.latest = await self.checker.check()
        self.history.append(self.latest)

    def begin(self) -> NetworkStatus:
        """What a measurement starting now was preceded by."""
        return self.latest

    async def done(self, measurement: dict[str, Any], before: NetworkStatus, ok: bool) -> None:
        if ok and self.latest.status != OFFLINE and before.status != OFFLINE:
            await self.release(measurement, self.latest)
            return
        loop = asyncio.get_running_loop()
        self._held.append((loop.time(), _Held(measurement, before, ok)))
        if len(self._held) >= self.pile_up:
            self._wake.set()

    async def run(self, finished: asyncio.Event) -> None:
        """Until ``finished``: check again when failures pile up or wait too long."""
        loop = asyncio.get_running_loop()
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            self._wake.clear()
            if not self._held:
                continue
            oldest = self._held[0][0]
            if len(self._held) >= self.pile_up or loop.time() - oldest >= self.max_hold:
                await self.recheck()

    async def recheck(self) -> None:
        """One check; releases every measurement that ended before it started."""
        async with self._lock:
            if not self._held:
                return
            # kept on the watch, not in a local: an interrupted check leaves them to flush()
            self._checking, self._held = self._held, []
            after = await self.checker.check()
            self.latest = after
            self.history.append(after)
            while self._checking:
                _, held = self._checking.pop(0)
                await self.release(held.measurement, status_between(held, after))

    async def finish(self) -> None:
        """At the end of the run: a last check if anything still waits for one."""
        await self.recheck()

    async def flush(self) -> None:
        """Interrupted: release what waits with the latest status, without a new check."""
        waiting = self._checking + self._held
        self._checking, self._held = [], []
        for _, held in waiting:
            await self.release(held.measurement, status_between(held, self.latest))


def status_between(held: _Held, after: NetworkStatus) -> NetworkStatus:
    """A failed measurement: the worse of the checks around it. One that reached its site: the
    check after it, but never offline (its own site answered: at worst degraded)."""
    if held.reached_site:
        return after if after.status != OFFLINE else NetworkStatus(DEGRADED, after.checks)
    return worse(held.before, after)
