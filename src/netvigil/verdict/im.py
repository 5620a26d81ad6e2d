"""Messaging-app measurements (telegram, whatsapp, signal, facebook_messenger) → Verdict.

OONI's per-app keys are recomputed from the measurement's events (``requests``,
``tcp_connect``, ``queries``, ``tls_handshakes``) following each generation's rules (ooni/spec
ts-018/019/020/029 and probe-cli's experiments over their history; docs/verdict.md §
"Messaging apps"), then OONI's anomaly is derived twice: as the probe's own summary
(``probe_anomaly``) and as OONI Explorer flags it (the fastpath scoring of ooni/backend,
applied to the recomputed keys). netvigil's own outcome is given per endpoint and for the whole
measurement. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netvigil.verdict import _read as r
from netvigil.verdict.model import (
    IM_TEST_NAMES,
    NOT_BLOCKED,
    OONI_DIFFERS,
    TCP_FAILURE_OUTCOMES,
    Verdict,
    pair_allowed,
)

IM_TESTS = IM_TEST_NAMES
APP_OF_TEST = {
    "telegram": "telegram",
    "whatsapp": "whatsapp",
    "signal": "signal",
    "facebook_messenger": "facebook_messenger",
}

# The per-app keys OONI's probes write and netvigil recomputes (evidence["ooni"]).
OONI_KEYS: dict[str, tuple[str, ...]] = {
    "telegram": (
        "telegram_tcp_blocking",
        "telegram_http_blocking",
        "telegram_web_failure",
        "telegram_web_status",
    ),
    "whatsapp": (
        "whatsapp_endpoints_status",
        "whatsapp_endpoints_blocked",
        "registration_server_status",
        "registration_server_failure",
        "whatsapp_web_status",
        "whatsapp_web_failure",
    ),
    "signal": ("signal_backend_status", "signal_backend_failure"),
    "facebook_messenger": (
        *(
            f"facebook_{name}_{what}"
            for name in ("stun", "b_api", "b_graph", "edge", "external_cdn", "scontent_cdn", "star")
            for what in ("dns_consistent", "reachable")
        ),
        "facebook_dns_blocking",
        "facebook_tcp_blocking",
    ),
}

# Bounds: real measurements hold a few hundred events; hostile ones are cut here.
MAX_EVENTS = 1024
MAX_ANSWERS = 64
MAX_ANSWERS_TOTAL = 4096  # over all queries: a hostile file cannot make the parse quadratic

_NXDOMAIN = frozenset({"dns_nxdomain_error", "android_dns_cache_no_data", "dns_no_answer"})
_TCP = TCP_FAILURE_OUTCOMES
_TLS = {
    "connection_reset": "tls/reset",
    "eof_error": "tls/reset",
    "generic_timeout_error": "tls/timeout",
}
_HTTP = {
    "connection_reset": "http/reset",
    "eof_error": "http/reset",
    "generic_timeout_error": "http/timeout",
}
# Failures a probe writes for an answer it did not like (status code, redirect, page title):
# the endpoint answered, so they are no network failure (docs/verdict.md, divergences).
_ANSWER_FAILURES = frozenset(
    {
        "http_request_failed",
        "http_unexpected_status_code",
        "http_unexpected_redirect_url",
        "telegram_missing_title_error",
    }
)
_STAGE_ORDER = {"dns": 0, "tcp": 1, "tls": 2, "http": 3}
FACEBOOK_ASN = 32934
FACEBOOK_SERVICES = (
    ("stun", "stun.fbsbx.com"),
    ("b_api", "b-api.facebook.com"),
    ("b_graph", "b-graph.facebook.com"),
    ("edge", "edge-mqtt.facebook.com"),
    ("external_cdn", "external.xx.fbcdn.net"),
    ("scontent_cdn", "scontent.xx.fbcdn.net"),
    ("star", "star.c10r.facebook.com"),
)
_WA_ENDPOINT = re.compile(r"^e[0-9]{1,2}\.whatsapp\.net$")
WA_REGISTRATION = "https://v.whatsapp.net/v2/register"
WA_WEB_HTTPS = "https://web.whatsapp.com/"
WA_WEB_HTTP = "http://web.whatsapp.com/"
TELEGRAM_WEB_HOST = "web.telegram.org"
SIGNAL_DNS_ONLY = "uptime.signal.org"


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    url: str
    host: str
    port: int
    scheme: str
    method: str | None
    failure: str | None
    code: int | None
    location: str | None
    body: str


@dataclass(frozen=True)
class _Connect:
    ip: str
    port: int
    success: bool
    failure: str | None


@dataclass(frozen=True)
class _Query:
    hostname: str
    failure: str | None
    addrs: tuple[str, ...]
    asns: tuple[int | None, ...]


@dataclass(frozen=True)
class _Handshake:
    ip: str | None
    server_name: str | None
    failure: str | None


@dataclass
class _Events:
    requests: list[_Request] = field(default_factory=list)
    connects: list[_Connect] = field(default_factory=list)
    queries: list[_Query] = field(default_factory=list)
    handshakes: list[_Handshake] = field(default_factory=list)
    urlless_requests: int = 0
    _addrs: dict[str, list[str]] | None = None
    _by_endpoint: dict[tuple[str, int], list[tuple[int, _Connect]]] | None = None
    # netvigil's own measurements (``x_endpoints``): where the probe really connected for an
    # IP-literal endpoint that an override file mapped elsewhere (the testbed maps Telegram's
    # data centres to its own addresses): (literal, port) -> [(dialled ip, port), ...]
    dialled: dict[tuple[str, int], list[tuple[str, int]]] = field(default_factory=dict)

    def addrs(self, host: str) -> list[str]:
        if r.is_ip_literal(host):
            return [r.ip_or_none(host) or host]
        if self._addrs is None:  # one pass over the queries, not one per question
            ordered: dict[str, dict[str, None]] = {}
            for q in self.queries:
                ordered.setdefault(q.hostname, {}).update(dict.fromkeys(q.addrs))
            self._addrs = {name: list(found) for name, found in ordered.items()}
        return self._addrs.get(host, [])

    def dns_failure(self, host: str) -> str | None:
        """The resolver's failure for host when no query for it returned an address."""
        qs = [q for q in self.queries if q.hostname == host]
        if not qs or any(q.addrs for q in qs):
            return None
        return next((q.failure for q in qs if q.failure), "dns_no_answer")

    def connects_to(self, addrs: list[str], port: int) -> list[_Connect]:
        """The connects to any of ``addrs`` on ``port``, in the order they were recorded."""
        if self._by_endpoint is None:
            self._by_endpoint = {}
            for n, c in enumerate(self.connects):
                self._by_endpoint.setdefault((c.ip, c.port), []).append((n, c))
        keys = dict.fromkeys(
            key for a in addrs for key in ((a, port), *self.dialled.get((a, port), ()))
        )
        found = [x for key in keys for x in self._by_endpoint.get(key, [])]
        return [c for _, c in sorted(found, key=lambda x: x[0])]


