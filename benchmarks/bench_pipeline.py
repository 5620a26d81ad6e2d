"""Benchmark: the pipeline's throughput on generated OONI data, against oonidata's parser.

Run:  .venv/bin/python benchmarks/bench_pipeline.py [--parse-count 20000] [--rounds 3] [--count 1000000]
          [--dask-count 200000] [--workers 2] [--cache /tmp/netvigil-bench] [--skip-full]
          [--skip-dask] [--max-template-kb N]

Targets (the pipeline issue): parse + verdict at least 5x oonidata's measurements/s on one core;
the full pipeline at 10,000 measurements/s or more for 1 M measurements, streaming with bounded
memory; Dask with two workers against the embedded (DuckDB) engine, reported.

1. **Parse + verdict vs oonidata, one core.** ``--parse-count`` generated measurements: one
   day of the generator's hourly ``.jsonl.gz`` files in OONI's layout. Each side runs in its
   own process on one core and reads the same files in the same order. oonidata: Python's ``gzip``, ``orjson`` and
   ``oonidata.dataclient.load_measurement`` (in ``.venv-oonidata``: it pins an old
   cryptography), no verdict. netvigil: the pipeline's own reader (``sources.read_records``:
   libdeflate, bounded line splitting) and ``orjson``, then ``analyze``; also parse only, parse +
   verdict + table rows (``transform``), and, to show the verdict engine alone, oonidata's
   reader (``gzip`` + ``orjson``) + ``analyze``. The sides alternate for ``--rounds`` rounds
   and each ratio is taken within a round (CPU seconds), then the median over rounds: the
   machine's speed drifts. One-off start-up (imports, compiling the fingerprint database) is
   reported apart and not in the rates.
2. **Full pipeline** (``run_local``, ``--workers`` processes) on ``--count`` measurements over a
   week, generated once into ``--cache``; wall seconds, measurements/s and the peak RSS of the
   whole process tree (psutil, sampled every 0.2 s; plus the largest single process's
   ``ru_maxrss``).
3. **Dask**: ``run_on_cluster`` on a local cluster of two workers vs ``run_local`` with two
   workers (its aggregates in embedded DuckDB) on the same ``--dask-count`` measurements; cluster
   start-up reported apart.

Every number is printed and the whole report written as JSON to benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
OONIDATA = ROOT / ".venv-oonidata" / "bin" / "python"
SEED = 1

# --- part 1: the per-core loops, each run with -c in its own interpreter --------------------

_OONIDATA_LOOP = r"""
import gzip, json, pathlib, sys, time
t0 = time.perf_counter()
import orjson
from oonidata.dataclient import load_measurement
startup = time.perf_counter() - t0
n = failed = 0
types = {}
files = sorted(pathlib.Path(sys.argv[1]).rglob("*.jsonl.gz"))
c0, w0 = time.process_time(), time.perf_counter()
def lines():
    for f in files:
        with gzip.open(f, "rb") as fh:
            yield from fh
for line in lines():
    n += 1
    try:  # oonidata rejects some real old measurements (mashumaro InvalidFieldValue)
        m = load_measurement(msmt=orjson.loads(line))
    except Exception:
        failed += 1
        continue
    types[type(m).__name__] = types.get(type(m).__name__, 0) + 1
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
print(json.dumps({"measurements": n, "wall_s": wall, "cpu_s": cpu, "startup_s": startup,
                  "types": types, "failed": failed}))
"""

_NETVIGIL_LOOP = r"""
import gzip, json, sys, time
t0 = time.perf_counter()
import orjson
from netvigil.pipeline.sources import FileReport, discover, read_records
from netvigil.pipeline.transform import transform
from netvigil.verdict import analyze, load_fingerprints
fps = load_fingerprints()
startup = time.perf_counter() - t0
sources = discover([sys.argv[1]])  # sorted, as the oonidata loop reads them

def timed(step, reader):
    n = 0
    c0, w0 = time.process_time(), time.perf_counter()
    for raw in reader():
        step(raw)
        n += 1
    return {"measurements": n, "wall_s": time.perf_counter() - w0,
            "cpu_s": time.process_time() - c0}

def pipeline_reader():  # what the pipeline reads with (bounded line splitting)
    for src in sources:
        for rec in read_records(src, FileReport(src.name)):
            yield rec.raw

def gzip_reader():  # what the oonidata loop reads with: Python's gzip module
    for src in sources:
        with gzip.open(src.path, "rb") as fh:
            yield from fh

def rows(raw):
    m = orjson.loads(raw)  # one parse, one verdict, one transform per record
    return transform(m, "bench", raw=raw, verdict=analyze(m, fps))

