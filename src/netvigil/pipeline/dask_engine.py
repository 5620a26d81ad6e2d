"""The cluster engine: the same pipeline, run on a Dask distributed cluster.

``run_on_cluster(srcs, out_dir, "tcp://host:8786")`` gives the tables the local engine
(``netvigil.pipeline.local.run_local``) gives on the same input, row for row after sorting by
``SORT_KEYS``:

1. the client discovers the input files (``sources.discover``), exactly as the local engine does;
2. the files are cut into batches of about equal size in bytes, and each batch is one task:
   ``local.process_files(batch, out_dir, writer_id)`` — the local engine's own unit of work, so
   parsing, verdicts and Parquet writing are not re-implemented here — with a distinct writer id
   per batch, so no two tasks ever write the same part file;
3. the per-file reports come back as tasks finish (progress) and make ``OUT/ingest.json``;
4. the aggregates are computed on the cluster with ``dask.dataframe`` from ``OUT/verdicts``
   (``aggregate_dask``): an independent implementation of the definitions the DuckDB engine
   computes in SQL (``aggregate.aggregate_duckdb``), so comparing the two checks both;
5. ``events`` comes from the shared ``aggregate.detect_events`` and everything is written by the
   shared ``aggregate.write_aggregates``.

Where the cluster must stand:

- **One filesystem.** The workers write ``OUT`` and read the input files at the *same paths* as
  the client sees them. That holds for a local cluster (``local_cluster``) and for a cluster whose
  machines mount the same shared filesystem (NFS, Lustre, …) at the same place. Nothing is
  shipped through the scheduler but file names and small reports.
- **netvigil importable on the workers.** Tasks are netvigil functions, pickled by reference:
  start ``dask worker`` from the project's environment (``.venv/bin/dask worker tcp://…``).
- **Same versions.** The verdicts are only comparable if every worker runs the same netvigil
  (checked: a worker with another version is refused).
- **Worker settings** (speed only, not results): ``local_cluster`` turns off Dask's statistical
  profiler and its malloc trimming (``WORKER_CONFIG``, ~35 % faster on this workload). For
  ``dask worker`` elsewhere put the same in a YAML file in the folder named by ``DASK_CONFIG``
  (or ``~/.config/dask/``)::

      distributed:
        worker: {profile: {enabled: false}}
        nanny: {pre-spawn-environ: {MALLOC_TRIM_THRESHOLD_: null}}
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from distributed import Client, LocalCluster, as_completed

import netvigil
from netvigil.pipeline.aggregate import (
    APP_DEDUP_ORDER,
    APP_KEYS,
    DEDUP_ORDER,
    detect_events,
    empty_table,
    endpoint_files,
    finalize,
    finish_daily,
    verdict_files,
    write_aggregates,
)
from netvigil.pipeline.local import (
    BATCH_MAX_BYTES,
    BATCH_MIN_BYTES,
    Progress,
    RunSummary,
    prepare_out_dir,
    process_files,
    record_duplicates,
    write_ingest,
)
from netvigil.pipeline.schema import VERDICT_SCHEMA
from netvigil.pipeline.sources import FileReport, PipelineInputError, SourceFile, discover

__all__ = [
    "ENGINE_AGGREGATES",
    "WORKER_CONFIG",
    "ClusterError",
    "aggregate_dask",
    "balanced_batches",
    "local_cluster",
    "run_on_cluster",
]

# The aggregates an engine computes itself; ``events`` is derived from ``daily`` by one shared
# function so that it cannot differ between engines.
ENGINE_AGGREGATES = ("daily", "outcomes", "techniques", "apps")


T = TypeVar("T")


# Worker settings for this workload, pure-Python parsing of many small records: measured on one
# batch of 150 files (56 MB), a worker took 7.3-7.8 s with Dask's defaults and 3.9-4.4 s with
# these, as fast as a plain process (3.7-4.8 s). Dask's statistical profiler samples every
# thread's stack each 10 ms, holding the GIL (~15 %), and its MALLOC_TRIM_THRESHOLD_=65536 makes
# glibc give memory back to the OS after every large free (~20 %; the transform's memory is
# bounded anyway). ``local_cluster`` applies them; other clusters through a config file (see the
# module's notes).
WORKER_CONFIG: dict[str, object] = {
    "distributed.worker.profile.enabled": False,
    # None: do not set the variable at all (glibc's own adaptive threshold then applies).
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


class ClusterError(PipelineInputError):
    """The cluster cannot be used: unreachable, no workers, workers without this netvigil or
    without the shared filesystem, a batch that failed. One line, like every input error."""


# --- a local cluster, for tests, benchmarks and demos -------------------------------------------


@contextlib.contextmanager
def local_cluster(
    n_workers: int = 2, threads_per_worker: int = 1, *, quiet: bool = True
) -> Iterator[LocalCluster]:
    """A scheduler and `n_workers` worker processes on this machine, listening on 127.0.0.1 only.

    Every listening socket is on loopback: the scheduler and the workers (``host``) and the HTTP
    endpoints (``/health``, ``/metrics``) that Dask starts even without a dashboard — given
    ``127.0.0.1:0`` explicitly, because a bare ``:port`` makes Dask bind 0.0.0.0 and the default
    takes the well-known 8787, which another cluster may hold. The Bokeh dashboard is off.
    Yields the running ``LocalCluster``; ``cluster.scheduler_address`` is what
    ``run_on_cluster`` and ``distributed.Client`` take.
    """
    # Dask's nannies set their workers' variables (OMP_NUM_THREADS=1, PYTHONHASHSEED, …) in
    # *this* process's environment before spawning, and leave them: put it back afterwards, so
    # that what this process starts later (a test suite's other subprocesses) is unaffected.
    saved_environ = dict(os.environ)

    def restore_environ() -> None:
        # Only what the start-up changed, and only where it is still as Dask left it.
        for name, value in dask_environ.items():
            if os.environ.get(name) != value:
                continue
            if name in saved_environ:
                os.environ[name] = saved_environ[name]
            else:
                del os.environ[name]

    try:
        with _quiet_dask(quiet), dask.config.set(WORKER_CONFIG):
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                protocol="tcp://",
                dashboard_address=None,
                worker_dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.ERROR if quiet else logging.WARNING,
            )
    except BaseException:
        dask_environ = _changed_environ(saved_environ)
        restore_environ()
        raise
    dask_environ = _changed_environ(saved_environ)
    try:
        yield cluster
    finally:
        with _quiet_dask(quiet):
            cluster.close(timeout=30)
        restore_environ()


def _changed_environ(before: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if before.get(name) != value}


@contextlib.contextmanager
def _quiet_dask(quiet: bool = True) -> Iterator[None]:
    """Hold Dask's loggers at ERROR for the duration: connection retries, worker start-up and
    shutdown chatter ("Closing Nanny…", "Stream is closed") are noise in a CLI's output."""
    if not quiet:
        yield
        return
    names = ("distributed", "dask", "tornado")
    saved = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# --- batching ----------------------------------------------------------------------------------