def _parse(tk: Mapping[str, Any]) -> _Events:
    ev = _Events()
    for raw in r.head(tk.get("requests"), MAX_EVENTS):
        x = r.d(raw)
        req = r.d(x.get("request"))
        url = r.s(req.get("url"))
        if not url:
            # Measurement Kit's telegram wrote no url: the Host header names the endpoint.
            hdrs = {k.lower(): v for k, v in r.headers_of(req).items()}
            host_hdr = hdrs.get("host")
            if not host_hdr:
                ev.urlless_requests += 1
                continue
            ev.urlless_requests += 1
            url = f"http://{host_hdr[:300]}/"
        resp = r.d(x.get("response"))
        headers = {k.lower(): v for k, v in r.headers_of(resp).items()}
        body, _ = r.body_text(resp) if resp else ("", 0)
        ev.requests.append(
            _Request(
                url=url[:2048],
                host=r.host_of(url),
                port=r.port_of(url),
                scheme=r.scheme_of(url),
                method=r.s(req.get("method")),
                failure=r.failure(x.get("failure")),
                code=r.integer(resp.get("code")),
                location=headers.get("location"),
                body=body[:65536],
            )
        )
    for raw in r.head(tk.get("tcp_connect"), MAX_EVENTS):
        x = r.d(raw)
        ip = r.ip_or_none(x.get("ip"))
        port = r.integer(x.get("port"))
        if ip is None or port is None:
            continue
        status = r.d(x.get("status"))
        fail = r.failure(status.get("failure"))
        ok = status.get("success") is True and fail is None
        ev.connects.append(_Connect(ip, port, ok, None if ok else (fail or "unknown_failure")))
    budget = MAX_ANSWERS_TOTAL
    for raw in r.head(tk.get("queries"), MAX_EVENTS):
        x = r.d(raw)
        host = r.s(x.get("hostname"))
        if not host:
            continue
        addrs: list[str] = []
        asns: list[int | None] = []
        answers = r.head(x.get("answers"), min(MAX_ANSWERS, budget))
        budget -= len(answers)
        for ans in answers:
            a = r.d(ans)
            ip = r.ip_or_none(a.get("ipv4") or a.get("ipv6"))
            if ip is not None:
                addrs.append(ip)
                asns.append(r.integer(a.get("asn")) if "asn" in a else None)
        ev.queries.append(
            _Query(host.lower().rstrip("."), r.failure(x.get("failure")), tuple(addrs), tuple(asns))
        )
    for raw in r.head(tk.get("x_endpoints"), MAX_EVENTS):
        x = r.d(raw)
        target = r.s(x.get("target")) or ""
        literal = r.ip_or_none(r.host_of(target)) if target else None
        port = r.port_of(target) if target else None
        if literal is None or port is None:
            continue
        for address in r.head(x.get("addresses"), MAX_EVENTS):
            ip_text, _, port_text = (r.s(address) or "").rpartition(":")
            ip = r.ip_or_none(ip_text.strip("[]"))
            if ip is not None and port_text.isdigit() and (ip, int(port_text)) != (literal, port):
                ev.dialled.setdefault((literal, port), []).append((ip, int(port_text)))
    for raw in r.head(tk.get("tls_handshakes"), MAX_EVENTS):
        x = r.d(raw)
        address = r.s(x.get("address")) or ""
        ip = r.ip_or_none(address.rsplit(":", 1)[0]) if address else None
        ev.handshakes.append(_Handshake(ip, r.s(x.get("server_name")), r.failure(x.get("failure"))))
    return ev


