"""The TLS-terminating front and the ASGI middleware, on loopback only."""

from __future__ import annotations

import asyncio
import base64
import datetime
import io
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netvigil.sitecheck.asgi import SitecheckMiddleware
from netvigil.sitecheck.front import Front, Limits, server_context
from netvigil.sitecheck.reference import labelled_records

SITE = "site.test"
CHROME_156 = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
RECORDS = {str(r["label"]): r for r in labelled_records()}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    directory = tmp_path_factory.mktemp("front-cert")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SITE)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def _echo_upstream() -> tuple[asyncio.Server, int]:
    """An HTTP server that answers with the request head it received."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(head) + head)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _memory_bio_client(port: int, request: bytes) -> tuple[bytes, bytes]:
    """A Python TLS client whose exact ClientHello bytes we keep; returns (hello, response)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=SITE)
    first = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flight = outgoing.read()
                if flight:
                    first = first or flight
                    sock.sendall(flight)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("front closed during the handshake") from None
                incoming.write(chunk)
        sock.sendall(outgoing.read())
        tls.write(request)
        sock.sendall(outgoing.read())
        response = b""
        closed = False
        while not closed:
            chunk = sock.recv(65536)
            if not chunk:
                break
            incoming.write(chunk)
            try:
                while piece := tls.read(65536):
                    response += piece
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                closed = True  # the front's close_notify: the response is complete
    return first, response


def _run(coroutine: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), 60))


def test_front_peeks_without_altering_and_adds_headers(certificate: tuple[str, str]) -> None:
    async def scenario() -> None:
        upstream, upstream_port = await _echo_upstream()
        front = Front(
            ("127.0.0.1", 0), server_context(*certificate), f"http://127.0.0.1:{upstream_port}"
        )
        await front.start()
        try:
            request = (
                f"GET /x HTTP/1.1\r\nHost: {SITE}\r\nUser-Agent: {CHROME_156}\r\n"
                "X-Netvigil-TLS-Verdict: consistent\r\nConnection: keep-alive\r\n\r\n"
            ).encode()
            hello, response = await asyncio.to_thread(_memory_bio_client, front.port, request)
        finally:
            await front.close()
            upstream.close()
        assert response.startswith(b"HTTP/1.1 200 OK")
        seen = response.split(b"\r\n\r\n", 1)[1].decode()
        headers = dict(line.split(": ", 1) for line in seen.split("\r\n")[1:] if ": " in line)
        # The front saw exactly the bytes the client sent: its peek is not a rewrite.
        assert base64.b64decode(headers["X-Netvigil-TLS-ClientHello"]) == hello
        # Python's OpenSSL behind a Chrome User-Agent; the client's forged verdict is gone.
        assert headers["X-Netvigil-TLS-Verdict"] == "likely-intercepted"
        assert "grease-absent" in headers["X-Netvigil-TLS-Reasons"]
        assert (
            "Python" in headers["X-Netvigil-TLS-Match"]
            or "OpenSSL" in headers["X-Netvigil-TLS-Match"]
        )
        assert headers["X-Netvigil-TLS-JA4"].startswith("t13d")
        assert seen.count("X-Netvigil-TLS-Verdict") == 1 and "keep-alive" not in seen
        assert front.stats.verdicts["likely-intercepted"] == 1

    _run(scenario)


@pytest.mark.parametrize("defer_accept", [0, 5])
def test_front_survives_garbage_and_silence(
    certificate: tuple[str, str], defer_accept: int
) -> None:
    async def scenario() -> None:
        upstream, upstream_port = await _echo_upstream()
        limits = Limits(
            hello_timeout=0.5, handshake_timeout=1.0, head_timeout=1.0, defer_accept=defer_accept
        )
        front = Front(
            ("127.0.0.1", 0),
            server_context(*certificate),
            f"http://127.0.0.1:{upstream_port}",
            limits=limits,
        )
        await front.start()
        try:
            _, plain = await asyncio.open_connection("127.0.0.1", front.port)
            plain.write(b"GET / HTTP/1.0\r\n\r\n")
            await plain.drain()
            _, silent = await asyncio.open_connection("127.0.0.1", front.port)
            _, truncated = await asyncio.open_connection("127.0.0.1", front.port)
            chromium = bytes.fromhex(str(RECORDS["live/chromium"]["client_hello_record_hex"]))
            truncated.write(chromium[:100])
            await truncated.drain()
            await asyncio.sleep(1.5)
            for writer in (plain, silent, truncated):
                writer.close()
        finally:
            await front.close()
            upstream.close()
        # The silent client is held by the kernel (TCP_DEFER_ACCEPT) until it sends or the
        # defer period ends; if it was handed over, it timed out like the truncated hello.
        assert front.stats.connections in ((2, 3) if defer_accept else (3,))
        assert front.stats.failures["not a TLS handshake record"] == 1
        timed_out = front.stats.failures["timed out waiting for the ClientHello"]
        assert timed_out == front.stats.connections - 1

    _run(scenario)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_front_with_curl(certificate: tuple[str, str]) -> None:
    async def scenario() -> None:
        upstream, upstream_port = await _echo_upstream()
        front = Front(
            ("127.0.0.1", 0), server_context(*certificate), f"http://127.0.0.1:{upstream_port}"
        )
        await front.start()
        try:
            url = f"https://{SITE}:{front.port}/"
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    "curl",
                    "-sk",
                    "--max-time",
                    "20",
                    "--resolve",
                    f"{SITE}:{front.port}:127.0.0.1",
                    "-A",
                    CHROME_156,
                    url,
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
        finally:
            await front.close()
            upstream.close()
        assert b"X-Netvigil-TLS-Verdict: likely-intercepted" in done.stdout
        assert b"X-Netvigil-TLS-Match: curl" in done.stdout

    _run(scenario)


