"""What the sitecheck front adds per TLS connection, on loopback.

    .venv/bin/python benchmarks/bench_sitecheck_front.py [--connections 500]

One server process runs, side by side, on loopback:

- ``direct``: the site itself serving TLS (an asyncio TLS server answering by itself);
- ``plain``: the front's code with fingerprinting off — a TLS-terminating proxy to the site's
  plain HTTP, the baseline a site would run anyway to terminate TLS;
- ``fingerprinting``: the real front (peek, parse, verdict, ``X-Netvigil-TLS-*`` headers);
- ``fingerprinting-no-defer``: the same without ``TCP_DEFER_ACCEPT`` (the front before it).

A client in *another process* (so its TLS does not share the server's interpreter) makes
sequential HTTPS requests, one to each target per round, the order rotated every round, and
records the time to the end of the handshake and to the end of the response. Reported: the
medians and 90th percentiles, what fingerprinting adds over ``plain`` and the ratio to
``direct``, the front's own CPU time per connection (parse + verdict + headers), and the load
average before and after (the machine is shared: compare numbers of one run only).
Loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
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

from netvigil.sitecheck.front import Front, Limits, server_context

UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


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


# -- the client (a separate process) ---------------------------------------------------------


def _request(context: ssl.SSLContext, port: int) -> tuple[float, float]:
    """(seconds to the end of the handshake, seconds to the end of the response)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname="site.test") as tls:
            handshake = time.perf_counter() - started
            tls.sendall(f"GET / HTTP/1.1\r\nHost: site.test\r\nUser-Agent: {UA}\r\n\r\n".encode())
            while tls.recv(65536):
                pass
    return handshake, time.perf_counter() - started


def client(ports: dict[str, int], rounds: int, warmup: int) -> dict[str, list[list[float]]]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    names = list(ports)
    for name in names:
        for _ in range(warmup):
            _request(context, ports[name])
    out: dict[str, list[list[float]]] = {name: [[], []] for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            handshake, total = _request(context, ports[name])
            out[name][0].append(handshake)
            out[name][1].append(total)
    return out


# -- the server process ------------------------------------------------------------------------


async def run(connections: int, warmup: int) -> dict[str, object]:
    async def upstream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(BODY)
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(upstream_handler, "127.0.0.1", 0)
    upstream_url = f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
    with tempfile.TemporaryDirectory() as directory:
        context = server_context(*_cert(Path(directory)))
    direct = await asyncio.start_server(upstream_handler, "127.0.0.1", 0, ssl=context)
    fronts = {
        "plain": Front(("127.0.0.1", 0), context, upstream_url, fingerprint=False),
        "fingerprinting": Front(("127.0.0.1", 0), context, upstream_url),
    }
    if "defer_accept" in Limits.__dataclass_fields__:  # absent from fronts before it existed
        fronts["fingerprinting-no-defer"] = Front(
            ("127.0.0.1", 0), context, upstream_url, limits=Limits(defer_accept=0)
        )
    for front in fronts.values():
        await front.start()
    ports = {"direct": int(direct.sockets[0].getsockname()[1])}
    ports |= {name: front.port for name, front in fronts.items()}
    load_before = os.getloadavg()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            json.dumps(ports),
            "--connections",
            str(connections),
            "--warmup",
            str(warmup),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
    finally:
        for front in fronts.values():
            await front.close()
        direct.close()
        upstream.close()
    load_after = os.getloadavg()
    samples: dict[str, list[list[float]]] = json.loads(out)

    def ms(values: list[float], q: float | None = None) -> float:
        if q is None:
            return round(statistics.median(values) * 1e3, 3)
        return round(statistics.quantiles(values, n=100)[int(q * 100) - 1] * 1e3, 3)

    result: dict[str, object] = {
        "connections_each": connections,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }
    for name, (handshakes, totals) in samples.items():
        result[name] = {
            "handshake_median_ms": ms(handshakes),
            "handshake_p90_ms": ms(handshakes, 0.9),
            "request_median_ms": ms(totals),
            "request_p90_ms": ms(totals, 0.9),
        }

    def added(name: str, base: str, what: str) -> float:
        index = 0 if what == "handshake" else 1
        a, b = statistics.median(samples[name][index]), statistics.median(samples[base][index])
        return round((a - b) * 1e3, 3)

    for what in ("handshake", "request"):
        result[f"fingerprinting_adds_over_plain_{what}_median_ms"] = added(
            "fingerprinting", "plain", what
        )
        if "fingerprinting-no-defer" in samples:
            result[f"no_defer_adds_over_plain_{what}_median_ms"] = added(
                "fingerprinting-no-defer", "plain", what
            )
        index = 0 if what == "handshake" else 1
        direct_median = statistics.median(samples["direct"][index])
        for name in fronts:
            result[f"{name}_over_direct_{what}_ratio"] = round(
                statistics.median(samples[name][index]) / direct_median, 3
            )
    real = fronts["fingerprinting"].stats
    result["front_cpu_ms_per_connection"] = round(
        real.judge_seconds / max(real.connections, 1) * 1e3, 3
    )
    result["failures"] = {name: sum(f.stats.failures.values()) for name, f in fronts.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    connections = max(10, min(args.connections, 5000))
    if args.client:
        ports = {str(k): int(v) for k, v in json.loads(args.client).items()}
        json.dump(client(ports, connections, min(args.warmup, 200)), sys.stdout)
        return 0
    result = asyncio.run(asyncio.wait_for(run(connections, min(args.warmup, 200)), 1800))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