# --- one endpoint's outcome ------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    app: str
    endpoint: str
    kind: str
    outcome: str
    failure: str | None

    @property
    def failed(self) -> bool:
        return self.outcome not in NOT_BLOCKED

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "endpoint": self.endpoint,
            "kind": self.kind,
            "outcome": self.outcome,
            "failure": self.failure,
        }


def _dns_outcome(failure: str) -> str:
    if failure == "generic_timeout_error" or "timeout" in failure:
        return "dns/timeout"
    if failure in _NXDOMAIN:
        return "dns/nxdomain"
    return "dns/bogus"


def _fetch_outcome(ev: _Events, req: _Request) -> str:
    """Where a request failed: DNS, TCP, TLS or HTTP, judged from the events around it."""
    addrs = ev.addrs(req.host)
    if any(r.is_bogon(a) for a in addrs) and not r.is_ip_literal(req.host):
        return "dns/bogon"
    if req.failure is None or req.failure in _ANSWER_FAILURES:
        return "ok"
    fail = req.failure
    if fail.startswith("dns_") or fail in _NXDOMAIN:
        return _dns_outcome(fail)
    if not addrs:
        dns_fail = ev.dns_failure(req.host)
        if dns_fail is not None:
            return _dns_outcome(dns_fail)
    conns = ev.connects_to(addrs, req.port)
    # Several fetches may share a host (a redirect chain, a second check): an attempt that
    # failed with the request's own failure string is the one that ended it.
    if conns and (not any(c.success for c in conns) or any(c.failure == fail for c in conns)):
        failed_conn = next((c for c in conns if c.failure == fail), conns[-1])
        return _TCP.get(failed_conn.failure or fail, "tcp/timeout")
    if req.scheme == "https":
        hs = [
            h
            for h in ev.handshakes
            if h.server_name == req.host or (h.ip is not None and h.ip in addrs)
        ]
        if hs and (not any(h.failure is None for h in hs) or any(h.failure == fail for h in hs)):
            failed = next((h.failure for h in hs if h.failure == fail), hs[-1].failure) or fail
            return _TLS.get(failed, "tls/failure")
        if not hs and not conns and fail.startswith("ssl_"):
            return "tls/failure"
    if not conns and fail in _TCP and fail != "generic_timeout_error":
        return _TCP[fail]
    return _HTTP.get(fail, "http/failure")


def _terminal(reqs: list[_Request]) -> _Request | None:
    """The request that ended a fetch: the failed one, else the non-redirect answer."""
    for x in reqs:
        if x.failure is not None:
            return x
    for x in reqs:
        if x.code is None or not 300 <= x.code < 400:
            return x
    return reqs[0] if reqs else None


def _version(text: str | None) -> tuple[int, ...]:
    out: list[int] = []
    for part in (text or "").split(".")[:4]:
        m = re.match(r"\d{1,6}", part)
        out.append(int(m.group(0)) if m else 0)
    return tuple(out) or (0,)


# --- the per-app rules -----------------------------------------------------------------------


@dataclass
class _AppResult:
    generation: str
    endpoints: list[Endpoint]
    keys: dict[str, Any]  # OONI's per-app keys, recomputed
    probe_anomaly: bool | None
    explorer_score: float | None  # fastpath's blocking_general
    explorer_failure: bool  # fastpath's accuracy < 0.5 (Explorer's "failure")
    key_sources: dict[str, str]  # key → "events" | "probe" (kept as written: no events)
    service: list[Endpoint]  # the endpoints whose failure makes the app fail (OONI's grouping)


