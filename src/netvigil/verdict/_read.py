"""Defensive readers for measurement JSON: any key may be missing, None or of the wrong type."""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

MAX_BODY_CHARS = 1 << 20  # bodies are capped at 512 KiB by probes; never look past 1 MiB


# d() and lst() run tens of times per measurement: an exact-type test first skips the slow
# ABC isinstance check for what json/orjson produce (dict, list).
def d(value: Any) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    return value if isinstance(value, Mapping) else {}


def lst(value: Any) -> list[Any]:
    if type(value) is list:
        return list(value)
    return list(value) if isinstance(value, list | tuple) else []


def head(value: Any, n: int) -> list[Any]:
    """``lst(value)[:n]`` with one copy, not two."""
    if type(value) is list:
        return value[:n]
    return list(value[:n]) if isinstance(value, list | tuple) else []


def s(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def num(value: Any) -> float | None:
    """A finite number as a float, else None: NaN, ±Infinity (Python's json accepts them) and
    integers beyond a double's range (``float()`` would raise) are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        n = float(value)
    except OverflowError:
        return None
    return n if math.isfinite(n) else None


_EXACT_FLOAT_INT = 2**53  # |n| up to this survives the float round trip unchanged


def integer(value: Any) -> int | None:
    if type(value) is int and -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
        return value  # the common case; int(float(value)) is value itself
    n = num(value)
    return int(n) if n is not None and n == int(n) else None


def failure(value: Any) -> str | None:
    """A failure string, or None (empty strings count as no failure)."""
    return value if isinstance(value, str) and value else None


def host_of(url: str | None) -> str:
    if not url:
        return ""
    if type(url) is str and len(url) <= CACHED_URL_CHARS:
        return _host_of(url)
    return _host_of.__wrapped__(url)


def scheme_of(url: str | None) -> str:
    if not url:
        return ""
    if type(url) is str and len(url) <= CACHED_URL_CHARS:
        return _scheme_of(url)
    return _scheme_of.__wrapped__(url)


def port_of(url: str | None) -> int:
    if type(url) is str and url and len(url) <= CACHED_URL_CHARS:
        return _port_of(url)
    return _port_of.__wrapped__(url)


# URLs repeat (inputs come from test lists, redirects from the same sites): cached, bounded,
# only short keys kept.
CACHED_URL_CHARS = 512


@functools.lru_cache(maxsize=8192)
def _host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


@functools.lru_cache(maxsize=8192)
def _scheme_of(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


@functools.lru_cache(maxsize=8192)
def _port_of(url: str | None) -> int:
    try:
        parts = urlsplit(url or "")
        if parts.port:
            return int(parts.port)
        return 443 if parts.scheme.lower() == "https" else 80
    except ValueError:
        return 80


def ip_or_none(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return _canonical_ip(text) if len(text) <= CACHED_KEY_CHARS else _canonical_ip.__wrapped__(text)


# Pure functions of short strings, called many times per verdict (every answer, endpoint and
# address of a measurement): cached, bounded. Parsing an address costs ~10 µs in ipaddress.
# Only short keys are cached (an address is at most ~50 characters): a hostile measurement's
# megabyte-long "address" is computed, not kept, so the caches stay a few MiB.
CACHED_KEY_CHARS = 64


@functools.lru_cache(maxsize=65536)
def _canonical_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        return None


def is_ip_literal(host: str) -> bool:
    return ip_or_none(host) is not None


_BOGON_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


def is_bogon(address: str) -> bool:
    """Private, loopback, link-local, CGNAT, documentation, multicast, reserved addresses.

    198.18.0.0/15 (RFC 2544 benchmarking) is deliberately *not* a bogon: it is the testbed's
    whole network, where every honest site lives.
    """
    if isinstance(address, str) and len(address) <= CACHED_KEY_CHARS:
        return _is_bogon(address)
    return _is_bogon.__wrapped__(address)


@functools.lru_cache(maxsize=65536)
def _is_bogon(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _BOGON_NETS if net.version == ip.version)


def endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def body_text(response: Mapping[str, Any]) -> tuple[str, int]:
    """(body as text, body length in bytes) of an OONI response; base64 bodies decoded."""
    body = response.get("body")
    if isinstance(body, str):
        text = body[:MAX_BODY_CHARS]
        if body.isascii():  # O(1) in CPython; the UTF-8 length is the length
            return text, len(body)
        try:
            size = utf8_len(body)
        except UnicodeError:
            size = len(body)
        return text, size
    if isinstance(body, Mapping):
        data = body.get("data")
        if isinstance(data, str):
            try:
                raw = base64.b64decode(data[: MAX_BODY_CHARS * 2], validate=False)
            except (binascii.Error, ValueError):
                return "", 0
            return raw[:MAX_BODY_CHARS].decode("utf-8", "replace"), len(raw)
    return "", 0


# The UTF-8 length of the last few non-ASCII bodies measured: the verdict and the pipeline's
# rows both measure the same body string, and encoding a copy to count it is the cost.
_UTF8_MEMO: dict[int, tuple[str, int]] = {}
_UTF8_MEMO_SIZE = 8


def utf8_len(text: str) -> int:
    """``len(text.encode("utf-8", "surrogatepass"))``, remembered for the last few strings."""
    if text.isascii():
        return len(text)
    hit = _UTF8_MEMO.get(id(text))
    if hit is not None and hit[0] is text:
        return hit[1]
    size = len(text.encode("utf-8", "surrogatepass"))
    if len(_UTF8_MEMO) >= _UTF8_MEMO_SIZE:
        _UTF8_MEMO.clear()
    _UTF8_MEMO[id(text)] = (text, size)  # the string is kept, so its id cannot be reused
    return size


def headers_of(response: Mapping[str, Any]) -> dict[str, str]:
    """Response headers as {name: value}; from ``headers`` or ``headers_list``."""
    out: dict[str, str] = {}
    headers = response.get("headers")
    if type(headers) is dict and len(headers) <= 500:
        # what orjson gives: plain str names and values are kept as they are
        for k, v in headers.items():
            if type(v) is str and type(k) is str:
                out[k] = v
                continue
            text = _header_text(v)
            if isinstance(k, str) and text is not None:
                out[k] = text
    elif isinstance(headers, Mapping):
        for k, v in list(headers.items())[:500]:
            text = _header_text(v)
            if isinstance(k, str) and text is not None:
                out[k] = text
    if not out:
        for pair in lst(response.get("headers_list"))[:500]:
            if isinstance(pair, list | tuple) and len(pair) == 2:
                k, v = pair
                if isinstance(k, str) and isinstance(v, str):
                    out.setdefault(k, v)
    return out


def _header_text(value: Any) -> str | None:
    """A header value as text: a string, a number, or a list of them joined with ", " (the
    first 20). Anything else (an object, a nested list: no recursion into it) is no value."""
    if isinstance(value, list):
        parts = [_scalar_text(x) for x in value[:20]]
        return ", ".join(p for p in parts if p is not None)
    return _scalar_text(value)


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and abs(value) < 1 << 64:
        return str(value)  # bounded: str() of a huge int costs time, or raises (3.11+)
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    return None


_TITLE = re.compile(r"(?i)<title>([^<]{1,512})</title>")


def title_of(body: str) -> str:
    m = _TITLE.search(body[:MAX_BODY_CHARS])
    return m.group(1) if m else ""
