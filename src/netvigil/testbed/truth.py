"""Ground truth: what the censor of a profile does to each URL, in the verdict vocabulary.

Every detector netvigil has is scored against this. The outcome is written ``stage/outcome``
(as Censored Planet does) or ``ok`` / ``down``:

    dns/nxdomain  dns/bogon  dns/bogus  dns/blockpage  dns/timeout  dns/injected
    tcp/timeout   tcp/reset  tcp/unreachable
    tls/reset     tls/timeout  tls/interception
    http/blockpage  http/reset  http/throttled
    ok  down
    network/offline   (a shutdown phase: the subscriber reaches nothing; no site is "blocked")

The walk follows a URL the way a browser would: resolve with the ISP's resolver, connect to the
first address, TLS with the SNI of the URL, HTTP with its Host, then the site's own redirects.
The first stage at which a rule applies decides the outcome.

A profile with phases has one truth per phase: ``ground_truth(plan, at=seconds)`` is the truth
of the phase in force that many seconds after the testbed's start, ``phase_truth(plan)`` all of
them. A row names its phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from netvigil.testbed.plan import Plan, RulePlan

DNS_OUTCOMES = {
    "dns-nxdomain": "dns/nxdomain",
    "dns-bogon": "dns/bogon",
    "dns-bogus": "dns/bogus",
    "dns-blockpage": "dns/blockpage",
    "dns-timeout": "dns/timeout",
    "dns-inject": "dns/injected",
}
TLS_OUTCOMES = {
    "tls-reset": "tls/reset",
    "tls-timeout": "tls/timeout",
    "tls-intercept": "tls/interception",
}
HTTP_OUTCOMES = {
    "http-blockpage": "http/blockpage",
    "http-reset": "http/reset",
    "http-redirect": "http/blockpage",
}
REJECT_OUTCOMES = {
    "tcp-reset": "tcp/reset",
    "icmp-admin-prohibited": "tcp/unreachable",
    "icmp-host-unreachable": "tcp/unreachable",
}
MAX_REDIRECTS = 10
OFFLINE = "network/offline"


@dataclass(frozen=True)
class TruthRow:
    url: str
    domain: str
    outcome: str
    blocked: bool
    action: str  # the profile action responsible, or "" (none) / the site kind for honest cases
    rule: str  # the rule id, e.g. "rule3:tls-reset", or ""
    site_kind: str
    detail: str  # blockpage name, national root id, reject type… for the evidence
    redirects: tuple[str, ...] = ()
    phase: str = ""  # the phase whose censor this is ("" for a profile without phases)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["redirects"] = list(self.redirects)
        if not self.phase:
            del data["phase"]  # the same rows as before phases existed
        return data


def _dns_rule(plan: Plan, name: str) -> RulePlan | None:
    return plan.first_rule(tuple(DNS_OUTCOMES), name)


def _http_rule(plan: Plan, host: str, target: str) -> RulePlan | None:
    for rule in plan.rules:
        if rule.action not in HTTP_OUTCOMES:
            continue
        if rule.matcher == "host" and rule.matches_name(host):
            return rule
        if rule.matcher == "keyword" and any(v in target or v in host for v in rule.values):
            return rule
    return None


def _blocked(row_outcome: str) -> bool:
    # network/offline is no blocking of a site: the whole network is off
    return row_outcome not in ("ok", "down", OFFLINE)


def url_truth(plan: Plan, url: str) -> TruthRow:
    """The truth of one URL under `plan`'s censor (for a phased plan: ``plan.at(…)`` first)."""
    chain: list[str] = []
    current = url
    first_domain = (urlsplit(url).hostname or "").lower()
    first_site = plan.site(first_domain)
    kind = first_site.kind if first_site else "unknown"
    if plan.shutdown:
        # Nothing answers, not even the resolver: the network is off, no site is singled out.
        return TruthRow(
            url,
            first_domain,
            OFFLINE,
            _blocked(OFFLINE),
            "shutdown",
            plan.phase,
            kind,
            "",
            (),
            plan.phase,
        )
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        host = (parts.hostname or "").lower()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        site = plan.site(host)

        def row(outcome: str, action: str = "", rule: str = "", detail: str = "") -> TruthRow:
            return TruthRow(
                url,
                first_domain,
                outcome,
                _blocked(outcome),
                action,
                rule,
                kind,
                detail,
                tuple(chain),
                plan.phase,
            )

        dns = _dns_rule(plan, host)
        if dns is not None:
            detail = str(dns.params.get("answer", dns.params.get("blockpage", "")))
            return row(DNS_OUTCOMES[dns.action], dns.action, dns.id, detail)
        if site is None:
            # Both resolvers answer NXDOMAIN for names no site serves: not censorship.
            return row("down", "", "", "no such site")
        if site.kind == "down":
            return row("down", "down")
        address = site.isp_answer[0]
        ip_rule = plan.ip_rule(("ip-drop", "ip-reject"), address)
        if ip_rule is not None:
            if ip_rule.action == "ip-drop":
                return row("tcp/timeout", ip_rule.action, ip_rule.id)
            how = str(ip_rule.params.get("reject_with", "tcp-reset"))
            return row(REJECT_OUTCOMES[how], ip_rule.action, ip_rule.id, how)
        if parts.scheme == "https":
            tls = plan.first_rule(tuple(TLS_OUTCOMES), host)
            if tls is not None:
                return row(
                    TLS_OUTCOMES[tls.action], tls.action, tls.id, str(tls.params.get("root", ""))
                )
        else:
            http = _http_rule(plan, host, target)
            if http is not None:
                detail = str(http.params.get("blockpage", http.params.get("location", "")))
                return row(HTTP_OUTCOMES[http.action], http.action, http.id, detail)
        throttle = plan.ip_rule(("throttle",), address)
        if throttle is not None:
            return row(
                "http/throttled", throttle.action, throttle.id, str(throttle.params.get("rate", ""))
            )
        # No censorship at this hop: follow the site's own redirects, as a browser would.
        nxt = ""
        if site.redirect_to:
            nxt = site.redirect_to
        elif site.https_redirect and parts.scheme == "http":
            nxt = f"https://{host}{target}"
        elif parts.path == "/old":
            nxt = f"{parts.scheme}://{host}/"
        if not nxt:
            return row("ok", site.kind if site.kind != "normal" else "")
        chain.append(nxt)
        current = nxt
    return TruthRow(
        url,
        first_domain,
        "ok",
        False,
        "redirect-loop",
        "",
        kind,
        "too many redirects",
        tuple(chain),
        plan.phase,
    )


