"""`netvigil check`: is HTTPS being intercepted on this network right now?

For each domain of a trigger set (names intercepted in Kazakhstan in 2019 and 2024, large social
and news sites, and any the user names), concurrently and bounded: resolve it with the probe's
resolver, connect to the first address, TLS-handshake with its SNI capturing the whole presented
chain, verify that chain against the trust anchors (certifi's Mozilla roots, or the testbed
root; never the OS store), and ask the control helper to do the same from an uncensored vantage
point against the *same* address. Then, per domain:

- ``intercepted``: the probe's chain does not verify while the control's does; or the chain
  comes from a known interception root (``netvigil.verdict.roots``); or the leaf key differs
  from the control's and the probe's chain leads to another root than the control's (this
  catches interception even when the national root was installed in the trust store given to
  us, the situation the 2015 law created).
- ``ok``: the chain verifies and agrees with the control (same leaf key, or another key from the
  same trusted root: a CDN or a key rotation).
- ``cannot tell``: DNS, TCP or TLS failed, or there is no usable control.

Every chain function is bounded (``MAX_CHAIN`` certificates, each at most ``MAX_CERT_BYTES``),
so a hostile server or helper cannot make it loop or allocate without limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import functools
import hashlib
import importlib
import ipaddress
import json
import re
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from netvigil.control.client import query_control
from netvigil.experiments.web_connectivity import ProbeConfig
from netvigil.net import dns as ndns
from netvigil.net import tcp as ntcp
from netvigil.net import tls as ntls

__all__ = [
    "CANNOT_TELL",
    "INTERCEPTED",
    "MAX_CERT_BYTES",
    "MAX_CHAIN",
    "MAX_LIST_NAMES",
    "NAMED_SET",
    "OK",
    "CheckReport",
    "DomainResult",
    "TriggerSet",
    "chain_to_pem",
    "check_domains",
    "checked_summary",
    "control_chain",
    "domains_of",
    "headline",
    "known_root",
    "leaf_spki_sha256",
    "load_triggers",
    "normalize_domain",
    "top_issuer",
    "verified_path",
]

INTERCEPTED = "intercepted"
OK = "ok"
CANNOT_TELL = "cannot tell"

MAX_CHAIN = ntls.MAX_CHAIN
MAX_CERT_BYTES = 64 * 1024
MAX_DOMAINS = 10_000
# Names taken from one --list CC (a Citizen Lab list holds up to ~1,700 hosts): a check of this
# many takes about a minute on a real network at the default concurrency, and as many control
# queries; more is a job for `netvigil measure --list`.
MAX_LIST_NAMES = 1_000
NAMED_SET = "named"
DEFAULT_CONCURRENCY = 64

_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}")


# ----------------------------------------------------------------------------------------------
# Inputs


def normalize_domain(text: str) -> str | None:
    """A lower-case host name from a name or URL the user gave, or None if it is not one."""
    value = text.strip().lower()
    if "://" in value:
        value = value.split("://", 1)[1]
    value = value.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    value = value.rstrip(".")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return None  # an SNI is a name
    if not value or not _HOSTNAME.fullmatch(value):
        return None
    return value


@dataclass(frozen=True)
class TriggerSet:
    """A named group of domains to check: a built-in set, a country's list, the names given."""

    name: str
    description: str
    domains: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "count": len(self.domains)}


def load_triggers() -> list[TriggerSet]:
    """The built-in trigger sets (``netvigil/data/interception-triggers.toml``)."""
    text = resources.files("netvigil.data").joinpath("interception-triggers.toml").read_text()
    data = tomllib.loads(text)
    out: list[TriggerSet] = []
    for item in data.get("set", []):
        domains = tuple(d for d in (normalize_domain(str(x)) for x in item["domains"]) if d)
        out.append(TriggerSet(str(item["name"]), str(item.get("description", "")), domains))
    return out


def default_domains() -> list[str]:
    return list(dict.fromkeys(d for s in load_triggers() for d in s.domains))