def _telegram(m: Mapping[str, Any], tk: Mapping[str, Any], ev: _Events) -> _AppResult:
    tv = _version(r.s(m.get("test_version")))
    gen = "mk-0.0" if tv < (0, 1) else ("go-0.2" if tv < (0, 3) else "go-0.3")
    dcs: dict[tuple[str, int], list[_Request]] = {}
    web_reqs: list[_Request] = []
    for x in ev.requests:
        if r.is_ip_literal(x.host):
            dcs.setdefault((r.ip_or_none(x.host) or x.host, x.port), []).append(x)
        elif x.host == TELEGRAM_WEB_HOST:
            web_reqs.append(x)
    web_addrs = set(ev.addrs(TELEGRAM_WEB_HOST))
    if not dcs:  # no request recorded: the connects still name the access points
        for c in ev.connects:
            if c.ip not in web_addrs and c.port in (80, 443):
                dcs.setdefault((c.ip, c.port), [])
    endpoints: list[Endpoint] = []
    dc_failed_at_connect: list[bool] = []
    dc_ok: list[bool] = []
    for (ip, port), reqs in dcs.items():
        conns = ev.connects_to([ip], port)
        req = _terminal(reqs)
        if conns and not any(c.success for c in conns):
            outcome, fail, at_connect = (
                _TCP.get(conns[-1].failure or "", "tcp/timeout"),
                conns[-1].failure,
                True,
            )
        elif req is not None and req.failure is not None:
            outcome, fail = _fetch_outcome(ev, req), req.failure
            at_connect = outcome.startswith("tcp/")
        elif req is None and not conns:
            outcome, fail, at_connect = "unknown", None, False
        else:
            outcome, fail, at_connect = "ok", None, False
        endpoints.append(Endpoint("telegram", r.endpoint(ip, port), "http", outcome, fail))
        dc_failed_at_connect.append(at_connect)
        dc_ok.append(outcome == "ok")
    # probe-cli starts both keys true and clears them on the first access point that answers
    # (tcp: also on one that failed after connecting); MK: all connects / all requests failed.
    tcp_blocking = all(dc_failed_at_connect)
    http_blocking = not any(dc_ok)
    web_failure: str | None = None
    legacy_web = tv < (0, 3)
    web_eps: list[Endpoint] = []
    for scheme in ("https", "http") if legacy_web else ("https",):
        mine = [x for x in web_reqs if x.url.startswith(f"{scheme}://")]
        if scheme == "http":
            # the http fetch's chain continues on https; its hops are recorded with it
            mine = [x for x in web_reqs if x.scheme == "http"] + [
                x for x in web_reqs if x.scheme == "https" and x.failure is None
            ]
        term = _terminal(mine)
        if term is None:
            continue
        fail = term.failure
        if fail is None and legacy_web and term.code is not None:
            # the legacy status and title checks need the answer (abridged files lack it)
            if term.code >= 400:
                fail = "http_request_failed"
            elif "<title>Telegram Web</title>" not in term.body:
                fail = "telegram_missing_title_error"
        if fail is not None and web_failure is None:
            web_failure = fail
        outcome = _fetch_outcome(ev, term) if term.failure else "ok"
        web_eps.append(
            Endpoint("telegram", f"{scheme}://{TELEGRAM_WEB_HOST}/", scheme, outcome, fail)
        )
    endpoints += web_eps
    keys: dict[str, Any] = {
        "telegram_tcp_blocking": tcp_blocking,
        "telegram_http_blocking": http_blocking,
        "telegram_web_failure": web_failure,
        "telegram_web_status": "blocked" if web_failure else "ok",
    }
    if not ev.requests and not ev.connects:  # nothing measured: no key can be recomputed
        keys = dict.fromkeys(keys)
        tcp_blocking = http_blocking = False
    probe_anomaly: bool | None = web_failure is not None or tcp_blocking or http_blocking
    if not ev.requests and not ev.connects:
        probe_anomaly = None
    # fastpath (ooni/backend score_measurement_telegram): share of failed connects + share of
    # failed access-point requests (0.5 each when none) + 1 if the web check failed.
    explorer_failure = ev.urlless_requests > 0
    ok_c = sum(1 for c in ev.connects if c.success)
    bad_c = len(ev.connects) - ok_c
    score = bad_c / (ok_c + bad_c) if ok_c + bad_c else 0.5
    dc_reqs = [x for x in ev.requests if x.host != TELEGRAM_WEB_HOST]
    bad_h = sum(1 for x in dc_reqs if x.failure is not None)
    score += bad_h / len(dc_reqs) if dc_reqs else 0.5
    if keys["telegram_web_status"] == "blocked":
        score += 1.0
    dc_eps = endpoints[: len(dcs)]
    return _AppResult(
        gen,
        endpoints,
        keys,
        probe_anomaly,
        score,
        explorer_failure,
        {k: "events" for k in keys},
        web_eps + (dc_eps if http_blocking else []),
    )


