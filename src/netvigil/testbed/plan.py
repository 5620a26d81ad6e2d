"""The testbed plan: a profile resolved to concrete addresses, answers and rules.

The topology is fixed (a picture is in the README); only the sites and rules come from the
profile. Every address lies in 198.18.0.0/15 and no namespace has a route anywhere else.

    client ── access ── censor ── transit ── internet
    (probe)   (hop 1)   (hop 2:   (hop 3)    (sites, public resolver,
                         middlebox,            control helper, collector)
                         ISP resolver,
                         blockpage server)

The plan is written as JSON into the testbed's state folder; every agent (sites, resolvers,
middlebox) reads it from there, so the supervisor and the agents never disagree.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from netvigil.testbed.profile import (
    NationalRoot,
    Phase,
    Profile,
    Rule,
    Site,
    domain_matches,
    rate_bytes_per_second,
)

HOSTS = ("client", "access", "censor", "transit", "internet")


@dataclass(frozen=True)
class Link:
    left: str
    left_if: str
    left_addr: str
    right: str
    right_if: str
    right_addr: str
    prefix: int = 24


LINKS = (
    Link("client", "eth0", "198.18.1.2", "access", "down0", "198.18.1.1"),
    Link("access", "up0", "198.18.2.1", "censor", "down0", "198.18.2.2"),
    Link("censor", "up0", "198.18.3.1", "transit", "down0", "198.18.3.2"),
    Link("transit", "up0", "198.18.4.1", "internet", "eth0", "198.18.4.2"),
)

CLIENT_ADDR = "198.18.1.2"
# The interface of the censor that faces the subscribers; the middlebox acts on what enters here.
CENSOR_CLIENT_IF = "down0"
ISP_RESOLVER = "198.18.10.53"
ISP_BLOCKPAGE = "198.18.10.80"
PUBLIC_RESOLVER = "198.18.20.53"
CONTROL_HELPER = "198.18.20.10"
COLLECTOR = "198.18.20.20"
BOGUS_DEFAULT = "198.18.30.1"
INJECT_DEFAULT = "198.18.30.2"
BOGON_DEFAULT = "127.0.0.1"
# Where the supervisor keeps its state: a tmpfs private to the testbed's mount namespace.
STATE_DIR = "/run/netvigil-testbed"
# The testbed's one clock: the supervisor writes its start time (Unix seconds) here when the
# testbed is ready; every agent and tool reads the phase in force from it.
CLOCK_FILE = "clock.json"


def testbed_environment(
    state_dir: str = STATE_DIR, profile: str = "", country: str = ""
) -> dict[str, str]:
    """What a program run inside the testbed is told about it (``testbed run`` and ``exec``)."""
    return {
        "NETVIGIL_TESTBED": "1",
        "NETVIGIL_TESTBED_PROFILE": profile,
        "NETVIGIL_PROBE_CC": country or "ZZ",
        "NETVIGIL_TESTBED_STATE": state_dir,
        # /etc/resolv.conf inside the testbed is the ISP's resolver: name look-ups stay inside.
        "NETVIGIL_TESTBED_RESOLV": "1",
        "NETVIGIL_RESOLVER": ISP_RESOLVER,
        "NETVIGIL_PUBLIC_RESOLVER": PUBLIC_RESOLVER,
        "NETVIGIL_HELPER_URL": f"http://{CONTROL_HELPER}:{SERVICE_PORT}/",
        "NETVIGIL_COLLECTOR_URL": f"http://{COLLECTOR}:{SERVICE_PORT}/",
        # The probe's network check (netvigil.netstatus): services of `internet` that no site
        # rule touches, so only a shutdown (or a rule naming their addresses) silences them.
        "NETVIGIL_REFERENCE_URLS": ",".join(REFERENCE_URLS),
        "NETVIGIL_CA_BUNDLE": f"{state_dir}/pki/webpki-root.pem",
        # the messaging apps' endpoint map (testbed/messaging.py); the probe requires it here
        "NETVIGIL_IM_ENDPOINTS": f"{state_dir}/im-endpoints.toml",
    }


def command_environment(inherited: dict[str, str], testbed: dict[str, str]) -> dict[str, str]:
    """The environment of the user's command: the testbed's variables, and this netvigil first.

    `sudo` and fresh shells rarely have the virtualenv on PATH, yet the README's commands say
    ``netvigil …`` inside the testbed: the folder of the running interpreter (the venv's bin,
    where `netvigil` is installed next to it) goes first, so it is this installation that runs.
    """
    bin_dir = os.path.dirname(sys.executable)
    rest = [d for d in inherited.get("PATH", os.defpath).split(os.pathsep) if d and d != bin_dir]
    return {**inherited, **testbed, "PATH": os.pathsep.join([bin_dir, *rest])}


# The control helper and the collector listen here: the sites own ports 80 and 443 of every
# address of `internet` (they bind 0.0.0.0 so 500 sites cost one socket each way).
SERVICE_PORT = 8080
# The probe's reference targets (NETVIGIL_REFERENCE_URLS): the collector answers HTTP, the
# public resolver DNS; any answer counts.
REFERENCE_URLS = (f"http://{COLLECTOR}:{SERVICE_PORT}/", f"dns://{PUBLIC_RESOLVER}")
SITE_NET = ipaddress.IPv4Network("198.19.0.0/16")

# Addresses on each host's loopback (services), besides its link addresses.
SERVICE_ADDRS = {
    "censor": (ISP_RESOLVER, ISP_BLOCKPAGE),
    "internet": (PUBLIC_RESOLVER, CONTROL_HELPER, COLLECTOR, BOGUS_DEFAULT, INJECT_DEFAULT),
}

# Static routes: only 198.18.0.0/15 is ever routed, so nothing can leave the testbed.
ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "client": (("198.18.0.0/15", "198.18.1.1"),),
    "access": (("198.18.0.0/15", "198.18.2.2"),),
    "censor": (
        ("198.18.1.0/24", "198.18.2.1"),
        ("198.18.0.0/15", "198.18.3.2"),
    ),
    "transit": (
        ("198.18.1.0/24", "198.18.3.1"),
        ("198.18.2.0/24", "198.18.3.1"),
        ("198.18.10.0/24", "198.18.3.1"),
        ("198.18.0.0/15", "198.18.4.2"),
    ),
    "internet": (("198.18.0.0/15", "198.18.4.1"),),
}
ROUTERS = ("access", "censor", "transit")

SERVER_NAMES = (
    "nginx",
    "cloudflare",
    "Apache",
    "gws",
    "ECS (dcb/7F3B)",
    "openresty",
    "Microsoft-IIS/10.0",
)


@dataclass(frozen=True)
class SitePlan:
    domain: str
    kind: str
    title: str
    addresses: tuple[str, ...]
    isp_answer: tuple[str, ...]
    public_answer: tuple[str, ...]
    urls: tuple[str, ...]
    body_bytes: int
    delay_ms: int
    status: int
    https_redirect: bool
    redirect_to: str
    server_header: str
    serve_rate_bps: int = 0  # bytes/s the site sends its bodies at (0: at once)
    # A messaging-app endpoint (profile key messaging_apps): the app, the ports it is reached on
    # besides 80/443 (WhatsApp's 5222), and whether it speaks plain HTTP on 443 (Telegram's
    # data centres). Its `domain` is its real name, or its real IP literal.
    im_app: str = ""
    extra_ports: tuple[int, ...] = ()
    plain_on_443: bool = False


@dataclass(frozen=True)
class RulePlan:
    id: str
    action: str
    stage: str
    matcher: str
    values: tuple[str, ...]
    params: dict[str, Any]
    # For rules that act on addresses (ip-*, throttle): the site addresses they cover.
    ips: tuple[str, ...] = ()

    def matches_name(self, name: str) -> bool:
        return any(domain_matches(v, name) for v in self.values)

    @property
    def address_targets(self) -> tuple[str, ...]:
        """What an address rule covers in nftables: its CIDRs, or the addresses of its sites."""
        return self.values if self.matcher == "ip" else self.ips


@dataclass(frozen=True)
class RootPlan:
    id: str
    subject: dict[str, str]
    intermediate_subject: dict[str, str]
    root_key: str
    not_before: str
    not_after: str
    intermediate_validity_days: int
    validity_shift_hours: int
    leaf_rsa_exponent: int


@dataclass(frozen=True)
class PhasePlan:
    """A phase of the censor (see ``profile.Phase``): its rules apply on top of the plan's."""

    name: str
    start: str
    start_seconds: float
    description: str
    shutdown: bool
    rules: tuple[RulePlan, ...]