def ground_truth(plan: Plan, at: float | None = None) -> list[TruthRow]:
    """Every URL's truth; for a profile with phases, under the phase in force `at` seconds
    after the testbed's start (None: the first phase)."""
    censor = plan.at(at)
    return [url_truth(censor, url) for site in censor.sites for url in site.urls]


def phase_truth(plan: Plan) -> list[tuple[str, float, list[TruthRow]]]:
    """(phase name, start offset in seconds, truth) for every phase; one ("", 0, truth) entry
    for a profile without phases."""
    if not plan.phases:
        return [("", 0.0, ground_truth(plan))]
    return [(p.name, p.start_seconds, ground_truth(plan, at=p.start_seconds)) for p in plan.phases]


def truth_at(plan: Plan, url: str, offset: float) -> TruthRow:
    """The truth of `url` for a measurement made `offset` seconds after the testbed's start."""
    return url_truth(plan.at(offset), url)


# ------------------------------------------------------------------------------------------------
# Messaging apps (profile key messaging_apps): what the censor does to each endpoint, and the
# OONI keys a faithful probe must then write.


@dataclass(frozen=True)
class EndpointTruth:
    """One endpoint of a messaging app: how the plan treats it, and what the probe must see.

    ``outcome`` is in the verdict vocabulary above (``ok``, ``down`` for an app the testbed
    does not serve); ``failure`` / ``failed_operation`` are what OONI's urlgetter records
    (None when the target succeeds: a blockpage served over plain HTTP is a success to OONI,
    as is a TCP connect to a wrong address that accepts)."""

    app: str
    endpoint: str  # host:port (host for a DNS lookup), with the real name or IP literal
    target: str  # OONI's input: tcpconnect://…, dnslookup://…, or the URL
    kind: str
    address: str  # where the testbed serves it ("" when it is not served)
    outcome: str
    blocked: bool
    failure: str | None
    failed_operation: str | None
    rule: str
    answer: str = ""  # the address the probe's resolver answers ("" when it fails)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class AppTruth:
    app: str
    test_name: str
    endpoints: tuple[EndpointTruth, ...]
    ooni_keys: dict[str, object]  # OONI's per-app keys a faithful probe writes
    anomaly: bool  # OONI's summary: is any of the app's blocking keys set

    def to_dict(self) -> dict[str, object]:
        return {
            "app": self.app,
            "test_name": self.test_name,
            "anomaly": self.anomaly,
            "ooni_keys": self.ooni_keys,
            "endpoints": [e.to_dict() for e in self.endpoints],
        }


