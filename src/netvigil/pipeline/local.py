"""The local engine: files → Parquet tables on this machine, in parallel processes.

:func:`process_files` is the unit of work of every engine (the Dask engine calls it on its
workers with its own writer ids): a top-level function of plain, picklable arguments that reads
its files, transforms each measurement and appends the rows to its own Parquet files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from netvigil.pipeline.aggregate import build_aggregates, count_duplicates
from netvigil.pipeline.schema import ENDPOINT_SCHEMA, OBSERVATION_SCHEMA, VERDICT_SCHEMA
from netvigil.pipeline.sources import (
    FileReport,
    PipelineInputError,
    SourceFile,
    discover,
    read_records,
)
from netvigil.pipeline.transform import MeasurementError, transform
from netvigil.pipeline.writer import PartitionedWriter
from netvigil.verdict.fingerprints import load_fingerprints

__all__ = [
    "INGEST_FILE",
    "Progress",
    "RunSummary",
    "plan_batches",
    "prepare_out_dir",
    "process_files",
    "run_local",
    "write_ingest",
]

INGEST_FILE = "ingest.json"
RUN_ENTRIES = ("verdicts", "observations", "endpoints", "aggregates", INGEST_FILE)
BATCH_MIN_BYTES = 8 * 1024 * 1024
BATCH_MAX_BYTES = 256 * 1024 * 1024

# progress(files_done, files_total, measurements_done)
Progress = Callable[[int, int, int], None]


def process_files(files: Sequence[SourceFile], out_dir: Path, writer_id: str) -> list[FileReport]:
    """Read, transform and write ``files`` (rows to ``out_dir``'s tables, file names carrying
    ``writer_id``); one :class:`FileReport` per file, in order."""
    out = Path(out_dir)
    reports: list[FileReport] = []
    verdicts = PartitionedWriter(out, "verdicts", VERDICT_SCHEMA, writer_id)
    observations = PartitionedWriter(out, "observations", OBSERVATION_SCHEMA, writer_id)
    endpoints = PartitionedWriter(out, "endpoints", ENDPOINT_SCHEMA, writer_id)
    try:
        for src in files:
            reports.append(_process_file(src, verdicts, observations, endpoints))
    except BaseException:
        verdicts.abort()
        observations.abort()
        endpoints.abort()
        raise
    verdicts.close()
    observations.close()
    endpoints.close()
    return reports


def _process_file(
    src: SourceFile,
    verdicts: PartitionedWriter,
    observations: PartitionedWriter,
    endpoints: PartitionedWriter,
) -> FileReport:
    report = FileReport(source=src.name, kind=src.kind)
    loads = orjson.loads
    name = src.name
    for rec in read_records(src, report):
        try:
            measurement = loads(rec.raw)
        except orjson.JSONDecodeError as exc:
            report.bad("invalid-json", rec.line, str(exc))
            continue
        try:
            eps: list[dict[str, Any]] = []
            row, obs = transform(measurement, name, raw=rec.raw, uid=rec.uid, endpoints=eps)
        except MeasurementError as exc:
            report.bad(exc.reason, rec.line, str(exc))
            continue
        except RecursionError:
            report.bad("wrong-types", rec.line, "nested too deeply")
            continue
        except Exception as exc:  # one hostile measurement must not stop the file
            report.bad("wrong-types", rec.line, f"cannot transform ({type(exc).__name__}: {exc})")
            continue
        day = row["measurement_start_time"].strftime("%Y-%m-%d")
        verdicts.append(row, day)
        observations.extend(obs, day)
        if eps:
            endpoints.extend(eps, day)
        report.measurements += 1
        report.verdict_rows += 1
        report.observation_rows += len(obs)
    return report


# ---------------------------------------------------------------------------------------------
# A run


@dataclass
class RunSummary:
    """What a run did: per-file reports, totals, how long, which engine."""

    files: list[FileReport]
    seconds: float
    engine: str
    out_dir: str = ""
    workers: int = 1
    totals: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.totals:
            self.totals = totals_of(self.files)

    @property
    def rate(self) -> float:
        n = int(self.totals.get("measurements", 0))
        return n / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "out_dir": self.out_dir,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "measurements_per_second": round(self.rate, 1),
            "totals": self.totals,
            "files": [r.to_dict() for r in self.files],
        }


def totals_of(reports: Sequence[FileReport]) -> dict[str, Any]:
    corrupt: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for r in reports:
        for k, v in r.corrupt.items():
            corrupt[k] = corrupt.get(k, 0) + v
        for k, v in r.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
    return {
        "files": len(reports),
        "measurements": sum(r.measurements for r in reports),
        "verdict_rows": sum(r.verdict_rows for r in reports),
        "observation_rows": sum(r.observation_rows for r in reports),
        "skipped": dict(sorted(skipped.items())),
        "corrupt": dict(sorted(corrupt.items())),
    }


def prepare_out_dir(out_dir: str | os.PathLike[str], overwrite: bool) -> Path:
    """Make ``out_dir`` ready for a run: refuse one holding a previous run unless
    ``overwrite`` (then only the previous run's tables and report are removed)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PipelineInputError(f"{out_dir}: exists and is not a directory")
    previous = [name for name in RUN_ENTRIES if (out / name).exists()]
    if previous and not overwrite:
        raise PipelineInputError(
            f"{out_dir} holds a previous run ({', '.join(previous)}); "
            "choose another --out or pass --overwrite"
        )
    for name in previous:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineInputError(f"{out_dir}: cannot create ({exc.strerror or exc})") from None
    return out


def write_ingest(out_dir: Path, summary: RunSummary) -> Path:
    """``OUT/ingest.json``, written whole or not at all."""
    path = Path(out_dir) / INGEST_FILE
    tmp = path.with_name(f".{INGEST_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(summary.to_dict(), handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def record_duplicates(out_dir: Path, summary: RunSummary) -> None:
    """How many verdict rows repeat a measurement already seen (same ``measurement_uid``, e.g.
    one file given twice, or OONI's file and our collector's store): in ``totals``, so the
    run says it; the aggregates and queries count each measurement once."""
    summary.totals["duplicates"] = count_duplicates(out_dir)


def plan_batches(files: Sequence[SourceFile], workers: int) -> list[list[SourceFile]]:
    """Files grouped into batches of similar size, biggest first: several batches per worker
    so a slow one does not leave the others idle, few enough that the output is not a
    myriad of tiny Parquet files (each batch writes its own). A file is never split."""
    total = sum(max(f.size, 1) for f in files)
    target = min(BATCH_MAX_BYTES, max(BATCH_MIN_BYTES, total // max(1, workers * 4)))
    batches: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    size = 0
    for f in files:  # in discovery order: neighbouring files (same day) share output files
        if current and size + f.size > target:
            batches.append(current)
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        batches.append(current)
    batches.sort(key=lambda b: -sum(f.size for f in b))
    return batches


def run_local(
    srcs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    workers: int | None = None,
    progress: Progress | None = None,
    *,
    overwrite: bool = False,
) -> RunSummary:
    """Discover ``srcs``, process them with ``workers`` processes (default: one per CPU) into
    ``out_dir``, write ``OUT/ingest.json``, then the aggregates when that step is available."""
    started = time.monotonic()
    files = discover(srcs)
    if not files:
        raise PipelineInputError("no measurement files found in the given paths")
    if workers is not None and workers < 1:
        raise PipelineInputError("--workers must be at least 1")
    n_workers = workers or os.cpu_count() or 1
    out = prepare_out_dir(out_dir, overwrite)
    batches = plan_batches(files, n_workers)
    results: dict[int, list[FileReport]] = {}
    done_files = 0
    done_measurements = 0

    def finished(index: int, reports: list[FileReport]) -> None:
        nonlocal done_files, done_measurements
        results[index] = reports
        done_files += len(reports)
        done_measurements += sum(r.measurements for r in reports)
        if progress is not None:
            progress(done_files, len(files), done_measurements)

    if n_workers == 1 or len(batches) == 1:
        for index, batch in enumerate(batches):
            finished(index, process_files(batch, out, f"l{index:05d}"))
    else:
        if multiprocessing.get_start_method() == "fork":
            # Compile the fingerprint database and let pyarrow import pandas (it does on the
            # first pa.array) once, here: forked workers share both instead of each spending
            # seconds on them.
            load_fingerprints()
            pa.array([0])
        with ProcessPoolExecutor(max_workers=min(n_workers, len(batches))) as pool:
            pending: dict[Future[list[FileReport]], int] = {
                pool.submit(process_files, batch, out, f"l{index:05d}"): index
                for index, batch in enumerate(batches)
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(pending.pop(fut), fut.result())
    by_name = {id(r): r for reports in results.values() for r in reports}
    order = {f.name: i for i, f in enumerate(files)}
    reports = sorted(by_name.values(), key=lambda r: order.get(r.source, len(order)))
    summary = RunSummary(
        files=reports,
        seconds=time.monotonic() - started,
        engine="local",
        out_dir=str(out),
        workers=n_workers,
    )
    record_duplicates(out, summary)
    write_ingest(out, summary)
    build_aggregates(out)
    summary.seconds = time.monotonic() - started
    return summary
