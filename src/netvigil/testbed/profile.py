"""Censor profiles: TOML data files that say which sites exist and what the censor does to them.

A profile is the one place a researcher edits to describe a censored network. This module reads
it, checks it, and turns every mistake into one line that names the file, the line and the fix
(``ProfileError``). See the README section "Writing a profile" for the format.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

# Every action the censor middlebox knows, with the matchers it accepts and the stage it acts at.
# The order of stages is the order in which a connection meets them.
ACTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "dns-nxdomain": ("dns", frozenset({"domain"})),
    "dns-bogon": ("dns", frozenset({"domain"})),
    "dns-bogus": ("dns", frozenset({"domain"})),
    "dns-blockpage": ("dns", frozenset({"domain"})),
    "dns-timeout": ("dns", frozenset({"domain"})),
    "dns-inject": ("dns", frozenset({"domain"})),
    "ip-drop": ("tcp", frozenset({"ip", "domain"})),
    "ip-reject": ("tcp", frozenset({"ip", "domain"})),
    "tls-reset": ("tls", frozenset({"sni", "domain"})),
    "tls-timeout": ("tls", frozenset({"sni", "domain"})),
    "tls-intercept": ("tls", frozenset({"sni", "domain"})),
    "http-blockpage": ("http", frozenset({"host", "keyword", "domain"})),
    "http-reset": ("http", frozenset({"host", "keyword", "domain"})),
    "http-redirect": ("http", frozenset({"host", "keyword", "domain"})),
    "throttle": ("throttle", frozenset({"ip", "domain"})),
}
MATCHERS = ("domain", "ip", "sni", "host", "keyword")
SITE_KINDS = ("normal", "down", "slow", "forbidden", "cdn")
REJECT_WITH = ("tcp-reset", "icmp-admin-prohibited", "icmp-host-unreachable")

# Parameters each action accepts besides its matcher (value: a short description for errors).
ACTION_PARAMS: dict[str, dict[str, str]] = {
    "dns-bogon": {"answer": "an address in 127.0.0.0/8 or 0.0.0.0"},
    "dns-bogus": {"answer": "an address in 198.18.0.0/15"},
    "dns-blockpage": {"blockpage": "a blockpage name"},
    "dns-inject": {"answer": "an address in 198.18.0.0/15 or 127.0.0.0/8"},
    "ip-reject": {"reject_with": "one of " + ", ".join(REJECT_WITH)},
    "tls-intercept": {"root": "the id of a [[national_root]]"},
    "http-blockpage": {
        "blockpage": "a blockpage name",
        "status": "an HTTP status code",
        "headers": "a table of header names to values",
    },
    "http-redirect": {"location": "an http:// URL"},
    "throttle": {"rate": "a tc rate such as '128kbit'"},
}

TESTBED_NET = ipaddress.ip_network("198.18.0.0/15")
BOGON_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("0.0.0.0/32"))
DOMAIN_RE = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
RATE_RE = re.compile(r"^[0-9]+(bit|kbit|mbit|gbit|bps|kbps|mbps)$")
# tc's units: "bit" suffixes count bits, "bps" suffixes count bytes (k = 1000).
_RATE_UNITS = {
    "bit": 1 / 8,
    "kbit": 1000 / 8,
    "mbit": 1_000_000 / 8,
    "gbit": 1_000_000_000 / 8,
    "bps": 1,
    "kbps": 1000,
    "mbps": 1_000_000,
}
SERVE_RATE_BOUNDS = (1000, 125_000_000)  # bytes/s: 8 kbit/s .. 1 gbit/s
# A phase's start: an offset from the testbed's start, in seconds, minutes or hours ("90s", "5m").
OFFSET_RE = re.compile(r"^([0-9]{1,7}(?:\.[0-9]{1,3})?)(s|m|h)$")
_OFFSET_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
MAX_PHASE_OFFSET = 30 * 24 * 3600.0  # a month: longer than any testbed stays up
MAX_PHASES = 100
PHASE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
PHASE_KEYS = ("name", "start", "description", "shutdown", "rule")


def rate_bytes_per_second(rate: str) -> int:
    """A tc rate ('32kbit', '4kbps') in bytes/s; ValueError for anything else."""
    match = RATE_RE.match(rate)
    if match is None:
        raise ValueError(f"not a tc rate: {rate!r}")
    unit = match.group(1)
    return int(int(rate[: -len(unit)]) * _RATE_UNITS[unit])


def offset_seconds(offset: str) -> float:
    """A phase start ('0s', '90s', '5m', '1.5h') in seconds; ValueError for anything else."""
    match = OFFSET_RE.match(offset.strip())
    if match is None:
        raise ValueError(f"not an offset: {offset!r}")
    return float(match.group(1)) * _OFFSET_UNITS[match.group(2)]


# RFC 5280's upper bounds on the name attributes a profile may give, which cryptography
# enforces when it builds a name (a country is exactly two letters).
MAX_NAME_ATTRIBUTE = {"C": 2, "ST": 128, "L": 128, "O": 64, "OU": 64, "CN": 64}
# What the certificates can carry: UTCTime/GeneralizedTime from 1950 (RFC 5280) to 9999.
EARLIEST_DATE, LATEST_DATE = date(1950, 1, 1), date(9999, 12, 31)
MAX_VALIDITY_DAYS = 100 * 366
MAX_DOMAIN_LENGTH = 253  # RFC 1035, in its dotted text form
MAX_SHIFT_HOURS = 24 * 366


def did_you_mean(word: object, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for a near miss among `choices`, else ''."""
    import difflib  # only on the error path: every command imports this module at start-up

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class ProfileError(ValueError):
    """A profile mistake, rendered as one line: ``FILE:LINE: problem — fix``."""

    def __init__(self, source: str, line: int | None, problem: str, fix: str) -> None:
        self.source, self.line, self.problem, self.fix = source, line, problem, fix
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem} — {fix}")


