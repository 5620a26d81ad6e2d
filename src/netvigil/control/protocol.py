"""OONI's web-connectivity test-helper protocol: request validation and response pieces.

The wire format is OONI's (``model.THRequest`` / ``model.THResponse`` in ooni/probe-cli), so an
OONI probe can use a netvigil helper and a netvigil probe can use OONI's helpers.

Failure strings inside the response follow OONI's *test helper* vocabulary, which is older than
the probe's: ``dns_name_error`` instead of ``dns_nxdomain_error``, ``connection_refused_error``,
``connect_error``, ``dns_lookup_error``, ``unknown_error``. OONI's analysis code (and every
published measurement) expects those strings in ``control``, so we map to them; the precise
netvigil failure rides along in ``x_failure`` (OONI's convention for extensions: readers that do
not know it ignore it). TLS failures are not mapped: OONI's helper reports them verbatim too.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from netvigil import __version__

HELPER_NAME = "netvigil-control-helper"
HELPER_VERSION = __version__

# Failures the helper invents for what it refused to do (never a network outcome).
FORBIDDEN_ADDRESS = "x_forbidden_address"
FORBIDDEN_PORT = "x_forbidden_port"
TIMEOUT = "generic_timeout_error"

# Only these request headers are forwarded to the measured site, as OONI's helper does: anything
# else (Host, Cookie, Authorization, hop-by-hop headers) would let a client steer the fetch.
FORWARDED_HEADERS = frozenset({"user-agent", "accept", "accept-language"})

# What a probe sends when the caller gives no headers (a common desktop browser, as OONI does).
DEFAULT_REQUEST_HEADERS: dict[str, list[str]] = {
    "Accept": ["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"],
    "Accept-Language": ["en-US,en;q=0.9"],
    "User-Agent": [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
    ],
}

_TITLE = re.compile(r"<title>([^<]{1,512})</title>", re.IGNORECASE)
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ProtocolError(Exception):
    """A request the helper refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestLimits:
    max_url_length: int = 2048
    max_tcp_connect: int = 16
    max_header_names: int = 16
    max_header_values: int = 4
    max_header_value_length: int = 1024


@dataclass(frozen=True)
class Endpoint:
    """An ``ip:port`` the helper is asked (or decides) to measure."""

    ip: IPAddress
    port: int

    @property
    def key(self) -> str:
        """The string OONI uses as the map key (Go's net.JoinHostPort)."""
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ControlRequest:
    url: str
    scheme: str  # "http" or "https"
    host: str  # lower-case, no brackets for IPv6 literals
    port: int | None  # explicit port of the URL, if any
    headers: dict[str, list[str]] = field(default_factory=dict)
    tcp_connect: tuple[Endpoint, ...] = ()
    quic_enabled: bool = False

    @property
    def host_ip(self) -> IPAddress | None:
        try:
            return normalise_ip(ipaddress.ip_address(self.host))
        except ValueError:
            return None

    @property
    def url_ports(self) -> tuple[int, ...]:
        """Ports to measure for every address, as OONI's helper chooses them.

        An explicit port wins; https means 443; http means 80 *and* 443, because a successful
        handshake on 443 is what tells us an address is valid for the domain (flag 8).
        """
        if self.port is not None:
            return (self.port,)
        return (443,) if self.scheme == "https" else (80, 443)