_REJECT_FAILURES = {
    "tcp-reset": "connection_refused",
    "icmp-admin-prohibited": "host_unreachable",
    "icmp-host-unreachable": "host_unreachable",
}
_TLS_FAILURES = {
    "tls-reset": "connection_reset",
    "tls-timeout": "generic_timeout_error",
    # The probe does not trust the national root. The forged leaf copies the real leaf's
    # names and validity (shifted by hours), so name and dates pass and no path by issuer name
    # and signature reaches a trusted root: ssl_unknown_authority, from Go's verifier (OONI's
    # probes) and from netvigil.net.tls alike (the forged leaf's missing authority key
    # identifier is no defect to either).
    "tls-intercept": "ssl_unknown_authority",
}


def _wrong_address(plan: Plan, address: str, port: int, kind: str) -> tuple[str | None, str | None]:
    """(failure, failed_operation) of a target sent to a wrong address by a DNS rule, as the
    testbed behaves there (see topology.py and sites.py)."""
    import ipaddress

    from netvigil.testbed.plan import ISP_BLOCKPAGE, SERVICE_ADDRS

    ip = ipaddress.ip_address(address)
    if ip.is_loopback or ip.is_unspecified:
        return "connection_refused", "connect"  # nothing listens in the client's namespace
    if address == ISP_BLOCKPAGE:
        if port not in (80, 443):
            return "connection_refused", "connect"
        if kind == "https":
            # the ISP's self-signed certificate names blocked.isp.invalid: the name is checked
            # first (as Go's verifier does it too)
            return "ssl_invalid_hostname", "tls_handshake"
        return None, None  # TCP accepted; plain HTTP gets the blockpage
    site = plan.site_at(address)
    if address in SERVICE_ADDRS["internet"]:
        # `internet` refuses TCP to addresses no site owns (topology.internet_ruleset)
        return "connection_refused", "connect"
    if site is None:
        return "generic_timeout_error", "connect"  # no host there: nothing ever answers
    listening = {80, 443} | {p for s in plan.sites for p in s.extra_ports}
    if port not in listening or site.kind == "down":
        return "connection_refused", "connect"
    if kind == "https":
        return "ssl_invalid_hostname", "tls_handshake"  # another site's certificate
    return None, None


def _endpoint_truth(plan: Plan, app: str, endpoint: Any) -> EndpointTruth:
    from netvigil.testbed.messaging import UNSERVED

    site = plan.site(endpoint.host)
    served = site is not None and site.im_app != "" and app in plan.messaging_apps
    address = site.addresses[0] if served and site is not None else ""

    def row(
        outcome: str,
        failure: str | None,
        operation: str | None,
        rule: str = "",
        answer: str = "",
    ) -> EndpointTruth:
        return EndpointTruth(
            app,
            endpoint.name,
            endpoint.target,
            endpoint.kind,
            address,
            outcome,
            _blocked(outcome),
            failure,
            operation,
            rule,
            answer,
        )

    if plan.shutdown:
        # A shutdown phase: the subscriber reaches nothing, the resolver included. What the
        # probe records is a timeout at its first step; no endpoint is singled out.
        if endpoint.is_ip_literal:
            return row(OFFLINE, "generic_timeout_error", "connect")
        return row(OFFLINE, "generic_timeout_error", "resolve")
    if not served:
        if endpoint.is_ip_literal:
            failure, operation = _wrong_address(plan, UNSERVED, endpoint.port, endpoint.kind)
            return row("down", failure, operation)
        return row("down", "dns_nxdomain_error", "resolve")
    answer = address
    if not endpoint.is_ip_literal:
        dns = _dns_rule(plan, endpoint.host)
        if dns is not None:
            outcome = DNS_OUTCOMES[dns.action]
            if dns.action == "dns-nxdomain":
                return row(outcome, "dns_nxdomain_error", "resolve", dns.id)
            if dns.action == "dns-timeout":
                return row(outcome, "generic_timeout_error", "resolve", dns.id)
            wrong = _dns_answer(dns)
            if endpoint.kind == "dns":
                return row(outcome, None, None, dns.id, wrong)
            failure, operation = _wrong_address(plan, wrong, endpoint.port, endpoint.kind)
            return row(outcome, failure, operation, dns.id, wrong)
    if endpoint.kind == "dns":
        return row("ok", None, None, answer=answer)
    ip_rule = plan.ip_rule(("ip-drop", "ip-reject"), address)
    if ip_rule is not None:
        if ip_rule.action == "ip-drop":
            return row("tcp/timeout", "generic_timeout_error", "connect", ip_rule.id, answer)
        how = str(ip_rule.params.get("reject_with", "tcp-reset"))
        return row(REJECT_OUTCOMES[how], _REJECT_FAILURES[how], "connect", ip_rule.id, answer)
    throttle = plan.ip_rule(("throttle",), address)
    if endpoint.kind == "https":
        tls = plan.first_rule(tuple(TLS_OUTCOMES), endpoint.host)
        if tls is not None:
            failure = _TLS_FAILURES[tls.action]
            return row(TLS_OUTCOMES[tls.action], failure, "tls_handshake", tls.id, answer)
    elif endpoint.kind == "http":
        # the middlebox reads plain HTTP on 80 and on 443 (Telegram's data centres)
        http = _http_rule(plan, endpoint.host, urlsplit(endpoint.url).path or "/")
        if http is not None:
            if http.action == "http-reset":
                return row("http/reset", "connection_reset", "http_round_trip", http.id, answer)
            return row(HTTP_OUTCOMES[http.action], None, None, http.id, answer)
    if throttle is not None and endpoint.kind != "tcp":
        return row("http/throttled", None, None, throttle.id, answer)
    return row("ok", None, None, answer=answer)


