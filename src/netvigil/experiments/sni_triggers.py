"""Which SNIs trigger interception, and where on the path the censor sits (IMC 2020's method).

**Discovery.** Take one address that presents a valid certificate and send a TLS handshake
with each SNI to it (concurrently, bounded). An SNI *triggers* interception when the chain that
comes back does not lead to a trusted root (``ssl_unknown_authority``, or
``ssl_invalid_hostname`` for a leaf that no trusted CA issued: the name is checked first) or
comes from a known interception root (``netvigil.verdict.roots``): the address itself serves
valid certificates, so someone on the path answered instead. A trusted chain that is not for
that name means the server simply has no certificate for it (not evidence); a reset or silence
after the ClientHello is SNI *blocking*, reported apart.

**Localisation.** For a triggering SNI: complete the TCP handshake normally, then set ``IP_TTL``
to k (1…8) on the socket before the ClientHello. Packets with too small a TTL die on the way;
the first k at which a forged certificate comes back is the censor's hop. Each hop's address
comes from a UDP probe with the same TTL whose ICMP "time exceeded" is read from the socket's
error queue (``IP_RECVERR``, no privileges needed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from netvigil.experiments.interception_check import (
    chain_to_pem,
    known_root,
    leaf_spki_sha256,
    top_issuer,
    verified_path,
)
from netvigil.net import tcp as ntcp
from netvigil.net import tls as ntls
from netvigil.net.failures import SSL_INVALID_HOSTNAME, SSL_UNKNOWN_AUTHORITY

__all__ = [
    "BLOCKED",
    "FAILED",
    "NOT_SERVED",
    "NOT_TRIGGERED",
    "TRIGGERED",
    "HopProbe",
    "Location",
    "SNIProbe",
    "discover",
    "locate",
]

TRIGGERED = "triggered"
NOT_TRIGGERED = "not triggered"
NOT_SERVED = "no certificate for this name"
BLOCKED = "blocked"  # reset or timeout after the ClientHello
FAILED = "failed"

MAX_SNIS = 10_000
MAX_TTL = 32
IP_RECVERR = int(getattr(socket, "IP_RECVERR", 11))
_SOL_IP = 0
_EE_ORIGIN_ICMP = 2
_TRACE_PORT = 33434
_BLOCKING_FAILURES = ("connection_reset", "generic_timeout_error", "eof_error")


@dataclass(frozen=True)
class SNIProbe:
    sni: str
    outcome: str
    failure: str | None
    chain: tuple[bytes, ...]
    issuer: str
    known_root: str | None
    leaf_spki: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "sni": self.sni,
            "outcome": self.outcome,
            "failure": self.failure,
            "issuer": self.issuer,
            "known_root": self.known_root,
            "leaf_spki_sha256": self.leaf_spki,
            "chain_pem": chain_to_pem(self.chain),
            "seconds": round(self.seconds, 3),
        }


def classify(
    chain: Sequence[bytes], failure: str | None, sni: str, trust: ntls.TrustStore
) -> tuple[str, str | None]:
    """(outcome, known root name) for one handshake's result."""
    if not chain:
        if failure and any(failure.startswith(f) for f in _BLOCKING_FAILURES):
            return BLOCKED, None
        return FAILED, None
    ders = list(chain)
    if failure is None:
        path = verified_path(chain, sni, trust)
        if path:
            ders.append(path[-1].public_bytes(Encoding.DER))
    root = known_root(ders)
    if root is not None:
        return TRIGGERED, root.name
    if failure == SSL_UNKNOWN_AUTHORITY:
        return TRIGGERED, None
    if failure == SSL_INVALID_HOSTNAME:
        # The name is checked before the path (Go's order): only a leaf from a trusted CA is
        # the server's own certificate for another name; an untrusted one is a forgery.
        if ntls.reaches_trusted_root(chain, trust, now=dt.datetime.now(dt.UTC)):
            return NOT_SERVED, None
        return TRIGGERED, None
    if failure is None:
        return NOT_TRIGGERED, None
    return FAILED, None


async def _shake(
    address: str, sni: str, trust: ntls.TrustStore, *, port: int, timeout: float, ttl: int | None
) -> tuple[tuple[bytes, ...], str | None]:
    connected, sock = await ntcp.connect(address, port, timeout=timeout)
    if sock is None:
        return (), f"tcp: {connected.failure}"
    if ttl is not None:
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        except OSError as exc:
            sock.close()
            return (), f"setsockopt IP_TTL: {exc}"
    shake, stream = await ntls.handshake(
        sock, sni, trust=trust, timeout=timeout, keep_unverified=True
    )
    if stream is not None:
        stream.writer.transport.abort()
    return tuple(shake.peer_chain), shake.failure


async def probe_sni(
    address: str, sni: str, trust: ntls.TrustStore, *, port: int = 443, timeout: float = 5.0
) -> SNIProbe:
    started = time.monotonic()
    chain, failure = await _shake(address, sni, trust, port=port, timeout=timeout, ttl=None)
    outcome, root = classify(chain, failure, sni, trust)
    return SNIProbe(
        sni,
        outcome,
        failure,
        chain,
        top_issuer(chain),
        root,
        leaf_spki_sha256(chain),
        time.monotonic() - started,
    )


