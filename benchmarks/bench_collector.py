"""Benchmark: collector submissions per second on loopback.

Run:  .venv/bin/python benchmarks/bench_collector.py [--count 10000] [--clients 50] [--max-seconds 120]

Starts ``netvigil collector`` (uvicorn, SQLite in a temporary directory, rate limit off) on
127.0.0.1 in a child process, then N concurrent asyncio clients (keep-alive) each POST
distinct measurements (a minimal raw HTTP/1.1 client: httpx itself
would be the bottleneck) until ``--count`` are acknowledged or ``--max-seconds`` pass. Reports
acknowledged submissions/s, latency percentiles, and checks the final tree size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

SERVER = """
import sys
from netvigil.collector.cli import add_parser, run
import argparse
ap = argparse.ArgumentParser()
sub = ap.add_subparsers()
add_parser(sub)
sys.exit(run(ap.parse_args(sys.argv[1:])))
"""


def measurement(n: int, tag: str = "", body: int = 1500) -> dict[str, Any]:
    """The ``n``-th distinct measurement of a load test (``tag`` keeps runs apart)."""
    return {
        "annotations": {"engine_name": "netvigil", "engine_version": "0.1.0"},
        "data_format_version": "0.2.0",
        "input": f"https://site{n % 500}.example.org/",
        "measurement_start_time": "2026-11-27 18:00:00",
        "probe_asn": f"AS{1000 + n % 7}",
        "probe_cc": "KZ",
        "probe_ip": "127.0.0.1",
        "report_id": (
            f"20261127T180000Z_webconnectivity_KZ_1000_n1_{tag}{n:012d}"
            if tag
            else f"20261127T180000Z_webconnectivity_KZ_1000_n1_{n:016d}"
        ),
        "software_name": "netvigil",
        "software_version": "0.1.0",
        "test_name": "web_connectivity",
        "test_version": "0.5.28",
        "test_runtime": 0.42,
        "test_keys": {
            "queries": [
                {"hostname": f"site{n}.example.org", "answers": [{"ipv4": "198.18.20.10"}]}
            ],
            "requests": [{"response": {"body": "<html>" + "x" * body + "</html>", "code": 200}}],
            "n": n,
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(base: str, deadline: float) -> None:
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            try:
                if (await c.get(f"{base}/api/v1/log/tree-head")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("collector did not start")


async def load(
    base: str, port: int, count: int, clients: int, max_seconds: float
) -> dict[str, Any]:
    counter = iter(range(count))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + max_seconds

    async def worker() -> None:
        # A minimal keep-alive HTTP/1.1 client on raw asyncio streams: httpx costs more CPU
        # per request than the collector does, and would measure itself.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in counter:
                if time.monotonic() > stop_at:
                    return
                body = json.dumps(measurement(n)).encode()
                head = (
                    f"POST /api/v1/measurements HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                t0 = time.perf_counter()
                writer.write(head + body)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                status = int(status_line.split()[1])
                if status in (200, 201):
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    async with httpx.AsyncClient() as c:
        head = (await c.get(f"{base}/api/v1/log/tree-head")).json()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "acknowledged": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "submissions_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms_p50": round(q[49] * 1000, 1),
        "latency_ms_p99": round(q[98] * 1000, 1),
        "tree_size": head["tree_size"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="netvigil-bench-") as tmp:
        cmd = [sys.executable, "-c", SERVER, "collector", "--listen", f"127.0.0.1:{port}"]
        cmd += ["--data", str(Path(tmp) / "data"), "--rate", "0"]
        proc = subprocess.Popen(cmd)
        try:
            asyncio.run(wait_up(base, time.monotonic() + 20))
            result = asyncio.run(load(base, port, args.count, args.clients, args.max_seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    server = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = resource.getrusage(resource.RUSAGE_SELF)
    result["server_cpu_s"] = round(server.ru_utime + server.ru_stime, 1)
    result["client_cpu_s"] = round(client.ru_utime + client.ru_stime, 1)
    result.update(count=args.count, clients=args.clients)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
