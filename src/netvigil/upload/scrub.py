"""Privacy scrub applied to every measurement before it is stored in the outbox or sent.

Only the country (``probe_cc``) and the network (``probe_asn``) identify where a measurement
came from. Everything else that could point at a person is removed or replaced:

* ``probe_ip`` is forced to ``127.0.0.1`` (OONI's placeholder);
* ``probe_network_name`` is dropped unless the user opts in (``keep_network_name``);
* ``resolver_ip`` and ``test_keys.client_resolver`` are kept only when they are in the testbed
  range 198.18.0.0/15, on loopback, or a well-known public resolver; otherwise they become ``""``
  (netvigil's "unknown"), ``resolver_network_name`` is dropped (unless opted in) and every other
  occurrence of the address in the measurement text becomes ``[scrubbed]``;
* ``annotations`` keep only ``ANNOTATION_ALLOW``;
* the user's public address, when given (``--scrub-ip``), is replaced by ``[scrubbed]`` wherever
  it appears: in any string, any key, and inside base64 bodies (``{"format": "base64", ...}``).

``scrub`` never mutates its input and is idempotent.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANNOTATION_ALLOW",
    "PUBLIC_RESOLVERS",
    "SCRUBBED",
    "SCRUBBED_PROBE_IP",
    "ScrubOptions",
    "is_kept_resolver",
    "scrub",
]

SCRUBBED = "[scrubbed]"
SCRUBBED_PROBE_IP = "127.0.0.1"
ANNOTATION_ALLOW = frozenset(
    {"engine_name", "engine_version", "platform", "architecture", "netvigil_testbed"}
)
_TESTBED = ipaddress.ip_network("198.18.0.0/15")
# Anycast public resolvers: shared by millions of users, they identify nobody.
PUBLIC_RESOLVERS = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "8.8.8.8",
        "8.8.4.4",
        "2001:4860:4860::8888",
        "2001:4860:4860::8844",
        "1.1.1.1",
        "1.0.0.1",
        "1.1.1.2",
        "1.0.0.2",
        "1.1.1.3",
        "1.0.0.3",
        "2606:4700:4700::1111",
        "2606:4700:4700::1001",
        "9.9.9.9",
        "149.112.112.112",
        "9.9.9.10",
        "149.112.112.10",
        "9.9.9.11",
        "149.112.112.11",
        "2620:fe::fe",
        "2620:fe::9",
        "208.67.222.222",
        "208.67.220.220",
        "2620:119:35::35",
        "2620:119:53::53",
        "94.140.14.14",
        "94.140.15.15",
        "2a10:50c0::ad1:ff",
        "2a10:50c0::ad2:ff",
        "76.76.2.0",
        "76.76.10.0",
        "185.228.168.9",
        "185.228.169.9",
        "64.6.64.6",
        "64.6.65.6",
        "77.88.8.8",
        "77.88.8.1",
        "180.76.76.76",
        "223.5.5.5",
        "223.6.6.6",
        "119.29.29.29",
    )
)
_MAX_DEPTH = 64


@dataclass(frozen=True)
class ScrubOptions:
    """``scrub_ips``: the user's public address(es) to remove everywhere (never looked up)."""

    keep_network_name: bool = False
    scrub_ips: tuple[str, ...] = ()


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:53"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:53"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_kept_resolver(value: str) -> bool:
    """True for "" (unknown), testbed, loopback and well-known public resolvers."""
    if value == "":
        return True
    ip = _parse_ip(value)
    if ip is None:
        return False
    return ip.is_loopback or ip in PUBLIC_RESOLVERS or (ip.version == 4 and ip in _TESTBED)


def _ip_pattern(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> re.Pattern[str]:
    if ip.version == 4:
        return re.compile(r"(?<![0-9.])" + re.escape(str(ip)) + r"(?![0-9])")
    assert isinstance(ip, ipaddress.IPv6Address)
    forms = sorted({ip.compressed, ip.exploded}, key=len, reverse=True)
    alternatives = "|".join(re.escape(f) for f in forms)
    return re.compile(r"(?<![0-9a-fA-F:])(?:" + alternatives + r")(?![0-9a-fA-F:])", re.IGNORECASE)


class _TextScrubber:
    def __init__(self, ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
        self.patterns = [_ip_pattern(ip) for ip in sorted(set(ips), key=str)]

    def text(self, value: str) -> str:
        for pattern in self.patterns:
            value = pattern.sub(SCRUBBED, value)
        return value

    def data(self, value: bytes) -> bytes:
        text = value.decode("latin-1")
        scrubbed = self.text(text)
        return value if scrubbed == text else scrubbed.encode("latin-1")

    def walk(self, value: Any, depth: int = 0) -> Any:
        if not self.patterns:
            return value
        if depth > _MAX_DEPTH:
            raise ValueError("measurement nested too deeply to scrub")
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.walk(item, depth + 1) for item in value]
        if isinstance(value, dict):
            if value.get("format") == "base64" and isinstance(value.get("data"), str):
                return self._base64(value, depth)
            return {self.text(str(k)): self.walk(v, depth + 1) for k, v in value.items()}
        return value

    def _base64(self, value: dict[str, Any], depth: int) -> dict[str, Any]:
        out = {self.text(str(k)): self.walk(v, depth + 1) for k, v in value.items() if k != "data"}
        try:
            raw = base64.b64decode(value["data"], validate=True)
        except (binascii.Error, ValueError):
            out["data"] = self.text(value["data"])
            return out
        scrubbed = self.data(raw)
        out["data"] = value["data"] if scrubbed == raw else base64.b64encode(scrubbed).decode()
        return out


def _scrub_resolver(value: Any, found: set[Any]) -> Any:
    if not isinstance(value, str) or is_kept_resolver(value):
        return value if isinstance(value, str) or value is None else ""
    ip = _parse_ip(value)
    if ip is not None:
        found.add(ip)
    return ""


def scrub(measurement: dict[str, Any], options: ScrubOptions | None = None) -> dict[str, Any]:
    """Return a scrubbed copy of an OONI-format measurement (see the module docstring)."""
    opts = options or ScrubOptions()
    out = dict(measurement)
    out["probe_ip"] = SCRUBBED_PROBE_IP
    if not opts.keep_network_name:
        out.pop("probe_network_name", None)
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    if "resolver_ip" in out:
        before = out["resolver_ip"]
        out["resolver_ip"] = _scrub_resolver(before, found)
        if out["resolver_ip"] != before and not opts.keep_network_name:
            out.pop("resolver_network_name", None)
    annotations = out.get("annotations")
    if isinstance(annotations, dict):
        out["annotations"] = {k: v for k, v in annotations.items() if k in ANNOTATION_ALLOW}
    elif "annotations" in out:
        out["annotations"] = {}
    test_keys = out.get("test_keys")
    if isinstance(test_keys, dict) and "client_resolver" in test_keys:
        test_keys = dict(test_keys)
        test_keys["client_resolver"] = _scrub_resolver(test_keys["client_resolver"], found)
        out["test_keys"] = test_keys
    for text in opts.scrub_ips:
        ip = _parse_ip(text)
        if ip is None:
            raise ValueError(f"--scrub-ip {text!r} is not an IP address")
        found.add(ip)
    # Never turn the placeholder itself into "[scrubbed]".
    found.discard(ipaddress.ip_address(SCRUBBED_PROBE_IP))
    if found:
        scrubbed = _TextScrubber(found).walk(out)
        assert isinstance(scrubbed, dict)
        out = scrubbed
    return out
