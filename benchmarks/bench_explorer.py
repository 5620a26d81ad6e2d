"""Benchmark: the explorer's page times on the pipeline output of generated measurements.

Run:  .venv/bin/python benchmarks/bench_explorer.py [--count 100000] [--cache /tmp/netvigil-bench]
          [--pipeline DIR] [--requests 30]

Target (issue 13): every page answers in < 300 ms on the pipeline output of 1,000,000
generated measurements, with bounded memory.

The data: ``netvigil pipeline generate`` (``--count`` measurements over 21 days from
2021-12-27, the generator's default countries, 40 domains, a TLS blocking event in KZ on day 9)
then ``netvigil pipeline run``, both cached under ``--cache`` (or an existing output given with
``--pipeline``). The server: ``netvigil explorer`` itself in its own process on a free loopback
port (uvicorn, as a user starts it). The client: one httpx connection, requests one after the
other (the server's time plus loopback, as a person's browser sees it, without rendering).

Per page, after two warm-up requests, ``--requests`` timed requests (a measurement page takes
a different measurement each time: first-time lookups); p50, p95 and max in milliseconds,
and the server process's peak RSS (psutil, sampled after each request). Only measured numbers
are printed, and the whole report written to benchmarks/results/explorer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
NETVIGIL = [sys.executable, "-m", "netvigil.cli"]
TARGET_MS = 300.0


def prepare(count: int, cache: Path) -> Path:
    raw, out = cache / f"explorer-ooni-{count}", cache / f"explorer-pipeline-{count}"
    if not (out / "aggregates" / "daily.parquet").is_file():
        if not raw.is_dir():
            subprocess.run(
                [
                    *NETVIGIL,
                    "pipeline",
                    "generate",
                    "--out",
                    str(raw),
                    "--count",
                    str(count),
                    "--days",
                    "21",
                    "--start",
                    "2021-12-27",
                    "--seed",
                    "2022",
                    "--domains",
                    "40",
                    "-j",
                    "2",
                    "--event",
                    "KZ:9:facebook.com,cdninstagram.com,docs.google.com:tls",
                ],
                check=True,
            )
        subprocess.run(
            [*NETVIGIL, "pipeline", "run", str(raw), "--out", str(out), "--overwrite"], check=True
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/netvigil-bench"))
    ap.add_argument("--pipeline", type=Path, help="an existing pipeline output (skips generating)")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results" / "explorer.json"
    )
    args = ap.parse_args()
    n = max(3, min(args.requests, 500))
    pipeline = args.pipeline or prepare(args.count, args.cache)
    ingest = json.loads((pipeline / "ingest.json").read_text())
    measurements = int(ingest["totals"]["verdict_rows"])
    port = free_port()
    proc = subprocess.Popen(
        [*NETVIGIL, "explorer", str(pipeline), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    report: dict[str, Any] = {"measurements": measurements, "pipeline": str(pipeline), "pages": {}}
    try:
        assert proc.stdout is not None
        started = time.monotonic()
        first = proc.stdout.readline()
        if not first.startswith("netvigil explorer: http://"):
            raise SystemExit(f"explorer did not start: {first!r}")
        base = f"http://127.0.0.1:{port}"
        server = psutil.Process(proc.pid)
        peak = 0
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(300):  # bounded wait for the socket
                try:
                    client.get("/static/explorer.css")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            report["startup_s"] = round(time.monotonic() - started, 2)
            # Pick what to look at from the data, as a person would from the overview.
            countries = client.get("/search?format=json&outcome=tls/interception").json()["rows"]
            cc = countries[0]["probe_cc"] if countries else "KZ"
            domain = countries[0]["domain"] if countries else "facebook.com"
            asn = countries[0]["probe_asn"] if countries else 9198
            sample = client.get(f"/search?format=json&cc={cc}").json()["rows"]
            uids = [r["measurement_uid"] for r in sample[:: max(1, len(sample) // (n + 2))]][
                : n + 2
            ]
            pages: dict[str, list[str]] = {
                "overview": ["/"],
                "overview (a week)": ["/?since=2022-01-03&until=2022-01-09"],
                "country": [f"/country/{cc}"],
                "country (network, week)": [
                    f"/country/{cc}?asn={asn}&since=2022-01-03&until=2022-01-09"
                ],
                "domain in country": [f"/domain/{domain}?cc={cc}"],
                "domain everywhere": [f"/domain/{domain}"],
                "measurement": [f"/measurement/{u}" for u in uids],
                "search": [f"/search?cc={cc}"],
                "search (filters, page 5)": [
                    f"/search?cc={cc}&domain={domain}&outcome=tls/interception&page=5"
                ],
                "search (date range, test)": [
                    "/search?since=2022-01-05&until=2022-01-06&test_name=web_connectivity"
                ],
            }
            for name, urls in pages.items():
                times: list[float] = []
                for i in range(n + 2):
                    url = urls[i % len(urls)]
                    t0 = time.perf_counter()
                    r = client.get(url)
                    ms = (time.perf_counter() - t0) * 1000
                    if r.status_code != 200:
                        raise SystemExit(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
                    if i >= 2:
                        times.append(ms)
                    peak = max(peak, server.memory_info().rss)
                row = {
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(percentile(times, 0.95), 1),
                    "max_ms": round(max(times), 1),
                    "requests": len(times),
                    "bytes": len(r.content),
                    "under_target": percentile(times, 0.95) < TARGET_MS,
                }
                report["pages"][name] = row
                print(
                    f"{name:28s} p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
                    f"max {row['max_ms']:7.1f} ms  ({row['bytes']:,} bytes)",
                    flush=True,
                )
            t0 = time.perf_counter()
            r = client.get(f"/search?cc={cc}&format=csv")
            report["csv_export_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            report["csv_export_rows"] = r.text.count("\n") - 1
            peak = max(peak, server.memory_info().rss)
        report["server_peak_rss_mb"] = round(peak / 2**20, 1)
        report["cpu_count"] = os.cpu_count()
        print(
            f"{measurements:,} measurements; server start {report['startup_s']} s; peak RSS "
            f"{report['server_peak_rss_mb']} MB; CSV export of {report['csv_export_rows']:,} rows "
            f"in {report['csv_export_ms']} ms"
        )
        worst = max(p["p95_ms"] for p in report["pages"].values())
        print(
            f"worst p95 {worst} ms (target < {TARGET_MS:.0f} ms): "
            + ("met" if worst < TARGET_MS else "NOT met")
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    results = dict(json.loads(args.results.read_text())) if args.results.is_file() else {}
    results[str(measurements)] = report
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