def _whatsapp(m: Mapping[str, Any], tk: Mapping[str, Any], ev: _Events) -> _AppResult:
    tv = _version(r.s(m.get("test_version")))
    gen = "legacy" if tv < (0, 8) else ("go-0.9" if tv < (0, 10) else "go-0.10")
    hosts = sorted(
        {q.hostname for q in ev.queries if _WA_ENDPOINT.match(q.hostname)},
        key=lambda h: (len(h), h),
    )
    endpoints: list[Endpoint] = []
    failed_ports: Counter[str] = Counter()
    any_ok = False
    for host in hosts:
        addrs = ev.addrs(host)
        for port in (443, 5222):
            name = f"{host}:{port}"
            if not addrs:
                dns_fail = ev.dns_failure(host) or "dns_no_answer"
                endpoints.append(
                    Endpoint("whatsapp", name, "tcp", _dns_outcome(dns_fail), dns_fail)
                )
                failed_ports[host] += 1
                continue
            conns = ev.connects_to(addrs, port)
            if any(c.success for c in conns):
                any_ok = True
                out = "dns/bogon" if any(r.is_bogon(a) for a in addrs) else "ok"
                endpoints.append(Endpoint("whatsapp", name, "tcp", out, None))
            elif conns:
                fail = conns[-1].failure
                out = (
                    "dns/bogon"
                    if any(r.is_bogon(a) for a in addrs)
                    else _TCP.get(fail or "", "tcp/timeout")
                )
                endpoints.append(Endpoint("whatsapp", name, "tcp", out, fail))
                failed_ports[host] += 1
            else:
                endpoints.append(Endpoint("whatsapp", name, "tcp", "unknown", None))
    blocked_hosts = [h for h in hosts if failed_ports[h] >= 2]

    def fetch(url: str, fail_on_status: bool, kind: str) -> tuple[Endpoint | None, str | None]:
        mine = [x for x in ev.requests if x.url == url]
        term = _terminal(mine)
        if term is None:
            return None, None
        fail = term.failure
        if fail is None and fail_on_status and term.code is not None and term.code >= 400:
            fail = "http_request_failed"
        out = _fetch_outcome(ev, term) if term.failure else "ok"
        if out == "ok" and any(r.is_bogon(a) for a in ev.addrs(term.host)):
            out = "dns/bogon"
        return Endpoint("whatsapp", url, kind, out, fail), fail

    reg_ep, reg_fail = fetch(WA_REGISTRATION, tv < (0, 10), "https")
    web_ep, https_fail = fetch(WA_WEB_HTTPS, False, "https")
    web_fail = https_fail
    http_ep: Endpoint | None = None
    if tv < (0, 10):
        http_reqs = [x for x in ev.requests if x.url == WA_WEB_HTTP]
        term = _terminal(http_reqs) if http_reqs else None
        if term is not None:
            hfail = term.failure
            if hfail is None and term.code != 302:
                hfail = "http_unexpected_status_code"
            elif hfail is None and term.location != WA_WEB_HTTPS:
                hfail = "http_unexpected_redirect_url"
            out = _fetch_outcome(ev, term) if term.failure else "ok"
            http_ep = Endpoint("whatsapp", WA_WEB_HTTP, "http", out, hfail)
            if web_fail is None:
                web_fail = hfail
    endpoints += [e for e in (reg_ep, web_ep, http_ep) if e is not None]
    keys: dict[str, Any] = {
        "whatsapp_endpoints_status": "ok" if any_ok else "blocked",
        "whatsapp_endpoints_blocked": blocked_hosts,
        "registration_server_status": "ok"
        if reg_ep is not None and reg_fail is None
        else "blocked",
        "registration_server_failure": reg_fail if reg_ep is not None else "unknown_failure",
        "whatsapp_web_status": "ok" if web_ep is not None and web_fail is None else "blocked",
        "whatsapp_web_failure": web_fail if web_ep is not None else "unknown_failure",
    }
    probe_anomaly = "blocked" in (
        keys["whatsapp_endpoints_status"],
        keys["registration_server_status"],
        keys["whatsapp_web_status"],
    )
    # fastpath (score_measurement_whatsapp): the web app and the registration server by their
    # request's failure alone, then the connects; no request or no connect: a failed test.
    explorer_failure = (
        any((x.failure or "").startswith("unknown_failure") for x in ev.requests) or not ev.requests
    )
    score: float | None = 0.0
    web_ok = next((x.failure is None for x in reversed(ev.requests) if x.url == WA_WEB_HTTPS), None)
    reg_ok = next(
        (x.failure is None for x in reversed(ev.requests) if x.url == WA_REGISTRATION), None
    )
    if not ev.requests or web_ok is None or reg_ok is None:
        explorer_failure, score = True, 0.0
    elif not web_ok or not reg_ok:
        score = 1.0
    elif not ev.connects:
        explorer_failure = True
    elif not any(c.success for c in ev.connects):
        score = 1.0
    service = [e for e in endpoints if e.kind != "tcp"]
    if not any_ok:
        service += [e for e in endpoints if e.kind == "tcp"]
    return _AppResult(
        gen,
        endpoints,
        keys,
        probe_anomaly,
        score,
        explorer_failure,
        {k: "events" for k in keys},
        service,
    )