out = {"startup_s": startup}
out["parse_only"] = timed(orjson.loads, pipeline_reader)
out["parse_analyze"] = timed(lambda raw: analyze(orjson.loads(raw), fps), pipeline_reader)
out["parse_analyze_transform"] = timed(rows, pipeline_reader)
out["gzip_orjson_analyze"] = timed(lambda raw: analyze(orjson.loads(raw), fps), gzip_reader)
print(json.dumps(out))
"""

_PROFILE_LOOP = r"""
import cProfile, pstats, sys
from netvigil.pipeline.sources import FileReport, discover, read_records
from netvigil.pipeline.transform import transform
from netvigil.verdict import analyze, load_fingerprints
fps = load_fingerprints()
src = discover([sys.argv[1]])[0]
raws = [rec.raw for _, rec in zip(range(int(sys.argv[2])), read_records(src, FileReport(src.name)))]
def run():
    for raw in raws:
        m = orjson.loads(raw)
        transform(m, "bench", raw=raw, verdict=analyze(m, fps))
prof = cProfile.Profile()
prof.runcall(run)
pstats.Stats(prof).sort_stats("tottime").print_stats(18)
"""


def _run_json(cmd: list[str], timeout: float = 3600) -> dict[str, Any]:
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=_one_core_env()
    )
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _one_core_env() -> dict[str, str]:
    # One core means one thread too: no BLAS/Arrow thread pools behind the process's back.
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    return env


def _rates(r: dict[str, Any]) -> dict[str, Any]:
    n = r["measurements"]
    return {
        "measurements": n,
        "wall_s": round(r["wall_s"], 3),
        "cpu_s": round(r["cpu_s"], 3),
        "measurements_per_s": round(n / r["wall_s"], 1),
        "measurements_per_cpu_s": round(n / r["cpu_s"], 1),
    }


def _dataset(cache: Path, count: int, days: int, max_kb: int | None, workers: int) -> Path:
    """Generated once per (count, days, seed, size cap) and reused: generation is not timed."""
    from netvigil.pipeline.generate import generate

    name = f"n{count}-d{days}-s{SEED}" + (f"-max{max_kb}k" if max_kb else "")
    path = cache / name
    done = cache / f"{name}.json"
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        summary = generate(
            path,
            count=count,
            days=days,
            seed=SEED,
            workers=workers,
            max_template_bytes=max_kb * 1000 if max_kb else None,
        )
        done.write_text(json.dumps(summary.to_dict()))
        print(f"  generated {name}: {json.dumps(summary.to_dict())}", flush=True)
    return path


_NETVIGIL_KEYS = ("parse_only", "parse_analyze", "parse_analyze_transform", "gzip_orjson_analyze")


def part1(args: argparse.Namespace) -> dict[str, Any]:
    base = _dataset(args.cache, args.parse_count, 1, args.max_template_kb, args.workers)
    raw = base / "raw"
    files = sorted(raw.rglob("*.jsonl.gz"))
    result: dict[str, Any] = {
        "input": str(raw),
        "files": len(files),
        "gz_bytes": sum(f.stat().st_size for f in files),
    }
    if not OONIDATA.exists():
        result["oonidata_load_measurement"] = {"error": f"{OONIDATA} missing: scripts/setup.sh"}
        return result
    # The machine is shared and its speed drifts by tens of percent from minute to minute: the
    # two sides run alternately, round after round, and each ratio is taken within a round.
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        o = _run_json([str(OONIDATA), "-c", _OONIDATA_LOOP, str(raw)])
        n = _run_json([sys.executable, "-c", _NETVIGIL_LOOP, str(raw)])
        one: dict[str, Any] = {
            "oonidata_load_measurement": {**_rates(o), "types": o["types"], "failed": o["failed"]},
            "oonidata_startup_s": round(o["startup_s"], 2),
            "netvigil_startup_s": round(n["startup_s"], 2),
        }
        for key in _NETVIGIL_KEYS:
            one[f"netvigil_{key}"] = _rates(n[key])
            one[f"ratio_{key}_cpu"] = round(
                one[f"netvigil_{key}"]["measurements_per_cpu_s"]
                / one["oonidata_load_measurement"]["measurements_per_cpu_s"],
                2,
            )
        rounds.append(one)
        print(
            f"  round {i + 1}/{args.rounds}: "
            + json.dumps({k: v for k, v in one.items() if k.startswith("ratio_")}),
            flush=True,
        )
    result["rounds"] = rounds
    # Medians over the rounds (CPU seconds: what other work on the machine stretches least).
    for key in ("oonidata_load_measurement", *(f"netvigil_{k}" for k in _NETVIGIL_KEYS)):
        result[f"median_{key}_per_cpu_s"] = statistics.median(
            r[key]["measurements_per_cpu_s"] for r in rounds
        )
    for key in _NETVIGIL_KEYS:
        result[f"median_ratio_{key}_cpu"] = statistics.median(r[f"ratio_{key}_cpu"] for r in rounds)
    uncompressed = json.loads((args.cache / f"{base.name}.json").read_text())
    result["mean_bytes_per_measurement"] = round(
        uncompressed["bytes_uncompressed"] / max(1, uncompressed["measurements"])
    )
    if args.profile:
        prof = subprocess.run(
            [sys.executable, "-c", _PROFILE_LOOP, str(raw), str(args.profile)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=_one_core_env(),
        )
        print(prof.stdout[-6000:] or prof.stderr[-3000:])
    return result


class _TreeRss:
    """Peak of the summed RSS of a process and all its descendants, sampled on a thread."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):  # a worker may exit meanwhile
                    total += p.memory_info().rss
            if total > self.peak:
                self.peak, self.peak_processes = total, len(procs)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