def balanced_batches(items: Sequence[T], size: Callable[[T], int], n_batches: int) -> list[list[T]]:
    """Cut `items` into at most `n_batches` non-empty runs of consecutive items of about equal
    total `size`, largest run first.

    Consecutive, because discovery order keeps a day's files together and a batch writes one
    Parquet file per day it touches: mixing days across batches would multiply the files.
    Each item goes to the run its midpoint falls in (of `n_batches` equal slices of the total
    size), so a run is off the ideal by at most one item's size. Deterministic.
    """
    if not items:
        return []
    n = max(1, min(n_batches, len(items)))
    weights = [max(1, size(item)) for item in items]
    total = sum(weights)
    runs: dict[int, list[T]] = {}
    before = 0
    for item, weight in zip(items, weights, strict=True):
        # 2*before + weight over 2*total: the item's midpoint, in integers (exact).
        slot = min(n - 1, (2 * before + weight) * n // (2 * total))
        runs.setdefault(slot, []).append(item)
        before += weight
    batches = [runs[slot] for slot in sorted(runs)]
    loads = [sum(max(1, size(item)) for item in batch) for batch in batches]
    order = sorted(range(len(batches)), key=lambda i: (-loads[i], i))
    return [batches[i] for i in order]


def _batch_count(files: Sequence[SourceFile], threads: int) -> int:
    """At least one batch per worker thread (all take part), up to four per thread (a slow
    batch does not leave the others idle at the end) when batches stay above the local
    engine's minimum size, and enough that a batch is about its maximum size at most."""
    total = sum(max(1, f.size) for f in files)
    n = max(threads, min(threads * 4, total // BATCH_MIN_BYTES))
    n = max(n, math.ceil(total / BATCH_MAX_BYTES))
    return max(1, min(n, len(files)))


# --- aggregates on the cluster -----------------------------------------------------------------

# Verdict columns the aggregates need; reading only these keeps the cluster's I/O small.
_AGG_COLUMNS = [
    "probe_cc",
    "probe_asn",
    "domain",
    "measurement_start_time",
    "outcome",
    "blocked",
    "confidence",
]
# And to tell copies of one measurement apart (aggregate.DEDUP_ORDER, less the partition's day).
_COPY_COLUMNS = ["measurement_uid", "source", *_AGG_COLUMNS]
_PLACE = ["probe_cc", "probe_asn", "domain"]
_NANOS = 1e9


# Partitions are pandas DataFrames; they are typed Any here because pandas ships no type
# information (and mypy would otherwise need an override for it).
Frame: TypeAlias = Any


def _day_of(path: str) -> str:
    """The hive partition of a verdict file (``day=YYYY-MM-DD``), as that text."""
    return Path(path).parent.name.partition("=")[2]


def _uid_hashes(table: pa.Table) -> np.ndarray:
    """64-bit hashes of the rows' ``measurement_uid`` (pandas' SipHash with its fixed key: the
    same value in every process)."""
    uids = table.column("measurement_uid").to_numpy(zero_copy_only=False)
    return np.asarray(pd.util.hash_array(uids), dtype=np.uint64)


def _file_uid_hashes(path: str) -> np.ndarray:
    """Runs on a worker: the uid hashes of one verdict file."""
    return _uid_hashes(pq.read_table(path, columns=["measurement_uid"]))


def _repeated(hashes: Sequence[np.ndarray]) -> np.ndarray:
    """The hashes that occur more than once over all files, sorted: the uids that have copies,
    plus (rarely) distinct uids whose hashes collide, which are harmless (a lone row is its
    own winner)."""
    if not hashes:
        return np.empty(0, np.uint64)
    every = np.sort(np.concatenate(hashes))
    return np.unique(every[1:][every[1:] == every[:-1]])


def _first_copies(table: pa.Table) -> pa.Table:
    """Of each ``measurement_uid`` the copy that comes first in ``aggregate.DEDUP_ORDER``
    (ascending; Arrow sorts strings in byte order of UTF-8 and false before true, as DuckDB).

    Associative: applying it to any split of the rows and then to the union of the results
    gives the same rows, so files can be reduced one by one and then together.
    """
    if table.num_rows == 0:
        return table
    keys = ["measurement_uid", *DEDUP_ORDER]
    ordered = table.sort_by([(key, "ascending") for key in keys])
    uids = ordered.column("measurement_uid").combine_chunks()
    first = np.ones(len(uids), dtype=bool)
    if len(uids) > 1:
        first[1:] = np.asarray(
            pc.not_equal(uids.slice(1), uids.slice(0, len(uids) - 1)).to_numpy(
                zero_copy_only=False
            ),
            dtype=bool,
        )
    return ordered.filter(pa.array(first))


def _file_copies(path: str, repeated: np.ndarray) -> pa.Table:
    """Runs on a worker: the rows of one verdict file whose uid hash is in `repeated`, with
    their file's ``day``, reduced to the first copy of each uid within the file."""
    table = pq.read_table(path, columns=_COPY_COLUMNS)
    table = table.filter(pa.array(np.isin(_uid_hashes(table), repeated)))
    day = pa.array([_day_of(path)] * table.num_rows, pa.string())
    return _first_copies(table.append_column("day", day))


def _verdict_partition(path: str, repeated: np.ndarray | None = None) -> Frame:
    """One verdict file as one partition, with the columns the aggregates group and sum.

    Runs on a worker. ``day`` is the hive partition of the file (``day=YYYY-MM-DD``), kept as
    that text, as ``aggregate_duckdb`` reads it; the rows its ``AGGREGATED_ROWS_SQL`` leaves
    out are dropped here too (no domain, or an ``unsupported`` verdict). Rows whose uid hash is
    in `repeated` (copies of a measurement, see ``aggregate_dask``) are left out: their winners
    are added separately.
    """
    day = _day_of(path)
    if repeated is None or len(repeated) == 0:
        return _partition_frame(pq.read_table(path, columns=_AGG_COLUMNS), day)
    table = pq.read_table(path, columns=["measurement_uid", *_AGG_COLUMNS])
    table = table.filter(pa.array(~np.isin(_uid_hashes(table), repeated)))
    return _partition_frame(table.select(_AGG_COLUMNS), day)


def _partition_frame(table: pa.Table, day: str | pa.Array) -> Frame:
    """The columns the group-bys need, computed with Arrow and numpy, then as pandas.

    ``day``: the partition's day for every row, or one per row (the winners of repeated
    uids come from many files). ``confidence_nanos`` is the blocked rows' confidence as an
    integer number of nano-units (rounded half to even, as ``aggregate`` does), 0 for other
    rows: integers sum exactly in any order, so the mean cannot depend on how Dask splits and
    combines the partitions.
    """
    if isinstance(day, str):
        day = pa.array([day] * table.num_rows, pa.string())
    table = table.select(_AGG_COLUMNS).append_column("day", day)
    # The same rows as aggregate.AGGREGATED_ROWS_SQL: a site, and a verdict about it.
    table = table.filter(
        pc.and_(
            pc.not_equal(table.column("domain"), ""),
            pc.not_equal(table.column("outcome"), "unsupported"),
        )
    )
    blocked = np.asarray(table.column("blocked").to_numpy(), dtype=bool)
    confidence = np.asarray(table.column("confidence").to_numpy(), dtype=np.float64)
    nanos = np.rint(confidence * _NANOS).astype(np.int64)
    is_ok = np.asarray(pc.equal(table.column("outcome"), "ok").to_numpy(), dtype=bool)
    is_offline = np.asarray(
        pc.starts_with(table.column("outcome"), "network/").to_numpy(), dtype=bool
    )
    columns = {
        "probe_cc": table.column("probe_cc"),
        "probe_asn": table.column("probe_asn").cast(pa.int64()),
        "domain": table.column("domain"),
        "day": table.column("day"),
        "outcome": table.column("outcome"),
        "measurement_start_time": table.column("measurement_start_time"),
        "blocked": pa.array(blocked, pa.bool_()),
        "is_blocked": pa.array(blocked.astype(np.int64), pa.int64()),
        "is_ok": pa.array(is_ok.astype(np.int64), pa.int64()),
        "is_offline": pa.array(is_offline.astype(np.int64), pa.int64()),
        "confidence_nanos": pa.array(np.where(blocked, nanos, 0), pa.int64()),
    }
    return pa.table(columns).to_pandas()


def _verdict_meta() -> Frame:
    """The partitions' columns and dtypes: the same function on a file with no rows."""
    return _partition_frame(VERDICT_SCHEMA.empty_table().select(_AGG_COLUMNS), "")


# --- messaging apps (``apps``) from OUT/endpoints ---------------------------------------------

_APP_COLUMNS = [*APP_KEYS, *(name for name in APP_DEDUP_ORDER if name != "day")]


def _first_endpoint_rows(table: pa.Table) -> pa.Table:
    """Of each (``measurement_uid``, ``app``, ``endpoint``) the row first in
    ``aggregate.APP_DEDUP_ORDER``; associative, like ``_first_copies``."""
    if table.num_rows == 0:
        return table
    order = [*APP_KEYS, *APP_DEDUP_ORDER]
    ordered = table.sort_by([(key, "ascending") for key in order]).combine_chunks()
    first = np.ones(ordered.num_rows, dtype=bool)
    if ordered.num_rows > 1:
        differs = np.zeros(ordered.num_rows - 1, dtype=bool)
        for key in APP_KEYS:
            col = ordered.column(key)
            differs |= np.asarray(
                pc.not_equal(col.slice(1), col.slice(0, len(col) - 1)).to_numpy(
                    zero_copy_only=False
                ),
                dtype=bool,
            )
        first[1:] = differs
    return ordered.filter(pa.array(first))


def _endpoint_file_rows(path: str) -> pa.Table:
    """Runs on a worker: one endpoint file's rows with its ``day``, first copy per key."""
    table = pq.read_table(path, columns=_APP_COLUMNS)
    day = pa.array([_day_of(path)] * table.num_rows, pa.string())
    return _first_endpoint_rows(table.append_column("day", day))


def aggregate_apps_dask(out_dir: Path, client: Client) -> pa.Table:
    """``apps`` from ``OUT/endpoints``: each file reduced on a worker to one row per
    (measurement, app, endpoint), the union reduced again on the client (the same winners as
    one global sort in ``APP_DEDUP_ORDER``), then counted with Arrow's group-by: written
    independently of ``aggregate.aggregate_apps_duckdb``'s SQL, so comparing them checks both.
    Endpoint rows are few (messaging measurements only), so they fit the client."""
    paths = [str(path) for path in endpoint_files(Path(out_dir))]
    if not paths:
        return empty_table("apps")
    parts = client.gather(client.map(_endpoint_file_rows, paths, pure=False))  # type: ignore[no-untyped-call]
    rows = _first_endpoint_rows(pa.concat_tables(parts))
    blocked = np.asarray(rows.column("blocked").to_numpy(zero_copy_only=False), dtype=bool)
    is_ok = np.asarray(pc.equal(rows.column("outcome"), "ok").to_numpy(zero_copy_only=False))
    counted = pa.table(
        {
            "probe_cc": rows.column("probe_cc"),
            "probe_asn": rows.column("probe_asn").cast(pa.int64()),
            "app": rows.column("app"),
            "endpoint": rows.column("endpoint"),
            "day": rows.column("day").cast(pa.date32()),
            "one": pa.array(np.ones(rows.num_rows, dtype=np.int64)),
            "is_blocked": pa.array(blocked.astype(np.int64)),
            "is_ok": pa.array(is_ok.astype(np.int64)),
        }
    )
    grouped = counted.group_by(["probe_cc", "probe_asn", "app", "endpoint", "day"]).aggregate(
        [("one", "sum"), ("is_blocked", "sum"), ("is_ok", "sum")]
    )
    names = {"one_sum": "measurements", "is_blocked_sum": "blocked", "is_ok_sum": "ok"}
    grouped = grouped.rename_columns([names.get(n, n) for n in grouped.column_names])
    return finalize("apps", grouped)


def _arrow(frame: Frame) -> pa.Table:
    return pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def aggregate_dask(out_dir: Path, client: Client, *, split_out: int = 1) -> dict[str, pa.Table]:
    """``daily``, ``outcomes`` and ``techniques`` from ``OUT/verdicts``, computed on `client`'s
    cluster with dask.dataframe; Arrow tables in ``AGGREGATE_SCHEMAS``, sorted by ``SORT_KEYS``.

    The definitions are ``aggregate``'s (its module notes), written here independently as
    Dask group-bys rather than SQL: the same files (``aggregate.verdict_files``), rows with an
    empty domain left out, ``day`` from the partition; ``daily`` counts rows, blocked rows and
    ``ok`` rows and sums the blocked rows' confidence in nano-units, which the shared
    ``finish_daily`` turns into the exact rounded mean; ``outcomes`` counts rows per outcome;
    ``techniques`` takes min, max and count of ``measurement_start_time`` over blocked rows.
    The shared ``finalize`` casts and sorts, so the two engines' tables compare with ``equals``.

    Each measurement counts once (``aggregate``'s "Each measurement once"), found without
    shuffling the rows: (1) every file's ``measurement_uid`` hashes (8 bytes a row) come to the
    client, which keeps the hashes seen more than once; in the common case there are none and
    the rest runs as it would without copies. (2) Otherwise those hashes go to every worker
    once (scattered); each file's rows with such a hash are reduced to their first copy per uid
    in ``DEDUP_ORDER`` (``_first_copies``) and come to the client, which reduces them again over
    all files (the reduction is associative: the same winners as one global sort). (3) The
    files' other rows and those winners make the frame the group-bys read. Memory on the
    client: the hashes, and the copies of repeated measurements (a few columns).

    The partial results of the files are combined by a tree reduction into one partition
    (``split_out=1``): the aggregates are far smaller than the verdicts, and a shuffle costs
    seconds of fixed overhead. Give a larger `split_out` when the groups themselves run to
    tens of millions.

    The workers read the files at the paths the client sees (see the module's notes).
    """
    files = verdict_files(Path(out_dir))
    if not files:
        out = {name: empty_table(name) for name in ENGINE_AGGREGATES}
        out["apps"] = aggregate_apps_dask(out_dir, client)
        return out
    paths = [str(path) for path in files]

    # (1) and (2): which uids repeat, and their winning copies.
    hashes = client.gather(client.map(_file_uid_hashes, paths, pure=False))  # type: ignore[no-untyped-call]
    repeated = _repeated(hashes)
    del hashes
    winners: pa.Table | None = None
    repeated_arg: Any = None
    if len(repeated):
        # One copy of the candidates per worker, not one per task in the graph.
        repeated_arg = client.scatter(repeated, broadcast=True, hash=False)  # type: ignore[no-untyped-call]
        copy_futures = client.map(_file_copies, paths, repeated=repeated_arg, pure=False)
        copies = client.gather(copy_futures)  # type: ignore[no-untyped-call]
        winners = _first_copies(pa.concat_tables(copies))
        del copies

    # (3) One partition per file, read on the workers; from_map rather than read_parquet on the
    # directory so that ``day`` is the partition's text (read_parquet would make it a
    # category, and categorical group keys bring unobserved combinations along).
    # convert-string off: the partitions' text columns are already Arrow-backed strings (pandas
    # 3's ``str``); Dask's conversion would copy every one of them again, for nothing.
    with dask.config.set({"dataframe.convert-string": False}):
        frame = dd.from_map(  # type: ignore[no-untyped-call]
            _verdict_partition,
            paths,
            args=(repeated_arg,),
            meta=_verdict_meta(),
            divisions=None,
            enforce_metadata=False,
        )
        if winners is not None:
            extra = dd.from_pandas(  # type: ignore[no-untyped-call]
                _partition_frame(winners, winners.column("day")), npartitions=1
            )
            frame = dd.concat([frame, extra])  # type: ignore[no-untyped-call]
    # dropna=False: SQL's GROUP BY keeps NULL keys as a group; so must this side.
    daily = frame.groupby([*_PLACE, "day"], dropna=False, sort=False).agg(
        measurements=("is_blocked", "count"),
        blocked=("is_blocked", "sum"),
        ok=("is_ok", "sum"),
        offline=("is_offline", "sum"),
        confidence_nanos=("confidence_nanos", "sum"),
        split_out=split_out,
    )
    outcomes = (
        frame.groupby([*_PLACE, "day", "outcome"], dropna=False, sort=False)
        .size(split_out=split_out)
        .rename("count")
    )
    techniques = (
        frame[frame["blocked"]]
        .groupby([*_PLACE, "outcome"], dropna=False, sort=False)
        .agg(
            first_seen=("measurement_start_time", "min"),
            last_seen=("measurement_start_time", "max"),
            count=("is_blocked", "count"),
            split_out=split_out,
        )
    )
    # One compute: the three results share the reading of the files in one graph.
    futures = client.compute([daily, outcomes, techniques])  # type: ignore[no-untyped-call]
    daily_df, outcomes_s, techniques_df = client.gather(futures)  # type: ignore[no-untyped-call]

    parts = _arrow(daily_df.reset_index())
    parts = parts.set_column(
        parts.schema.get_field_index("day"), "day", parts.column("day").cast(pa.date32())
    )
    outcomes_t = _arrow(outcomes_s.reset_index())
    outcomes_t = outcomes_t.set_column(
        outcomes_t.schema.get_field_index("day"), "day", outcomes_t.column("day").cast(pa.date32())
    )
    return {
        "daily": finish_daily(parts),
        "outcomes": finalize("outcomes", outcomes_t),
        "techniques": finalize("techniques", _arrow(techniques_df.reset_index())),
        "apps": aggregate_apps_dask(out_dir, client),
    }


# --- a run -------------------------------------------------------------------------------------


def _probe(address: str, timeout: float) -> None:
    """Reach the scheduler once, without a Client, or raise a one-line ClusterError.

    A ``Client`` whose connection fails is left half-made, and its finaliser then blocks the
    interpreter's exit for twice the timeout; a bare comm has no such tail. Run in a thread of
    its own so that it works whether or not the caller already runs an event loop.
    """
    from distributed.comm.core import connect

    async def reach() -> None:
        comm = await connect(address, timeout=timeout)  # type: ignore[no-untyped-call]
        await comm.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dask-probe") as pool:
        try:
            pool.submit(asyncio.run, reach()).result()
        except (OSError, TimeoutError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ClusterError(
                f"cannot connect to the Dask scheduler at {address} ({detail})"
            ) from None


def _connect(address: str, timeout: float) -> Client:
    """A client of the scheduler at `address`, or a one-line ClusterError."""
    _probe(address, timeout)
    try:
        # set_as_default=False: this client must not become the scheduler of every other dask
        # computation in the process (the caller's own dask code keeps its scheduler).
        return Client(address, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterError(
            f"cannot connect to the Dask scheduler at {address} ({detail})"
        ) from None


def _worker_check(marker: str) -> tuple[str, bool]:
    """Runs on each worker: its netvigil version, and whether it sees the client's marker
    file in OUT (the same filesystem at the same path)."""
    import netvigil

    return netvigil.__version__, os.path.exists(marker)


def _check_workers(client: Client, address: str, out: Path, timeout: float) -> list[str]:
    """The workers' addresses, once they are shown to run this netvigil and to see OUT."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError):
        raise ClusterError(
            f"the Dask scheduler at {address} has no workers (waited {timeout:g} s)"
        ) from None
    marker = out / f".dask-check-{uuid.uuid4().hex}"
    marker.touch()
    try:
        answers = client.run(_worker_check, str(marker), on_error="return")
    finally:
        marker.unlink(missing_ok=True)
    for worker, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            raise ClusterError(
                f"worker {worker} cannot run netvigil ({type(answer).__name__}: {answer}); "
                "start the workers from netvigil's environment"
            )
        version, sees_out = answer
        if version != netvigil.__version__:
            raise ClusterError(
                f"worker {worker} runs netvigil {version}, this client {netvigil.__version__}"
            )
        if not sees_out:
            raise ClusterError(
                f"worker {worker} does not see {out}: the cluster must share this filesystem "
                "at the same path"
            )
    return sorted(answers)


def run_on_cluster(
    srcs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    address: str,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    connect_timeout: float = 15.0,
    quiet: bool = True,
) -> RunSummary:
    """The local engine's run on the Dask cluster at `address` (``tcp://host:8786``).

    Discovers `srcs` here, prepares `out_dir` (``--overwrite`` as for ``run_local``), checks
    that every worker runs this netvigil and sees `out_dir`, runs ``process_files`` on
    balanced batches of files, reports ``progress(files_done, files_total, measurements)`` as
    batches finish, writes ``OUT/ingest.json``, then the aggregates computed on the cluster
    (``aggregate_dask``) and the events. Returns the summary (``engine="dask"``).

    Problems the user can fix (no scheduler there, no workers, workers without netvigil or
    without the shared filesystem, a batch that failed) raise ``ClusterError``, a
    ``PipelineInputError`` with a one-line message. Dask's own logging is held at ERROR
    unless `quiet` is false.
    """
    started = time.monotonic()
    # Absolute paths: a worker's working directory is not the client's. ``name`` (the
    # ``source`` column) stays relative to its ingest root, as in a local run.
    files = [dataclasses.replace(f, path=os.path.abspath(f.path)) for f in discover(srcs)]
    if not files:
        raise PipelineInputError("no measurement files found in the given paths")
    if "://" not in address:
        address = "tcp://" + address  # host:port, as ``dask worker`` takes it
    with _quiet_dask(quiet):
        client = _connect(address, connect_timeout)
        try:
            out = prepare_out_dir(out_dir, overwrite).resolve()
            workers = _check_workers(client, address, out, connect_timeout)
            threads = sum(client.nthreads().values()) or len(workers)  # type: ignore[no-untyped-call]
            reports = _process_on_cluster(client, files, out, threads, progress)
            summary = RunSummary(
                files=reports,
                seconds=time.monotonic() - started,
                engine="dask",
                out_dir=str(out),
                workers=len(workers),
            )
            record_duplicates(out, summary)
            write_ingest(out, summary)
            tables = aggregate_dask(out, client)
        finally:
            # A cluster that died mid-run may not answer the goodbye: that must not hide the
            # error that ended the run.
            with contextlib.suppress(OSError, TimeoutError):
                client.close(timeout=connect_timeout)  # type: ignore[no-untyped-call]
    tables["events"] = detect_events(tables["daily"])
    write_aggregates(out, tables)
    summary.seconds = time.monotonic() - started
    return summary


def _process_on_cluster(
    client: Client,
    files: Sequence[SourceFile],
    out: Path,
    threads: int,
    progress: Progress | None,
) -> list[FileReport]:
    """``process_files`` over balanced batches on the cluster; the reports in discovery order."""
    batches = balanced_batches(files, lambda f: f.size, _batch_count(files, threads))
    # Distinct writer ids ("d" for Dask, never the local engine's "l"): no two tasks write the
    # same file. A batch that Dask re-runs after losing its worker keeps its id and rewrites
    # the same file names with the same rows (processing is deterministic), so a retry cannot
    # leave duplicates behind.
    futures = client.map(
        process_files,
        batches,
        [out] * len(batches),
        [f"d{index:05d}" for index in range(len(batches))],
        pure=False,
    )
    batch_of = {future.key: batch for future, batch in zip(futures, batches, strict=True)}
    position = {f: i for i, f in enumerate(files)}
    done_files = 0
    done_measurements = 0
    reports: list[tuple[int, FileReport]] = []
    try:
        for future in as_completed(futures, loop=client.loop):  # type: ignore[no-untyped-call]
            try:
                batch_reports: list[FileReport] = future.result()
            except Exception as exc:
                detail = str(exc).splitlines()[0] if str(exc) else ""
                raise ClusterError(
                    f"a batch failed on the cluster ({type(exc).__name__}: {detail})"
                ) from exc
            # process_files returns one report per file, in the batch's order.
            batch = batch_of[future.key]
            reports.extend((position[f], r) for f, r in zip(batch, batch_reports, strict=True))
            done_files += len(batch_reports)
            done_measurements += sum(r.measurements for r in batch_reports)
            if progress is not None:
                progress(done_files, len(files), done_measurements)
    finally:
        client.cancel(futures)  # type: ignore[no-untyped-call]
    # Discovery order, as the local engine reports them (by position: two inputs may share a
    # relative name).
    return [report for _, report in sorted(reports, key=lambda pair: pair[0])]