def _signal(m: Mapping[str, Any], tk: Mapping[str, Any], ev: _Events) -> _AppResult:
    tv_text = r.s(m.get("test_version")) or ""
    tv = _version(tv_text)
    if tv < (0, 2, 3):
        gen = "go-0.2.0-0.2.2 (6 backends)"
    elif tv == (0, 2, 3):
        gen = "go-0.2.3 (5 backends)"
    elif tv == (0, 2, 4):
        gen = "go-0.2.4 (12 backends)"
    else:
        gen = "go-0.2.5+ (4 backends)"
    start = r.s(m.get("measurement_start_time")) or ""
    by_host: dict[str, list[_Request]] = {}
    for x in ev.requests:
        # a URL whose host cannot be parsed still names a backend that was tried
        https = x.scheme == "https" or x.url[:8].lower() == "https://"
        if https and x.host != SIGNAL_DNS_ONLY:
            by_host.setdefault(x.host or x.url[:256], []).append(x)
    endpoints: list[Endpoint] = []
    failure: str | None = None
    for host, reqs in by_host.items():
        term = _terminal(reqs)
        if term is None:
            continue
        out = _signal_known_breakage(term, _fetch_outcome(ev, term), tv, start)
        name = f"https://{host}/" if term.host else host
        endpoints.append(Endpoint("signal", name, "https", out, term.failure))
        if term.failure is not None:
            failure = term.failure  # probe-cli keeps the last failure it saw
    uptime = [q for q in ev.queries if q.hostname == SIGNAL_DNS_ONLY]
    if uptime:
        fail = ev.dns_failure(SIGNAL_DNS_ONLY)
        endpoints.append(
            Endpoint("signal", SIGNAL_DNS_ONLY, "dns", _dns_outcome(fail) if fail else "ok", fail)
        )
    keys: dict[str, Any] = {
        "signal_backend_status": ("blocked" if failure else "ok") if by_host else None,
        "signal_backend_failure": failure,
    }
    probe_anomaly = keys["signal_backend_status"] == "blocked"
    # fastpath (score_signal): measurements of known-broken versions or periods are failures.
    explorer_failure = (
        r.failure(tk.get("failed_operation")) is not None
        or r.failure(tk.get("failure")) is not None
    )
    engine = r.s(r.d(m.get("annotations")).get("engine_version"))
    if not start:
        explorer_failure = True
    elif tv_text == "0.2.4":
        explorer_failure = True  # ooni/probe#2636
    elif tv <= (0, 2, 3) and start >= "2023-11-07":
        explorer_failure = True  # ooni/probe#2627: endpoints retired
    elif tv < (0, 2, 2) and start >= "2022-10-19":
        explorer_failure = True  # ooni/probe#2344: Signal's new root CA
    elif _version(engine or "0.0.0") < (3, 17, 2) and start >= "2023-05-02":
        explorer_failure = True  # ooni/backend#679
    if keys["signal_backend_status"] is None:
        explorer_failure = True
    score = 1.0 if keys["signal_backend_status"] == "blocked" else 0.0
    return _AppResult(
        gen,
        endpoints,
        keys,
        probe_anomaly,
        score,
        explorer_failure,
        {k: "events" for k in keys},
        [e for e in endpoints if e.kind != "dns"],
    )


# Signal backends that Signal retired, from the day OONI's pipeline stopped trusting their
# failures (ooni/backend#679: api.directory.signal.org, probe-cli dropped it on 2023-05-10;
# ooni/probe#2627: textsecure-service.whispersystems.org, replaced on 2023-11-21).
SIGNAL_RETIRED = {
    "api.directory.signal.org": "2023-05-02",
    "textsecure-service.whispersystems.org": "2023-11-07",
}
# Signal's new root CA (ooni/probe#2344): probes before 0.2.2 pinned only the old one.
SIGNAL_NEW_CA_DAY = "2022-10-19"


