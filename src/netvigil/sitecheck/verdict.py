"""Is this ClientHello one that the browser named by the User-Agent could have sent?

The rules (each explained in docs/site-side-detection.md) compare the hello with the envelope
of the claimed stack's reference observations around the claimed version: what any of them
sends (``allowed``), what all of them send (``required``). Each broken rule is a ``Reason``.
No reason: ``consistent``. A reason: ``likely-intercepted``, with the known product or TLS
library whose hellos look most like this one. No reference: ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from netvigil.sitecheck.clienthello import ClientHello
from netvigil.sitecheck.fingerprint import family_fingerprint, ja3_hash, ja4
from netvigil.sitecheck.reference import (
    CHROMIUM,
    FIREFOX,
    MIN_REFERENCES,
    SAFARI,
    SCHANNEL,
    ClaimedClient,
    Features,
    Observation,
    ReferenceDB,
    claimed_client,
)

CONSISTENT = "consistent"
LIKELY_INTERCEPTED = "likely-intercepted"
UNKNOWN = "unknown"

# Sent on some connections of a client and not others (SNI to a name, padding for some hello
# sizes, resumption's pre_shared_key and early_data, a HelloRetryRequest's cookie, the
# renegotiation SCSV and TLS_FALLBACK_SCSV on a version fallback): never evidence either way.
PER_CONNECTION_EXTENSIONS = frozenset({0x0000, 0x0015, 0x0029, 0x002A, 0x002C})
SIGNALLING_SUITES = frozenset({0x00FF, 0x5600})
# Below this share of similarity, no product or library is named as the likely sender.
MIN_MATCH_SCORE = 0.5

_VERSION_NAMES = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2"}


def _version_name(version: int) -> str:
    return "TLS 1.3" if version == 0x0304 else _VERSION_NAMES.get(version, f"0x{version:04x}")


@dataclass(frozen=True, slots=True)
class Reason:
    """One broken rule: ``rule`` is a stable identifier, ``detail`` plain text for people."""

    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class Match:
    name: str  # the product or library
    score: float  # 0..1, feature-set similarity
    label: str  # the reference observation it came from


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str
    claimed: str | None  # what the User-Agent claims, for humans
    reasons: tuple[Reason, ...] = ()
    best_match: Match | None = None
    ja3: str = ""
    ja4: str = ""
    family: str = ""
    references: int = 0  # observations the decision rested on
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "claimed": self.claimed,
            "reasons": [{"rule": r.rule, "detail": r.detail} for r in self.reasons],
            "best_match": None
            if self.best_match is None
            else {
                "name": self.best_match.name,
                "score": round(self.best_match.score, 3),
                "reference": self.best_match.label,
            },
            "ja3": self.ja3,
            "ja4": self.ja4,
            "family": self.family,
            "references": self.references,
            "notes": list(self.notes),
        }


def _codes(values: frozenset[int], width: int = 4) -> str:
    shown = sorted(values)[:8]
    text = ",".join(f"0x{v:0{width}x}" for v in shown)
    return text + (f",… ({len(values)} in all)" if len(values) > len(shown) else "")


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the reference observations of one claimed client send."""

    allowed_ciphers: frozenset[int]
    required_ciphers: frozenset[int]
    allowed_extensions: frozenset[int]
    required_extensions: frozenset[int]
    allowed_groups: frozenset[int]
    allowed_point_formats: frozenset[int]
    allowed_signature_algorithms: frozenset[int]
    allowed_compression: frozenset[int]
    always_grease: bool
    never_grease: bool
    min_version: int
    max_version: int
    # Every cipher list the references sent, in order, GREASE removed: browsers do not
    # shuffle their cipher suites (Chrome shuffles only extensions), so an unseen order of
    # the same suites is a different implementation.
    cipher_orders: frozenset[tuple[int, ...]] = frozenset()

    @classmethod
    def of(cls, observations: list[Observation]) -> Envelope:
        features = [o.features for o in observations]

        def union(name: str) -> frozenset[int]:
            return frozenset().union(*(getattr(f, name) for f in features))

        def intersection(name: str) -> frozenset[int]:
            sets: list[frozenset[int]] = [getattr(f, name) for f in features]
            return frozenset.intersection(*sets)

        return cls(
            allowed_ciphers=union("ciphers"),
            required_ciphers=intersection("ciphers"),
            allowed_extensions=union("extensions"),
            required_extensions=intersection("extensions"),
            allowed_groups=union("groups"),
            allowed_point_formats=union("point_formats"),
            allowed_signature_algorithms=union("signature_algorithms"),
            allowed_compression=union("compression"),
            always_grease=all(f.grease for f in features),
            never_grease=not any(f.grease for f in features),
            min_version=min(f.max_version for f in features),
            max_version=max(f.max_version for f in features),
            cipher_orders=frozenset(o.features.cipher_order for o in observations),
        )


