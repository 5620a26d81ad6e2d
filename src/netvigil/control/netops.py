"""``NetOps`` bound to netvigil's traced primitives (``netvigil.net``).

The helper never uses the system resolver: names are resolved with the configured resolver
(``ResolverSpec``), and the HTTP fetch gets them through the helper's own callback, which applies
the address policy. Redirects are followed here, one hop at a time, rather than inside
``net.http.fetch``: each next URL must pass the policy first (an IP-literal redirect such as
``http://169.254.169.254/`` never reaches a resolver callback, so only this loop can stop it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from netvigil.control.measure import (
    Connected,
    Fetched,
    FetchResolver,
    ForbiddenError,
    Resolved,
    ResolveError,
)
from netvigil.control.protocol import FORBIDDEN_ADDRESS, TIMEOUT
from netvigil.net import dns as net_dns
from netvigil.net import http as net_http
from netvigil.net import tcp as net_tcp
from netvigil.net import tls as net_tls
from netvigil.net.failures import NetFailure

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Set-Cookie values kept across the hops of one fetch (a few sites redirect in a loop without
# them; OONI's helper keeps a cookie jar for the same reason). Bounded: hostile sites exist.
_MAX_COOKIES = 32
_MAX_COOKIE_LENGTH = 1024


@dataclass(frozen=True)
class ResolverSpec:
    """The resolver the helper asks: ``ip``, ``ip:port``, ``[v6]:port``, or a DoH URL.

    A DoH URL whose host is a name needs ``doh_address`` (the server's IP): the helper never
    asks the system resolver, so it never depends on what the machine's network says.
    """

    address: str
    port: int = 53
    engine: str = "udp"
    doh_address: str | None = None

    @classmethod
    def parse(cls, text: str, *, doh_address: str | None = None) -> ResolverSpec:
        """Raises ValueError with a message fit for a command line."""
        text = text.strip()
        if text.startswith("https://"):
            host = urlsplit(text).hostname or ""
            try:
                ipaddress.ip_address(host)
            except ValueError:
                if doh_address is None:
                    raise ValueError(
                        f"DoH resolver {text!r} is named by host name: give its IP address too"
                    ) from None
            if doh_address is not None:
                ipaddress.ip_address(doh_address)
            return cls(text, 443, "doh", doh_address)
        host, port = text, 53
        try:
            if text.startswith("["):
                host, _, rest = text[1:].partition("]")
                if rest.startswith(":"):
                    port = int(rest[1:])
            elif text.count(":") == 1:
                host, _, port_text = text.partition(":")
                port = int(port_text)
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"resolver {text!r} is not an IP address, IP:port or https:// URL"
            ) from None
        if not 0 < port < 65536:
            raise ValueError(f"bad resolver port in {text!r}")
        return cls(host, port, "udp")


@dataclass
class NetvigilOps:
    resolver: ResolverSpec
    trust: net_tls.TrustStore
    late_window: float = 0.0  # the helper needs the first answer only
    also_aaaa: bool = False
    max_addresses_per_hop: int = 4
    # The DoH server is verified against the same roots as the measured sites.
    _trust_pem: str = field(default="", repr=False)
    _doh_context: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def from_trust_file(
        cls, resolver: ResolverSpec, trust_pem: str | os.PathLike[str], *, also_aaaa: bool = False
    ) -> NetvigilOps:
        # The one thing the helper keeps between requests: parsing roots is costly.
        trust = net_tls.TrustStore.from_pem_file(trust_pem)
        pem = Path(trust_pem).read_text("ascii", "replace") if resolver.engine == "doh" else ""
        return cls(resolver, trust, also_aaaa=also_aaaa, _trust_pem=pem)

    # -- DNS ------------------------------------------------------------------------------------
    async def _query(self, host: str, qtype: str, timeout: float) -> Resolved:
        if self.resolver.engine == "doh":
            if self._doh_context is None:
                self._doh_context = ssl.create_default_context(cadata=self._trust_pem)
            result = await net_dns.resolve_doh(
                host,
                self.resolver.address,
                ssl_context=self._doh_context,
                timeout=timeout,
                qtype=qtype,
                address=self.resolver.doh_address,
            )
            return Resolved(list(result.addresses), result.failure)
        result = await net_dns.resolve(
            host,
            self.resolver.address,
            port=self.resolver.port,
            engine=self.resolver.engine,
            qtype=qtype,
            timeout=timeout,
            late_window=self.late_window,
        )
        return Resolved(list(result.addresses), result.failure)

    async def resolve(self, host: str, *, timeout: float) -> Resolved:
        if not self.also_aaaa:
            return await self._query(host, "A", timeout)
        a, aaaa = await asyncio.gather(
            self._query(host, "A", timeout), self._query(host, "AAAA", timeout)
        )
        addresses = [*a.addresses, *aaaa.addresses]
        return Resolved(addresses, None if addresses else a.failure)

    # -- TCP and TLS ------------------------------------------------------------------------------
    async def connect(
        self,
        ip: str,
        port: int,
        *,
        server_name: str | None,
        connect_timeout: float,
        tls_timeout: float,
    ) -> Connected:
        tcp, sock = await net_tcp.connect(ip, port, timeout=connect_timeout)
        if sock is None:
            return Connected(tcp.failure or "unknown_failure: no socket")
        if server_name is None:
            sock.close()
            return Connected(None)
        # handshake() takes the socket over and closes it on failure.
        shake, stream = await net_tls.handshake(
            sock, server_name, trust=self.trust, timeout=tls_timeout, alpn=("h2", "http/1.1")
        )
        if stream is not None:
            stream.writer.transport.abort()
        return Connected(None, shake.failure, shake.peer_chain)

    # -- HTTP -------------------------------------------------------------------------------------
    async def fetch(
        self,
        url: str,
        *,
        headers: dict[str, list[str]],
        resolve: FetchResolver,
        timeout: float,
        max_body: int,
        max_redirects: int,
    ) -> Fetched:
        try:
            async with asyncio.timeout(timeout):
                return await self._follow(url, headers, resolve, timeout, max_body, max_redirects)
        except TimeoutError:
            return Fetched(None, failure=TIMEOUT)

    async def _follow(
        self,
        url: str,
        headers: dict[str, list[str]],
        resolve: FetchResolver,
        timeout: float,
        max_body: int,
        max_redirects: int,
    ) -> Fetched:
        base = _request_headers(headers)
        cookies = _CookieJar()
        current = url
        for _ in range(max_redirects + 1):
            refused = await _check_hop(current, resolve)
            if refused is not None:
                return refused
            resolving_failed = False

            async def hop_resolve(host: str, current: str = current) -> list[str]:
                nonlocal resolving_failed
                try:
                    return await resolve(host, _port(current))
                except ResolveError as exc:
                    resolving_failed = True
                    raise NetFailure(exc.failure) from None
                except ForbiddenError as exc:
                    raise NetFailure(exc.failure) from None

            cookie = cookies.header(current)
            hop_headers = base + ([("Cookie", cookie)] if cookie else [])
            results = await net_http.fetch(
                current,
                resolve=hop_resolve,
                trust=self.trust,
                max_redirects=0,
                timeout=timeout,
                max_body=max_body,
                headers=hop_headers,
                max_addresses=self.max_addresses_per_hop,
            )
            hop = results[0]
            if hop.failure is not None or hop.status_code not in _REDIRECTS or not hop.location:
                return Fetched(
                    hop.status_code,
                    list(hop.headers_list),
                    hop.body,
                    hop.failure,
                    failed_resolving=resolving_failed,
                    body_rate=hop.body_rate,
                )
            cookies.keep(current, hop.headers_list)
            current = urljoin(current, hop.location.strip())
        return Fetched(None, failure="x_too_many_redirects")


def _port(url: str) -> int:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return port or (443 if parts.scheme.lower() == "https" else 80)


async def _check_hop(url: str, resolve: FetchResolver) -> Fetched | None:
    """None when this hop may go ahead; else its result (refused by the policy)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return Fetched(None, failure="x_unsupported_redirect")
    try:
        host = parts.hostname or ""
        port = _port(url)
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: the resolver callback applies the policy to its addresses
    try:
        await resolve(str(ip), port)  # for a literal this is the policy check alone
    except ForbiddenError as exc:
        return Fetched(None, failure=exc.failure)
    except ResolveError:
        return Fetched(None, failure=FORBIDDEN_ADDRESS)
    return None


def _request_headers(forwarded: dict[str, list[str]]) -> list[tuple[str, str]]:
    """net.http's defaults, with the probe's User-Agent / Accept / Accept-Language instead."""
    given = {name.lower() for name in forwarded}
    out = [(k, v) for k, v in net_http.DEFAULT_HEADERS if k.lower() not in given]
    for name, values in forwarded.items():
        out.extend((name, value) for value in values)
    return out


class _CookieJar:
    """Just enough of RFC 6265 for redirects: name=value, host-only or Domain=, bounded."""

    def __init__(self) -> None:
        # (domain, host_only) → {name: value}
        self._cookies: dict[tuple[str, bool], dict[str, str]] = {}
        self._count = 0

    def keep(self, url: str, headers: tuple[tuple[str, str], ...]) -> None:
        host = (urlsplit(url).hostname or "").lower()
        for name, value in headers:
            if name.lower() != "set-cookie" or len(value) > _MAX_COOKIE_LENGTH:
                continue
            pair, *attributes = value.split(";")
            key, sep, content = pair.partition("=")
            key = key.strip()
            if not sep or not key or self._count >= _MAX_COOKIES:
                continue
            scope = (host, True)
            for attribute in attributes:
                attr, _, attr_value = attribute.strip().partition("=")
                domain = attr_value.strip().lstrip(".").lower()
                # A site may widen a cookie to its parent domain, never to another site.
                if (
                    attr.lower() == "domain"
                    and domain
                    and (host == domain or host.endswith("." + domain))
                ):
                    scope = (domain, False)
            bucket = self._cookies.setdefault(scope, {})
            if key not in bucket:
                self._count += 1
            bucket[key] = content.strip()

    def header(self, url: str) -> str:
        host = (urlsplit(url).hostname or "").lower()
        pairs: dict[str, str] = {}
        for (domain, host_only), bucket in self._cookies.items():
            if host == domain or (not host_only and host.endswith("." + domain)):
                pairs.update(bucket)
        return "; ".join(f"{k}={v}" for k, v in pairs.items())