def domains_of(sets: Iterable[TriggerSet]) -> list[str]:
    """Every domain of the sets, once, in order."""
    return list(dict.fromkeys(d for s in sets for d in s.domains))


# ----------------------------------------------------------------------------------------------
# Chains (bounded: hostile input never loops, never raises)


def _load(der: bytes) -> x509.Certificate | None:
    if not der or len(der) > MAX_CERT_BYTES:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except Exception:  # malformed DER, unsupported keys: not a certificate we can use
        return None


def _bounded(chain: Sequence[bytes]) -> list[bytes]:
    return [bytes(d) for d in chain[:MAX_CHAIN]]


def leaf_spki_sha256(chain: Sequence[bytes]) -> str | None:
    """SHA-256 of the leaf's SubjectPublicKeyInfo (what "the same key" means), or None."""
    leaf = _load(chain[0]) if chain else None
    if leaf is None:
        return None
    try:
        spki = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:  # an unsupported key type
        return None
    return hashlib.sha256(spki).hexdigest()


def _name_cn(name: x509.Name) -> str:
    try:
        values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        if values:
            return str(values[0].value)
        return name.rfc4514_string()
    except Exception:
        return ""


def top_issuer(chain: Sequence[bytes]) -> str:
    """The issuer CN of the last parseable certificate presented (the root is rarely sent)."""
    for der in reversed(_bounded(chain)):
        cert = _load(der)
        if cert is not None:
            return _name_cn(cert.issuer)
    return ""


def leaf_issuer(chain: Sequence[bytes]) -> str:
    cert = _load(chain[0]) if chain else None
    return _name_cn(cert.issuer) if cert is not None else ""