def test_asgi_middleware_judges_trusted_headers_only() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope.get("state", {})))

    middleware = SitecheckMiddleware(app)
    hello = bytes.fromhex(str(RECORDS["live/chromium"]["client_hello_record_hex"]))
    headers = [
        (b"user-agent", CHROME_156.encode()),
        (b"x-netvigil-tls-clienthello", base64.b64encode(hello)),
    ]

    async def call(client: str, extra: list[tuple[bytes, bytes]]) -> None:
        scope = {"type": "http", "client": (client, 5000), "headers": extra}
        await middleware(scope, None, None)

    async def scenario() -> None:
        await call("127.0.0.1", headers)
        await call("198.51.100.7", headers)  # not the front: ignored
        await call(
            "127.0.0.1",
            [
                (b"user-agent", CHROME_156.encode()),
                (b"x-ja4", b"t12d1516h2_8daaf6152771_e5627efa2ab1"),
            ],
        )
        await call("127.0.0.1", [(b"x-netvigil-tls-clienthello", b"%%%")])

    asyncio.run(scenario())
    assert seen[0]["netvigil_tls"]["verdict"] == "consistent"
    assert "netvigil_tls" not in seen[1]
    assert seen[2]["netvigil_tls"]["verdict"] == "likely-intercepted"
    assert "netvigil_tls" not in seen[3]
    assert middleware.counts == {"consistent": 1, "likely-intercepted": 1}


def test_cli_front_rejects_bad_arguments(tmp_path: Path) -> None:
    from netvigil.cli import main

    assert (
        main(
            [
                "sitecheck",
                "front",
                "--listen",
                "nope",
                "--cert",
                "c",
                "--key",
                "k",
                "--upstream",
                "http://127.0.0.1:1",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "sitecheck",
                "front",
                "--listen",
                "127.0.0.1:0",
                "--cert",
                str(tmp_path / "c"),
                "--key",
                str(tmp_path / "k"),
                "--upstream",
                "http://127.0.0.1:1",
            ]
        )
        == 2
    )


def test_front_bounds_the_request_head(certificate: tuple[str, str]) -> None:
    def oversized(port: int) -> bytes:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=SITE) as tls,
        ):
            try:
                tls.sendall(b"GET / HTTP/1.1\r\nX-Filler: " + b"a" * (1 << 17))
                return tls.recv(1024)
            except (OSError, ssl.SSLError):
                return b""

    async def scenario() -> None:
        upstream, upstream_port = await _echo_upstream()
        front = Front(
            ("127.0.0.1", 0), server_context(*certificate), f"http://127.0.0.1:{upstream_port}"
        )
        await front.start()
        try:
            answer = await asyncio.to_thread(oversized, front.port)
        finally:
            await front.close()
            upstream.close()
        assert answer == b""
        assert front.stats.failures["request head too large"] == 1
        assert not front.stats.verdicts

    _run(scenario)


def test_front_log_keeps_the_network_only_and_the_log_mode_reads_it_back(
    certificate: tuple[str, str],
) -> None:
    """``--log``: one record per judged connection, with the exact ClientHello, the verdict,
    and the client's /24 only; ``netvigil sitecheck logs`` judges the record again alike."""
    from netvigil.sitecheck.logs import Report, analyse

    records: list[dict[str, object]] = []

    async def scenario() -> bytes:
        upstream, upstream_port = await _echo_upstream()
        front = Front(
            ("127.0.0.1", 0),
            server_context(*certificate),
            f"http://127.0.0.1:{upstream_port}",
            on_record=records.append,
        )
        await front.start()
        try:
            request = f"GET / HTTP/1.1\r\nHost: {SITE}\r\nUser-Agent: {CHROME_156}\r\n\r\n"
            hello, _ = await asyncio.to_thread(_memory_bio_client, front.port, request.encode())
        finally:
            await front.close()
            upstream.close()
        return hello

    hello = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert len(records) == 1
    record = records[0]
    assert bytes.fromhex(str(record["client_hello"])) == hello
    assert record["client_ip"] == "127.0.0.0"  # 127.0.0.1 is not kept, its /24 is
    assert record["sni"] == SITE and record["user_agent"] == CHROME_156
    assert record["verdict"] == "likely-intercepted"
    report = Report()
    for row in analyse(io.StringIO(json.dumps(record) + "\n")):
        report.add(row)
        assert row.prefix == "127.0.0.0/24"
        assert row.verdict is not None and row.verdict.verdict == record["verdict"]
    assert report.to_json()["rows"] == 1
