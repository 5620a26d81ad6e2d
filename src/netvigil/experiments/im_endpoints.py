"""The messaging apps' endpoint lists (``netvigil/data/im-endpoints/<app>.toml``) and overrides.

Each data file names its source (the probe-cli file and commit it was taken from) and the date
it was retrieved; docs/messaging-experiments.md describes the format. An override file
(``measure --im-endpoints FILE``, ``ProbeConfig.im_endpoints``) changes where the probe goes
without changing what it measures: the testbed writes one that maps the apps' IP literals (and,
in tests, their ports) to addresses of its own, names its CA as Signal's pinned CA and gives the
addresses it serves Facebook's names from as "Facebook's network". Its format::

    [addresses]                       # dial the right side instead of the left
    "149.154.175.50" = "198.18.40.1"  # an IP literal, every port
    "127.0.1.5:443" = "127.0.0.1:40001"

    [signal]
    pinned_ca_file = "/run/netvigil-testbed/pki/signal-ca.pem"   # or pinned_ca = "PEM text"

    [facebook_messenger]
    asn_prefixes = ["198.19.0.12/32"]  # replaces the shipped AS32934 prefix list
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "APPS",
    "AppEndpoints",
    "Endpoint",
    "EndpointError",
    "Overrides",
    "load_app",
    "load_overrides",
]

APPS = ("telegram", "whatsapp", "signal", "facebook_messenger")
KINDS = ("tcp", "http", "https", "dns")
MAX_OVERRIDE_BYTES = 1024 * 1024


class EndpointError(ValueError):
    """A data or override file that cannot be used, as one line."""


@dataclass(frozen=True)
class Endpoint:
    """One thing an experiment measures (OONI's urlgetter input)."""

    id: str
    kind: str  # tcp | http | https | dns
    host: str
    port: int
    url: str = ""  # http/https only
    method: str = "GET"
    key: str = ""  # facebook_messenger: the name in facebook_<key>_dns_consistent
    ignored: bool = False  # measured, but OONI's keys do not depend on it (Signal's uptime)

    @property
    def target(self) -> str:
        """The input as OONI's probes name it (``tcpconnect://host:port`` …)."""
        if self.kind == "tcp":
            return f"tcpconnect://{self.host}:{self.port}"
        if self.kind == "dns":
            return f"dnslookup://{self.host}"
        return self.url

    @property
    def name(self) -> str:
        """``host:port`` (``host`` for a DNS lookup): the endpoint in verdicts and truth."""
        return self.host if self.kind == "dns" else f"{self.host}:{self.port}"

    @property
    def is_ip_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class AppEndpoints:
    app: str
    test_name: str
    test_version: str
    source: str
    retrieved: str
    endpoints: tuple[Endpoint, ...]
    pinned_ca: bytes = b""  # PEM: Signal's own CAs, trusted besides the usual roots
    asn: int = 0
    as_org_name: str = ""
    asn_prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def in_network(self, address: str) -> bool:
        """Whether ``address`` lies in the app's own network (Facebook: AS32934)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.asn_prefixes)


@dataclass(frozen=True)
class Overrides:
    """What an override file changes (see the module's docstring)."""

    addresses: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    pinned_ca: dict[str, bytes] = field(default_factory=dict)
    asn_prefixes: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = field(
        default_factory=dict
    )

    def dial(self, ip: str, port: int) -> tuple[str, int]:
        """Where to connect for ``ip:port``: the mapped address if any, else itself."""
        key = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        found = self.addresses.get(key) or self.addresses.get(ip)
        if found is None:
            return ip, port
        return found[0], found[1] if found[1] is not None else port


def _prefixes(values: Any, where: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise EndpointError(f"{where}: asn_prefixes must be a list of CIDR strings")
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise EndpointError(f"{where}: {exc}") from None


def _endpoint(raw: Any, where: str) -> Endpoint:
    if not isinstance(raw, dict):
        raise EndpointError(f"{where}: an [[endpoint]] must be a table")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise EndpointError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    ident = str(raw.get("id", ""))
    if kind in ("http", "https"):
        url = str(raw.get("url", ""))
        parts = urlsplit(url)
        if parts.scheme != kind or not parts.hostname:
            raise EndpointError(f"{where}: url {url!r} is not an {kind}:// URL")
        port = parts.port or (443 if kind == "https" else 80)
        method = str(raw.get("method", "GET")).upper()
        return Endpoint(ident, kind, parts.hostname.lower(), port, url, method)
    host = str(raw.get("host", "")).lower()
    if not host:
        raise EndpointError(f"{where}: a {kind} endpoint needs a host")
    raw_port = raw.get("port", 0 if kind == "dns" else None)
    if (
        not isinstance(raw_port, int)
        or not 0 <= raw_port <= 65535
        or (kind == "tcp" and raw_port == 0)
    ):
        raise EndpointError(f"{where}: port {raw_port!r} is not a TCP port")
    return Endpoint(
        ident,
        kind,
        host,
        raw_port,
        key=str(raw.get("key", "")),
        ignored=bool(raw.get("ignored", False)),
    )


def load_app(app: str, overrides: Overrides | None = None) -> AppEndpoints:
    """The shipped endpoint list of ``app``, with ``overrides`` applied."""
    if app not in APPS:
        raise EndpointError(f"unknown messaging app {app!r} (one of {', '.join(APPS)})")
    text = resources.files("netvigil.data").joinpath("im-endpoints", f"{app}.toml").read_text()
    data = tomllib.loads(text)
    where = f"im-endpoints/{app}.toml"
    endpoints = tuple(
        _endpoint(raw, f"{where} endpoint {n + 1}") for n, raw in enumerate(data["endpoint"])
    )
    pinned = str(data.get("pinned_ca", "")).strip().encode()
    prefixes = _prefixes(data.get("asn_prefixes", []), where)
    if overrides is not None:
        pinned = overrides.pinned_ca.get(app, pinned)
        prefixes = overrides.asn_prefixes.get(app, prefixes)
    return AppEndpoints(
        app=app,
        test_name=str(data["test_name"]),
        test_version=str(data["test_version"]),
        source=str(data["source"]),
        retrieved=str(data["retrieved"]),
        endpoints=endpoints,
        pinned_ca=pinned,
        asn=int(data.get("asn", 0)),
        as_org_name=str(data.get("as_org_name", "")),
        asn_prefixes=prefixes,
    )


def _address(value: Any, where: str) -> tuple[str, int | None]:
    if not isinstance(value, str):
        raise EndpointError(f"{where}: an address must be a string like '198.18.40.1'")
    try:
        return str(ipaddress.ip_address(value)), None
    except ValueError:
        pass
    host, sep, port = value.rpartition(":")
    try:
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(value)
        return str(ipaddress.ip_address(host.strip("[]"))), int(port)
    except ValueError:
        raise EndpointError(f"{where}: {value!r} is not an IP address or ip:port") from None


def load_overrides(path: str | Path) -> Overrides:
    """Read an override file; ``EndpointError`` (one line) for anything unusable."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_OVERRIDE_BYTES:
            raise EndpointError(f"{file}: larger than {MAX_OVERRIDE_BYTES} bytes")
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EndpointError(f"{file}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EndpointError(f"{file}: not TOML ({exc})") from None
    unknown = [k for k in data if k not in ("addresses", *APPS)]
    if unknown:
        raise EndpointError(f"{file}: unknown table [{unknown[0]}] (addresses or an app name)")
    addresses: dict[str, tuple[str, int | None]] = {}
    raw_addresses = data.get("addresses", {})
    if not isinstance(raw_addresses, dict):
        raise EndpointError(f"{file}: [addresses] must be a table")
    for left, right in raw_addresses.items():
        ip, port = _address(left, f"{file} [addresses]")
        key = ip if port is None else (f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
        addresses[key] = _address(right, f"{file} [addresses]")
    pinned: dict[str, bytes] = {}
    prefixes: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = {}
    for app in APPS:
        table = data.get(app)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise EndpointError(f"{file}: [{app}] must be a table")
        if "pinned_ca_file" in table:
            ca_path = Path(str(table["pinned_ca_file"]))
            try:
                pinned[app] = ca_path.read_bytes()[:MAX_OVERRIDE_BYTES]
            except OSError as exc:
                raise EndpointError(f"{file}: pinned_ca_file {ca_path}: {exc.strerror}") from None
        elif "pinned_ca" in table:
            pinned[app] = str(table["pinned_ca"]).encode()
        if "asn_prefixes" in table:
            prefixes[app] = _prefixes(table["asn_prefixes"], f"{file} [{app}]")
    return Overrides(addresses, pinned, prefixes)