def verified_path(
    chain: Sequence[bytes], host: str, trust: ntls.TrustStore, *, now: dt.datetime | None = None
) -> list[x509.Certificate] | None:
    """The path (leaf … trusted root) the chain verifies along for `host`, or None."""
    bounded = _bounded(chain)
    leaf = _load(bounded[0]) if bounded else None
    if leaf is None:
        return None
    seen = {bounded[0]}
    intermediates: list[x509.Certificate] = []
    for der in bounded[1:]:
        if der in seen:
            continue
        seen.add(der)
        cert = _load(der)
        if cert is not None:
            intermediates.append(cert)
    try:
        subject: x509.DNSName | x509.IPAddress
        try:
            subject = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            subject = x509.DNSName(host.rstrip(".").lower())
        verifier = (
            ntls.policy_builder()
            .store(trust.store)
            .time(now or dt.datetime.now(dt.UTC))
            .build_server_verifier(subject)
        )
        return list(verifier.verify(leaf, intermediates))
    except Exception:  # does not verify, or cannot be verified: no path
        return None


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def control_chain(entry: object) -> tuple[bytes, ...]:
    """The chain the control saw (``x_peer_certificates``: OONI ``{data, format}`` or base64)."""
    if not isinstance(entry, dict):
        return ()
    items = entry.get("x_peer_certificates")
    if not isinstance(items, list):
        return ()
    out: list[bytes] = []
    for item in items[:MAX_CHAIN]:
        data = item.get("data") if isinstance(item, dict) else item
        if not isinstance(data, str) or len(data) > MAX_CERT_BYTES * 2:
            continue
        try:
            out.append(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            continue
    return tuple(out)


def chain_to_pem(chain: Sequence[bytes]) -> str:
    """PEM of each certificate (undecodable ones too: the PEM is just base64 of the bytes)."""
    blocks = []
    for der in _bounded(chain):
        b64 = base64.b64encode(der).decode("ascii")
        lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        blocks.append(f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n")
    return "".join(blocks)


# ----------------------------------------------------------------------------------------------
# The known-roots database and the interception description (another module; may be absent)


@functools.lru_cache(maxsize=1)
def _roots_db() -> Any | None:
    try:
        module = importlib.import_module("netvigil.verdict.roots")
        return module.load_known_roots()
    except Exception:  # not written yet, or its data is missing: check works without it
        return None


def roots_available() -> bool:
    return _roots_db() is not None


@dataclass(frozen=True)
class KnownRoot:
    name: str
    description: str
    match: str  # "certificate" | "spki" | "issuer-name"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description, "match": self.match}


def known_root(ders: Sequence[bytes]) -> KnownRoot | None:
    """The known interception root a chain comes from (by certificate, key or issuer name)."""
    db = _roots_db()
    if db is None or not ders:
        return None
    try:
        found = db.match_chain(list(_bounded(ders)))
        if found is None:
            return None
        return KnownRoot(
            str(found.root.name),
            str(getattr(found.root, "description", "") or ""),
            str(found.match),
        )
    except Exception:  # a bug there must not cost the measurement
        return None


def _describe_interception(
    presented: Sequence[bytes], real: Sequence[bytes], host: str
) -> dict[str, Any] | None:
    try:
        module = importlib.import_module("netvigil.verdict.interception")
        out = module.describe_interception(list(presented), list(real) or None, host)
    except Exception:
        return None
    return out if isinstance(out, dict) else None


# ----------------------------------------------------------------------------------------------
# One domain


@dataclass
class DomainResult:
    domain: str
    verdict: str = CANNOT_TELL
    reason: str = ""
    address: str | None = None
    addresses: list[str] = field(default_factory=list)
    failure: str | None = None  # where the probe failed: "dns: …", "tcp: …", "tls: …"
    verify_failure: str | None = None  # the OONI string when the chain did not verify
    verify_message: str | None = None
    chain: tuple[bytes, ...] = ()
    verified: bool = False
    anchor: str | None = None  # subject of the root the chain verified to
    issuer: str = ""  # issuer CN of the top of the presented chain
    leaf_spki: str | None = None
    known_root: KnownRoot | None = None
    control_failure: str | None = None
    control_status: bool | None = None
    control_tls_failure: str | None = None
    control_chain: tuple[bytes, ...] = ()
    control_leaf_spki: str | None = None
    control_issuer: str = ""
    control_anchor: str | None = None
    control_raw: dict[str, Any] | None = None
    interception: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "domain": self.domain,
            "verdict": self.verdict,
            "reason": self.reason,
            "address": self.address,
            "addresses": self.addresses,
            "failure": self.failure,
            "verify_failure": self.verify_failure,
            "verify_message": self.verify_message,
            "verified": self.verified,
            "anchor": self.anchor,
            "issuer": self.issuer,
            "leaf_spki_sha256": self.leaf_spki,
            "known_root": self.known_root.to_json() if self.known_root else None,
            "chain_pem": chain_to_pem(self.chain),
            "control": {
                "failure": self.control_failure,
                "tls_status": self.control_status,
                "tls_failure": self.control_tls_failure,
                "leaf_spki_sha256": self.control_leaf_spki,
                "issuer": self.control_issuer,
                "anchor": self.control_anchor,
                "chain_pem": chain_to_pem(self.control_chain),
            },
            "interception": self.interception,
            "seconds": round(self.seconds, 3),
        }
        if raw:
            out["control"]["response"] = self.control_raw
        return out


def judge(result: DomainResult) -> None:
    """Set ``verdict`` and ``reason`` from what the probe and the control saw (pure)."""
    _judge_comparison(result)
    r = result
    if r.known_root is None or not r.chain:
        return
    same_as_control = (
        r.control_failure is None
        and r.control_leaf_spki is not None
        and r.control_leaf_spki == r.leaf_spki
    )
    if same_as_control:
        return  # the site's genuine certificate, whatever its issuer is called
    by_name = " (matches by name)" if r.known_root.match == "issuer-name" else ""
    known = f"chain from the known interception root '{r.known_root.name}'{by_name}"
    r.reason = f"{r.reason}; {known}" if r.verdict == INTERCEPTED else known
    r.verdict = INTERCEPTED


def _judge_comparison(r: DomainResult) -> None:
    if r.failure is not None or not r.chain:
        r.verdict = CANNOT_TELL
        r.reason = r.failure or "no certificate presented"
        return
    has_control = r.control_failure is None and r.control_status is not None
    if not has_control:
        r.verdict = CANNOT_TELL
        why = r.control_failure or "no control helper"
        state = "verifies" if r.verified else f"does not verify ({r.verify_failure})"
        r.reason = f"the chain {state}, but no control to compare with: {why}"
        return
    differs = (
        r.control_leaf_spki is not None
        and r.leaf_spki is not None
        and r.control_leaf_spki != r.leaf_spki
    )
    if not r.verified:
        if r.control_status:
            r.verdict = INTERCEPTED
            r.reason = f"the chain does not verify ({r.verify_failure}) while the control's does"
            if r.anchor:
                r.reason += f" (its root '{r.anchor}' is in the trust store given)"
        else:
            r.verdict = CANNOT_TELL
            r.reason = (
                f"the chain does not verify ({r.verify_failure}), nor does the control's "
                f"({r.control_tls_failure}): the site's own certificate looks bad"
            )
        return
    if differs and r.anchor != r.control_anchor:
        r.verdict = INTERCEPTED
        r.reason = (
            f"another key than the control's, leading to another root ('{r.anchor}' instead of "
            f"'{r.control_anchor or 'none we trust'}'): a root installed in the trust store?"
        )
        return
    r.verdict = OK
    if differs:
        r.reason = "another key than the control's, from the same trusted root (CDN or rotation)"
    elif r.control_leaf_spki is not None:
        r.reason = "verifies; same certificate key as the control"
    else:
        r.reason = "verifies, and so does the control's"


async def _resolve(domain: str, config: ProbeConfig) -> tuple[list[str], str | None]:
    if config.resolver is None:
        answer = await ndns.resolve_system(domain, timeout=config.dns_timeout)
    else:
        answer = await ndns.resolve(
            domain,
            config.resolver,
            port=config.resolver_port,
            timeout=config.dns_timeout,
            late_window=0.0,
        )
    addresses = [a for a in answer.addresses if ":" not in a]
    if not addresses:
        return [], answer.failure or "dns_no_answer"
    return addresses, None


async def check_domain(
    domain: str,
    config: ProbeConfig,
    *,
    timeout: float,
    port: int = 443,
    address: str | None = None,
) -> DomainResult:
    """Measure one domain from here and from the control; never raises for network trouble.

    `address` skips DNS (the chain at a known address); `port` is for local test servers.
    """
    started = time.monotonic()
    result = DomainResult(domain)
    try:
        async with asyncio.timeout(timeout * 3 + config.dns_timeout + 2.0):
            await _measure(result, config, timeout, port, address)
    except TimeoutError:
        if result.failure is None and not result.chain:
            result.failure = "generic_timeout_error"
        if result.control_failure is None and result.control_status is None:
            result.control_failure = "generic_timeout_error"
    result.seconds = time.monotonic() - started
    judge(result)
    if result.verdict == INTERCEPTED:
        result.interception = _describe_interception(result.chain, result.control_chain, domain)
    return result


async def _measure(
    result: DomainResult, config: ProbeConfig, timeout: float, port: int, pinned: str | None
) -> None:
    domain = result.domain
    if pinned is not None:
        addresses, dns_failure = [pinned], None
    else:
        addresses, dns_failure = await _resolve(domain, config)
    result.addresses = addresses[:8]
    if dns_failure is not None:
        result.failure = f"dns: {dns_failure}"
        result.control_failure = "not asked (no address)"
        return
    ip = addresses[0]
    result.address = ip
    endpoint = ntcp.format_address(ip, port)
    control_task: asyncio.Task[tuple[dict[str, Any] | None, str | None]] | None = None
    if config.helper_url:
        control_task = asyncio.create_task(
            query_control(config.helper_url, f"https://{domain}/", [endpoint], timeout=timeout * 2)
        )
    else:
        result.control_failure = "no control helper"
    try:
        await _handshake(result, ip, port, config, timeout)
        if control_task is not None:
            control, failure = await control_task
            _read_control(result, control, failure, endpoint, config.trust)
    finally:
        if control_task is not None and not control_task.done():
            control_task.cancel()
    if result.chain:
        ders = list(result.chain)
        if result.verified:
            path = verified_path(result.chain, domain, config.trust)
            if path:
                ders.append(_der(path[-1]))  # the installed root the chain leads to
        result.known_root = known_root(ders)


async def _handshake(
    result: DomainResult, ip: str, port: int, config: ProbeConfig, timeout: float
) -> None:
    connected, sock = await ntcp.connect(ip, port, timeout=min(timeout, config.connect_timeout))
    if sock is None:
        result.failure = f"tcp: {connected.failure}"
        return
    shake, stream = await ntls.handshake(
        sock,
        result.domain,
        trust=config.trust,
        timeout=min(timeout, config.tls_timeout),
        keep_unverified=True,
    )
    if stream is not None:
        stream.writer.transport.abort()
    result.chain = tuple(shake.peer_chain)
    if stream is None and not shake.peer_chain:
        result.failure = f"tls: {shake.failure}"
        return
    result.verify_failure = shake.failure
    result.verify_message = shake.verify_failure
    result.verified = shake.failure is None
    result.issuer = top_issuer(result.chain)
    result.leaf_spki = leaf_spki_sha256(result.chain)
    if result.verified:
        path = verified_path(result.chain, result.domain, config.trust)
        if path:
            result.anchor = path[-1].subject.rfc4514_string()
    else:
        result.anchor = anchor_by_name(result.chain, config.trust)


def anchor_by_name(chain: Sequence[bytes], trust: ntls.TrustStore) -> str | None:
    """The trusted root named as the issuer of the top of a chain that did not verify.

    A forged chain from a root the user installed may still fail strict verification (the
    forged leaf lacks required extensions); naming that root shows it is in the trust store.
    """
    for der in reversed(_bounded(chain)):
        cert = _load(der)
        if cert is None:
            continue
        for root in trust.roots:
            if root.subject == cert.issuer:
                return root.subject.rfc4514_string()
        return None
    return None


def _read_control(
    result: DomainResult,
    control: dict[str, Any] | None,
    failure: str | None,
    endpoint: str,
    trust: ntls.TrustStore,
) -> None:
    if control is None:
        result.control_failure = failure or "no answer"
        return
    result.control_raw = control
    handshakes = control.get("tls_handshake") or {}
    entry = handshakes.get(endpoint) if isinstance(handshakes, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("status"), bool):
        tcp = (control.get("tcp_connect") or {}).get(endpoint)
        why = tcp.get("failure") if isinstance(tcp, dict) else None
        result.control_failure = f"the control did not handshake with {endpoint}" + (
            f" ({why})" if why else ""
        )
        return
    result.control_status = bool(entry["status"])
    result.control_tls_failure = (
        entry.get("failure") if isinstance(entry.get("failure"), str) else None
    )
    chain = control_chain(entry)
    if chain:
        result.control_chain = chain
        result.control_leaf_spki = leaf_spki_sha256(chain)
        result.control_issuer = top_issuer(chain)
        path = verified_path(chain, result.domain, trust)
        if path:
            result.control_anchor = path[-1].subject.rfc4514_string()


# ----------------------------------------------------------------------------------------------
# Many domains, and what to say about them


@dataclass
class CheckReport:
    results: list[DomainResult]
    seconds: float
    roots_database: bool
    sets: list[TriggerSet] = field(default_factory=list)  # where the names came from

    def by_verdict(self, verdict: str) -> list[DomainResult]:
        return [r for r in self.results if r.verdict == verdict]

    @property
    def exit_code(self) -> int:
        """0: no interception seen; 1: interception; 2: nothing usable measured."""
        if self.by_verdict(INTERCEPTED):
            return 1
        if self.by_verdict(OK):
            return 0
        return 2

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        counts = Counter(r.verdict for r in self.results)
        return {
            "headline": headline(self),
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "counts": {v: counts.get(v, 0) for v in (INTERCEPTED, OK, CANNOT_TELL)},
            "roots_database": self.roots_database,
            "checked": [s.to_json() for s in self.sets],
            "domains": [r.to_json(raw=raw) for r in self.results],
        }


def _sites(n: int) -> str:
    return f"{n} site" if n == 1 else f"{n} sites"


def headline(report: CheckReport) -> str:
    """One plain-language sentence (two at most) that answers the question."""
    intercepted = report.by_verdict(INTERCEPTED)
    total = len(report.results)
    if intercepted:
        groups: dict[str, list[DomainResult]] = {}
        for r in intercepted:
            groups.setdefault(r.issuer or "an unknown issuer", []).append(r)
        ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
        parts = []
        for issuer, members in ordered:
            root = next((m.known_root for m in members if m.known_root), None)
            text = f"'{issuer}'"
            if root is not None:
                description = root.description.strip().rstrip(".")
                if description[:2] in ("A ", "An") or description.startswith("The "):
                    description = description[0].lower() + description[1:]
                if description:
                    text += f", {description}"
                if root.match == "issuer-name":
                    text += " (matches by name)"
            parts.append((len(members), text))
        first_n, first = parts[0]
        sentence = (
            f"HTTPS to {_sites(first_n)} is intercepted with a certificate issued by {first}."
        )
        if len(parts) > 1:
            rest = "; ".join(f"{n} by {t}" for n, t in parts[1:])
            sentence += f" Also intercepted: {rest}."
        return sentence
    ok = report.by_verdict(OK)
    unknown = total - len(ok)
    if ok:
        tail = f" ({_sites(unknown)} could not be checked)" if unknown else ""
        return (
            f"No interception seen: HTTPS to {_sites(len(ok))} presented the genuine "
            f"certificate{tail}. {checked_summary(report)}"
        )
    reasons = Counter(
        (r.failure or r.control_failure or r.reason or "unknown").split(" (")[0]
        for r in report.results
    )
    common = ", ".join(f"{why} ×{n}" for why, n in reasons.most_common(3))
    return (
        f"Could not tell: none of the {_sites(total)} could be checked ({common}). "
        f"{checked_summary(report)}"
    )


def checked_summary(report: CheckReport) -> str:
    """Which names were checked: "nothing seen" means little without it (a built-in set
    without the sites a censor targets says "no interception" on a network that intercepts)."""
    names = [r.domain for r in report.results]
    if len(names) <= 8:
        return f"Checked: {', '.join(names)}." if names else "No names were checked."
    sets = [s for s in report.sets if s.domains]
    if not sets:
        return f"Checked {len(names)} names."
    parts = ", ".join(f"{s.name} ({len(s.domains)})" for s in sets)
    return f"Checked {len(names)} names: {parts}."


async def check_domains(
    domains: Iterable[str],
    config: ProbeConfig,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = 5.0,
    on_result: Callable[[DomainResult], None] | None = None,
    sets: Sequence[TriggerSet] = (),
) -> CheckReport:
    """Check every domain, at most `concurrency` at once; results in the input order.

    `sets` says where the domains came from (for the headline and --json)."""
    names = list(dict.fromkeys(domains))[:MAX_DOMAINS]
    gate = asyncio.Semaphore(max(1, concurrency))
    started = time.monotonic()

    async def one(name: str) -> DomainResult:
        async with gate:
            result = await check_domain(name, config, timeout=timeout)
        if on_result is not None:
            on_result(result)
        return result

    results = await asyncio.gather(*(one(n) for n in names))
    return CheckReport(list(results), time.monotonic() - started, roots_available(), list(sets))


def write_evidence(report: CheckReport, folder: str | Path) -> Path:
    """Every chain as PEM (``<domain>.pem``, ``<domain>.control.pem``) and ``results.json``."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for r in report.results:
        if r.chain:
            (path / f"{r.domain}.pem").write_text(chain_to_pem(r.chain))
        if r.control_chain:
            (path / f"{r.domain}.control.pem").write_text(chain_to_pem(r.control_chain))
    (path / "results.json").write_text(json.dumps(report.to_json(raw=True), indent=2) + "\n")
    return path
