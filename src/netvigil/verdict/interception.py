"""Evidence of HTTPS interception: the presented chain, a known root, and what was copied.

    describe_interception(presented, real, host)   # dict, JSON-ready; never raises

``presented`` is the chain the probe was shown (DER, leaf first), ``real`` the chain the control
saw for the same site (or None). When the real certificate is known, the forged leaf is compared
with it field by field: Kazakhstan's 2019 middlebox (Raman et al., IMC 2020) copied the subject
and SAN, kept the real serial above its low 33 bits, moved the validity 6 h (later 24 h)
earlier, dropped every other extension and used its own per-host RSA key (e = 3). All of that
together is ``kz2019_signature``.

Hostile input is bounded: at most ``MAX_CHAIN`` certificates are decoded (``count`` says how
many there were), each at most 64 KiB; malformed DER becomes an ``unparseable`` entry; the issuer
walk stops at a loop (A issues B issues A) and says so.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import pickle
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # cryptography is imported when a certificate is looked at (start-up)
    from cryptography import x509

from netvigil.verdict.roots import (
    MAX_DER,
    KnownRoots,
    load_der,
    load_known_roots,
    name_key,
    spki_sha256,
)

MAX_CHAIN = 32
MAX_NAMES = 64  # SAN entries listed per certificate
MAX_PEM_CHARS = 256 * 1024  # the chain as PEM stops before this many characters
LOW_SERIAL_BITS = 33
KZ2019_NOTE = (
    "subject and SAN copied from the real certificate, the real serial kept above its low 33 "
    "bits, validity moved earlier and a key of the middlebox's own: the signature of "
    "Kazakhstan's 2019 interception (Raman et al., IMC 2020)"
)


def describe_interception(
    presented: Sequence[bytes],
    real: Sequence[bytes] | None,
    host: str,
    *,
    count: int | None = None,
    roots: KnownRoots | None = None,
) -> dict[str, Any]:
    """The evidence dict (see the module docstring). ``count``: the chain's length before the
    caller capped it (defaults to ``len(presented)``).

    Cached (bounded LRU, keyed by a hash of both chains' DER, ``host`` and ``count``): real
    data repeats the same forged chain for thousands of measurements, and decoding its names
    costs about a millisecond. Each call returns a fresh copy, so callers may mutate it.
    """
    key = _cache_key(presented, real, host, count) if roots is None else None
    current: KnownRoots | None = None
    if key is not None:
        try:
            current = load_known_roots()
        except Exception:  # the packaged database is broken: computed, not cached
            key = None
    blob: bytes | None = None
    if key is not None:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None and hit[0] is current:
                _CACHE.move_to_end(key)
                blob = hit[1]
        if blob is not None:
            copied: dict[str, Any] = pickle.loads(blob)  # a fresh deep copy (our own bytes)
            return copied
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _deprecation_warning())
        out = _describe(presented, real, host, count, roots)
    if key is not None and current is not None and len(out.get("chain_pem", "")) <= _CACHE_PEM:
        blob = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        with _CACHE_LOCK:
            _CACHE[key] = (current, blob)
            _CACHE.move_to_end(key)
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return out


CACHE_SIZE = 512  # chains (with host) remembered; each entry is a few KiB
_CACHE_PEM = 16 * 1024  # a chain whose PEM is longer than this is not kept (hostile input)
# values: the evidence pickled, so that every hit unpickles a deep copy in one C call
_CACHE: OrderedDict[tuple[bytes, str, int | None], tuple[KnownRoots, bytes]] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _cache_key(
    presented: Any, real: Any, host: Any, count: Any
) -> tuple[bytes, str, int | None] | None:
    """blake2b of both chains (length-prefixed DER), or None for input not worth caching
    (not plain lists of bytes: the uncached path judges those)."""
    if type(presented) is not list or not isinstance(host, str):
        return None
    if count is not None and type(count) is not int:
        return None
    h = hashlib.blake2b(digest_size=32)
    h.update(len(presented).to_bytes(8, "little"))
    for der in presented[: MAX_CHAIN + 1]:
        if type(der) is not bytes:
            return None
        h.update(len(der).to_bytes(8, "little"))
        h.update(der)
    if real is None:
        h.update(b"\xff" * 8)
    elif type(real) is list:
        h.update(len(real).to_bytes(8, "little"))
        for der in real[: MAX_CHAIN + 1]:
            if type(der) is not bytes:
                return None
            h.update(len(der).to_bytes(8, "little"))
            h.update(der)
    else:
        return None
    return h.digest(), host, count


def _describe(
    presented: Sequence[bytes],
    real: Sequence[bytes] | None,
    host: str,
    count: int | None,
    roots: KnownRoots | None,
) -> dict[str, Any]:
    chain = _as_list(presented)
    total = len(presented) if chain else 0
    if isinstance(count, int) and count > total:
        total = count
    chain = chain[:MAX_CHAIN]
    certs = [load_der(der) for der in chain]
    host = host if isinstance(host, str) else ""
    out: dict[str, Any] = {
        "host": host,
        "count": total,
        "decoded": len(chain),
        "truncated": total > len(chain),
        "certificates": [
            _summary(i, der, c) for i, (der, c) in enumerate(zip(chain, certs, strict=True))
        ],
    }
    out["issuer_path"] = _issuer_path(certs)
    pems: list[str] = []
    size = 0
    for der in chain:
        if isinstance(der, bytes | bytearray) and der:
            text = _pem(bytes(der))
            if size + len(text) > MAX_PEM_CHARS:
                out["chain_pem_truncated"] = True
                break
            size += len(text)
            pems.append(text)
    out["chain_pem"] = "".join(pems)
    try:
        match = (roots or load_known_roots()).match_chain(chain)
    except Exception:  # the packaged database is broken: evidence without it, not a crash
        match = None
    out["known_root"] = match.to_dict() if match is not None else None
    leaf = certs[0] if certs else None
    out["leaf_covers_host"] = _covers(leaf, host) if leaf is not None and host else None

    real_chain = _as_list(real)[:MAX_CHAIN] if real is not None else []
    real_leaf = load_der(real_chain[0]) if real_chain else None
    out["real"] = (
        _summary(0, real_chain[0], real_leaf) if real_chain and real_leaf is not None else None
    )
    if leaf is None or real_leaf is None:
        out["copied"] = None
        out["kz2019_signature"] = False
        out["kz2019_reasons"] = [
            "no real certificate to compare with" if real_leaf is None else "leaf unparseable"
        ]
        return out
    copied, reasons, signature = _compare(leaf, chain[0], real_leaf, real_chain[0])
    out["copied"] = copied
    out["kz2019_signature"] = signature
    out["kz2019_reasons"] = reasons
    if signature:
        out["note"] = KZ2019_NOTE
    return out


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, bytes | bytearray | str) or not isinstance(value, Sequence):
        return []
    return list(value[: MAX_CHAIN + 1])


# -- one certificate ----------------------------------------------------------------------------


def _summary(position: int, der: Any, cert: x509.Certificate | None) -> dict[str, Any]:
    if not isinstance(der, bytes | bytearray) or not der:
        return {"position": position, "error": "unparseable"}
    der = bytes(der)
    info: dict[str, Any] = {"position": position, "sha256": hashlib.sha256(der).hexdigest()}
    if len(der) > MAX_DER:
        info["error"] = "unparseable"
        info["reason"] = "larger than 64 KiB"
        return info
    if cert is None:
        info["error"] = "unparseable"
        return info
    info["spki_sha256"] = spki_sha256(der)
    info["subject"] = cert.subject.rfc4514_string()
    info["issuer"] = cert.issuer.rfc4514_string()
    info["self_signed"] = cert.subject == cert.issuer
    info["serial"] = format(cert.serial_number, "x")
    info["not_before"] = _iso(cert, "not_valid_before_utc")
    info["not_after"] = _iso(cert, "not_valid_after_utc")
    info["key"] = _key_text(cert)
    info["san"] = _san(cert)[:MAX_NAMES]
    return info


def _iso(cert: x509.Certificate, attr: str) -> str | None:
    try:
        value: dt.datetime = getattr(cert, attr)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    except Exception:
        return None


def _key_text(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    try:
        key = cert.public_key()
    except Exception:
        return "unsupported"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size} e={key.public_numbers().e}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA-{key.key_size}"
    return type(key).__name__


def _exponent(cert: x509.Certificate) -> int | None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = cert.public_key()
    except Exception:
        return None
    return key.public_numbers().e if isinstance(key, rsa.RSAPublicKey) else None


def _extensions(cert: x509.Certificate) -> list[str] | None:
    from cryptography import x509

    try:
        return [
            ext.oid.dotted_string
            if isinstance(ext.value, x509.UnrecognizedExtension)
            else type(ext.value).__name__
            for ext in cert.extensions
        ]
    except Exception:  # a malformed extension: the list is unknown
        return None


def _san(cert: x509.Certificate) -> list[str]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:
        return []
    names: list[str] = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return names


def _covers(cert: x509.Certificate, host: str) -> bool:
    """Whether the certificate names ``host`` (SAN, or the CN when there is no SAN)."""
    from cryptography import x509

    host = host.lower().rstrip(".").strip("[]")
    names = _san(cert)
    if not names:
        try:
            names = [
                str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            ]
        except Exception:
            names = []
    try:
        literal: str | None = str(ipaddress.ip_address(host))
    except ValueError:
        literal = None
    for name in names[: MAX_NAMES * 4]:
        name = name.lower().rstrip(".")
        if literal is not None:
            if name == literal:
                return True
            continue
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _pem(der: bytes) -> str:
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


# -- the chain --------------------------------------------------------------------------------


def _issuer_path(certs: Sequence[x509.Certificate | None]) -> dict[str, Any]:
    """Leaf first, follow each certificate's issuer to the presented certificate of that
    subject. Bounded by the chain length; a loop (A issues B issues A) ends the walk."""
    steps: list[dict[str, Any]] = []
    if not certs or certs[0] is None:
        return {"steps": steps, "loop": False, "ends": "unparseable leaf"}
    keys: list[tuple[Any, Any] | None] = []
    for c in certs:
        try:
            keys.append((name_key(c.subject), name_key(c.issuer)) if c is not None else None)
        except Exception:
            keys.append(None)
    seen: set[int] = set()
    current = 0
    loop = False
    ends = "issuer not presented"
    while True:
        cert = certs[current]
        key = keys[current]
        if cert is None or key is None:
            ends = "unparseable certificate"
            break
        seen.add(current)
        steps.append(
            {
                "position": current,
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
            }
        )
        subject, issuer = key
        if subject == issuer:
            ends = "self-signed"
            break
        nxt = next(
            (i for i, k in enumerate(keys) if k is not None and i != current and k[0] == issuer),
            None,
        )
        if nxt is None:
            break
        if nxt in seen:
            loop = True
            ends = "loop"
            break
        current = nxt
    return {"steps": steps, "loop": loop, "ends": ends}


# -- forged vs real -----------------------------------------------------------------------------


def _compare(
    forged: x509.Certificate, forged_der: bytes, real: x509.Certificate, real_der: bytes
) -> tuple[dict[str, Any], list[str], bool]:
    same_cert = bytes(forged_der) == bytes(real_der)
    forged_spki, real_spki = spki_sha256(forged_der), spki_sha256(real_der)
    key_differs = forged_spki != real_spki if forged_spki and real_spki else None
    try:
        subject = forged.subject == real.subject
    except Exception:
        subject = False
    forged_san, real_san = _san(forged), _san(real)
    san = sorted(forged_san) == sorted(real_san) if (forged_san or real_san) else None
    serial_prefix: bool | None = None
    if real.serial_number >> LOW_SERIAL_BITS:  # a small real serial has no prefix to keep
        serial_prefix = (forged.serial_number >> LOW_SERIAL_BITS) == (
            real.serial_number >> LOW_SERIAL_BITS
        )
    shift: float | None
    try:
        delta = real.not_valid_before_utc - forged.not_valid_before_utc
        shift = round(delta.total_seconds() / 3600, 3)
    except Exception:
        shift = None
    forged_ext, real_ext = _extensions(forged), _extensions(real)
    dropped = (
        [e for e in real_ext if e not in set(forged_ext)]
        if forged_ext is not None and real_ext is not None
        else None
    )
    copied: dict[str, Any] = {
        "same_certificate": same_cert,
        "subject": subject,
        "san": san,
        "serial_prefix": serial_prefix,
        "validity_shift_hours": shift,
        "extensions_dropped": dropped,
        "key_differs": key_differs,
        "public_exponent": {"presented": _exponent(forged), "real": _exponent(real)},
    }
    checks = [
        (key_differs is True, "the presented key is not the site's"),
        (subject, "subject copied from the real certificate"),
        (san is not False, "SAN copied from the real certificate"),
        (serial_prefix is True, "real serial kept above the low 33 bits"),
        (shift is not None and shift > 0, "validity moved earlier than the real one"),
    ]
    reasons = [("" if ok else "not: ") + text for ok, text in checks]
    return copied, reasons, all(ok for ok, _ in checks)


def _deprecation_warning() -> type[Warning]:
    from cryptography.utils import CryptographyDeprecationWarning

    return CryptographyDeprecationWarning
