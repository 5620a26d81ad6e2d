"""Benchmark: start-up of ``netvigil`` commands, as child processes (wall and CPU, median of N).

Run:  .venv/bin/python benchmarks/bench_startup.py [--runs 15] [--src DIR] [--out FILE]

Times ``netvigil --help``, ``netvigil analyze --help`` and ``netvigil analyze`` of one real
measurement (the first line of ``tests/data/ooni_samples.jsonl``), each ``--runs`` times after
one warm-up run (which also fills the fingerprint cache and Python's bytecode cache); prints
the median and the minimum of the wall time and of the child's CPU time (user + system, from
``getrusage``: less sensitive than wall time to other load on a shared machine).

``--src DIR`` runs the ``netvigil`` package found in ``DIR`` (a ``src`` directory, e.g. an
older checkout made with ``git archive``) instead of this one, with the same interpreter:
that is how before/after figures are taken. The cold cost of the fingerprint cache (its first
build) is timed once with an empty ``XDG_CACHE_HOME``. Targets (issue 12): ``--help`` ≤ 150 ms
and ``analyze`` of one measurement ≤ 350 ms wall. Bounded: each run ≤ 60 s; no network.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENT = ROOT / "tests/data/ooni_samples.jsonl"
LAUNCH = "import sys; sys.path.insert(0, sys.argv.pop(1)); from netvigil.cli import main; sys.exit(main())"


def run_once(src: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", LAUNCH, str(src), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        timeout=60,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(src: Path, args: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    run_once(src, args, env)  # warm-up: bytecode and fingerprint caches
    samples = [run_once(src, args, env) for _ in range(runs)]
    walls = [w for w, _ in samples]
    cpus = [c for _, c in samples]
    return {
        "wall_median_ms": round(statistics.median(walls) * 1000, 1),
        "wall_min_ms": round(min(walls) * 1000, 1),
        "cpu_median_ms": round(statistics.median(cpus) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    opts = parser.parse_args()
    runs = max(1, min(opts.runs, 200))
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.jsonl"
        with MEASUREMENT.open("rb") as f:
            one.write_bytes(f.readline())
        env = dict(os.environ)
        cases = {
            "netvigil --help": ["--help"],
            "netvigil analyze --help": ["analyze", "--help"],
            "netvigil analyze ONE": ["analyze", str(one)],
        }
        results: dict[str, Any] = {
            name: measure(opts.src, args, runs, env) for name, args in cases.items()
        }
        cold_env = dict(env, XDG_CACHE_HOME=str(Path(tmp) / "empty-cache"))
        wall, cpu = run_once(opts.src, ["analyze", str(one)], cold_env)
        results["netvigil analyze ONE (empty cache, first run)"] = {
            "wall_median_ms": round(wall * 1000, 1),
            "wall_min_ms": round(wall * 1000, 1),
            "cpu_median_ms": round(cpu * 1000, 1),
        }
    load = os.getloadavg()
    print(f"src: {opts.src}   runs: {runs}   load average: {load[0]:.2f} {load[1]:.2f}")
    print(f"  {'command':48} {'wall median':>12} {'wall min':>10} {'CPU median':>11}")
    for name, r in results.items():
        print(
            f"  {name:48} {r['wall_median_ms']:>9.0f} ms {r['wall_min_ms']:>7.0f} ms "
            f"{r['cpu_median_ms']:>8.0f} ms"
        )
    if opts.out:
        opts.out.write_text(
            json.dumps({"src": str(opts.src), "load": load, "results": results}, indent=2) + "\n",
            "utf-8",
        )


if __name__ == "__main__":
    main()
