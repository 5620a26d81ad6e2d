"""Known interception roots: Kazakhstan's national roots, Superfish, eDellRoot, Cyberoam, …

    from netvigil.verdict.roots import load_known_roots
    roots = load_known_roots()                     # cached; reads package data only
    roots.match_certificate(der)                   # KnownRoot | None (certificate or SPKI hash)
    roots.match_chain([leaf_der, inter_der])       # KnownRootMatch | None

The certificates and keys are Chromium's blocklist (``data/interception-roots/``, see its
``ATTRIBUTION.md``); ``roots.json`` next to them adds a name, operator, country, years and
sources to each. A certificate matches by its SHA-256 or by the SHA-256 of its public key
(SPKI): a root re-issued with the same key still matches, and the ``.key`` entries (keys
without a certificate) match only that way.

An intercepting middlebox rarely presents its root: the forged chain ends at an intermediate
whose *issuer* is the national root. ``match_chain`` therefore also matches the top issuer's
name against the roots' subjects, labelled ``match="issuer-name"``: anyone can write any name
into a certificate, so that is a lead, not proof (``"certificate"``/``"spki"`` are proof that
the very root, or its key, was presented).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import unicodedata
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # cryptography is imported when a certificate is parsed (start-up)
    from cryptography import x509

MatchKind = Literal["certificate", "spki", "issuer-name"]

MAX_CHAIN = 32  # certificates of a presented chain that are looked at
MAX_DER = 64 * 1024  # a certificate larger than this is not parsed
_DATA = "interception-roots"


@dataclass(frozen=True)
class KnownRoot:
    """One known interception root (or key). Years/sources are plain text, "unknown" if so."""

    name: str
    operator: str
    country: str
    years: str
    sources: tuple[str, ...]
    description: str
    cert_sha256: str | None  # None for a key-only (SPKI) entry
    spki_sha256: str
    subject: str | None = None  # RFC 4514, None for a key-only entry
    category: str = ""  # Chromium's category for the file
    file: str = ""  # path inside data/interception-roots/
    key_ids: frozenset[bytes] = field(default=frozenset(), repr=False, compare=False)
    subject_key: tuple[tuple[str, str], ...] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "operator": self.operator,
            "country": self.country,
            "years": self.years,
            "sources": list(self.sources),
            "description": self.description,
            "cert_sha256": self.cert_sha256,
            "spki_sha256": self.spki_sha256,
            "subject": self.subject,
        }


@dataclass(frozen=True)
class KnownRootMatch:
    """Where a chain meets a known root.

    ``match``: ``"certificate"`` (the root itself was presented), ``"spki"`` (a certificate
    with the root's key was presented), ``"issuer-name"`` (only a certificate *issued by a
    name equal to* the root's subject was presented: a lead, not proof). ``position`` is the
    index in the chain of the certificate that matched (or whose issuer did). ``candidates``
    are all roots with that name (several Kazakh roots share one); ``key_id_match`` says
    whether that certificate's authority key identifier names ``root``'s key (None: no
    identifier to compare) — again a claim written by whoever made the certificate.
    """

    root: KnownRoot
    match: MatchKind
    position: int
    candidates: tuple[KnownRoot, ...] = ()
    key_id_match: bool | None = None

    @property
    def proven(self) -> bool:
        return self.match != "issuer-name"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "match": self.match,
            "proven": self.proven,
            "position": self.position,
            "root": self.root.to_dict(),
        }
        if self.match == "issuer-name":
            out["key_id_match"] = self.key_id_match
            out["candidates"] = [c.cert_sha256 for c in self.candidates]
            out["note"] = (
                "matched by issuer name only: the root itself was not presented and any "
                "certificate can claim any issuer name"
            )
        return out


class KnownRoots:
    """The database: lookups by certificate SHA-256, SPKI SHA-256 and subject name."""

    def __init__(self, roots: Sequence[KnownRoot]) -> None:
        self.roots: tuple[KnownRoot, ...] = tuple(roots)
        self._by_cert = {r.cert_sha256: r for r in self.roots if r.cert_sha256}
        self._by_spki: dict[str, KnownRoot] = {}
        self._by_name: dict[tuple[tuple[str, str], ...], list[KnownRoot]] = {}
        for root in self.roots:
            self._by_spki.setdefault(root.spki_sha256, root)
            if root.subject_key:
                self._by_name.setdefault(root.subject_key, []).append(root)

    def __len__(self) -> int:
        return len(self.roots)

    def __iter__(self) -> Iterator[KnownRoot]:
        return iter(self.roots)

    def by_cert_sha256(self, digest: str) -> KnownRoot | None:
        return self._by_cert.get(digest.lower())

    def by_spki_sha256(self, digest: str) -> KnownRoot | None:
        return self._by_spki.get(digest.lower())

    def by_subject(self, name: x509.Name) -> list[KnownRoot]:
        return list(self._by_name.get(name_key(name), ()))

    def match_certificate(self, der: bytes) -> KnownRoot | None:
        """The known root this certificate is (same SHA-256) or shares a key with (SPKI)."""
        found = self._match_one(der)
        return found[0] if found else None

    def _match_one(self, der: Any) -> tuple[KnownRoot, MatchKind] | None:
        if not isinstance(der, bytes | bytearray) or not der or len(der) > MAX_DER:
            return None
        der = bytes(der)
        root = self._by_cert.get(hashlib.sha256(der).hexdigest())
        if root is not None:
            return root, "certificate"
        spki = spki_der(der)
        if spki is not None:
            root = self._by_spki.get(hashlib.sha256(spki).hexdigest())
            if root is not None:
                return root, "spki"
        return None

    def match_chain(self, ders: Sequence[bytes]) -> KnownRootMatch | None:
        """A known root in the chain (by hash), else the chain's top issuer by name.

        Only the first ``MAX_CHAIN`` certificates are looked at; malformed ones are skipped.
        """
        chain = list(ders[:MAX_CHAIN]) if isinstance(ders, Sequence) else []
        for position, der in enumerate(chain):
            found = self._match_one(der)
            if found is not None:
                return KnownRootMatch(found[0], found[1], position)
        parsed: list[tuple[int, x509.Certificate]] = []
        for position, der in enumerate(chain):
            cert = load_der(der)
            if cert is not None:
                parsed.append((position, cert))
        # The top of the chain first (the normal case: an intermediate issued by the root),
        # then any other certificate's issuer (chains are not always in order).
        for position, cert in reversed(parsed):
            try:
                candidates = self._by_name.get(name_key(cert.issuer))
            except Exception:  # odd names in hostile certificates
                continue
            if not candidates:
                continue
            akid = _authority_key_id(cert)
            picked = candidates[0]
            key_id_match: bool | None = None
            if akid is not None:
                by_key = [c for c in candidates if akid in c.key_ids]
                key_id_match = bool(by_key)
                if by_key:
                    picked = by_key[0]
            return KnownRootMatch(picked, "issuer-name", position, tuple(candidates), key_id_match)
        return None


# -- loading ----------------------------------------------------------------------------------


@functools.cache
def load_known_roots() -> KnownRoots:
    """The packaged database, parsed once per process; hashes are checked against the files."""
    base = resources.files("netvigil.verdict").joinpath("data", _DATA)
    meta = json.loads(base.joinpath("roots.json").read_text("utf-8"))
    roots: list[KnownRoot] = []
    for key, entry in meta["roots"].items():
        data = base.joinpath(*str(entry["file"]).split("/")).read_bytes()
        der = _pem_body(data)
        if entry["kind"] == "public_key":
            spki = hashlib.sha256(der).hexdigest()
            cert_sha = None
            key_ids: frozenset[bytes] = frozenset()
            subject_key = None
        else:
            cert_sha = hashlib.sha256(der).hexdigest()
            raw_spki = spki_der(der)
            if raw_spki is None:
                raise ValueError(f"{entry['file']}: no public key found")
            spki = hashlib.sha256(raw_spki).hexdigest()
            cert = load_der(der)
            # A future cryptography may refuse an odd root (DSDTestProvider's serial is not
            # positive): it still matches by hash, just not by name.
            key_ids = _key_ids(cert) if cert is not None else frozenset()
            subject_key = name_key(cert.subject) if cert is not None else None
        if spki != entry["spki_sha256"] or cert_sha != entry["cert_sha256"]:
            raise ValueError(f"{entry['file']}: hashes differ from roots.json ({key})")
        roots.append(
            KnownRoot(
                name=entry["name"],
                operator=entry["operator"],
                country=entry["country"],
                years=entry["years"],
                sources=tuple(entry["sources"]),
                description=entry["description"],
                cert_sha256=cert_sha,
                spki_sha256=spki,
                subject=entry.get("subject"),
                category=entry.get("chromium_category", ""),
                file=entry["file"],
                key_ids=key_ids,
                subject_key=subject_key,
            )
        )
    return KnownRoots(roots)


def _pem_body(data: bytes) -> bytes:
    lines = [
        line.strip()
        for line in data.decode("ascii").splitlines()
        if line.strip() and not line.startswith("-----")
    ]
    return base64.b64decode("".join(lines), validate=True)


# -- certificate helpers (shared with interception.py) ------------------------------------------


# Real measurements present the same chains over and over (one CDN's intermediates, one
# middlebox's root): parsed certificates are cached, keyed by their DER (a dict hashes it once),
# in a bounded LRU. Certificate objects are immutable, so sharing them is safe. Only DER up to
# CACHED_DER bytes is kept, so the cache holds at most ~DER_CACHE_SIZE x 8 KiB x 2.
DER_CACHE_SIZE = 512
CACHED_DER = 8 * 1024


def load_der(der: Any) -> x509.Certificate | None:
    """A parsed certificate, or None for anything malformed, oversized or not bytes."""
    if not isinstance(der, bytes | bytearray) or not der or len(der) > MAX_DER:
        return None
    data = bytes(der)
    return _load_der_cached(data) if len(data) <= CACHED_DER else _load_der(data)


def parse_der(der: bytes) -> x509.Certificate | None:
    """``x509.load_der_x509_certificate`` (names not touched), None when it raises; cached."""
    if len(der) <= CACHED_DER:
        return _parse_der_cached(der)
    return _parse_der(der)


def _load_der(der: bytes) -> x509.Certificate | None:
    cert = _parse_der(der)
    if cert is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _deprecation_warning())
            # Names are decoded lazily: touch them so a bad one fails here, not later.
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
            return cert
    except Exception:
        return None


def _parse_der(der: bytes) -> x509.Certificate | None:
    from cryptography import x509

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _deprecation_warning())
            return x509.load_der_x509_certificate(der)
    except Exception:
        return None


_load_der_cached = functools.lru_cache(maxsize=DER_CACHE_SIZE)(_load_der)
_parse_der_cached = functools.lru_cache(maxsize=DER_CACHE_SIZE)(_parse_der)


def name_key(name: x509.Name) -> tuple[tuple[str, str], ...]:
    """A comparison key for a distinguished name: attribute order, case, string type and
    surrounding/inner whitespace do not matter (re-encoded names still match)."""
    out = []
    for attr in name:
        value = attr.value if isinstance(attr.value, str) else attr.value.hex()
        value = " ".join(unicodedata.normalize("NFC", value).casefold().split())
        out.append((attr.oid.dotted_string, value))
    return tuple(sorted(out))


def _key_ids(cert: x509.Certificate) -> frozenset[bytes]:
    from cryptography import x509

    ids: set[bytes] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _deprecation_warning())
        with contextlib.suppress(Exception):
            ids.add(cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
        with contextlib.suppress(Exception):
            key = cert.public_key()
            ids.add(x509.SubjectKeyIdentifier.from_public_key(key).digest)
    return frozenset(ids)


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    from cryptography import x509

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _deprecation_warning())
            akid = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except Exception:
        return None
    return akid.key_identifier


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """(tag, header start, content start, content end) of the DER element at ``pos``."""
    if pos + 2 > end:
        raise ValueError("truncated")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tags are not used in certificates")
    first = buf[pos + 1]
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > end:
            raise ValueError("bad length")
        length = int.from_bytes(buf[start : start + count], "big")
        start += count
    if start + length > end:
        raise ValueError("element runs past its parent")
    return tag, pos, start, start + length


def spki_der(der: bytes) -> bytes | None:
    """The raw SubjectPublicKeyInfo of a DER certificate, exactly as encoded (what Chromium's
    blocklist hashes), or None when the DER is not a certificate. Never raises."""
    try:
        buf = bytes(der)
        tag, _, start, end = _tlv(buf, 0, len(buf))
        if tag != 0x30:
            return None
        tag, _, pos, tbs_end = _tlv(buf, start, end)  # tbsCertificate
        if tag != 0x30:
            return None
        tag, _, _, after = _tlv(buf, pos, tbs_end)
        if tag == 0xA0:  # [0] version
            pos = after
        # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
        expected = (0x02, 0x30, 0x30, 0x30, 0x30)
        for want in expected:
            tag, _, _, after = _tlv(buf, pos, tbs_end)
            if tag != want:
                return None
            pos = after
        tag, head, _, after = _tlv(buf, pos, tbs_end)
        if tag != 0x30:
            return None
        return buf[head:after]
    except (ValueError, IndexError, TypeError):
        return None


def spki_sha256(der: bytes) -> str | None:
    spki = spki_der(der)
    return hashlib.sha256(spki).hexdigest() if spki is not None else None


def decode_peer_certificates(items: Any, limit: int = MAX_CHAIN) -> list[bytes]:
    """OONI ``peer_certificates`` (``[{"data": b64, "format": "base64"}]`` or plain base64
    strings) → DER, at most ``limit``; an undecodable entry becomes ``b""`` (reported as
    unparseable, its position kept)."""
    out: list[bytes] = []
    if not isinstance(items, list | tuple):
        return out
    for item in items[:limit]:
        data = item.get("data") if isinstance(item, Mapping) else item
        if not isinstance(data, str) or len(data) > MAX_DER * 2:
            out.append(b"")
            continue
        try:
            out.append(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            out.append(b"")
    return out


def _deprecation_warning() -> type[Warning]:
    from cryptography.utils import CryptographyDeprecationWarning

    return CryptographyDeprecationWarning
