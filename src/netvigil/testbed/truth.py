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

from dataclasses import asdict, dataclass
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