_RUN_LOCAL = r"""
import json, sys
from netvigil.pipeline.local import run_local
s = run_local([sys.argv[1]], sys.argv[2], workers=int(sys.argv[3]), overwrite=True)
d = s.to_dict(); d.pop("files", None)
print(json.dumps(d))
"""

_RUN_DASK = r"""
import json, sys, time
t0 = time.perf_counter()
from netvigil.pipeline.dask_engine import local_cluster, run_on_cluster
with local_cluster(n_workers=int(sys.argv[3]), threads_per_worker=1) as cluster:
    up = time.perf_counter() - t0
    s = run_on_cluster([sys.argv[1]], sys.argv[2], cluster.scheduler_address, overwrite=True)
d = s.to_dict(); d.pop("files", None); d["cluster_startup_s"] = round(up, 2)
print(json.dumps(d))
"""


def _measured_run(script: str, src: Path, out: Path, workers: int) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(src), str(out), str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    rss = _TreeRss(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - wall0
    rss.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"run failed: {stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    n = int(summary["totals"]["measurements"])
    return {
        "engine": summary["engine"],
        "workers": workers,
        "measurements": n,
        "totals": summary["totals"],
        "engine_seconds": summary["seconds"],
        "process_wall_s": round(wall, 2),
        "measurements_per_s": round(n / summary["seconds"], 1),
        "cpu_s": round(cpu, 1),
        # Other work on the machine stretches the wall clock, not the CPU time: the rate if
        # every worker had its core to itself.
        "measurements_per_cpu_s_x_workers": round(n / cpu * workers, 1) if cpu else None,
        "peak_tree_rss_mb": round(rss.peak / 2**20, 1),
        "peak_tree_processes": rss.peak_processes,
        # ru_maxrss of waited-for descendants: the largest single one, in KiB on Linux.
        "max_single_process_rss_mb": round(after.ru_maxrss / 1024, 1),
        **{k: summary[k] for k in ("cluster_startup_s",) if k in summary},
    }


def part2(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    src = _dataset(args.cache, args.count, 7, args.max_template_kb, args.workers)
    out = work / "full"
    result = _measured_run(_RUN_LOCAL, src / "raw", out, args.workers)
    result["output_mb"] = round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6)
    shutil.rmtree(out, ignore_errors=True)
    return result


def part3(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    src = _dataset(args.cache, args.dask_count, 7, args.max_template_kb, args.workers)
    local = _measured_run(_RUN_LOCAL, src / "raw", work / "local", 2)
    dask = _measured_run(_RUN_DASK, src / "raw", work / "dask", 2)
    same = _same_verdicts(work / "local", work / "dask")
    for d in ("local", "dask"):
        shutil.rmtree(work / d, ignore_errors=True)
    return {
        "run_local_2_workers_duckdb": local,
        "dask_2_workers": dask,
        "dask_over_local": round(dask["measurements_per_s"] / local["measurements_per_s"], 2),
        "same_verdict_rows": same,
    }


def _same_verdicts(a: Path, b: Path) -> bool | str:
    try:
        import duckdb
    except ImportError:
        return "duckdb missing"
    q = "SELECT * EXCLUDE (source) FROM read_parquet('{}/verdicts/**/*.parquet', hive_partitioning=1)"
    con = duckdb.connect()
    diff = con.execute(
        f"SELECT count(*) FROM (({q.format(a)}) EXCEPT ALL ({q.format(b)}))"
    ).fetchone()
    rows = con.execute(f"SELECT count(*) FROM ({q.format(a)})").fetchone()
    return bool(diff and rows and diff[0] == 0 and rows[0] > 0)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--parse-count", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3, help="part 1: alternating runs of each side")
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--dask-count", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/netvigil-bench"))
    ap.add_argument("--max-template-kb", type=int, help="generate without templates above this")
    ap.add_argument("--skip-parse", action="store_true")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--skip-dask", action="store_true")
    ap.add_argument("--profile", type=int, default=0, help="cProfile N lines of part 1's path")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/pipeline.json")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30)},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(dir=args.cache, prefix="work-") as tmp:
        work = Path(tmp)
        if not args.skip_parse:
            report["parse_vs_oonidata"] = part1(args)
            print(json.dumps({"parse_vs_oonidata": report["parse_vs_oonidata"]}, indent=1))
        if not args.skip_full:
            report["full_pipeline"] = part2(args, work)
            print(json.dumps({"full_pipeline": report["full_pipeline"]}, indent=1))
        if not args.skip_dask:
            report["dask_vs_local"] = part3(args, work)
            print(json.dumps({"dask_vs_local": report["dask_vs_local"]}, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