@dataclass(frozen=True)
class Plan:
    """The testbed's plan. ``rules`` are the rules in force: the profile's top-level rules,
    plus, in a plan returned by ``at``/``in_phase``, the phase's own (after them). ``phases``
    is empty for a profile without phases; ``phase`` names the phase a plan is the censor of
    ("" for the profile's plan itself) and ``shutdown`` says that phase cuts everything."""

    profile: str
    description: str
    isp_name: str
    country: str
    sites: tuple[SitePlan, ...]
    rules: tuple[RulePlan, ...]
    national_roots: tuple[RootPlan, ...]
    state_dir: str = ""
    phases: tuple[PhasePlan, ...] = ()
    phase: str = ""
    shutdown: bool = False
    messaging_apps: tuple[str, ...] = ()
    _by_domain: dict[str, SitePlan] = field(default_factory=dict, compare=False, repr=False)
    _by_addr: dict[str, SitePlan] = field(default_factory=dict, compare=False, repr=False)
    _in_phase: dict[str, Plan] = field(default_factory=dict, compare=False, repr=False)
    _clock: list[float] = field(default_factory=list, compare=False, repr=False)

    # -- time: which censor is in force ---------------------------------------------------
    def phase_index_at(self, offset: float) -> int:
        """The index of the phase in force `offset` seconds after the start (0 before it)."""
        current = 0
        for index, phase in enumerate(self.phases):
            if offset >= phase.start_seconds:
                current = index
        return current

    def phase_at(self, offset: float) -> PhasePlan | None:
        return self.phases[self.phase_index_at(offset)] if self.phases else None

    def next_phase(self, offset: float) -> PhasePlan | None:
        """The phase that starts next after `offset`, or None when the last one is in force."""
        return next((p for p in self.phases if p.start_seconds > offset), None)

    def in_phase(self, name: str) -> Plan:
        """The censor of phase `name`: top-level rules first, then the phase's (cached)."""
        cached = self._in_phase.get(name)
        if cached is not None:
            return cached
        phase = next((p for p in self.phases if p.name == name), None)
        if phase is None:
            raise KeyError(name)
        base = self.base_rules
        plan = replace(
            self,
            rules=base + phase.rules,
            phase=phase.name,
            shutdown=phase.shutdown,
            _by_domain={},
            _by_addr={},
            _in_phase=self._in_phase,
            _clock=self._clock,
        )
        self._in_phase[name] = plan
        return plan

    def at(self, offset: float | None) -> Plan:
        """The censor in force `offset` seconds after the testbed's start (None: this plan's
        own phase, or the first one). Without phases, the plan itself."""
        if not self.phases or (offset is None and self.phase):
            return self
        phase = self.phase_at(0.0 if offset is None else offset)
        assert phase is not None
        return self.in_phase(phase.name)

    @property
    def base_rules(self) -> tuple[RulePlan, ...]:
        """The rules in force in every phase (the profile's top-level [[rule]] tables)."""
        if not self.phase:
            return self.rules
        own = {r.id for p in self.phases if p.name == self.phase for r in p.rules}
        return tuple(r for r in self.rules if r.id not in own)

    @property
    def all_rules(self) -> tuple[RulePlan, ...]:
        """Every rule of every phase, once: what must be ready before the first phase starts
        (national roots, throttle classes)."""
        seen: dict[str, RulePlan] = {r.id: r for r in self.base_rules}
        for phase in self.phases:
            for rule in phase.rules:
                seen.setdefault(rule.id, rule)
        return tuple(seen.values())

    def started_at(self) -> float | None:
        """The testbed's start (Unix seconds) from the state folder's clock, once it is there."""
        if self._clock:
            return self._clock[0]
        if not self.state_dir:
            return None
        try:
            data = json.loads((Path(self.state_dir) / CLOCK_FILE).read_text(encoding="utf-8"))
            started = float(data["started_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._clock.append(started)
        return started

    def offset(self, when: float | None = None) -> float:
        """Seconds since the testbed's start at `when` (default: now); 0 before it is known."""
        started = self.started_at()
        if started is None:
            return 0.0
        return max(0.0, (time.time() if when is None else when) - started)

    def now(self) -> Plan:
        """The censor in force now, by the testbed's clock: what every agent consults."""
        if not self.phases:
            return self
        return self.at(self.offset())

    # -- look-ups used by the agents and by the ground truth -------------------------------
    def site(self, domain: str) -> SitePlan | None:
        if not self._by_domain:
            self._by_domain.update({s.domain: s for s in self.sites})
        return self._by_domain.get(domain.lower().rstrip("."))

    def site_at(self, address: str) -> SitePlan | None:
        if not self._by_addr:
            self._by_addr.update({a: s for s in self.sites for a in s.addresses})
        return self._by_addr.get(address)

    def rules_for(self, stage: str) -> list[RulePlan]:
        return [r for r in self.rules if r.stage == stage]

    def first_rule(self, actions: tuple[str, ...], name: str) -> RulePlan | None:
        """The first rule (in profile order) with one of `actions` whose names match `name`."""
        for rule in self.rules:
            if (
                rule.action in actions
                and rule.matcher in ("domain", "sni", "host")
                and rule.matches_name(name)
            ):
                return rule
        return None

    def ip_rule(self, actions: tuple[str, ...], address: str) -> RulePlan | None:
        for rule in self.rules:
            if rule.action in actions and address in rule.ips:
                return rule
        return None

    def root(self, root_id: str) -> RootPlan:
        for root in self.national_roots:
            if root.id == root_id:
                return root
        raise KeyError(root_id)

    @property
    def live_site_addresses(self) -> list[str]:
        """Addresses where a site answers: what the middlebox must be able to see into."""
        return [a for s in self.sites if s.kind != "down" for a in s.addresses]

    @property
    def pki_dir(self) -> Path:
        return Path(self.state_dir) / "pki"

    # -- (de)serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(replace(self, _in_phase={}, _clock=[]))
        for private in ("_by_domain", "_by_addr", "_in_phase", "_clock"):
            data.pop(private, None)
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        return cls(
            profile=data["profile"],
            description=data["description"],
            isp_name=data["isp_name"],
            country=data["country"],
            sites=tuple(SitePlan(**_tuples(s)) for s in data["sites"]),
            rules=tuple(RulePlan(**_tuples(r)) for r in data["rules"]),
            national_roots=tuple(RootPlan(**r) for r in data["national_roots"]),
            state_dir=data.get("state_dir", ""),
            phases=tuple(
                PhasePlan(
                    name=p["name"],
                    start=p["start"],
                    start_seconds=float(p["start_seconds"]),
                    description=p["description"],
                    shutdown=bool(p["shutdown"]),
                    rules=tuple(RulePlan(**_tuples(r)) for r in p["rules"]),
                )
                for p in data.get("phases", [])
            ),
            phase=data.get("phase", ""),
            shutdown=bool(data.get("shutdown", False)),
            messaging_apps=tuple(data.get("messaging_apps", ())),
        )

    @classmethod
    def load(cls, state_dir: str | Path) -> Plan:
        return cls.from_json((Path(state_dir) / "plan.json").read_text(encoding="utf-8"))


def _tuples(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _site_title(site: Site) -> str:
    if site.title:
        return site.title
    stem = site.domain.removeprefix("www.").split(".")[0]
    return f"{stem.capitalize()} — news, services and community"


def make_plan(profile: Profile, state_dir: str = "") -> Plan:
    """Give every site its addresses and answers, and resolve rules to the addresses they cover."""
    hosts = list(SITE_NET.hosts())
    cursor = 0
    sites: list[SitePlan] = []
    for site in profile.sites:
        count = 2 if site.kind == "cdn" else 1
        addrs: list[str] = []
        while len(addrs) < count:
            candidate = hosts[cursor]
            cursor += 1
            if candidate.packed[-1] in (0, 255):
                continue
            addrs.append(str(candidate))
        # A CDN answers each resolver with a different edge (geo-DNS): a classic false positive.
        isp_answer = (addrs[0],)
        public_answer = (addrs[1],) if site.kind == "cdn" else (addrs[0],)
        seed = _stable_int(site.domain)
        body = site.body_kb * 1024 if site.body_kb else 6_000 + seed % 60_000
        urls = site.urls or (f"https://{site.domain}/", f"http://{site.domain}/")
        sites.append(
            SitePlan(
                domain=site.domain,
                kind=site.kind,
                title=_site_title(site),
                addresses=tuple(addrs),
                isp_answer=isp_answer,
                public_answer=public_answer,
                urls=tuple(urls),
                body_bytes=body,
                delay_ms=site.delay_ms,
                status=403 if site.kind == "forbidden" else 200,
                https_redirect=site.https_redirect,
                redirect_to=site.redirect_to,
                server_header=SERVER_NAMES[seed % len(SERVER_NAMES)],
                serve_rate_bps=rate_bytes_per_second(site.serve_rate) if site.serve_rate else 0,
            )
        )
    for host, app, ports, plain in _messaging_hosts(profile.messaging_apps):
        while True:
            candidate = hosts[cursor]
            cursor += 1
            if candidate.packed[-1] not in (0, 255):
                break
        address = str(candidate)
        sites.append(
            SitePlan(
                domain=host,
                kind="normal",
                title=f"{app} endpoint",
                addresses=(address,),
                isp_answer=(address,),
                public_answer=(address,),
                urls=(),  # not a website: the messaging truth (truth.im_truth) covers it
                body_bytes=2_000 + _stable_int(host) % 4_000,
                delay_ms=0,
                status=200,
                https_redirect=False,
                redirect_to="",
                server_header="nginx",
                im_app=app,
                extra_ports=ports,
                plain_on_443=plain,
            )
        )
    by_domain = {s.domain: s for s in sites}
    rules = tuple(_rule_plan(rule, by_domain) for rule in profile.rules)
    roots = tuple(_root_plan(r) for r in profile.national_roots)
    phases = tuple(_phase_plan(p, by_domain) for p in profile.phases)
    return Plan(
        profile=profile.name,
        description=profile.description,
        isp_name=profile.isp_name,
        country=profile.country,
        sites=tuple(sites),
        rules=rules,
        national_roots=roots,
        state_dir=state_dir,
        phases=phases,
        messaging_apps=profile.messaging_apps,
    )


def _phase_plan(phase: Phase, sites: dict[str, SitePlan]) -> PhasePlan:
    return PhasePlan(
        name=phase.name,
        start=phase.start,
        start_seconds=phase.start_seconds,
        description=phase.description,
        shutdown=phase.shutdown,
        rules=tuple(_rule_plan(rule, sites) for rule in phase.rules),
    )


def _messaging_hosts(apps: tuple[str, ...]) -> list[tuple[str, str, tuple[int, ...], bool]]:
    """(host or IP literal, app, extra ports, plain HTTP on 443) of every endpoint host."""
    from netvigil.experiments.im_endpoints import load_app

    found: dict[str, tuple[str, set[int], bool]] = {}
    for app in apps:
        for endpoint in load_app(app).endpoints:
            _, ports, _ = found.setdefault(endpoint.host, (app, set(), False))
            if endpoint.port not in (0, 80, 443):
                ports.add(endpoint.port)
            if endpoint.kind == "http" and endpoint.port == 443:
                found[endpoint.host] = (app, ports, True)
    return [(h, a, tuple(sorted(p)), plain) for h, (a, p, plain) in found.items()]


def rule_plans(rules: tuple[Rule, ...] | list[Rule], plan: Plan) -> tuple[RulePlan, ...]:
    """Profile rules resolved against a plan's sites (e.g. a phase's rules, for its truth:
    ``truth.app_truth(plan, app, rule_plans(phase_rules, plan))``). A rule naming a messaging
    endpoint by its real IP literal covers that endpoint's testbed address."""
    return tuple(_rule_plan(rule, {s.domain: s for s in plan.sites}) for rule in rules)


def _rule_plan(rule: Rule, sites: dict[str, SitePlan]) -> RulePlan:
    ips: list[str] = []
    if rule.stage in ("tcp", "throttle"):
        if rule.matcher == "ip":
            nets = [ipaddress.ip_network(v) for v in rule.values]
            for site in sites.values():
                ips += [
                    a for a in site.addresses if any(ipaddress.ip_address(a) in n for n in nets)
                ]
        else:
            for site in sites.values():
                if any(domain_matches(v, site.domain) for v in rule.values):
                    ips += list(site.addresses)
    # A `domain` matcher means "this site": its SNI at the TLS stage, its Host at the HTTP stage,
    # its addresses (in `ips`) at the TCP and throttle stages.
    matcher = rule.matcher
    if matcher == "domain" and rule.stage == "tls":
        matcher = "sni"
    elif matcher == "domain" and rule.stage == "http":
        matcher = "host"
    return RulePlan(
        id=rule.id,
        action=rule.action,
        stage=rule.stage,
        matcher=matcher,
        values=rule.values,
        params=dict(rule.params),
        ips=tuple(dict.fromkeys(ips)),
    )


def _root_plan(root: NationalRoot) -> RootPlan:
    return RootPlan(
        id=root.id,
        subject=dict(root.subject),
        intermediate_subject=dict(root.intermediate_subject),
        root_key=root.root_key,
        not_before=root.not_before,
        not_after=root.not_after,
        intermediate_validity_days=root.intermediate_validity_days,
        validity_shift_hours=root.validity_shift_hours,
        leaf_rsa_exponent=root.leaf_rsa_exponent,
    )
