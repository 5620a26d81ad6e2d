"""Benchmark: what ``netvigil analyze`` costs over the verdict engine itself, on real OONI data.

Run:  .venv/bin/python benchmarks/bench_analyze.py [--records 3000] [--rounds 3] [--out FILE]

The input is real: every measurement of ``tests/data/conformance/*.jsonl.gz`` and
``tests/data/ooni_samples.jsonl`` (origins in ``tests/data/README.md``), repeated in order up to
``--records`` lines of one JSONL file (nothing generated). In one run, alternately ``--rounds``
times (the best round of each is kept: noise on a shared machine only ever adds time):

- ``engine``: the bare loop, ``orjson.loads`` + ``analyze`` per line, nothing printed;
- ``cli --json -j1``: ``netvigil.verdict.cli.main`` in this process (stdout to /dev/null),
  one process, so the ratio to ``engine`` is the CLI's own cost per measurement;
- then, as child processes (start-up included): ``analyze --json`` with ``-j 1``, ``-j 2`` and
  the default (all cores), and the default table (a screenful and a summary). The pool pays
  off on large input: use ``--records 12000`` (~500 MB of JSON) to see it.

The fingerprint database is loaded before anything is timed (its one-time cost is the
start-up benchmark's, ``bench_startup.py``). Bounded: ``--records`` ≤ 50,000 lines, each child
run ≤ 600 s. Nothing here uses the network.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from netvigil.verdict import analyze, load_fingerprints
from netvigil.verdict import cli as verdict_cli

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((ROOT / "tests/data/conformance").glob("*.jsonl.gz")),
    ROOT / "tests/data/ooni_samples.jsonl",
]
MAX_RECORDS = 50_000


def real_lines() -> list[bytes]:
    lines: list[bytes] = []
    for path in SOURCES:
        opener: Any = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            lines += [line.rstrip(b"\n") for line in f if line.strip()]
    return lines


def write_input(path: Path, records: int) -> int:
    lines = real_lines()
    with path.open("wb") as f:
        for i in range(records):
            f.write(lines[i % len(lines)] + b"\n")
    return len(lines)


def engine_loop(path: Path) -> float:
    fps = load_fingerprints()
    start = time.perf_counter()
    with path.open("rb") as f:
        for line in f:
            value = orjson.loads(line)
            if isinstance(value, dict):
                analyze(value, fps)
    return time.perf_counter() - start


def cli_in_process(path: Path) -> float:
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        start = time.perf_counter()
        status = verdict_cli.main(["--json", "-j", "1", str(path)])
        elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"analyze exited {status}")
    return elapsed


def child(args: list[str]) -> float:
    netvigil = str(Path(sys.executable).with_name("netvigil"))
    start = time.perf_counter()
    subprocess.run(
        [netvigil, "analyze", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    opts = parser.parse_args()
    records = min(opts.records, MAX_RECORDS)
    load_fingerprints()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "real.jsonl"
        distinct = write_input(path, records)
        engine, cli = [], []
        for _ in range(opts.rounds):
            engine.append(engine_loop(path))
            cli.append(cli_in_process(path))
        children = {
            "analyze --json -j 1": min(child(["--json", "-j", "1", str(path)]) for _ in range(2)),
            "analyze --json -j 2": min(child(["--json", "-j", "2", str(path)]) for _ in range(2)),
            "analyze --json (all cores)": min(child(["--json", str(path)]) for _ in range(2)),
            "analyze (table + summary)": min(child([str(path)]) for _ in range(2)),
        }
    result = {
        "records": records,
        "distinct_measurements": distinct,
        "cores": os.cpu_count(),
        "engine_s": round(min(engine), 3),
        "cli_json_j1_in_process_s": round(min(cli), 3),
        "json_overhead": round(min(cli) / min(engine) - 1, 3),
        "children_wall_s": {k: round(v, 3) for k, v in children.items()},
    }
    print(f"{records} real measurements ({distinct} distinct, repeated), {os.cpu_count()} cores")
    print(f"  engine loop (orjson.loads + analyze)   {result['engine_s']:8.3f} s")
    print(
        f"  analyze --json -j 1, in process        {result['cli_json_j1_in_process_s']:8.3f} s"
        f"   (+{result['json_overhead']:.1%} over the engine)"
    )
    for name, seconds in children.items():
        print(f"  {name:38} {seconds:8.3f} s   (child process, start-up included)")
    if opts.out:
        opts.out.write_text(json.dumps(result, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
