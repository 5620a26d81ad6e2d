"""What the sitecheck front adds per TLS connection, on loopback.

    .venv/bin/python benchmarks/bench_sitecheck_front.py [--connections 300]

Two fronts run side by side in one process: the real one (MSG_PEEK of the ClientHello, parse,
verdict, X-Netvigil-TLS-* headers) and the same code with fingerprinting off (a plain
TLS-terminating proxy). A blocking Python TLS client makes sequential HTTPS requests,
alternating between the two, and the median and 90th-percentile request latencies are
compared; the front's own CPU time for parse + verdict + headers is reported too.
Loopback only, bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netvigil.sitecheck.front import Front, server_context

UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)


def _cert(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(directory / "c.pem"), str(directory / "k.pem")


def _request(port: int) -> float:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.perf_counter()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="site.test") as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: site.test\r\nUser-Agent: {UA}\r\n\r\n".encode())
        while tls.recv(65536):
            pass
    return time.perf_counter() - started


async def run(connections: int) -> dict[str, float | int]:
    async def upstream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(upstream_handler, "127.0.0.1", 0)
    upstream_url = f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
    with tempfile.TemporaryDirectory() as directory:
        context = server_context(*_cert(Path(directory)))
    fronts = {
        "fingerprinting": Front(("127.0.0.1", 0), context, upstream_url),
        "plain": Front(("127.0.0.1", 0), context, upstream_url, fingerprint=False),
    }
    for front in fronts.values():
        await front.start()
    latencies: dict[str, list[float]] = {name: [] for name in fronts}
    try:
        for front in fronts.values():  # warm-up: caches, TLS session machinery
            for _ in range(10):
                await asyncio.to_thread(_request, front.port)
        for _ in range(connections):
            for name, front in fronts.items():
                latencies[name].append(await asyncio.to_thread(_request, front.port))
    finally:
        for front in fronts.values():
            await front.close()
        upstream.close()

    def quantile(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q * 100) - 1]

    real = fronts["fingerprinting"].stats
    return {
        "connections_each": connections,
        "median_ms_fingerprinting": round(statistics.median(latencies["fingerprinting"]) * 1e3, 3),
        "median_ms_plain": round(statistics.median(latencies["plain"]) * 1e3, 3),
        "added_median_ms": round(
            (statistics.median(latencies["fingerprinting"]) - statistics.median(latencies["plain"]))
            * 1e3,
            3,
        ),
        "p90_ms_fingerprinting": round(quantile(latencies["fingerprinting"], 0.9) * 1e3, 3),
        "p90_ms_plain": round(quantile(latencies["plain"], 0.9) * 1e3, 3),
        "verdict_cpu_ms_per_connection": round(
            real.judge_seconds / max(real.connections, 1) * 1e3, 3
        ),
        "failures": sum(real.failures.values()) + sum(fronts["plain"].stats.failures.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args()
    result = asyncio.run(asyncio.wait_for(run(min(args.connections, 5000)), 1800))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