def normalise_ip(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (``::ffff:10.0.0.1``) as IPv4, so no policy can be dodged with it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_endpoint(text: str) -> Endpoint:
    """``1.2.3.4:443`` or ``[2001:db8::1]:443``; raises ValueError."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad endpoint {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"bad endpoint {text!r}")
    if not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(f"bad port in {text!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {text!r}")
    return Endpoint(normalise_ip(ipaddress.ip_address(host)), port)


def _normalise_host(host: str) -> str:
    """A lower-case ASCII host name or IP literal; raises ProtocolError."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        # An internationalised name travels as punycode, as any resolver needs it.
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ProtocolError(400, "http_request has an invalid host name") from None
    labels = ascii_host.removesuffix(".").split(".")
    # One label at a time: a single regex over the whole name can backtrack exponentially.
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ProtocolError(400, "http_request has an invalid host name")
    return ascii_host


def _parse_url(url: object, limits: RequestLimits) -> tuple[str, str, int | None]:
    if not isinstance(url, str) or not url:
        raise ProtocolError(400, "http_request must be a non-empty string")
    if len(url) > limits.max_url_length:
        raise ProtocolError(400, "http_request is too long")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ProtocolError(400, "http_request contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ProtocolError(400, "http_request is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ProtocolError(400, "http_request must be an http:// or https:// URL")
    if not host:
        raise ProtocolError(400, "http_request has no host")
    if parts.username is not None or parts.password is not None:
        raise ProtocolError(400, "http_request must not carry credentials")
    host = _normalise_host(host)
    if port == 0:
        raise ProtocolError(400, "http_request has an invalid port")
    return scheme, host, port


def _parse_headers(raw: object, limits: RequestLimits) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError(400, "http_request_headers must be an object")
    if len(raw) > limits.max_header_names:
        raise ProtocolError(400, "too many http_request_headers")
    headers: dict[str, list[str]] = {}
    for name, values in raw.items():
        if values is None:
            continue
        if not isinstance(values, list) or len(values) > limits.max_header_values:
            raise ProtocolError(400, "each http_request_headers value must be a short list")
        for value in values:
            bad = not isinstance(value, str) or len(value) > limits.max_header_value_length
            if bad or "\r" in value or "\n" in value or "\0" in value:
                raise ProtocolError(400, "invalid http_request_headers value")
        # Dropped silently, not refused: OONI probes send more than the helper forwards.
        if name.lower() in FORWARDED_HEADERS:
            headers[name] = list(values)
    return headers


def parse_request(body: bytes, limits: RequestLimits | None = None) -> ControlRequest:
    """The JSON body of ``POST /`` → a validated request; raises ProtocolError (400)."""
    limits = limits or RequestLimits()
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ProtocolError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(400, "the body must be a JSON object")
    scheme, host, port = _parse_url(data.get("http_request"), limits)
    headers = _parse_headers(data.get("http_request_headers"), limits)
    raw_endpoints = data.get("tcp_connect")
    if raw_endpoints is None:
        raw_endpoints = []
    if not isinstance(raw_endpoints, list):
        raise ProtocolError(400, "tcp_connect must be a list of 'ip:port' strings")
    if len(raw_endpoints) > limits.max_tcp_connect:
        raise ProtocolError(400, f"tcp_connect has more than {limits.max_tcp_connect} entries")
    endpoints: list[Endpoint] = []
    for entry in raw_endpoints:
        if not isinstance(entry, str):
            raise ProtocolError(400, "tcp_connect must be a list of 'ip:port' strings")
        try:
            endpoint = parse_endpoint(entry)
        except ValueError:
            raise ProtocolError(
                400, f"tcp_connect entry is not 'ip:port': {entry[:64]!r}"
            ) from None
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    quic = data.get("x_quic_enabled", False)
    return ControlRequest(
        url=data["http_request"],
        scheme=scheme,
        host=host,
        port=port,
        headers=headers,
        tcp_connect=tuple(endpoints),
        quic_enabled=quic is True,
    )


def build_request(
    url: str, tcp_connect: list[str], headers: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The request body a probe sends (the client side of the protocol)."""
    return {
        "http_request": url,
        "http_request_headers": dict(DEFAULT_REQUEST_HEADERS if headers is None else headers),
        "tcp_connect": list(tcp_connect),
        "x_quic_enabled": False,
    }


# -- failure strings ------------------------------------------------------------------------


def _passthrough(failure: str) -> bool:
    return failure.startswith("x_")


def dns_failure(failure: str | None) -> str | None:
    """netvigil DNS failure → the string OONI's helper reports in ``dns.failure``."""
    if failure is None or _passthrough(failure):
        return failure
    if failure == "dns_nxdomain_error":
        return "dns_name_error"
    if failure == "dns_no_answer":
        return None  # OONI's legacy helper answered an empty list, not an error
    if failure in (
        "dns_refused_error",
        "dns_server_failure",
        "dns_servfail_error",
        "dns_server_misbehaving",
        "dns_temporary_failure",
        "dns_non_recoverable_failure",
    ):
        return "dns_server_failure"
    return "unknown_error"


def tcp_failure(failure: str | None) -> str | None:
    """netvigil TCP failure → ``tcp_connect[…].failure`` as OONI's helper reports it."""
    if failure is None or _passthrough(failure) or failure == TIMEOUT:
        return failure
    if failure == "connection_refused":
        return "connection_refused_error"
    return "connect_error"


def http_failure(failure: str | None, *, during_dns: bool = False) -> str | None:
    """netvigil HTTP failure → ``http_request.failure`` as OONI's helper reports it."""
    if failure is None or _passthrough(failure):
        return failure
    if failure.startswith("dns_") or during_dns:
        return "dns_lookup_error"
    if failure == TIMEOUT:
        return failure
    if failure == "connection_refused":
        return "connection_refused_error"
    return "unknown_error"


# -- response pieces --------------------------------------------------------------------------


def page_title(body: bytes) -> str:
    """The page title exactly as OONI extracts it: first <title>, entities left as they are."""
    match = _TITLE.search(body.decode("utf-8", "replace"))
    return match.group(1) if match else ""


def canonical_header(name: str) -> str:
    """Go's textproto canonical form (``content-type`` → ``Content-Type``), as OONI prints."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def headers_map(headers_list: list[tuple[str, str]] | list[list[str]]) -> dict[str, str]:
    """First value per canonical name (Go's Header.Get), as in OONI's ``headers``."""
    out: dict[str, str] = {}
    for name, value in headers_list:
        out.setdefault(canonical_header(name), value)
    return out


def failed_http(failure: str | None, x_failure: str | None = None) -> dict[str, Any]:
    return {
        "body_length": -1,
        "discovered_h3_endpoint": "",
        "failure": failure,
        "title": "",
        "headers": {},
        "status_code": -1,
        "x_failure": x_failure if x_failure is not None else failure,
    }


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