def _dns_answer(rule: RulePlan) -> str:
    from netvigil.testbed.plan import (
        BOGON_DEFAULT,
        BOGUS_DEFAULT,
        INJECT_DEFAULT,
        ISP_BLOCKPAGE,
    )

    defaults = {
        "dns-bogon": BOGON_DEFAULT,
        "dns-bogus": BOGUS_DEFAULT,
        "dns-inject": INJECT_DEFAULT,
        "dns-blockpage": ISP_BLOCKPAGE,
    }
    return str(rule.params.get("answer", defaults[rule.action]))


def app_truth(plan: Plan, app: str, rules: Sequence[RulePlan] | None = None) -> AppTruth:
    """What the censor of ``plan`` (or of ``rules``, a phase's rule set, on the plan's
    network) does to ``app``'s endpoints, and the OONI keys a faithful probe then writes."""
    from netvigil.experiments.facebook_messenger import facebook_keys
    from netvigil.experiments.im import TargetResult
    from netvigil.experiments.im_endpoints import load_app
    from netvigil.experiments.signal import signal_keys
    from netvigil.experiments.telegram import telegram_keys
    from netvigil.experiments.whatsapp import whatsapp_keys
    from netvigil.net.dns import DNSResult

    if rules is not None:
        plan = replace(plan, rules=tuple(rules))
    endpoints = load_app(app)
    rows = tuple(_endpoint_truth(plan, app, e) for e in endpoints.endpoints)
    results: list[TargetResult] = []
    for endpoint, truth in zip(endpoints.endpoints, rows, strict=True):
        result = TargetResult(endpoint, truth.failure, truth.failed_operation)
        if truth.answer:
            result.queries.append(
                DNSResult(
                    endpoint.host, "", "udp", "A", None, (truth.answer,), (), "NOERROR", (), 0, 0
                )
            )
        results.append(result)
    if app == "telegram":
        keys = telegram_keys(results)
        anomaly = bool(
            keys["telegram_tcp_blocking"]
            or keys["telegram_http_blocking"]
            or keys["telegram_web_failure"] is not None
        )
    elif app == "whatsapp":
        keys = whatsapp_keys(results)
        anomaly = "blocked" in (
            keys["registration_server_status"],
            keys["whatsapp_web_status"],
            keys["whatsapp_endpoints_status"],
        )
    elif app == "signal":
        keys = signal_keys(results)
        anomaly = keys["signal_backend_status"] == "blocked"
    else:
        from netvigil.experiments.im_endpoints import Overrides
        from netvigil.testbed.messaging import facebook_prefixes

        overrides = Overrides(asn_prefixes={app: facebook_prefixes(plan)})
        keys = facebook_keys(results, load_app(app, overrides))
        anomaly = bool(keys["facebook_dns_blocking"] or keys["facebook_tcp_blocking"])
    return AppTruth(app, endpoints.test_name, rows, keys, anomaly)


def messaging_truth(plan: Plan, rules: Sequence[RulePlan] | None = None) -> list[AppTruth]:
    """``app_truth`` for every app of the profile's ``messaging_apps``."""
    return [app_truth(plan, app, rules) for app in plan.messaging_apps]