def _signal_known_breakage(req: _Request, outcome: str, tv: tuple[int, ...], start: str) -> str:
    """``down`` for a backend Signal retired, ``unknown`` for a certificate the probe's pinned
    CA could not know: neither is a network interfering."""
    if outcome in NOT_BLOCKED:
        return outcome
    retired = SIGNAL_RETIRED.get(req.host)
    if retired is not None and start >= retired:
        return "down"
    if (
        tv < (0, 2, 2)
        and start >= SIGNAL_NEW_CA_DAY
        and req.failure in ("ssl_unknown_authority", "ssl_invalid_certificate")
    ):
        return "unknown"
    return outcome


def _facebook(m: Mapping[str, Any], tk: Mapping[str, Any], ev: _Events) -> _AppResult:
    tv = _version(r.s(m.get("test_version")))
    software = r.s(m.get("software_name")) or ""
    if software == "ooniprobe" and _version(r.s(m.get("software_version"))) < (3,):
        gen = "ooniprobe-legacy"
    elif tv < (0, 1) or tv >= (0, 3):
        gen = "mk" if tv < (0, 1) else "ooniprobe-legacy"
    else:
        gen = "go"
    # probe-cli: an endpoint is reachable when one of its addresses connects; the legacy probes
    # (ts-019): "if any of the TCP connections fail ... the endpoint is blocked".
    any_connect = gen == "go"
    keys: dict[str, Any] = {}
    sources: dict[str, str] = {}
    endpoints: list[Endpoint] = []
    dns_blocking = tcp_blocking = False
    for name, host in FACEBOOK_SERVICES:
        dkey, rkey = f"facebook_{name}_dns_consistent", f"facebook_{name}_reachable"
        qs = [q for q in ev.queries if q.hostname == host]
        addrs = ev.addrs(host)
        asns = [a for q in qs for a in q.asns]
        consistent: bool | None
        dns_out = "ok"
        dns_fail: str | None = None
        if not qs:
            consistent = None
        elif not addrs:
            consistent = False
            dns_fail = ev.dns_failure(host) or "dns_no_answer"
            dns_out = _dns_outcome(dns_fail)
        elif any(r.is_bogon(a) for a in addrs):
            consistent, dns_out = False, "dns/bogon"
        elif asns and (gen == "go" or all(a is not None for a in asns)):
            # probe-cli writes no "asn" for an address its database does not place: ASN 0
            consistent = all(a == FACEBOOK_ASN for a in asns)
            dns_out = "ok" if consistent else "dns/bogus"
        else:
            consistent = None  # no ASN in the events (legacy probes): OONI's key stands
        if consistent is None and qs:
            probe_value = tk.get(dkey)
            consistent = probe_value if isinstance(probe_value, bool) else None
            sources[dkey] = "probe"
            if consistent is False:
                # the legacy probe's netblock list is not in the measurement: unconfirmed
                dns_out = "unknown"
        else:
            sources[dkey] = "events"
        keys[dkey] = consistent
        if consistent is False:
            dns_blocking = True
        reachable: bool | None = None
        tcp_out, tcp_fail = "ok", None
        if name != "stun" and consistent is True:
            conns = ev.connects_to(addrs, 443)
            if conns:
                oks = [c.success for c in conns]
                reachable = any(oks) if any_connect else all(oks)
                if not reachable:
                    bad = next(c for c in reversed(conns) if not c.success)
                    tcp_fail = bad.failure
                    tcp_out = _TCP.get(tcp_fail or "", "tcp/timeout")
        keys[rkey] = reachable
        # reachability is measured only where the DNS was consistent: it rests on that key
        sources[rkey] = sources[dkey]
        if reachable is False:
            tcp_blocking = True
        if not qs:
            outcome, fail = "unknown", None
        elif dns_out != "ok":
            outcome, fail = dns_out, dns_fail
        elif name == "stun":
            outcome, fail = "ok", None
        elif reachable is None:
            outcome, fail = "unknown", None
        else:
            outcome, fail = tcp_out, tcp_fail
        endpoints.append(
            Endpoint("facebook_messenger", host, "dns" if name == "stun" else "tcp", outcome, fail)
        )
    keys["facebook_dns_blocking"] = dns_blocking
    keys["facebook_tcp_blocking"] = tcp_blocking
    read = "probe" if "probe" in sources.values() else "events"
    sources["facebook_dns_blocking"] = sources["facebook_tcp_blocking"] = read
    probe_anomaly = dns_blocking or tcp_blocking
    # fastpath (score_measurement_facebook_messenger): 0.5 per inconsistent/unreachable key and
    # per blocking key; its workaround zeroes one all-true combination (kept as written).
    trues = (
        "facebook_b_api_dns_consistent",
        "facebook_b_api_reachable",
        "facebook_b_graph_dns_consistent",
        "facebook_b_graph_reachable",
        "facebook_dns_blocking",
        "facebook_edge_dns_consistent",
        "facebook_edge_reachable",
        "facebook_star_dns_consistent",
        "facebook_star_reachable",
        "facebook_stun_dns_consistent",
    )
    score = 0.0
    if not (all(keys.get(k) is True for k in trues) and keys["facebook_tcp_blocking"] is False):
        for k, v in keys.items():
            if k.endswith(("_dns_consistent", "_reachable")) and k != "facebook_stun_reachable":
                score += 0.5 if v is False else 0.0
        score += 0.5 * sum(1 for k in ("facebook_tcp_blocking", "facebook_dns_blocking") if keys[k])
    explorer_failure = not ev.queries
    return _AppResult(
        gen, endpoints, keys, probe_anomaly, score, explorer_failure, sources, endpoints
    )