@dataclass(frozen=True)
class NationalRoot:
    """A state or corporate root that the censor uses to forge certificates."""

    id: str
    subject: dict[str, str]
    intermediate_subject: dict[str, str]
    root_key: str = "rsa-4096"
    not_before: str = "2016-02-02"
    not_after: str = "2046-02-02"
    intermediate_validity_days: int = 3650
    # Kazakhstan 2019: forged leaves were valid from 6 h before the real certificate.
    validity_shift_hours: int = 6
    leaf_rsa_exponent: int = 3


@dataclass(frozen=True)
class Site:
    """An emulated website: served over HTTP and HTTPS from the `internet` host."""

    domain: str
    kind: str = "normal"
    title: str = ""
    urls: tuple[str, ...] = ()
    body_kb: int = 0  # 0: derived from the domain, so sites differ in size
    delay_ms: int = 0
    serve_rate: str = ""  # the server sends its bodies at this tc rate ("" = at once)
    https_redirect: bool = False  # http:// answers 301 to https://
    redirect_to: str = ""  # every request answers 301 to this URL (e.g. apex → www)
    line: int | None = None


@dataclass(frozen=True)
class Rule:
    """One censor rule: a matcher (``kind`` + ``values``) and an action with its parameters."""

    index: int
    action: str
    matcher: str
    values: tuple[str, ...]
    params: dict[str, Any]
    line: int | None = None
    phase: str = ""  # the [[phase]] whose [[phase.rule]] this is; "" for a top-level [[rule]]

    @property
    def stage(self) -> str:
        return ACTIONS[self.action][0]

    @property
    def id(self) -> str:
        # A phase's rules are numbered within the phase; its name keeps their ids apart.
        prefix = f"{self.phase}/" if self.phase else ""
        return f"{prefix}rule{self.index + 1}:{self.action}"


