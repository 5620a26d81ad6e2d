"""Benchmark: ``netvigil.verdict.analyze`` on real OONI measurements, one core.

Run:  .venv/bin/python benchmarks/bench_verdict.py [--rounds 20] [--file tests/data/...jsonl]

Each measurement is parsed once (``json.loads``, not timed) and analysed ``--rounds`` times
after one warm-up pass (the fingerprint database and root store load on first use; their
one-time cost is printed separately). Per measurement the best of the rounds is kept (noise on
a shared 2-core machine only ever adds time); the summary gives mean, median, p99 and max of
those, and the throughput of one core over the whole set (total of medians). Bounded: at most
``--rounds`` × the file's lines calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from netvigil.verdict import analyze, load_fingerprints

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "tests/data/ooni_web_connectivity.jsonl"
MAX_LINES = 10_000  # the benchmark's own bound: a huge file is sampled, not loaded whole


def _load(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if len(out) >= MAX_LINES:
                break
            if line.strip():
                out.append(json.loads(line))
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--file", type=Path, action="append")
    ap.add_argument("--quiet", action="store_true", help="summary only, no per-measurement line")
    args = ap.parse_args()
    rounds = max(1, min(args.rounds, 1000))
    measurements: list[dict[str, Any]] = []
    for path in args.file or [DEFAULT]:
        measurements += _load(path)

    t = time.perf_counter()
    load_fingerprints()
    print(f"load_fingerprints(): {(time.perf_counter() - t) * 1000:.0f} ms (once per process)")
    t = time.perf_counter()
    for m in measurements:
        analyze(m)
    print(f"first pass (warm-up, roots/caches): {(time.perf_counter() - t) * 1000:.0f} ms")

    samples: list[list[float]] = [[] for _ in measurements]
    for _ in range(rounds):
        for i, m in enumerate(measurements):
            t = time.perf_counter()
            analyze(m)
            samples[i].append((time.perf_counter() - t) * 1e6)
    best = [min(s) for s in samples]
    median = [statistics.median(s) for s in samples]
    if not args.quiet:
        print(f"{'#':>3} {'bytes':>8} {'best µs':>9} {'median µs':>10}  outcome")
        for i, m in enumerate(measurements):
            size = len(json.dumps(m))
            outcome = analyze(m).outcome
            print(f"{i:3d} {size:8d} {best[i]:9.0f} {median[i]:10.0f}  {outcome}")
    print(
        f"{len(measurements)} measurements x {rounds} rounds (µs per measurement, best of rounds):"
        f" mean {statistics.fmean(best):.0f}  median {statistics.median(best):.0f}"
        f"  p99 {_percentile(best, 0.99):.0f}  max {max(best):.0f}"
    )
    total = sum(median) / 1e6
    print(f"one core, this sample mix: {len(measurements) / total:,.0f} measurements/s")


if __name__ == "__main__":
    main()
