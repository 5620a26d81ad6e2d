"""Decode a presented chain (``peer_certificates``) for evidence; hostile input never raises."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from typing import Any

from netvigil.verdict.roots import parse_der

MAX_CERTS = 16  # chains longer than this are summarised, not decoded
MAX_CERT_B64 = 64 * 1024


def describe_chain(certs: list[Any]) -> dict[str, Any]:
    """Subjects, issuers and SHA-256 of the first certificates of a chain."""
    out: list[dict[str, Any]] = []
    for item in certs[:MAX_CERTS]:
        data = item.get("data") if isinstance(item, dict) else item
        out.append(_describe(data))
    return {"count": len(certs), "decoded": len(out), "certificates": out}


def _describe(data: Any) -> dict[str, Any]:
    if not isinstance(data, str) or len(data) > MAX_CERT_B64:
        return {"error": "unparseable"}
    if len(data) <= CACHED_B64:
        return dict(_describe_cached(data))  # a copy: the cached dict stays as computed
    return _describe_uncached(data)


CACHED_B64 = 8 * 1024  # certificates up to this many base64 characters are cached (most are)


def _describe_uncached(data: str) -> dict[str, Any]:
    try:
        der = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return {"error": "unparseable"}
    info: dict[str, Any] = {"sha256": hashlib.sha256(der).hexdigest()}
    cert = parse_der(der)  # cached: the same chains recur across measurements
    if cert is None:
        info["error"] = "unparseable"
        return info
    try:
        info["subject"] = cert.subject.rfc4514_string()
        info["issuer"] = cert.issuer.rfc4514_string()
        info["self_signed"] = cert.subject == cert.issuer
    except Exception:  # malformed DER, odd names, unsupported keys: evidence, not a crash
        info["error"] = "unparseable"
    return info


# The same chains recur across measurements; decoding their names costs ~50 µs a certificate.
_describe_cached = functools.lru_cache(maxsize=1024)(_describe_uncached)