def check_features(
    features: Features,
    envelope: Envelope,
    claimed: ClaimedClient,
    library_codes: dict[str, frozenset[int]],
    gap: bool,
) -> list[Reason]:
    """Every rule the hello breaks against the claimed client's envelope."""
    who = claimed.describe()
    reasons: list[Reason] = []

    def evidence(kind: str, codes: frozenset[int]) -> frozenset[int]:
        # Between distant reference versions a browser may have gained new code points;
        # only ones that some library or product sends still count there.
        return codes & library_codes.get(kind, frozenset()) if gap else codes

    extra = evidence("ciphers", features.ciphers - envelope.allowed_ciphers - SIGNALLING_SUITES)
    if extra:
        reasons.append(
            Reason("cipher-never-sent", f"{who} never offers cipher suites {_codes(extra)}")
        )
    missing = envelope.required_ciphers - features.ciphers - SIGNALLING_SUITES
    if missing and not gap:
        reasons.append(
            Reason("cipher-missing", f"{who} always offers cipher suites {_codes(missing)}")
        )
    extensions = features.extensions - PER_CONNECTION_EXTENSIONS
    extra = evidence("extensions", extensions - envelope.allowed_extensions)
    if extra:
        reasons.append(
            Reason("extension-never-sent", f"{who} never sends extensions {_codes(extra)}")
        )
    missing = envelope.required_extensions - PER_CONNECTION_EXTENSIONS - features.extensions
    if missing and not gap:
        reasons.append(
            Reason("extension-missing", f"{who} always sends extensions {_codes(missing)}")
        )
    extra = evidence("groups", features.groups - envelope.allowed_groups)
    if extra:
        reasons.append(Reason("group-never-sent", f"{who} never offers groups {_codes(extra)}"))
    extra = features.point_formats - envelope.allowed_point_formats
    if extra:
        reasons.append(
            Reason(
                "point-format-never-sent", f"{who} never offers EC point formats {_codes(extra, 2)}"
            )
        )
    extra = evidence(
        "signature_algorithms",
        features.signature_algorithms - envelope.allowed_signature_algorithms,
    )
    if extra and envelope.allowed_signature_algorithms:
        reasons.append(
            Reason(
                "signature-algorithm-never-sent",
                f"{who} never offers signature algorithms {_codes(extra)}",
            )
        )
    extra = features.compression - envelope.allowed_compression
    if extra:
        reasons.append(
            Reason(
                "compression-never-sent",
                f"{who} never offers compression methods {_codes(extra, 2)}",
            )
        )
    if envelope.always_grease and not features.grease:
        reasons.append(
            Reason("grease-absent", f"{who} always sends GREASE values; this hello has none")
        )
    if envelope.never_grease and features.grease and not gap:
        reasons.append(
            Reason("grease-unexpected", f"{who} never sends GREASE values; this hello does")
        )
    # Only SChannel: Chromium's order depends on the CPU (AES-NI or not) and Safari's and
    # Firefox's on builds we have too few references of, so there the rule misfired on
    # real browsers.
    if (
        claimed.stack == SCHANNEL
        and not gap
        and not reasons
        and envelope.cipher_orders
        and _strip_signalling(features.cipher_order)
        not in {_strip_signalling(o) for o in envelope.cipher_orders}
    ):
        reasons.append(
            Reason("cipher-order-unseen", f"{who} never orders its cipher suites this way")
        )
    if features.max_version < envelope.min_version:
        reasons.append(
            Reason(
                "version-too-low",
                f"{who} offers {_version_name(envelope.min_version)}; this hello stops at "
                f"{_version_name(features.max_version)}",
            )
        )
    elif features.max_version > envelope.max_version and not gap:
        reasons.append(
            Reason(
                "version-too-high",
                f"{who} never offers {_version_name(features.max_version)}",
            )
        )
    return reasons