@dataclass(frozen=True)
class Phase:
    """A period of the censor's life: from ``start_seconds`` after the testbed's start to the
    next phase's start (the last one lasts until the testbed stops). Its rules apply on top of
    the profile's top-level rules; a shutdown phase cuts the subscriber off from everything."""

    name: str
    start: str  # as written in the profile ("90s")
    start_seconds: float
    description: str = ""
    shutdown: bool = False
    rules: tuple[Rule, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    sites: tuple[Site, ...]
    rules: tuple[Rule, ...]
    national_roots: tuple[NationalRoot, ...] = ()
    phases: tuple[Phase, ...] = ()
    isp_name: str = "Emulated ISP"
    country: str = "ZZ"
    source: str = "<memory>"
    # Messaging apps whose endpoints the testbed serves at their real names (improbe).
    messaging_apps: tuple[str, ...] = ()
    _site_index: dict[str, Site] = field(default_factory=dict, compare=False, repr=False)

    def site(self, domain: str) -> Site | None:
        if not self._site_index:
            self._site_index.update({s.domain: s for s in self.sites})
        return self._site_index.get(domain)


def domain_matches(pattern: str, name: str) -> bool:
    """``*.example.com`` matches strict subdomains; anything else matches exactly."""
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


# --------------------------------------------------------------------------------------------
# Loading


def builtin_profiles() -> list[str]:
    folder = resources.files("netvigil.testbed").joinpath("profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def resolve_profile_path(name_or_path: str) -> Path:
    """A shipped profile by name, or a TOML file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path:
        if not candidate.is_file():
            raise ProfileError(
                name_or_path, None, "no such profile file", "give a path to a .toml file"
            )
        return candidate
    shipped = resources.files("netvigil.testbed").joinpath("profiles", f"{name_or_path}.toml")
    if not shipped.is_file():
        raise ProfileError(
            name_or_path,
            None,
            "unknown profile" + did_you_mean(name_or_path, builtin_profiles()),
            "use one of: " + ", ".join(builtin_profiles()) + ", or a path to a .toml file",
        )
    return Path(str(shipped))


def load_profile(name_or_path: str) -> Profile:
    path = resolve_profile_path(name_or_path)
    text = path.read_text(encoding="utf-8")
    return parse_profile(text, source=str(path))


def parse_profile(text: str, source: str = "<memory>") -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ProfileError(
            source, line, f"TOML syntax error: {problem}", "fix the TOML syntax"
        ) from None
    return _ProfileBuilder(text, source).build(data)


class _ProfileBuilder:
    """Checks the parsed TOML and builds a Profile; knows where each table starts in the text."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    # -- locating lines for error messages -------------------------------------------------
    def _table_line(self, table: str, index: int) -> int | None:
        seen = -1
        header = re.compile(r"^\s*\[\[\s*" + re.escape(table) + r"\s*\]\]")
        for number, line in enumerate(self.lines, start=1):
            if header.match(line):
                seen += 1
                if seen == index:
                    return number
        return None

    def _key_line(self, table: str, index: int, key: str) -> int | None:
        start = self._table_line(table, index)
        if start is None:
            return None
        pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        # self.lines is 0-based, so index `start` is the line right after the header.
        for number in range(start, len(self.lines)):
            line = self.lines[number]
            if re.match(r"^\s*\[", line):
                break
            if pattern.match(line):
                return number + 1
        return start

    def _top_key_line(self, key: str) -> int | None:
        pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for number, line in enumerate(self.lines, start=1):
            if pattern.match(line):
                return number
        return None

    def fail(self, line: int | None, problem: str, fix: str) -> ProfileError:
        return ProfileError(self.source, line, problem, fix)

    # -- building ----------------------------------------------------------------------------
    def build(self, data: dict[str, Any]) -> Profile:
        known_top = {
            "name",
            "description",
            "isp",
            "country",
            "domains",
            "site",
            "rule",
            "national_root",
            "phase",
            "messaging_apps",
        }
        for key in data:
            if key not in known_top:
                raise self.fail(
                    self._top_key_line(key) or self._table_line(key, 0),
                    f"unknown key '{key}'" + did_you_mean(key, sorted(known_top)),
                    "use name, description, isp, country, domains, messaging_apps, [[site]], "
                    "[[rule]], [[phase]] or [[national_root]]",
                )
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail(
                self._top_key_line("name") or 1,
                "missing profile name",
                'add name = "my-profile" at the top',
            )
        roots = tuple(
            self._national_root(i, r) for i, r in enumerate(_table_list(data, "national_root"))
        )
        sites = self._sites(data)
        apps = self._messaging_apps(data)
        site_index: dict[str, Site | None] = {s.domain: s for s in sites}
        # A rule may name a messaging endpoint: its host name, or its real IP literal.
        site_index.update(dict.fromkeys(messaging_endpoint_names(apps)))
        root_ids = {r.id for r in roots}
        rules = tuple(
            self._rule(i, r, site_index, root_ids) for i, r in enumerate(_table_list(data, "rule"))
        )
        phases = self._phases(data, site_index, root_ids)
        return Profile(
            name=name,
            description=str(data.get("description", "")),
            sites=sites,
            rules=rules,
            national_roots=roots,
            phases=phases,
            isp_name=str(data.get("isp", "Emulated ISP")),
            country=str(data.get("country", "ZZ")),
            source=self.source,
            messaging_apps=apps,
        )

    def _messaging_apps(self, data: dict[str, Any]) -> tuple[str, ...]:
        from netvigil.experiments.im_endpoints import APPS

        raw = data.get("messaging_apps", [])
        line = self._top_key_line("messaging_apps")
        if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
            raise self.fail(
                line,
                "messaging_apps must be a list of app names",
                'write messaging_apps = ["telegram", "whatsapp"]',
            )
        for app in raw:
            if app not in APPS:
                raise self.fail(
                    line,
                    f"unknown messaging app '{app}'" + did_you_mean(app, list(APPS)),
                    "use one of: " + ", ".join(APPS),
                )
        return tuple(dict.fromkeys(raw))

    def _national_root(self, index: int, raw: Mapping[str, Any]) -> NationalRoot:
        line = self._table_line("national_root", index)
        for key in ("id", "subject", "intermediate"):
            if key not in raw:
                raise self.fail(
                    line, f"national_root needs '{key}'", "see the README's profile section"
                )
        subject, inter = raw["subject"], raw["intermediate"]
        if not isinstance(subject, dict) or "CN" not in subject:
            raise self.fail(
                line, "national_root subject needs a CN", 'write subject = { C = "KZ", CN = "…" }'
            )
        if not isinstance(inter, dict) or "CN" not in inter:
            raise self.fail(
                line, "national_root intermediate needs a CN", 'write intermediate = { CN = "…" }'
            )
        allowed = {
            "id",
            "subject",
            "intermediate",
            "root_key",
            "not_before",
            "not_after",
            "intermediate_validity_days",
            "validity_shift_hours",
            "leaf_rsa_exponent",
        }
        for key in raw:
            if key not in allowed:
                raise self.fail(
                    self._key_line("national_root", index, key),
                    f"unknown national_root key '{key}'" + did_you_mean(key, sorted(allowed)),
                    "use one of: " + ", ".join(sorted(allowed)),
                )
        if raw.get("root_key", "rsa-4096") not in ("rsa-2048", "rsa-4096", "ec-p256"):
            raise self.fail(
                self._key_line("national_root", index, "root_key"),
                f"root_key '{raw.get('root_key')}' is not a key the testbed makes",
                "use rsa-2048, rsa-4096 or ec-p256",
            )
        if raw.get("leaf_rsa_exponent", 3) not in (3, 65537):
            raise self.fail(
                self._key_line("national_root", index, "leaf_rsa_exponent"),
                "leaf_rsa_exponent must be 3 or 65537",
                "use 3 (Kazakhstan 2019) or 65537",
            )
        for table, fields in (("subject", subject), ("intermediate", inter)):
            self._check_name(index, table, fields)
        not_before = self._check_date(index, raw, "not_before", "2016-02-02")
        not_after = self._check_date(index, raw, "not_after", "2046-02-02")
        if not_after <= not_before:
            raise self.fail(
                self._key_line("national_root", index, "not_after"),
                f"not_after {not_after} is not after not_before {not_before}",
                "a certificate must end after it starts",
            )
        self._check_int(index, raw, "intermediate_validity_days", 1, MAX_VALIDITY_DAYS)
        self._check_int(index, raw, "validity_shift_hours", 0, MAX_SHIFT_HOURS)
        return NationalRoot(
            id=str(raw["id"]),
            subject={str(k): str(v) for k, v in subject.items()},
            intermediate_subject={str(k): str(v) for k, v in inter.items()},
            root_key=str(raw.get("root_key", "rsa-4096")),
            not_before=not_before.isoformat(),
            not_after=not_after.isoformat(),
            intermediate_validity_days=int(raw.get("intermediate_validity_days", 3650)),
            validity_shift_hours=int(raw.get("validity_shift_hours", 6)),
            leaf_rsa_exponent=int(raw.get("leaf_rsa_exponent", 3)),
        )

    def _check_name(self, index: int, table: str, fields: dict[Any, Any]) -> None:
        """What cryptography would refuse later, deep in the supervisor, refused here in one line."""
        line = self._key_line("national_root", index, table)
        for key, value in fields.items():
            if key not in MAX_NAME_ATTRIBUTE:
                raise self.fail(
                    line,
                    f"unknown {table} attribute '{key}'"
                    + did_you_mean(key, list(MAX_NAME_ATTRIBUTE)),
                    "use " + ", ".join(MAX_NAME_ATTRIBUTE),
                )
            if not isinstance(value, str) or not value:
                raise self.fail(
                    line, f"{table} {key} must be a non-empty string", f'write {key} = "…"'
                )
            limit = MAX_NAME_ATTRIBUTE[key]
            if key == "C" and not (len(value) == 2 and value.isascii() and value.isalpha()):
                raise self.fail(
                    line,
                    f"{table} C '{value[:20]}' is not a two-letter country code",
                    'write C = "KZ"',
                )
            if len(value) > limit:
                raise self.fail(
                    line,
                    f"{table} {key} has {len(value)} characters, more than a certificate allows ({limit})",
                    f"shorten it to at most {limit}",
                )

    def _check_date(self, index: int, raw: Mapping[str, Any], key: str, default: str) -> date:
        value = raw.get(key, default)
        line = self._key_line("national_root", index, key)
        try:
            # TOML's own dates (not_before = 2016-02-02, unquoted) arrive as date objects.
            text = value.isoformat()[:10] if isinstance(value, date) else str(value)
            day = date.fromisoformat(text)
        except ValueError:
            raise self.fail(
                line, f"{key} '{str(value)[:40]}' is not a date", f'write {key} = "2016-02-02"'
            ) from None
        if not EARLIEST_DATE <= day <= LATEST_DATE:
            raise self.fail(
                line,
                f"{key} {day} is outside what a certificate can carry",
                "use a date from 1950 to 9999",
            )
        return day

    def _check_int(self, index: int, raw: Mapping[str, Any], key: str, low: int, high: int) -> None:
        if key not in raw:
            return
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(
                self._key_line("national_root", index, key),
                f"{key} '{str(value)[:40]}' is not a whole number from {low} to {high}",
                f"write {key} = {low if low else 6}",
            )

    def _check_domain(self, domain: Any, line: int | None, what: str) -> str:
        if not isinstance(domain, str) or not DOMAIN_RE.match(domain.lower()):
            raise self.fail(
                line, f"{what} '{domain}' is not a domain name", "write a name like www.example.com"
            )
        if len(domain) > MAX_DOMAIN_LENGTH:
            raise self.fail(
                line,
                f"{what} has {len(domain)} characters, more than DNS allows ({MAX_DOMAIN_LENGTH})",
                "shorten the name",
            )
        return domain.lower()

    def _sites(self, data: dict[str, Any]) -> tuple[Site, ...]:
        sites: list[Site] = []
        seen: set[str] = set()
        plain = data.get("domains", [])
        if not isinstance(plain, list):
            raise self.fail(
                self._top_key_line("domains"),
                "domains must be a list",
                'write domains = ["a.example", "b.example"]',
            )
        for domain in plain:
            name = self._check_domain(domain, self._top_key_line("domains"), "domain")
            if name.startswith("*."):
                raise self.fail(
                    self._top_key_line("domains"),
                    f"site '{name}' is a wildcard",
                    "list one host name per site",
                )
            if name in seen:
                raise self.fail(
                    self._top_key_line("domains"),
                    f"site '{name}' is listed twice",
                    "list each domain once",
                )
            seen.add(name)
            sites.append(Site(domain=name, line=self._top_key_line("domains")))
        allowed = {
            "domain",
            "kind",
            "title",
            "urls",
            "body_kb",
            "delay_ms",
            "serve_rate",
            "https_redirect",
            "redirect_to",
        }
        for index, raw in enumerate(_table_list(data, "site")):
            line = self._table_line("site", index)
            for key in raw:
                if key not in allowed:
                    raise self.fail(
                        self._key_line("site", index, key),
                        f"unknown site key '{key}'" + did_you_mean(key, sorted(allowed)),
                        "use one of: " + ", ".join(sorted(allowed)),
                    )
            if "domain" not in raw:
                raise self.fail(line, "site needs a domain", 'add domain = "www.example.com"')
            name = self._check_domain(
                raw["domain"], self._key_line("site", index, "domain"), "site domain"
            )
            if name.startswith("*."):
                raise self.fail(
                    line, "a site cannot have a wildcard domain", "name one host per [[site]]"
                )
            if name in seen:
                raise self.fail(line, f"site '{name}' is defined twice", "define each domain once")
            seen.add(name)
            kind = raw.get("kind", "normal")
            if kind not in SITE_KINDS:
                raise self.fail(
                    self._key_line("site", index, "kind"),
                    f"unknown site kind '{kind}'" + did_you_mean(kind, list(SITE_KINDS)),
                    "use one of: " + ", ".join(SITE_KINDS),
                )
            urls = raw.get("urls", [])
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise self.fail(
                    self._key_line("site", index, "urls"),
                    "urls must be a list of strings",
                    'write urls = ["https://x/"]',
                )
            for url in urls:
                if not re.match(r"^https?://" + re.escape(name) + r"(/|$)", url):
                    raise self.fail(
                        self._key_line("site", index, "urls"),
                        f"url '{url}' is not on {name}",
                        f"start it with http://{name}/ or https://{name}/",
                    )
            redirect_to = str(raw.get("redirect_to", ""))
            if redirect_to and not re.match(r"^https?://[a-z0-9.-]+(/|$)", redirect_to):
                raise self.fail(
                    self._key_line("site", index, "redirect_to"),
                    f"redirect_to '{redirect_to}' is not a URL",
                    "write https://host/",
                )
            delay = raw.get("delay_ms", 2500 if kind == "slow" else 0)
            if not isinstance(delay, int) or not 0 <= delay <= 60_000:
                raise self.fail(
                    self._key_line("site", index, "delay_ms"),
                    "delay_ms must be 0..60000",
                    "use milliseconds, e.g. 200",
                )
            body_kb = raw.get("body_kb", 0)
            if not isinstance(body_kb, int) or not 0 <= body_kb <= 10_000:
                raise self.fail(
                    self._key_line("site", index, "body_kb"),
                    "body_kb must be 0..10000",
                    "use kilobytes, e.g. 40",
                )
            serve_rate = raw.get("serve_rate", "")
            if serve_rate != "" and not (
                isinstance(serve_rate, str)
                and RATE_RE.match(serve_rate)
                and SERVE_RATE_BOUNDS[0]
                <= rate_bytes_per_second(serve_rate)
                <= SERVE_RATE_BOUNDS[1]
            ):
                raise self.fail(
                    self._key_line("site", index, "serve_rate"),
                    f"serve_rate {serve_rate!r} is not a rate from 8kbit to 1gbit",
                    "write a tc rate such as '32kbit' (the site is slow for everyone)",
                )
            sites.append(
                Site(
                    domain=name,
                    kind=kind,
                    title=str(raw.get("title", "")),
                    urls=tuple(urls),
                    body_kb=body_kb,
                    delay_ms=delay,
                    serve_rate=serve_rate,
                    https_redirect=bool(raw.get("https_redirect", False)),
                    redirect_to=redirect_to,
                    line=line,
                )
            )
        for site in sites:
            target = re.match(r"^https?://([a-z0-9.-]+)", site.redirect_to)
            if target and target.group(1) not in seen:
                raise self.fail(
                    site.line,
                    f"redirect_to names '{target.group(1)}', which no site serves",
                    "add that site or change redirect_to",
                )
        return tuple(sites)

    def _phases(
        self, data: dict[str, Any], sites: Mapping[str, Site | None], root_ids: set[str]
    ) -> tuple[Phase, ...]:
        """The [[phase]] tables, in time order; each [[phase.rule]] checked like a [[rule]]."""
        raw_phases = data.get("phase", [])
        if isinstance(raw_phases, dict) or not isinstance(raw_phases, list):
            raise self.fail(
                self._top_key_line("phase"),
                "phase must be a list of tables",
                'write each phase as a [[phase]] table with name = "…" and start = "0s"',
            )
        if len(raw_phases) > MAX_PHASES:
            raise self.fail(
                self._table_line("phase", MAX_PHASES),
                f"{len(raw_phases)} phases, more than {MAX_PHASES}",
                "merge phases",
            )
        phases: list[Phase] = []
        names: set[str] = set()
        rule_tables = 0  # [[phase.rule]] headers seen so far, to find each one's line
        for index, raw in enumerate(raw_phases):
            line = self._table_line("phase", index)
            if not isinstance(raw, dict):
                raise self.fail(line, "a phase must be a table", "write it as [[phase]]")
            for key in raw:
                if key not in PHASE_KEYS:
                    raise self.fail(
                        self._key_line("phase", index, key),
                        f"unknown phase key '{key}'" + did_you_mean(key, list(PHASE_KEYS)),
                        "use name, start, description, shutdown and [[phase.rule]] tables",
                    )
            name = raw.get("name")
            if not isinstance(name, str) or not PHASE_NAME_RE.match(name):
                raise self.fail(
                    self._key_line("phase", index, "name") if "name" in raw else line,
                    "phase needs a name"
                    if name is None
                    else f"phase name '{str(name)[:40]}' is not a short lowercase name",
                    'write name = "shutdown-1" (a-z, 0-9, - and _)',
                )
            if name in names:
                raise self.fail(
                    line, f"phase '{name}' is defined twice", "give each phase its own name"
                )
            names.add(name)
            start_line = self._key_line("phase", index, "start") if "start" in raw else line
            start = raw.get("start")
            if start is None:
                raise self.fail(
                    line,
                    f"phase '{name}' has no start",
                    'add start = "90s" (offset from the testbed\'s start)',
                )
            try:
                if isinstance(start, bool) or not isinstance(start, str):
                    raise ValueError(start)
                seconds = offset_seconds(start)
            except ValueError:
                raise self.fail(
                    start_line,
                    f"phase '{name}' start {str(start)[:40]!r} is not an offset",
                    'write a number and a unit: "0s", "90s", "5m" or "1h"',
                ) from None
            if seconds > MAX_PHASE_OFFSET:
                raise self.fail(
                    start_line,
                    f"phase '{name}' starts {start} after the testbed, more than 30 days",
                    "use an offset of at most 720h",
                )
            if not phases and seconds != 0:
                raise self.fail(
                    start_line,
                    f"the first phase '{name}' starts at {start}, not at 0s",
                    'start the first phase at "0s" (add one for the time before)',
                )
            if phases and seconds <= phases[-1].start_seconds:
                previous = phases[-1]
                same = seconds == previous.start_seconds
                raise self.fail(
                    start_line,
                    f"phase '{name}' starts at {start}, "
                    + ("the same time as" if same else "before")
                    + f" phase '{previous.name}' ({previous.start})",
                    "list the phases in time order, each starting after the one before",
                )
            shutdown = raw.get("shutdown", False)
            if not isinstance(shutdown, bool):
                raise self.fail(
                    self._key_line("phase", index, "shutdown"),
                    f"phase '{name}' shutdown must be true or false",
                    "write shutdown = true",
                )
            description = raw.get("description", "")
            if not isinstance(description, str):
                raise self.fail(
                    self._key_line("phase", index, "description"),
                    f"phase '{name}' description must be a string",
                    'write description = "…"',
                )
            raw_rules = raw.get("rule", [])
            if isinstance(raw_rules, dict) or not isinstance(raw_rules, list):
                raise self.fail(
                    line,
                    f"phase '{name}' rule must be a list of tables",
                    "write each rule as a [[phase.rule]] table under its [[phase]]",
                )
            if shutdown and raw_rules:
                raise self.fail(
                    self._table_line("phase.rule", rule_tables),
                    f"phase '{name}' is a shutdown and has rules",
                    "a shutdown blocks everything: remove its [[phase.rule]] tables",
                )
            rules = []
            for number, raw_rule in enumerate(raw_rules):
                if not isinstance(raw_rule, dict):
                    raise self.fail(line, "a phase rule must be a table", "write [[phase.rule]]")
                rules.append(
                    self._rule(
                        number,
                        raw_rule,
                        sites,
                        root_ids,
                        table="phase.rule",
                        table_index=rule_tables,
                        phase=name,
                    )
                )
                rule_tables += 1
            phases.append(
                Phase(
                    name=name,
                    start=start,
                    start_seconds=seconds,
                    description=description,
                    shutdown=shutdown,
                    rules=tuple(rules),
                    line=line,
                )
            )
        return tuple(phases)

    def _rule(
        self,
        index: int,
        raw: Mapping[str, Any],
        sites: Mapping[str, Site | None],
        root_ids: set[str],
        *,
        table: str = "rule",
        table_index: int | None = None,
        phase: str = "",
    ) -> Rule:
        """One [[rule]] (or [[phase.rule]]: `table`, its `table_index` among those headers in
        the file, and the `phase` it belongs to)."""
        at = index if table_index is None else table_index

        def key_line(key: str) -> int | None:
            return self._key_line(table, at, key)

        line = self._table_line(table, at)
        action = raw.get("action")
        if action is None:
            raise self.fail(
                line, "rule has no action", 'add action = "…" (one of: ' + ", ".join(ACTIONS) + ")"
            )
        if action not in ACTIONS:
            raise self.fail(
                key_line("action"),
                f"unknown action '{action}'" + did_you_mean(action, list(ACTIONS)),
                "use one of: " + ", ".join(ACTIONS),
            )
        _stage, allowed_matchers = ACTIONS[action]
        present = [m for m in MATCHERS if m in raw]
        accepted = ACTION_PARAMS.get(action, {})
        if not present:
            # Most often a misspelt matcher: name the key that is neither matcher nor parameter.
            stray = [k for k in raw if k != "action" and k not in accepted]
            if stray:
                raise self.fail(
                    key_line(stray[0]),
                    f"unknown rule key '{stray[0]}'"
                    + did_you_mean(stray[0], [*sorted(allowed_matchers), *accepted]),
                    f"give one matcher: {', '.join(sorted(allowed_matchers))}",
                )
        if len(present) != 1:
            raise self.fail(
                line,
                f"rule needs exactly one matcher, found {len(present) or 'none'}",
                f"give one of: {', '.join(sorted(allowed_matchers))}",
            )
        matcher = present[0]
        if matcher not in allowed_matchers:
            raise self.fail(
                key_line(matcher),
                f"action {action} cannot match on '{matcher}'",
                f"match on {' or '.join(sorted(allowed_matchers))}",
            )
        values_raw = raw[matcher]
        values = [values_raw] if isinstance(values_raw, str) else values_raw
        mline = key_line(matcher)
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) for v in values)
        ):
            raise self.fail(
                mline,
                f"{matcher} must be a string or a non-empty list of strings",
                f'write {matcher} = ["…"]',
            )
        checked: list[str] = []
        for value in values:
            if matcher == "ip":
                try:
                    net = ipaddress.ip_network(value, strict=False)
                except ValueError:
                    raise self.fail(
                        mline,
                        f"'{value}' is not a valid CIDR",
                        "write an address or prefix like 198.19.0.5/32",
                    ) from None
                if net.version != 4 or not net.subnet_of(TESTBED_NET):  # type: ignore[arg-type]
                    raise self.fail(
                        mline,
                        f"'{value}' is outside 198.18.0.0/15",
                        "testbed addresses all lie in 198.18.0.0/15",
                    )
                checked.append(str(net))
            elif matcher == "keyword":
                if not value or len(value) > 200:
                    raise self.fail(
                        mline, "keyword must be 1..200 characters", "shorten the keyword"
                    )
                checked.append(value)
            elif _is_ip_literal(value) and matcher == "domain":
                # an IP-literal messaging endpoint, named by its real address
                if value not in sites:
                    raise self.fail(
                        mline,
                        f"'{value}' is no messaging endpoint of this profile's messaging_apps",
                        "name a site, a messaging endpoint, or use ip = [...] for testbed addresses",
                    )
                checked.append(value)
            else:
                name = self._check_domain(value, mline, matcher)
                if not any(domain_matches(name, d) for d in sites):
                    raise self.fail(
                        mline,
                        f"{matcher} '{value}' names no site of this profile",
                        f'add a [[site]] with domain = "{value}" or fix the name',
                    )
                checked.append(name)
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("action", matcher):
                continue
            if key not in accepted:
                hint = (
                    ("it takes: " + ", ".join(accepted)) if accepted else "it takes no parameters"
                )
                raise self.fail(
                    key_line(key),
                    f"action {action} has no parameter '{key}'" + did_you_mean(key, list(accepted)),
                    hint,
                )
            params[key] = value
        self._check_params(action, params, root_ids, key_line, line)
        return Rule(
            index=index,
            action=action,
            matcher=matcher,
            values=tuple(checked),
            params=params,
            line=line,
            phase=phase,
        )

    def _check_params(
        self,
        action: str,
        params: dict[str, Any],
        root_ids: set[str],
        key_line: Callable[[str], int | None],
        line: int | None,
    ) -> None:
        def bad(key: str, fix: str) -> ProfileError:
            return self.fail(key_line(key), f"bad {key} '{params[key]}' for {action}", fix)

        if "answer" in params:
            try:
                addr = ipaddress.ip_address(str(params["answer"]))
            except ValueError:
                raise bad("answer", "write an IPv4 address") from None
            in_bogon = any(addr in n for n in BOGON_NETS)
            if action == "dns-bogon" and not in_bogon:
                raise bad("answer", "a bogon answer lies in 127.0.0.0/8 or is 0.0.0.0")
            if action == "dns-bogus" and addr not in TESTBED_NET:
                raise bad(
                    "answer",
                    "a bogus answer must lie in 198.18.0.0/15 (the testbed has nothing else)",
                )
            if action == "dns-inject" and not (in_bogon or addr in TESTBED_NET):
                raise bad("answer", "an injected answer must lie in 198.18.0.0/15 or 127.0.0.0/8")
        if "reject_with" in params and params["reject_with"] not in REJECT_WITH:
            raise bad("reject_with", "use one of: " + ", ".join(REJECT_WITH))
        if action == "tls-intercept":
            root = params.get("root")
            if root is None:
                raise self.fail(
                    line,
                    'tls-intercept needs root = "<national_root id>"',
                    "add a [[national_root]] and name it",
                )
            if root not in root_ids:
                raise bad(
                    "root",
                    "name the id of a [[national_root]] in this profile: "
                    + (", ".join(sorted(root_ids)) or "none defined"),
                )
        if "blockpage" in params and params["blockpage"] not in blockpage_names():
            raise bad("blockpage", "use one of: " + ", ".join(blockpage_names()))
        if "status" in params and (
            not isinstance(params["status"], int) or not 100 <= params["status"] <= 599
        ):
            raise bad("status", "use an HTTP status code such as 200 or 403")
        if "headers" in params and not (
            isinstance(params["headers"], dict)
            and all(isinstance(v, str) for v in params["headers"].values())
        ):
            raise bad("headers", 'write headers = { "X-Filter" = "blocked" }')
        if "location" in params and not str(params["location"]).startswith("http://"):
            raise bad("location", "write an http:// URL")
        if "rate" in params and not RATE_RE.match(str(params["rate"])):
            raise bad("rate", "write a tc rate such as 128kbit or 1mbit")


def _is_ip_literal(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def messaging_endpoint_names(apps: Sequence[str]) -> list[str]:
    """The host names and IP literals of the apps' endpoints (what a rule may name)."""
    from netvigil.experiments.im_endpoints import load_app

    return list(dict.fromkeys(e.host for app in apps for e in load_app(app).endpoints))


def _table_list(data: dict[str, Any], key: str) -> Sequence[Mapping[str, Any]]:
    value = data.get(key, [])
    if isinstance(value, dict):
        return [value]
    return value if isinstance(value, list) else []


def blockpage_names() -> list[str]:
    folder = resources.files("netvigil.testbed").joinpath("blockpages")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".html"))


def blockpage_body(name: str) -> bytes:
    return resources.files("netvigil.testbed").joinpath("blockpages", f"{name}.html").read_bytes()