_RULES = {
    "telegram": _telegram,
    "whatsapp": _whatsapp,
    "signal": _signal,
    "facebook_messenger": _facebook,
}


# --- the measurement's verdict ---------------------------------------------------------------


def _dominant(failed: list[Endpoint]) -> Endpoint:
    """The failure that speaks for the app: the commonest outcome, the earliest stage on ties."""
    counts = Counter(e.outcome for e in failed)
    return min(
        failed,
        key=lambda e: (-counts[e.outcome], _STAGE_ORDER.get(e.outcome.split("/", 1)[0], 9)),
    )


def analyze_im(m: Mapping[str, Any], envelope: Mapping[str, Any]) -> Verdict:
    """The verdict for one OONI messaging-app measurement (envelope: the engine's common keys)."""
    test = str(envelope.get("test_name"))
    app = APP_OF_TEST[test]
    tk = r.d(m.get("test_keys"))
    ev = _parse(tk)
    res = _RULES[test](m, tk, ev)
    explorer_anomaly = (res.explorer_score or 0.0) > 0.5
    blocking: bool | None = None if res.explorer_failure else explorer_anomaly
    failed = [e for e in res.service if e.failed]
    evidence: dict[str, Any] = {
        "app": app,
        "generation": res.generation,
        "endpoints": [e.to_dict() for e in res.endpoints],
        "ooni": dict(res.keys),
        "ooni_key_sources": res.key_sources,
        "ooni_anomaly": {
            "probe": res.probe_anomaly,
            "explorer": explorer_anomaly,
            "explorer_failure": res.explorer_failure,
            "explorer_score": None if res.explorer_score is None else round(res.explorer_score, 3),
        },
        "ooni_engine": f"{test}-{res.generation}",
        "ooni_rule": "fastpath anomaly: blocking_general > 0.5 on the recomputed keys",
    }
    if not res.endpoints:
        outcome, confidence = "unknown", 0.0
        evidence["reason"] = "no endpoint was measured (no events in test_keys)"
    elif failed:
        top = _dominant(failed)
        outcome, confidence = top.outcome, 0.7 if top.outcome.startswith(("tcp/", "dns/")) else 0.6
        evidence["decided_by"] = top.endpoint
    elif all(e.outcome == "unknown" for e in res.endpoints) or any(
        e.outcome == "unknown" for e in res.service
    ):
        # an endpoint the app needs could not be judged: neither blocked nor reachable
        outcome, confidence = "unknown", 0.0
    else:
        outcome, confidence = "ok", 0.8
    if not pair_allowed(outcome, blocking, test):
        case = _differs_case(outcome, blocking, res)
        evidence["ooni_differs"] = {
            "case": case,
            "reason": OONI_DIFFERS[case],
            "ooni_blocking": blocking,
            "ooni_rule": evidence["ooni_rule"],
        }
    return Verdict(
        **envelope,
        blocking=blocking,
        accessible=None if blocking is None else not blocking,
        dns_consistency=None,
        body_length_match=None,
        body_proportion=None,
        status_code_match=None,
        headers_match=None,
        title_match=None,
        outcome=outcome,
        confidence=confidence,
        blocked=outcome.split(":", 1)[0] not in NOT_BLOCKED,
        evidence=evidence,
    )


def _differs_case(outcome: str, blocking: bool | None, res: _AppResult) -> str:
    if blocking is None:
        return "ooni-null"
    if blocking is True and not res.endpoints:
        return "im-empty"
    if blocking is True and "probe" in res.key_sources.values():
        return "im-unverifiable"
    if blocking is True:
        # OONI flags an answer it did not expect, a probe-side key, or partial failures
        return "im-not-network"
    return "im-threshold"