@dataclass(frozen=True, slots=True)
class StackFact:
    """A documented property of every release of a browser since ``since``, which holds for
    versions our captures do not reach (public release notes; see the docs)."""

    stack: str
    since: int
    rule: str  # "grease-absent" or "version-too-low"
    minimum_version: int = 0  # for version-too-low


STACK_FACTS = (
    # GREASE (RFC 8701) has been on by default since Chrome 55 (Dec 2016); 60 leaves margin.
    StackFact(CHROMIUM, 60, "grease-absent"),
    # TLS 1.3 final: Chrome 70 (Oct 2018), Firefox 63 (Oct 2018), Safari 14 (macOS 10.15/11,
    # iOS 14, 2020); two releases of margin for Chrome and Firefox.
    StackFact(CHROMIUM, 72, "version-too-low", 0x0304),
    StackFact(FIREFOX, 65, "version-too-low", 0x0304),
    StackFact(SAFARI, 14, "version-too-low", 0x0304),
)


def check_facts(features: Features, claimed: ClaimedClient) -> list[Reason]:
    """The documented facts about the claimed browser that this hello contradicts."""
    who = claimed.describe()
    reasons: list[Reason] = []
    for fact in STACK_FACTS:
        if fact.stack != claimed.stack or claimed.version < fact.since:
            continue
        if fact.rule == "grease-absent" and not features.grease:
            reasons.append(
                Reason("grease-absent", f"{who} always sends GREASE values; this hello has none")
            )
        if fact.rule == "version-too-low" and features.max_version < fact.minimum_version:
            reasons.append(
                Reason(
                    "version-too-low",
                    f"{who} offers {_version_name(fact.minimum_version)}; this hello stops at "
                    f"{_version_name(features.max_version)}",
                )
            )
    return reasons


