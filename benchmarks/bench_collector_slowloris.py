"""Slowloris against the collector on loopback: is another client still served promptly?

Run:  .venv/bin/python benchmarks/bench_collector_slowloris.py [--slow 2000] [--seconds 15]

Starts ``python -m netvigil.cli collector`` (SQLite in a temporary directory, rate limit off) on
127.0.0.1, then from 127.0.0.1 opens ``--slow`` connections that each send an unfinished
request head and one more header byte every second (reopening any the server closes, at most
``--slow`` reopenings per second), for ``--seconds``. Meanwhile a second client on 127.0.0.2
(loopback too) sends a GET of the tree head and a POST of a measurement every 50 ms, each on a
new connection (the worst case: it needs a connection slot every time), and times the answers.

Prints JSON: the other client's latencies (p50, p99, max, in ms), how many of its requests got a
non-2xx answer or failed, and how many slow connections were open, refused, and closed by the
server. Exits 1 unless every request of the other client was answered 2xx in under 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_collector import measurement

TARGET_MS = 200.0
OTHER_CLIENT = "127.0.0.2"


def start_collector(data: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "netvigil.cli", "collector", "--data", str(data)]
    cmd += ["--listen", "127.0.0.1:0", "--rate", "0"]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on " in line:
            return proc, line.split("listening on ", 1)[1].split()[0].rstrip("/")
    proc.kill()
    raise RuntimeError("the collector did not start")


class Attack:
    def __init__(self, host: str, port: int, slow: int) -> None:
        self.host, self.port, self.slow = host, port, slow
        self.open = 0
        self.peak_open = 0
        self.opened = 0
        self.closed_by_server = 0
        self.refused_503 = 0
        self.connect_errors = 0

    async def one(self, stop: float) -> None:
        """One slow connection slot, reopened when the server closes it, until ``stop``."""
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, local_addr=("127.0.0.1", 0)), 5
                )
            except (OSError, TimeoutError):
                self.connect_errors += 1
                await asyncio.sleep(1.0)
                continue
            self.opened += 1
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)
            try:
                writer.write(b"POST /api/v1/measurements HTTP/1.1\r\nHost: x\r\n")
                while time.monotonic() < stop:
                    try:
                        answer = await asyncio.wait_for(reader.read(64), 1.0)
                    except TimeoutError:
                        writer.write(b"X")  # one more header byte: never finishing the head
                        continue
                    if answer.startswith(b"HTTP/1.1 503"):
                        self.refused_503 += 1
                    self.closed_by_server += 1
                    break
            except OSError:
                self.closed_by_server += 1
            finally:
                self.open -= 1
                writer.close()
            await asyncio.sleep(1.0)  # at most one reopening per slot per second


async def other_client(base: str, stop: float) -> dict[str, Any]:
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []  # (seconds into the attack, ms)
    t0 = time.monotonic()
    bad: list[str] = []
    tag = f"slowloris{time.monotonic_ns() % 10**9}"
    n = 0
    while time.monotonic() < stop:
        # a new connection each time: the client must win a connection slot every request
        transport = httpx.AsyncHTTPTransport(local_address=OTHER_CLIENT)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as c:
            started = time.perf_counter()
            try:
                if n % 2:
                    r = await c.get(f"{base}/api/v1/log/tree-head")
                else:
                    body = json.dumps(measurement(n, tag=tag)).encode()  # a new leaf each time
                    r = await c.post(f"{base}/api/v1/measurements", content=body)
                elapsed = (time.perf_counter() - started) * 1000
                latencies.append(elapsed)
                timeline.append((round(time.monotonic() - t0, 2), round(elapsed, 1)))
                if not 200 <= r.status_code < 300:
                    bad.append(f"HTTP {r.status_code}")
            except httpx.HTTPError as exc:
                latencies.append((time.perf_counter() - started) * 1000)
                bad.append(type(exc).__name__)
        n += 1
        await asyncio.sleep(0.05)
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    return {
        "requests": len(latencies),
        "p50_ms": pct(0.5) if latencies else None,
        "p99_ms": pct(0.99) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "slowest": sorted(timeline, key=lambda x: -x[1])[:5],
        "not_2xx": len(bad),
        "not_2xx_kinds": sorted(set(bad)),
    }


def attack_process(host: str, port: int, slow: int, stop_at: float, out: Any) -> None:
    """The attacker, in its own process so that its event loop does not delay the other client."""

    async def go() -> Attack:
        attack = Attack(host, port, slow)
        # time.monotonic is system-wide on Linux: the parent's deadline holds here too
        await asyncio.gather(*(attack.one(stop_at) for _ in range(slow)))
        return attack

    attack = asyncio.run(go())
    out.put(
        {
            "peak_open_client_side": attack.peak_open,
            "opened": attack.opened,
            "refused_503": attack.refused_503,
            "closed_by_server": attack.closed_by_server,
            "connect_errors": attack.connect_errors,
        }
    )


async def run(base: str, slow: int, seconds: float) -> dict[str, Any]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    # one request of each kind before the attack: the first write creates the database's WAL,
    # which is start-up cost, not the attack's effect
    await other_client(base, time.monotonic() + 0.2)
    stop_at = time.monotonic() + seconds
    results: multiprocessing.Queue[dict[str, Any]] = multiprocessing.Queue()
    attacker = multiprocessing.Process(
        target=attack_process, args=(host, int(port), slow, stop_at, results), daemon=True
    )
    attacker.start()
    await asyncio.sleep(2.0)  # let the attack open its connections first
    other = await other_client(base, stop_at)
    attack = await asyncio.to_thread(results.get, True, 60)
    attacker.join(timeout=10)
    return {"slow_connections": slow, "seconds": seconds, "attack": attack, "other_client": other}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--slow", type=int, default=2000, help="slow connections (default 2000)")
    ap.add_argument("--seconds", type=float, default=15.0, help="attack length (default 15)")
    args = ap.parse_args()
    slow = max(1, min(args.slow, 10_000))
    seconds = max(2.0, min(args.seconds, 120.0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, slow + 512) if hard != resource.RLIM_INFINITY else slow + 512
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with tempfile.TemporaryDirectory(prefix="netvigil-slowloris-") as tmp:
        proc, base = start_collector(Path(tmp) / "data")
        try:
            result = asyncio.run(run(base, slow, seconds))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    other = result["other_client"]
    ok = other["requests"] > 0 and other["not_2xx"] == 0 and other["max_ms"] < TARGET_MS
    result["target_ms"] = TARGET_MS
    result["ok"] = ok
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