async def discover(
    address: str,
    snis: Sequence[str],
    trust: ntls.TrustStore,
    *,
    port: int = 443,
    concurrency: int = 32,
    timeout: float = 5.0,
) -> list[SNIProbe]:
    """One handshake per SNI to `address`, at most `concurrency` at once; input order."""
    gate = asyncio.Semaphore(max(1, concurrency))
    names = list(dict.fromkeys(snis))[:MAX_SNIS]

    async def one(sni: str) -> SNIProbe:
        async with gate:
            return await probe_sni(address, sni, trust, port=port, timeout=timeout)

    return list(await asyncio.gather(*(one(s) for s in names)))


# ----------------------------------------------------------------------------------------------
# Localisation


@dataclass(frozen=True)
class HopProbe:
    ttl: int
    outcome: str  # "forged" | "genuine" | "no answer" | "failed"
    failure: str | None
    issuer: str
    router: str | None  # who answered a UDP probe with this TTL (ICMP time exceeded)
    router_icmp: str | None  # "time exceeded" | "unreachable" | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ttl": self.ttl,
            "outcome": self.outcome,
            "failure": self.failure,
            "issuer": self.issuer,
            "router": self.router,
            "router_icmp": self.router_icmp,
        }


@dataclass
class Location:
    address: str
    sni: str
    hops: list[HopProbe] = field(default_factory=list)
    hop: int | None = None  # the first TTL at which the forged certificate comes back
    hop_address: str | None = None

    def summary(self) -> str:
        if self.hop is None:
            return (
                f"no forged certificate came back for {self.sni} within {len(self.hops)} hops "
                f"of {self.address}"
            )
        where = f" (address {self.hop_address})" if self.hop_address else ""
        return f"the forged certificate first appears at hop {self.hop}{where}"

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "sni": self.sni,
            "hop": self.hop,
            "hop_address": self.hop_address,
            "summary": self.summary(),
            "hops": [h.to_json() for h in self.hops],
        }


def _offender(ancillary: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    """(address, ICMP type) from an IP_RECVERR message (struct sock_extended_err + offender)."""
    for level, kind, data in ancillary:
        if level != _SOL_IP or kind != IP_RECVERR or len(data) < 16 + 8:
            continue
        _errno, origin, icmp_type, _code, _pad, _info, _data = struct.unpack_from("=IBBBBII", data)
        if origin != _EE_ORIGIN_ICMP:
            continue
        family = struct.unpack_from("=H", data, 16)[0]
        if family != socket.AF_INET:
            continue
        return socket.inet_ntoa(data[20:24]), icmp_type
    return None


async def udp_hop(address: str, ttl: int, *, timeout: float = 2.0) -> tuple[str | None, int | None]:
    """Who answers a UDP datagram to `address` sent with `ttl` (traceroute's way), bounded."""
    loop = asyncio.get_running_loop()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return None, None
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.sendto(b"netvigil-locate", (address, _TRACE_PORT + ttl))
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                _, ancillary, _, _ = sock.recvmsg(512, 1024, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                await asyncio.sleep(0.02)
                continue
            found = _offender(ancillary)
            if found is not None:
                return found
    except OSError:
        return None, None
    finally:
        sock.close()
    return None, None


async def _hop(
    address: str, sni: str, trust: ntls.TrustStore, ttl: int, *, port: int, timeout: float
) -> HopProbe:
    shake = _shake(address, sni, trust, port=port, timeout=timeout, ttl=ttl)
    (chain, failure), (router, icmp) = await asyncio.gather(
        shake, udp_hop(address, ttl, timeout=min(timeout, 2.0))
    )
    outcome, _root = classify(chain, failure, sni, trust)
    if outcome == TRIGGERED:
        state = "forged"
    elif outcome in (NOT_TRIGGERED, NOT_SERVED):
        state = "genuine"
    elif not chain and failure and failure.startswith("generic_timeout_error"):
        state = "no answer"
    else:
        state = "failed"
    kind = {11: "time exceeded", 3: "unreachable"}.get(icmp or -1) if icmp is not None else None
    return HopProbe(ttl, state, failure, top_issuer(chain), router, kind)


async def locate(
    address: str,
    sni: str,
    trust: ntls.TrustStore,
    *,
    port: int = 443,
    max_ttl: int = 8,
    timeout: float = 3.0,
) -> Location:
    """TTL-limited handshakes with TTL 1…max_ttl (all at once); the first forged answer's hop."""
    ttls = range(1, max(1, min(MAX_TTL, max_ttl)) + 1)
    hops = await asyncio.gather(
        *(_hop(address, sni, trust, k, port=port, timeout=timeout) for k in ttls)
    )
    location = Location(address, sni, list(hops))
    for hop in hops:
        if hop.outcome == "forged":
            location.hop = hop.ttl
            location.hop_address = hop.router if hop.router_icmp == "time exceeded" else None
            break
    return location
