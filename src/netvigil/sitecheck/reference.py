"""What each browser's TLS stack sends, and what interception products and TLS libraries send.

Reference observations are real ClientHellos with a known client:
- MITMEngine's captures (``data/mitmengine/clienthellos.jsonl``, BSD-3-Clause, Cloudflare and
  the authors of "The Security Impact of HTTPS Interception", NDSS 2017): browsers of
  2011-2018 and the hellos of antivirus products and middleboxes that intercepted them;
- live captures (``data/live_hellos.jsonl``) of Debian's Chromium and Firefox ESR, curl,
  Python's ssl, OpenSSL's and GnuTLS's command-line clients, made on loopback by
  ``tools/capture_client_hellos.py``;
- MITMEngine's ``mitm.txt`` signatures of interception products (features only, no bytes).

A User-Agent is reduced to the TLS stack that its browser ships (``ClaimedClient``): every
Chromium-based browser uses BoringSSL, Firefox uses NSS, Safari and every iOS browser use
Apple's stack, Internet Explorer and the old Edge use SChannel.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from ua_parser import parse as parse_user_agent

from netvigil.sitecheck.clienthello import ClientHello, is_grease, parse_client_hello

if TYPE_CHECKING:
    from netvigil.sitecheck.verdict import Envelope

MAX_USER_AGENT = 2048
# Envelopes are cached per (stack, version): User-Agents name a few hundred versions at most.
MAX_CACHED_ENVELOPES = 4096

CHROMIUM = "chromium"
FIREFOX = "firefox"
SAFARI = "safari"
SCHANNEL = "schannel"
STACK_NAMES = {
    CHROMIUM: "Chromium (BoringSSL)",
    FIREFOX: "Firefox (NSS)",
    SAFARI: "Safari (Apple TLS)",
    SCHANNEL: "Internet Explorer / legacy Edge (SChannel)",
}
_CHROMIUM_FAMILIES = frozenset(
    {
        "Chrome",
        "Chromium",
        "HeadlessChrome",
        "Chrome Mobile",
        "Chrome Mobile WebView",
        "Edge",
        "Edge Mobile",
        "Opera",
        "Opera Mobile",
        "Brave",
        "Vivaldi",
        "Yandex Browser",
        "Samsung Internet",
    }
)
_FIREFOX_FAMILIES = frozenset({"Firefox", "Firefox Mobile", "Firefox Beta", "Firefox ESR"})
_IOS_OR_SAFARI = frozenset({"Safari", "Mobile Safari", "Mobile Safari UI/WKWebView"})
_CHROME_TOKEN = re.compile(r"(?:Chrome|Chromium|HeadlessChrome)/(\d{1,4})\.")
# The Chromium version of an Opera release is its own major plus about 13 (Opera 15 was
# Chromium 28, Opera 36 Chromium 49): used only for MITMEngine's Opera captures, which have
# no User-Agent with a Chrome token.
OPERA_TO_CHROMIUM = 13


@dataclass(frozen=True, slots=True)
class ClaimedClient:
    """The TLS stack a User-Agent says it is, with the version that decides its features."""

    stack: str
    version: int  # Chromium major for every Chromium browser; else the browser's own major
    browser: str  # the UA family, for humans

    def describe(self) -> str:
        return f"{self.browser} {self.version} ({STACK_NAMES[self.stack]})"


def claimed_client(user_agent: str) -> ClaimedClient | None:
    """The browser a User-Agent claims, or None when it is no browser we have references for."""
    return _claimed_client(user_agent[:MAX_USER_AGENT])


# A site sees the same few thousand User-Agents again and again; parsing one takes ~100 µs.
@functools.lru_cache(maxsize=16384)
def _claimed_client(user_agent: str) -> ClaimedClient | None:
    agent = parse_user_agent(user_agent).user_agent
    if agent is None or agent.major is None or not agent.major.isdigit():
        return None
    family, major = agent.family, int(agent.major)
    if family in {"Chrome Mobile iOS", "Firefox iOS", "Edge iOS", "Opera Mini"}:
        return None  # iOS browsers use Apple's stack with their own version: no reference
    if family in _CHROMIUM_FAMILIES:
        if family == "Edge" and major < 79:
            return ClaimedClient(SCHANNEL, major, family)  # EdgeHTML, before Chromium
        token = _CHROME_TOKEN.search(user_agent)
        if token is None:
            return None
        return ClaimedClient(CHROMIUM, int(token.group(1)), family)
    if family in _FIREFOX_FAMILIES:
        return ClaimedClient(FIREFOX, major, family)
    if family in _IOS_OR_SAFARI:
        return ClaimedClient(SAFARI, major, family)
    if family == "IE":
        return ClaimedClient(SCHANNEL, major, family)
    return None


@dataclass(frozen=True, slots=True)
class Features:
    """The comparable parts of a ClientHello: GREASE reduced to a flag, order dropped."""

    ciphers: frozenset[int]
    extensions: frozenset[int]
    groups: frozenset[int]
    point_formats: frozenset[int]
    signature_algorithms: frozenset[int]
    compression: frozenset[int]
    grease: bool
    max_version: int  # TLS 1.3 drafts count as 0x0304
    cipher_order: tuple[int, ...] = ()  # as sent, GREASE removed

    @classmethod
    def of(cls, hello: ClientHello) -> Features:
        return cls(
            ciphers=frozenset(v for v in hello.cipher_suites if not is_grease(v)),
            extensions=frozenset(v for v in hello.extensions if not is_grease(v)),
            groups=frozenset(v for v in hello.supported_groups if not is_grease(v)),
            point_formats=frozenset(hello.ec_point_formats),
            signature_algorithms=frozenset(
                v for v in hello.signature_algorithms if not is_grease(v)
            ),
            compression=frozenset(hello.compression_methods),
            grease=hello.grease,
            max_version=version_rank(hello.max_version),
            cipher_order=tuple(v for v in hello.cipher_suites if not is_grease(v)),
        )


def version_rank(version: int) -> int:
    """Comparable protocol version: TLS 1.3 drafts (0x7fXX, 0x7e0X) and final both 0x0304."""
    if version >> 8 in (0x7F, 0x7E):
        return 0x0304
    return version


@dataclass(frozen=True, slots=True)
class Observation:
    """One real ClientHello of a known client."""

    label: str
    features: Features
    stack: str | None = None  # a browser stack, or None for a product or library
    version: int = 0
    product: str | None = None  # the interception product or TLS library, if not a browser
    hello: ClientHello | None = None


_BROWSER_LABEL = re.compile(r"-(chrome|firefox|opera|safari|ie|edge)-(\d{1,3})(?:\.\d+)*$")


def _stack_of_label(name: str, major: int) -> tuple[str, int] | None:
    if name == "chrome":
        return CHROMIUM, major
    if name == "opera":
        return (CHROMIUM, major + OPERA_TO_CHROMIUM) if major >= 15 else None
    if name == "firefox":
        return FIREFOX, major
    if name == "safari":
        return SAFARI, major
    if name in ("ie", "edge"):
        return SCHANNEL, major
    return None


def _product_of_label(label: str) -> str:
    """``antivirus/windows-7-avast-free-antivirus-10-chrome-48`` → ``avast-free-antivirus-10``."""
    tail = label.split("/", 1)[-1]
    tail = re.sub(r"^(mac-[\d.]+|windows-\d+(?:-windows-\d+)?)-", "", tail)
    tail = re.sub(r"-(chrome|firefox|opera|safari|ie|edge)(-[\d.]+)?$", "", tail)
    return tail or label


def _read_jsonl(name: str) -> Iterator[dict[str, Any]]:
    text = resources.files("netvigil.sitecheck").joinpath("data", *name.split("/")).read_text()
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            if isinstance(record, dict):
                yield record


def _observation(record: dict[str, Any]) -> Observation | None:
    hello = parse_client_hello(bytes.fromhex(str(record["client_hello_record_hex"])))
    if not isinstance(hello, ClientHello):
        return None
    label = str(record["label"])
    features = Features.of(hello)
    category = str(record.get("category", "live"))
    if label.startswith("live/"):
        client = str(record["client"])
        if client == "chromium":
            agent = claimed_client(str(record.get("user_agent") or ""))
            if agent is not None:
                return Observation(label, features, agent.stack, agent.version, hello=hello)
        if client == "firefox-esr":
            match = re.search(r"(\d+)\.", str(record.get("client_version", "")))
            if match:
                return Observation(label, features, FIREFOX, int(match.group(1)), hello=hello)
        return Observation(label, features, product=_library_name(record), hello=hello)
    browser = _BROWSER_LABEL.search(label)
    if category == "browsers" or "-none-" in label:
        if browser is None:
            return None
        stack = _stack_of_label(browser.group(1), int(browser.group(2)))
        if stack is None:
            return None
        return Observation(label, features, stack[0], stack[1], hello=hello)
    if category in ("antivirus", "middleboxes", "gnutls") or label.startswith("misc/openssl"):
        return Observation(label, features, product=_product_of_label(label), hello=hello)
    return None  # misc/: duplicates of the other folders mixed with unlabelled browsers


def _library_name(record: dict[str, Any]) -> str:
    version = str(record.get("client_version", ""))
    client = str(record["client"])
    names = {
        "python-ssl": "Python ssl",
        "curl": "curl",
        "openssl-s_client": "OpenSSL s_client",
        "gnutls-cli": "GnuTLS",
        "go-net-http": "Go crypto/tls",
    }
    short = re.search(r"(OpenSSL[ /][\d.]+|gnutls-cli [\d.]+|go1[\d.]+)", version)
    detail = f" ({short.group(1)})" if short else ""
    return names.get(client, client) + detail


def _signature_features(fields: list[str]) -> Features | None:
    """Features of a MITMEngine request signature: tls_version:ciphers:exts:curves:pointfmts."""

    def codes(text: str) -> frozenset[int]:
        text = text.lstrip("~*")
        found: set[int] = set()
        for item in filter(None, text.split(",")):
            if item.startswith("!"):
                continue  # excluded: the product never sends it
            found.add(int(item.lstrip("?^"), 16))
        return frozenset(found)

    try:
        version = int(fields[0].split(",")[-1] or "0", 16)
        return Features(
            ciphers=codes(fields[1]),
            extensions=codes(fields[2]),
            groups=codes(fields[3]),
            point_formats=codes(fields[4]),
            signature_algorithms=frozenset(),
            compression=frozenset({0}),
            grease="grease" in fields[6],
            max_version=version_rank(version),
        )
    except (ValueError, IndexError):
        return None


def _mitm_signatures() -> Iterator[Observation]:
    text = resources.files("netvigil.sitecheck").joinpath("data", "mitmengine", "mitm.txt")
    for line in text.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split("|")
        if len(parts) != 3:
            continue
        features = _signature_features(parts[1].split(":"))
        name = parts[2].split(":")[0]
        if features is not None and features.ciphers and name:
            yield Observation(f"mitmengine/mitm.txt:{name}", features, product=name)


@functools.cache
def shipped_observations() -> tuple[Observation, ...]:
    """Every reference observation shipped with netvigil (parsed once per process)."""
    found: list[Observation] = []
    for name in ("mitmengine/clienthellos.jsonl", "live_hellos.jsonl"):
        for record in _read_jsonl(name):
            observation = _observation(record)
            if observation is not None:
                found.append(observation)
    found.extend(_mitm_signatures())
    return tuple(found)


def labelled_records() -> Iterator[dict[str, Any]]:
    """The raw shipped capture records (for benchmarks and tests)."""
    yield from _read_jsonl("mitmengine/clienthellos.jsonl")
    yield from _read_jsonl("live_hellos.jsonl")


class ReferenceDB:
    """Browser observations by stack and version, plus products and libraries to name."""

    def __init__(self, observations: Iterable[Observation]) -> None:
        self.browsers: dict[str, list[Observation]] = {}
        self.products: list[Observation] = []
        self._envelopes: dict[tuple[str, int, str | None], Envelope] = {}
        self._windows: dict[tuple[str, int, str | None], tuple[list[Observation], bool]] = {}
        for observation in observations:
            if observation.stack is not None:
                self.browsers.setdefault(observation.stack, []).append(observation)
            elif observation.product is not None:
                self.products.append(observation)
        for stack_observations in self.browsers.values():
            stack_observations.sort(key=lambda o: o.version)
        # Code points that some product or library sends and no browser of any stack does:
        # in a gap between distant reference versions of a browser only these are evidence,
        # because whatever one browser adopted another may have adopted meanwhile.
        browsers = [o for observations in self.browsers.values() for o in observations]
        self.library_codes: dict[str, frozenset[int]] = {
            kind: frozenset(c for p in self.products for c in getattr(p.features, kind))
            - frozenset(c for b in browsers for c in getattr(b.features, kind))
            for kind in ("ciphers", "extensions", "groups", "signature_algorithms")
        }

    def envelope(
        self, claimed: ClaimedClient, exclude_label: str | None, observations: list[Observation]
    ) -> Envelope:
        """The envelope of ``observations`` (the window of ``claimed``), cached per window."""
        key = (claimed.stack, claimed.version, exclude_label)
        found = self._envelopes.get(key)
        if found is None:
            from netvigil.sitecheck.verdict import Envelope

            found = Envelope.of(observations)
            if len(self._envelopes) < MAX_CACHED_ENVELOPES:
                self._envelopes[key] = found
        return found

    @classmethod
    def shipped(cls) -> ReferenceDB:
        return _shipped_db()

    def window(
        self, claimed: ClaimedClient, exclude_label: str | None = None
    ) -> tuple[list[Observation], bool]:
        """The observations of the claimed stack around its version, and whether the version
        falls in a gap (no reference within ``GAP`` majors) so only library markers count."""
        key = (claimed.stack, claimed.version, exclude_label)
        cached = self._windows.get(key)
        if cached is None:
            cached = self._window(claimed, exclude_label)
            if len(self._windows) < MAX_CACHED_ENVELOPES:
                self._windows[key] = cached
        return list(cached[0]), cached[1]

    def _window(
        self, claimed: ClaimedClient, exclude_label: str | None
    ) -> tuple[list[Observation], bool]:
        observations = [o for o in self.browsers.get(claimed.stack, []) if o.label != exclude_label]
        if not observations:
            return [], False
        versions = sorted({o.version for o in observations})
        if claimed.version < versions[0] - NEAR:
            return [], False  # older than anything we know
        below = [v for v in versions if v <= claimed.version]
        above = [v for v in versions if v >= claimed.version]
        low = below[-1] if below else versions[0]
        high = above[0] if above else versions[-1]
        low, high = min(low, claimed.version - NEAR), max(high, claimed.version + NEAR)
        chosen = [o for o in observations if low <= o.version <= high]
        # Too few to say what the browser always or never sends: widen to the nearest
        # further versions, one at a time, the closer side first.
        while len(chosen) < MIN_REFERENCES:
            lower = [v for v in versions if v < low]
            higher = [v for v in versions if v > high]
            if not lower and not higher:
                break
            if lower and (not higher or claimed.version - lower[-1] <= higher[0] - claimed.version):
                low = lower[-1]
            else:
                high = higher[0]
            chosen = [o for o in observations if low <= o.version <= high]
        nearest = min(abs(v - claimed.version) for v in versions)
        # Newer than every reference: the browser may have added or dropped anything since,
        # so only what no browser sends is evidence (a gap, however near).
        return chosen, nearest > GAP or claimed.version > versions[-1]


# Fewer reference hellos than this cannot tell what a browser always or never sends.
MIN_REFERENCES = 6
# Reference versions within NEAR majors of the claimed one are pooled: builds for different
# systems and channels of one major differ, and features change over several releases.
NEAR = 2
# Farther than GAP majors from any reference, a code point the references lack is only
# counted when some library or product is known to send it.
GAP = 4


@functools.cache
def _shipped_db() -> ReferenceDB:
    return ReferenceDB(shipped_observations())
