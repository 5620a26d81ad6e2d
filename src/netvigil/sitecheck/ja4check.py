"""Verdicts from a JA4 or JA4_r string, for logs that keep no ClientHello.

A JA4_r (``t13d1516h2_<ciphers>_<extensions>_<sigalgs>``) carries the cipher suites, the
extensions (SNI and ALPN as flags in its first part) and the signature algorithms, so the
rules on those and the version rules apply; groups, point formats, compression and GREASE are
not in it, so their rules are not evaluated. A hashed JA4 carries only its first part (version,
SNI, counts, ALPN) in the clear: it is ``consistent`` when it equals the JA4 of a reference
hello of the claimed browser, ``likely-intercepted`` when the version contradicts the browser
or its cipher hash is that of a known product or library and of no reference of the claimed
browser, and ``unknown`` otherwise (its extension hash changes with resumption and padding,
so an unseen one is no evidence).
"""

from __future__ import annotations

import functools
import re

from netvigil.sitecheck.clienthello import EXT_ALPN, EXT_SERVER_NAME, ClientHello
from netvigil.sitecheck.fingerprint import ja4, ja4_from_raw
from netvigil.sitecheck.reference import Features, ReferenceDB, claimed_client
from netvigil.sitecheck.verdict import (
    CONSISTENT,
    LIKELY_INTERCEPTED,
    UNKNOWN,
    Fingerprints,
    Match,
    Reason,
    Verdict,
    check_facts,
    judge_features,
)

MAX_JA4 = 8192
_PART_A = re.compile(r"^([tqd])(13|12|11|10|s3|s2|d1|d2|d3|00)([di])(\d\d)(\d\d)([0-9a-zA-Z]{2})$")
_VERSIONS = {
    "13": 0x0304,
    "12": 0x0303,
    "11": 0x0302,
    "10": 0x0301,
    "s3": 0x0300,
    "s2": 0x0002,
}
_HEX12 = re.compile(r"^[0-9a-f]{12}$")
_HEX4_LIST = re.compile(r"^(?:[0-9a-f]{4}(?:,[0-9a-f]{4})*)?$")


def _codes(text: str) -> frozenset[int]:
    return frozenset(int(v, 16) for v in text.split(",") if v)


def judge_ja4(
    text: str,
    user_agent: str,
    db: ReferenceDB | None = None,
    exclude_label: str | None = None,
) -> tuple[Verdict | None, str | None]:
    """The verdict for a JA4 or JA4_r string and a User-Agent, or why there is none.

    ``exclude_label`` leaves one reference capture out (for measurement on the references)."""
    db = db if db is not None else ReferenceDB.shipped()
    text = text.strip().lower()[:MAX_JA4]
    parts = text.split("_")
    head = _PART_A.match(parts[0]) if parts else None
    if head is None or len(parts) not in (3, 4):
        return None, "not a JA4 or JA4_r string"
    version = _VERSIONS.get(head.group(2), 0)
    if len(parts) == 3 and _HEX12.match(parts[1]) and _HEX12.match(parts[2]):
        return _judge_hashed(text, version, user_agent, db, exclude_label), None
    if not all(_HEX4_LIST.match(p) for p in parts[1:]):
        return None, "JA4_r lists are not 4-digit hex"
    extensions = set(_codes(parts[2]))
    if head.group(3) == "d":
        extensions.add(EXT_SERVER_NAME)
    if head.group(6) != "00":
        extensions.add(EXT_ALPN)
    features = Features(
        ciphers=_codes(parts[1]),
        extensions=frozenset(extensions),
        groups=frozenset(),
        point_formats=frozenset(),
        signature_algorithms=_codes(parts[3]) if len(parts) == 4 else frozenset(),
        compression=frozenset({0}),
        grease=False,
        max_version=version,
    )
    known = frozenset({"ciphers", "extensions", "signature_algorithms", "version"})
    prints = Fingerprints("", ja4_from_raw(parts[0], parts[1], "_".join(parts[2:])), "")
    return judge_features(features, user_agent, prints, db, exclude_label, known), None


def _judge_hashed(
    text: str, version: int, user_agent: str, db: ReferenceDB, exclude_label: str | None
) -> Verdict:
    claimed = claimed_client(user_agent)
    if claimed is None:
        return Verdict(UNKNOWN, None, notes=("no reference for this User-Agent",), ja4=text)
    who = claimed.describe()
    placeholder = Features(
        frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), True, version
    )
    reasons = [r for r in check_facts(placeholder, claimed) if r.rule == "version-too-low"]
    observations, gap = db.window(claimed, exclude_label)
    browser_prints = {_ja4_of(o.hello) for o in observations if o.hello is not None}
    browser_ciphers = {p.split("_")[1] for p in browser_prints}
    cipher_hash = text.split("_")[1]
    match: Match | None = None
    if not reasons and text in browser_prints:
        return Verdict(CONSISTENT, who, references=len(observations), ja4=text)
    if not gap and observations and cipher_hash not in browser_ciphers:
        for product in db.products:
            if product.hello is None or product.product is None or product.label == exclude_label:
                continue
            if _ja4_of(product.hello).split("_")[1] == cipher_hash:
                match = Match(product.product, 1.0, product.label)
                reasons.append(
                    Reason(
                        "ja4-cipher-hash-of-library",
                        f"the cipher list is {product.product}'s; {who} never sent it",
                    )
                )
                break
    if reasons:
        return Verdict(
            LIKELY_INTERCEPTED,
            who,
            reasons=tuple(reasons),
            best_match=match,
            references=len(observations),
            ja4=text,
            notes=("judged on a hashed JA4: version and cipher hash only",),
        )
    return Verdict(
        UNKNOWN,
        who,
        references=len(observations),
        ja4=text,
        notes=("a hashed JA4 unlike every reference: no evidence either way",),
    )


@functools.lru_cache(maxsize=8192)
def _ja4_of(hello: ClientHello) -> str:
    return ja4(hello)
