"""Where the helper may connect: the operator's allow-list, checked before every connection.

A test helper connects wherever its clients ask. Without a policy anyone could make it scan a
private network or a third party; so every endpoint (asked for by the probe, resolved by the
helper, or reached through a redirect) must pass ``AddressPolicy.permits`` first, and an endpoint
that does not is reported with ``failure: "x_forbidden_address"`` (or ``x_forbidden_port``)
without a single packet sent to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from netvigil.control.protocol import IPAddress, normalise_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ANYWHERE: tuple[Network, ...] = (
    ipaddress.IPv4Network("0.0.0.0/0"),
    ipaddress.IPv6Network("::/0"),
)
TESTBED_NETWORKS: tuple[Network, ...] = (ipaddress.IPv4Network("198.18.0.0/15"),)


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings → networks; raises ValueError naming the bad one."""
    out: list[Network] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"not a network: {item!r} (expected CIDR like 198.18.0.0/15)"
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class AddressPolicy:
    """Networks and ports the helper may connect to.

    ``require_global``: on top of the networks, refuse every address that is not public unicast
    (private, loopback, link-local, CGNAT, documentation, benchmarking …). The default for a real
    deployment is "anywhere, global only"; a testbed or a test names its networks explicitly and
    turns it off, since its whole world is non-global space.
    """

    networks: tuple[Network, ...] = ANYWHERE
    ports: frozenset[int] = frozenset({80, 443})
    require_global: bool = True

    @classmethod
    def public(cls) -> AddressPolicy:
        return cls()

    @classmethod
    def only(
        cls, networks: Iterable[str | Network], ports: Iterable[int] = (80, 443)
    ) -> AddressPolicy:
        nets = tuple(
            ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in networks
        )
        return cls(networks=nets, ports=frozenset(ports), require_global=False)

    def _in_networks(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def permits_address(self, ip: IPAddress) -> bool:
        ip = normalise_ip(ip)
        # Never useful, whatever the list says: "this host", multicast, broadcast.
        if ip.is_unspecified or ip.is_multicast:
            return False
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return False
        if self.require_global and not ip.is_global:
            return False
        return self._in_networks(ip)

    def check(self, ip: IPAddress, port: int) -> str | None:
        """None when allowed, else the failure string to report."""
        if not self.permits_address(ip):
            return "x_forbidden_address"
        if port not in self.ports:
            return "x_forbidden_port"
        return None

    def is_bogon(self, ip: IPAddress) -> bool:
        """ip_info flag 4: an address no public site should resolve to.

        An address inside networks the operator declared as "the Internet" (a testbed's range) is
        not a bogon there, although it is not globally routable.
        """
        ip = normalise_ip(ip)
        if not self.require_global and self._in_networks(ip):
            return False
        return not ip.is_global or ip.is_multicast
