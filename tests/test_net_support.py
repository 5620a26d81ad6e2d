"""Helpers for tests/test_net*.py: a throwaway PKI and tiny servers on 127.0.0.1.

No tests here. Everything listens on 127.0.0.1 with an ephemeral port.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import dns.message
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netvigil.net import TrustStore

LOOPBACK = "127.0.0.1"
NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(
    cn: str,
    *,
    issuer: Issued | None = None,
    issuer_cn: str | None = None,
    ca: bool = False,
    names: Iterable[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    signing_key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    """A certificate; self-signed unless ``issuer`` (or ``issuer_cn`` + ``signing_key``)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    signer = signing_key or (issuer.key if issuer else key)
    issuer_name = _name(issuer_cn) if issuer_cn else (issuer.cert.subject if issuer else _name(cn))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@dataclass(frozen=True)
class PKI:
    root: Issued
    intermediate: Issued
    leaf: Issued  # site.test, signed by intermediate
    expired: Issued
    rogue_root: Issued
    rogue_intermediate: Issued
    rogue_leaf: Issued  # site.test, signed by the rogue intermediate
    trust: TrustStore


@cache
def pki() -> PKI:
    year = dt.timedelta(days=365)
    root = issue("netvigil test root", ca=True, not_before=NOW - 2 * year, not_after=NOW + 2 * year)
    inter = issue(
        "netvigil test intermediate",
        issuer=root,
        ca=True,
        not_before=NOW - year,
        not_after=NOW + year,
    )
    leaf = issue("site.test", issuer=inter, names=["site.test", "www.site.test"])
    expired = issue(
        "site.test",
        issuer=inter,
        names=["site.test"],
        not_before=NOW - dt.timedelta(days=60),
        not_after=NOW - dt.timedelta(days=1),
    )
    rogue_root = issue("National Security Root", ca=True)
    rogue_inter = issue("National Security Intermediate", issuer=rogue_root, ca=True)
    rogue_leaf = issue("site.test", issuer=rogue_inter, names=["site.test"])
    return PKI(
        root,
        inter,
        leaf,
        expired,
        rogue_root,
        rogue_inter,
        rogue_leaf,
        TrustStore.from_pem_bytes(root.pem),
    )


def server_context(
    tmp: Path, chain: list[Issued], alpn: tuple[str, ...] = ("http/1.1",)
) -> ssl.SSLContext:
    leaf = chain[0]
    cert = tmp / f"chain-{id(chain)}.pem"
    key = tmp / f"key-{id(chain)}.pem"
    cert.write_bytes(b"".join(c.pem for c in chain))
    key.write_bytes(
        leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


# -- TCP servers ----------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_tcp(
    handler: Handler, ssl_ctx: ssl.SSLContext | None = None
) -> tuple[asyncio.Server, int]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(guarded, LOOPBACK, 0, ssl=ssl_ctx)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


def simple_http(routes: dict[str, tuple[int, list[tuple[str, str]], bytes]]) -> Handler:
    """A keep-nothing HTTP/1.1 server: path → (status, headers, body); Connection: close."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        path = head.split(b" ", 2)[1].decode()
        status, headers, body = routes.get(path, (404, [], b"not found"))
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        await asyncio.sleep(0.05)

    return handler


# -- DNS servers ----------------------------------------------------------------------------------

DnsHandler = Callable[[dns.message.Message], list[tuple[float, bytes]]]
"""query → [(delay in seconds, reply wire)]: every reply is sent after its delay."""


def a_reply(query: dns.message.Message, *addresses: str, rcode: int = 0, ttl: int = 300) -> bytes:
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    if addresses:
        name = query.question[0].name
        rrset = reply.find_rrset(reply.answer, name, 1, 1, create=True)
        for address in addresses:
            rrset.add(dns.rdata.from_text(1, 1, address), ttl)
    return reply.to_wire()


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, handler: DnsHandler) -> None:
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        for delay, wire in self.handler(query):
            task = asyncio.ensure_future(self._send(delay, wire, addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, delay: float, wire: bytes, addr: Any) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


class DnsUdpServer:
    def __init__(self, transport: asyncio.DatagramTransport, protocol: _DnsUdp) -> None:
        self.transport = transport
        self.protocol = protocol
        self.port: int = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        for task in list(self.protocol.tasks):
            task.cancel()
        self.transport.close()


async def start_dns_udp(handler: DnsHandler) -> DnsUdpServer:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _DnsUdp(handler), local_addr=(LOOPBACK, 0)
    )
    return DnsUdpServer(transport, protocol)


def dns_tcp_handler(
    respond: Callable[[dns.message.Message, asyncio.StreamWriter], Awaitable[None]],
) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        query = dns.message.from_wire(await reader.readexactly(size))
        await respond(query, writer)

    return handler
