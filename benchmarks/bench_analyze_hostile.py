"""``netvigil analyze`` on hostile files: exit status, wall time and peak RSS of each run.

Run:  .venv/bin/python benchmarks/bench_analyze_hostile.py [--netvigil PATH] [--as-limit-mib N]
          [--out FILE]

Writes the hostile files of ``tests/hostile_files.py`` into a temporary directory (a 200 MB
line, a 1 GiB gzip bomb of zeros, 50,000-deep nesting, 1,000,000 keys in one object, and
NaN / Infinity / 1e999999 / a 400-digit integer in an integer field; each between good
measurements), runs ``NETVIGIL analyze --json FILE`` on each in a child process (stdout to
/dev/null) and reports the child's exit status, wall time, peak RSS (``ru_maxrss`` of exactly
that child, from ``wait4``), how many verdicts it printed and the first lines of its stderr.

``--as-limit-mib`` caps the child's address space (RLIMIT_AS), for measuring a version that
would otherwise inflate the whole bomb in memory: a run that hits the cap says so (MemoryError
on stderr, peak RSS at the cap), and its figures are then lower bounds. Every run is also
bounded in time (``--timeout``, default 300 s). Loopback only: nothing here uses the network.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hostile_files  # the same generators the tests use


def run_one(netvigil: str, path: Path, as_limit: int | None, timeout: float) -> dict[str, Any]:
    def limit() -> None:
        if as_limit:
            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))

    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [netvigil, "analyze", "--json", str(path)],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            preexec_fn=limit,
        )
        deadline = start + timeout
        status = None
        usage = None
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        verdicts = sum(1 for _ in out)
        err.seek(0)
        stderr = err.read(1_000_000).decode("utf-8", "replace")
    lines = stderr.strip().splitlines()
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1) if usage else None,
        "verdicts": verdicts,
        "memory_error": "MemoryError" in stderr,
        "stderr_head": [line[:160] for line in lines[:3]],
        "stderr_last": lines[-1][:160] if lines else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netvigil", default=str(Path(sys.executable).parent / "netvigil"))
    parser.add_argument("--as-limit-mib", type=int, default=0, help="RLIMIT_AS for the child")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", help="also write the results as JSON to this file")
    parser.add_argument("--only", action="append", help="run only these cases (by name)")
    args = parser.parse_args()
    as_limit = args.as_limit_mib * 1024 * 1024 or None
    results: dict[str, Any] = {
        "netvigil": args.netvigil,
        "as_limit_mib": args.as_limit_mib or None,
        "cases": {},
    }
    cases: dict[str, Any] = {
        "200 MB line": (hostile_files.long_line, "long.jsonl"),
        "1 GiB gzip bomb": (hostile_files.gzip_bomb, "bomb.jsonl.gz"),
        "50,000-deep nesting": (hostile_files.deep_nesting, "deep.jsonl"),
        "1,000,000 keys": (hostile_files.many_keys, "keys.jsonl"),
        "NaN/Infinity/1e999999/huge int": (
            lambda p: hostile_files.bad_numbers(p)[0],
            "numbers.jsonl",
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (make, filename) in cases.items():
            if args.only and name not in args.only:
                continue
            path = make(Path(tmp) / filename)
            result = run_one(args.netvigil, path, as_limit, args.timeout)
            results["cases"][name] = result
            print(f"{name:32} {json.dumps(result)}", flush=True)
            path.unlink()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