def _strip_signalling(order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(v for v in order if v not in SIGNALLING_SUITES)


def _similarity(a: Features, b: Features) -> float:
    """Mean Jaccard similarity of the cipher, extension and group sets, plus point formats
    and GREASE; order is ignored because browsers and some products randomise it."""

    def jaccard(x: frozenset[int], y: frozenset[int]) -> float:
        return 1.0 if not x and not y else len(x & y) / len(x | y)

    parts = [
        jaccard(a.ciphers, b.ciphers) * 3,
        jaccard(a.extensions - PER_CONNECTION_EXTENSIONS, b.extensions - PER_CONNECTION_EXTENSIONS)
        * 2,
        jaccard(a.groups, b.groups),
        jaccard(a.point_formats, b.point_formats) * 0.5,
        (1.0 if a.grease == b.grease else 0.0) * 0.5,
        (1.0 if a.max_version == b.max_version else 0.0) * 0.5,
    ]
    return sum(parts) / 7.5


def best_match(
    features: Features, products: list[Observation], exclude: str | None = None
) -> Match | None:
    best: Match | None = None
    for product in products:
        if product.label == exclude or product.product is None:
            continue
        score = _similarity(features, product.features)
        if best is None or score > best.score:
            best = Match(product.product, score, product.label)
    return best if best is not None and best.score >= MIN_MATCH_SCORE else None


@dataclass(frozen=True, slots=True)
class Fingerprints:
    """The fingerprints a verdict reports (empty strings when the input had none)."""

    ja3: str
    ja4: str
    family: str


# The feature each rule reads: a rule whose feature a log line does not carry (a JA4 has no
# groups, point formats or GREASE) is not evaluated.
RULE_NEEDS = {
    "cipher-never-sent": "ciphers",
    "cipher-missing": "ciphers",
    "extension-never-sent": "extensions",
    "extension-missing": "extensions",
    "group-never-sent": "groups",
    "point-format-never-sent": "point_formats",
    "signature-algorithm-never-sent": "signature_algorithms",
    "compression-never-sent": "compression",
    "grease-absent": "grease",
    "grease-unexpected": "grease",
    "version-too-low": "version",
    "version-too-high": "version",
    "cipher-order-unseen": "cipher_order",
}
ALL_FEATURES = frozenset(RULE_NEEDS.values())


def judge(
    hello: ClientHello,
    user_agent: str,
    db: ReferenceDB | None = None,
    exclude_label: str | None = None,
) -> Verdict:
    """The verdict for one connection: its ClientHello and the User-Agent it then sent.

    ``exclude_label`` leaves one reference observation out (for honest measurement on the
    reference data itself).
    """
    prints = Fingerprints(ja3_hash(hello), ja4(hello), family_fingerprint(hello))
    features = Features.of(hello)
    db = db if db is not None else ReferenceDB.shipped()
    if exclude_label is not None:
        return judge_features(features, user_agent, prints, db, exclude_label)
    # One stack sends the same features on every connection (order and per-connection
    # extensions aside), so a site judges each (features, browser) pair once.
    claimed = claimed_client(user_agent)
    key = (features, claimed, id(db))
    core = _VERDICT_CACHE.get(key)
    if core is None:
        core = judge_features(features, user_agent, Fingerprints("", "", ""), db)
        if len(_VERDICT_CACHE) >= MAX_CACHED_VERDICTS:
            _VERDICT_CACHE.pop(next(iter(_VERDICT_CACHE)))
        _VERDICT_CACHE[key] = core
    return replace(core, ja3=prints.ja3, ja4=prints.ja4, family=prints.family)


MAX_CACHED_VERDICTS = 65536
_VERDICT_CACHE: dict[tuple[Features, ClaimedClient | None, int], Verdict] = {}


def judge_features(
    features: Features,
    user_agent: str,
    prints: Fingerprints,
    db: ReferenceDB | None = None,
    exclude_label: str | None = None,
    known: frozenset[str] = ALL_FEATURES,
) -> Verdict:
    """The verdict from features, of which only those named in ``known`` are evidence."""
    db = db if db is not None else ReferenceDB.shipped()
    claimed = claimed_client(user_agent)
    if claimed is None:
        return Verdict(
            UNKNOWN,
            None,
            notes=("no reference for this User-Agent",),
            ja3=prints.ja3,
            ja4=prints.ja4,
            family=prints.family,
        )
    observations, gap = db.window(claimed, exclude_label)
    facts = [r for r in check_facts(features, claimed) if RULE_NEEDS[r.rule] in known]
    if len(observations) < MIN_REFERENCES and not facts:
        return Verdict(
            UNKNOWN,
            claimed.describe(),
            references=len(observations),
            notes=("too few references for this browser version",),
            ja3=prints.ja3,
            ja4=prints.ja4,
            family=prints.family,
        )
    reasons = facts
    if len(observations) >= MIN_REFERENCES:
        envelope = db.envelope(claimed, exclude_label, observations)
        found = check_features(features, envelope, claimed, db.library_codes, gap)
        fact_rules = {f.rule for f in facts}
        reasons += [r for r in found if r.rule not in fact_rules and RULE_NEEDS[r.rule] in known]
    notes: tuple[str, ...] = ()
    if gap:
        notes += ("claimed version is far from every reference: only library markers counted",)
    if known != ALL_FEATURES:
        notes += ("judged on: " + ", ".join(sorted(known)),)
    if not reasons:
        return Verdict(
            CONSISTENT,
            claimed.describe(),
            references=len(observations),
            notes=notes,
            ja3=prints.ja3,
            ja4=prints.ja4,
            family=prints.family,
        )
    return Verdict(
        LIKELY_INTERCEPTED,
        claimed.describe(),
        reasons=tuple(reasons),
        best_match=best_match(features, db.products, exclude=exclude_label)
        if known == ALL_FEATURES
        else None,
        references=len(observations),
        notes=notes,
        ja3=prints.ja3,
        ja4=prints.ja4,
        family=prints.family,
    )
