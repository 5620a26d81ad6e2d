"""A loopback world for the messaging-app experiments: a resolver, HTTP/HTTPS/TCP servers, and
misbehaving ones, on 127.0.0.1 only.

Every endpoint host resolves to its own address in 127.0.1.0/24; the override file the world
writes maps each of those addresses (and every IP literal of the apps, with its port) to the
127.0.0.1 port of the server that plays it. Nothing leaves the machine: ``assert_loopback``
checks every connect a measurement records.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import socket
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.rcode
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netvigil.experiments.im_endpoints import APPS, load_app, load_overrides
from netvigil.experiments.web_connectivity import ProbeConfig
from netvigil.net.tls import TrustStore
from netvigil.testbed.dns_servers import NXDOMAIN, Answer, DnsServer, start_resolver

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

BOGUS_ANSWER = "127.0.9.9"  # an answer outside the world's "Facebook" prefixes
FACEBOOK_NET = "127.0.1.0/24"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], names: list[str]
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca[1].public_key()), False
        )
        .sign(ca[1], hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, key_pem


def _server_context(folder: Path, stem: str, pem: bytes, key: bytes) -> ssl.SSLContext:
    (folder / f"{stem}.pem").write_bytes(pem)
    (folder / f"{stem}.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / f"{stem}.pem", folder / f"{stem}.key")
    return context


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            return await reader.readuntil(b"\r\n\r\n")
    return b""


def _page(status: int, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} X\r\nServer: nginx\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


@dataclass
class World:
    """Which endpoint does what: ``dns[host]`` ("nxdomain", "bogus", "timeout") and
    ``behaviour[(host, port)]`` (a key of ``BEHAVIOURS``); everything else works."""

    dns: dict[str, str] = field(default_factory=dict)
    behaviour: dict[tuple[str, int], str] = field(default_factory=dict)
    pinned_override: bool = True
    timeout: float = 4.0
    # filled by start()
    config: ProbeConfig | None = None
    override_path: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _resolver: DnsServer | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _hosts: dict[str, str] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    BEHAVIOURS = (
        "http",
        "https",
        "https-signal",
        "tcp",
        "refused",
        "reset",
        "garbage",
        "http-reset",
        "huge-body",
        "silent",
        "redirect-loop",
    )

    # -- servers ---------------------------------------------------------------------------------
    async def _serve(self, name: str, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await handler(reader, writer)
            except (Exception, asyncio.CancelledError):
                pass  # a client that goes away, or the world stopping
            finally:
                writer.transport.abort()
                if task is not None:
                    self._tasks.discard(task)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
        self._servers.append(server)
        self.ports[name] = server.sockets[0].getsockname()[1]

    async def start(self) -> World:
        self._tmp = tempfile.TemporaryDirectory(prefix="netvigil-im-world-")
        folder = Path(self._tmp.name)
        web_ca, signal_ca = _ca("World Web Root"), _ca("World Signal CA")
        endpoints = [e for app in APPS for e in load_app(app).endpoints]
        names = sorted({e.host for e in endpoints if not e.is_ip_literal})
        web_ctx = _server_context(folder, "web", *_leaf(web_ca, names))
        signal_ctx = _server_context(folder, "signal", *_leaf(signal_ca, names))

        async def http_ok(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            if await _read_head(r):
                w.write(_page(404, b"<html><title>404 Not Found</title></html>"))
                await w.drain()

        async def accept_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await r.read(1)
            _rst(w)

        async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(os.urandom(4096))
            await w.drain()
            await asyncio.sleep(0.2)

        async def http_reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await _read_head(r)
            _rst(w)

        async def huge_body(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await _read_head(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            chunk = b"x" * 65536
            for _ in range(2000):  # bounded: 128 MiB at most, the client stops far earlier
                w.write(chunk)
                await w.drain()

        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        async def loop_redirect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            head = await _read_head(r)
            if head:
                w.write(_page(302, b"", "Location: /again\r\n"))
                await w.drain()

        await self._serve("http", http_ok)
        await self._serve("https", http_ok, web_ctx)
        await self._serve("https-signal", http_ok, signal_ctx)
        await self._serve("tcp", accept_close)
        await self._serve("reset", reset)
        await self._serve("garbage", garbage)
        await self._serve("http-reset", http_reset)
        await self._serve("https-reset", http_reset, web_ctx)
        await self._serve("huge-body", huge_body)
        await self._serve("https-huge-body", huge_body, web_ctx)
        await self._serve("silent", silent)
        await self._serve("redirect-loop", loop_redirect)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        self.ports["refused"] = closed.getsockname()[1]
        closed.close()

        for number, host in enumerate(names, start=1):
            self._hosts[host] = f"127.0.1.{number}"

        def answer(name: str, rdtype: dns.rdatatype.RdataType) -> Answer:
            host = name.rstrip(".").lower()
            what = self.dns.get(host)
            if what == "nxdomain" or host not in self._hosts:
                return NXDOMAIN
            if what == "timeout":
                return Answer(silent=True)
            if rdtype != dns.rdatatype.A:
                return Answer()
            if what == "bogus":
                return Answer(addresses=(BOGUS_ANSWER,))
            return Answer(addresses=(self._hosts[host],))

        self._resolver = await start_resolver(answer, "127.0.0.1", 0)
        assert self._resolver.udp_port
        self._write_override(folder, endpoints, signal_ca[0])
        pem = web_ca[0].public_bytes(serialization.Encoding.PEM)
        self.config = ProbeConfig(
            trust=TrustStore.from_pem_bytes(pem),
            resolver="127.0.0.1",
            resolver_port=self._resolver.udp_port,
            dns_timeout=self.timeout,
            late_window=0.05,
            connect_timeout=self.timeout,
            tls_timeout=self.timeout,
            http_timeout=self.timeout,
            url_budget=30.0,
            max_body=64 * 1024,
        )
        return self

    def _default(self, kind: str, host: str) -> str:
        if kind == "https":
            return "https-signal" if host.endswith("signal.org") else "https"
        return "http" if kind == "http" else "tcp"

    def _server_for(self, behaviour: str, kind: str) -> str:
        """The listener of a behaviour for an endpoint of ``kind`` (https ones speak TLS first)."""
        if kind == "https" and behaviour == "http-reset":
            return "https-reset"
        if kind == "https" and behaviour == "huge-body":
            return "https-huge-body"
        return behaviour

    def _write_override(
        self, folder: Path, endpoints: list[Any], signal_ca: x509.Certificate
    ) -> None:
        lines = ["[addresses]"]
        seen: set[str] = set()
        for endpoint in endpoints:
            if endpoint.kind == "dns":
                continue
            behaviour = self.behaviour.get(
                (endpoint.host, endpoint.port), self._default(endpoint.kind, endpoint.host)
            )
            ip = endpoint.host if endpoint.is_ip_literal else self._hosts[endpoint.host]
            key = f"{ip}:{endpoint.port}"
            if key in seen:
                continue
            seen.add(key)
            port = self.ports[self._server_for(behaviour, endpoint.kind)]
            lines.append(f'"{key}" = "127.0.0.1:{port}"')
        # the bogus answer too: a connect to it stays on loopback (and is refused)
        for port in (443, 5222, 80):
            lines.append(f'"{BOGUS_ANSWER}:{port}" = "127.0.0.1:{self.ports["refused"]}"')
        if self.pinned_override:
            ca_file = folder / "signal-ca.pem"
            ca_file.write_bytes(signal_ca.public_bytes(serialization.Encoding.PEM))
            lines += ["", "[signal]", f'pinned_ca_file = "{ca_file}"']
        lines += ["", "[facebook_messenger]", f'asn_prefixes = ["{FACEBOOK_NET}"]']
        path = folder / "im-endpoints.toml"
        path.write_text("\n".join(lines) + "\n")
        self.override_path = str(path)

    def overrides(self) -> Any:
        return load_overrides(self.override_path)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._resolver is not None:
            await self._resolver.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def assert_loopback(measurement: dict[str, Any]) -> None:
    """Every connect the measurement records went to loopback."""
    for entry in measurement["test_keys"]["tcp_connect"]:
        assert ipaddress.ip_address(entry["ip"]).is_loopback, entry
