"""Aggregates over the verdicts table, and event detection.

``aggregate_duckdb(OUT)`` reads ``OUT/verdicts/day=*/*.parquet`` with DuckDB (embedded, the
default engine) and computes the tables of ``schema.AGGREGATE_SCHEMAS``:

``daily``       per country × network × domain × day: measurements, blocked, ok, offline, and the mean
                confidence of the blocked measurements (0.0 when none), rounded to 6 places.
``outcomes``    per country × network × domain × day × outcome: count.
``techniques``  per country × network × domain × blocked outcome: first and last
                ``measurement_start_time`` and count.

``apps``        per country × network × messaging app × endpoint × day: measurements,
                blocked, ok (from ``OUT/endpoints``; endpoint "*" is the app as a whole).

``detect_events(daily)`` flags the sudden onset of blocking (the ``events`` table);
``write_aggregates`` writes them all to ``OUT/aggregates/<name>.parquet`` atomically;
``build_aggregates`` does the three in a row (the local engine calls it after the transform).

Decisions, so that every engine computes the same thing:

- **Each measurement once** (``DEDUP_ORDER``, ``unique_verdicts_sql``). The same measurement
  often reaches a run twice: OONI's published file and our collector's store, or the same
  ``.jsonl.gz`` given twice or found in two folders. Its copies are separate verdict rows,
  written by different workers into different Parquet files (maybe different ``day``
  partitions, if the copies disagree on the start time), so they can only be told apart here,
  when all files are read. *Identity is ``measurement_uid`` alone*: OONI's unique id, else the
  collector's (unique per content), else ``"nv" + sha256`` of the record's bytes (see
  ``transform._envelope``); two rows sharing it are the same measurement, even when their
  contents differ (a re-processed or enriched copy). Adding more columns to the identity would
  only let such differing copies be counted twice. *The winner* among the copies of one uid is
  the first in ``DEDUP_ORDER`` — ``source`` (the file's name relative to its ingest root), then
  the columns the aggregates read — compared in byte order of UTF-8, ascending. It depends on
  the rows only, never on file names, writers or the order of the inputs, so both engines, any
  batching and any argument order pick copies equal in every aggregated column. Copies are
  removed *before* the row filter below: a measurement counts (or not) by its winning copy.
  Limits: copies that do not share a uid are not recognised (a measurement without its own
  uid gets the collector's uid from the store but a content hash from a file).
  ``count_duplicates`` / ``duplicate_stats`` say how many copies a run held.
- **Which rows** (``AGGREGATED_ROWS_SQL``). Rows with ``domain == ''`` (tests without a URL
  input: ``ndt``, ``tor``, ``signal``…) are left out: these tables are about *sites*, and an
  empty domain would otherwise mix unrelated tests into one pseudo-site. Rows whose outcome is
  ``unsupported`` (tests the verdict engine does not judge: ``urlgetter``, ``http_requests``…)
  are left out too: they say nothing about blocking and would dilute the blocked share.
- **Which day.** ``day`` is read from the hive partition (``day=YYYY-MM-DD``), which the writer
  derives from ``measurement_start_time`` in UTC; DuckDB may infer it as DATE or VARCHAR, so it
  is cast to DATE explicitly.
- **Blocked.** A row is blocked when the verdict's ``blocked`` column is true (the verdict engine
  decides; ``ok`` counts the rows whose outcome is exactly ``ok``, ``offline`` those whose
  outcome is ``network/offline`` or ``network/degraded`` — the probe's own network failed,
  never a block — so ``measurements - blocked - ok - offline`` is the rest: down, unknown,
  captive-portal). The event rule leaves ``offline`` out (``judged_measurements``).
- **Exact confidence mean.** A float sum depends on the order of addition (DuckDB sums in
  parallel; Dask by partitions), and rounding to 6 places turns a last-bit difference into a
  different value at a tie. So each confidence is first made an integer number of nano-units
  (``round_even(confidence * 1e9)``), those integers are summed (exact, in any order), and
  ``finish_daily`` divides and rounds half-to-even with integer arithmetic. Any engine that
  produces the decomposable parts (``DAILY_PARTS_SCHEMA``) and calls ``finish_daily`` gets the
  same bits.
- **Order and types.** Every table is cast to its schema and sorted by ``SORT_KEYS`` with
  pyarrow (byte order of UTF-8), in ``finalize``; engines should call it too.

- **Messaging apps** (``apps``). Read from ``OUT/endpoints`` (``ENDPOINT_SCHEMA``), one row per
  endpoint of each messaging measurement. A measurement's copies are told apart as above, per
  endpoint: of the rows sharing ``measurement_uid``, ``app`` and ``endpoint`` the first in
  ``APP_DEDUP_ORDER`` counts. No row filter: every endpoint row is about an app.

Country-wide totals (all networks of a country) are not a separate table: ``probe_asn = 0``
already means "unknown network" in the row tables, so reusing it for "all networks" would be
ambiguous. ``netvigil query`` sums over networks when no ``--asn`` is given.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schema import AGGREGATE_SCHEMAS, ONSET_SCHEMA, SORT_KEYS

# The verdict rows the aggregates count (see "Which rows" above); every engine filters alike.
AGGREGATED_ROWS_SQL = "domain <> '' AND outcome <> 'unsupported'"

__all__ = [
    "AGGREGATED_ROWS_SQL",
    "APP_DEDUP_ORDER",
    "APP_KEYS",
    "DAILY_PARTS_SCHEMA",
    "DEDUP_ORDER",
    "aggregate_apps_duckdb",
    "aggregate_duckdb",
    "build_aggregates",
    "count_duplicates",
    "detect_events",
    "detect_onsets",
    "duplicate_stats",
    "empty_table",
    "endpoint_files",
    "finalize",
    "finish_daily",
    "judged_measurements",
    "onset_p_value",
    "partitioned_parquet_sql",
    "unique_verdicts_sql",
    "verdict_files",
    "write_aggregates",
]

# Which copy of a measurement (rows sharing ``measurement_uid``) the aggregates count: the first
# in this order, ascending (strings in byte order of UTF-8, false before true). ``source``
# first: the copy from the file whose name sorts first wins, a rule a reader can apply by hand.
# Then every column the aggregates read (``day`` is the hive partition, derived from
# ``measurement_start_time``), so copies tied on the whole key contribute exactly the same to
# every aggregate: whichever of them an engine keeps, the tables are the same bits.
# Every engine must use this order (``dask_engine`` does, independently of SQL).
DEDUP_ORDER = (
    "source",
    "measurement_start_time",
    "day",
    "probe_cc",
    "probe_asn",
    "domain",
    "outcome",
    "blocked",
    "confidence",
)

# Which copy of a messaging endpoint row counts (rows sharing measurement_uid, app, endpoint):
# the first in this order, ascending, as DEDUP_ORDER does for verdicts.
APP_DEDUP_ORDER = (
    "source",
    "measurement_start_time",
    "day",
    "probe_cc",
    "probe_asn",
    "outcome",
    "blocked",
    "kind",
)
APP_KEYS = ("measurement_uid", "app", "endpoint")

# What an engine computes for ``daily`` before ``finish_daily``: all sums, so partial results
# from any split of the input merge by adding. ``confidence_nanos`` is the sum over blocked rows
# of round_half_even(confidence * 1e9).
# Derived from ``daily`` so the two cannot drift apart: the same columns, with the mean
# replaced by its exact sum.
DAILY_PARTS_SCHEMA = (
    AGGREGATE_SCHEMAS["daily"]
    .remove(AGGREGATE_SCHEMAS["daily"].get_field_index("confidence_mean"))
    .append(pa.field("confidence_nanos", pa.int64(), nullable=False))
)

# Default thresholds of ``detect_events``, and why:
# - 7 baseline days: a week absorbs weekday/weekend differences in who measures.
# - at least 3 baseline days with data: OONI coverage of one network is patchy; a baseline of
#   one or two days is mostly noise, and a domain first measured on the day it is blocked is not
#   an *onset* we can show.
# - at least 3 measurements on the day: one failed measurement (a flaky probe) must not make an
#   event; three agreeing ones are unlikely to all be flukes.
# - a jump of 0.5: the blocked share must rise by half of all measurements, far above the noise
#   of a per-measurement false-positive rate of a few percent, and it implies the day is
#   mostly blocked (share ≥ 0.5).
# - a p-value of at most 0.05 (one-sided Fisher's exact test of the day against its baseline):
#   the jump alone flags small samples that chance explains (a domain blocked in 6 of 13
#   baseline measurements, then in 4 of 4: p = 0.088), while a real onset on a handful of
#   measurements passes easily (0 of 9, then 3 of 3: p = 0.0045).
DEFAULT_BASELINE_DAYS = 7
DEFAULT_MIN_MEASUREMENTS = 3
DEFAULT_MIN_BASELINE_DAYS = 3
DEFAULT_JUMP = 0.5
DEFAULT_MAX_P = 0.05
# Up to this many measurements (day + baseline) the p-value is computed in exact integers, so
# the flag cannot depend on a platform's floating point; above it, in log-gamma floats.
EXACT_P_MAX_N = 5000

_NANOS = 1_000_000_000
_PLACES = 1_000_000  # confidence_mean has 6 decimal places


def empty_table(name: str) -> pa.Table:
    """An empty table with the schema of aggregate ``name``."""
    return AGGREGATE_SCHEMAS[name].empty_table()


def finalize(name: str, table: pa.Table, *, presorted: bool = False) -> pa.Table:
    """Cast ``table`` to ``AGGREGATE_SCHEMAS[name]`` (columns in schema order) and sort it.

    ``presorted``: the caller already sorted by ``SORT_KEYS[name]`` ascending in byte order of
    UTF-8 (DuckDB's default binary collation), so the sort is skipped.
    """
    schema = AGGREGATE_SCHEMAS[name]
    table = table.select(schema.names).cast(schema)
    if table.num_rows == 0 or presorted:
        return table.combine_chunks()
    return table.sort_by([(key, "ascending") for key in SORT_KEYS[name]]).combine_chunks()


def finish_daily(parts: pa.Table, *, presorted: bool = False) -> pa.Table:
    """``daily`` from its decomposable parts (``DAILY_PARTS_SCHEMA``), exactly.

    confidence_mean = round_half_even(confidence_nanos / blocked / 1e9, 6 places), computed with
    integers, then made the nearest float; 0.0 when nothing was blocked.
    """
    parts = parts.select(DAILY_PARTS_SCHEMA.names).cast(DAILY_PARTS_SCHEMA)
    # Integer arithmetic throughout (pyarrow.compute; dividing non-negative int64 floors).
    zero, one, two = (pa.scalar(v, pa.int64()) for v in (0, 1, 2))
    nanos = parts.column("confidence_nanos")
    blocked = parts.column("blocked")
    has_blocked = pc.greater(blocked, zero)
    # mean in millionths = nanos / (blocked * 1000), rounded half to even
    denom = pc.if_else(
        has_blocked, pc.multiply(blocked, pa.scalar(_NANOS // _PLACES, pa.int64())), one
    )
    quot = pc.divide(nanos, denom)
    twice_rem = pc.multiply(pc.subtract(nanos, pc.multiply(quot, denom)), two)
    round_up = pc.or_(
        pc.greater(twice_rem, denom),
        pc.and_(pc.equal(twice_rem, denom), pc.equal(pc.bit_wise_and(quot, one), one)),
    )
    millionths = pc.if_else(has_blocked, pc.add(quot, pc.cast(round_up, pa.int64())), zero)
    # IEEE division is correctly rounded: the same float in any engine or language
    mean = pc.divide(pc.cast(millionths, pa.float64()), pa.scalar(float(_PLACES), pa.float64()))
    daily = parts.drop_columns(["confidence_nanos"]).append_column("confidence_mean", mean)
    return finalize("daily", daily, presorted=presorted)


def verdict_files(out_dir: Path) -> list[Path]:
    """The verdict Parquet files of a pipeline output, in a stable order.

    Only ``verdicts/day=*/*.parquet``; names starting with ``.`` or ``_`` are writers' temporary
    files or metadata and are skipped.
    """
    base = Path(out_dir) / "verdicts"
    if not base.is_dir():
        return []
    return sorted(
        path
        for path in base.glob("day=*/*.parquet")
        if path.is_file() and not path.name.startswith((".", "_"))
    )


def endpoint_files(out_dir: Path) -> list[Path]:
    """The messaging endpoint Parquet files of a pipeline output (``endpoints/day=*``)."""
    base = Path(out_dir) / "endpoints"
    if not base.is_dir():
        return []
    return sorted(
        path
        for path in base.glob("day=*/*.parquet")
        if path.is_file() and not path.name.startswith((".", "_"))
    )


def _apps_sql(files: Sequence[Path]) -> str:
    keys = ", ".join(f'"{name}"' for name in APP_DEDUP_ORDER)
    return f"""
SELECT probe_cc, probe_asn, app, endpoint, day,
       count(*) AS measurements,
       count(*) FILTER (WHERE blocked) AS blocked,
       count(*) FILTER (WHERE outcome = 'ok') AS ok
FROM (
    SELECT * FROM {partitioned_parquet_sql(files)}
    QUALIFY row_number() OVER (PARTITION BY measurement_uid, app, endpoint ORDER BY {keys}) = 1
)
GROUP BY ALL
ORDER BY probe_cc, probe_asn, app, endpoint, day
"""


def aggregate_apps_duckdb(out_dir: Path) -> pa.Table:
    """``apps`` from ``OUT/endpoints`` with DuckDB (empty when there are no endpoint rows)."""
    import duckdb

    files = endpoint_files(Path(out_dir))
    if not files:
        return empty_table("apps")
    con = duckdb.connect(":memory:")
    try:
        table = con.sql(_apps_sql(files)).to_arrow_table()
    finally:
        con.close()
    return finalize("apps", table)  # pyarrow sorts: a few rows, no need to trust SQL's order


def _sql_list(paths: Sequence[Path]) -> str:
    quoted = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
    return f"[{quoted}]"


def partitioned_parquet_sql(paths: Sequence[Path]) -> str:
    """A DuckDB ``FROM`` item reading hive-partitioned files, ``day`` as DATE from the partition."""
    return (
        "(SELECT * REPLACE (CAST(day AS DATE) AS day) FROM read_parquet("
        f"{_sql_list(paths)}, hive_partitioning = true, union_by_name = true))"
    )


# Verdict columns the aggregates read: the dedup key and the aggregated columns.
_AGG_COLUMNS = ("measurement_uid", *DEDUP_ORDER)


def _duplicates_sql(copies: str) -> str:
    """The uids of ``copies`` that may occur more than once: all that do, plus (rarely) a few
    whose 64-bit hash collides with another's (harmless: a lone row is its own winner).
    Grouping by the hash rather than the text is cheaper, and the common case, no copies at
    all, then costs one hash aggregation."""
    return (
        f"SELECT measurement_uid FROM {copies} WHERE hash(measurement_uid) IN "
        f"(SELECT hash(measurement_uid) AS h FROM {copies} GROUP BY h HAVING count(*) > 1)"
    )


def unique_verdicts_sql(
    copies: str, *, duplicates: str | None = None, order: Sequence[str] = DEDUP_ORDER
) -> str:
    """A DuckDB ``SELECT`` of one row per ``measurement_uid`` of ``copies`` (a view or table
    name, or a parenthesised ``FROM`` item with at least ``measurement_uid`` and ``order``'s
    columns): the rows whose uid occurs once as they are, and of each repeated uid the first
    copy in ``order`` (see ``DEDUP_ORDER``; give a longer order for a winner fixed in every
    column). ``duplicates``: a table of candidate uids already computed from ``copies``
    (``_duplicates_sql``); else they are computed inline.

    Only the candidates are sorted: a window over every row would cost about four times the
    aggregates themselves.
    """
    keys = ", ".join(f'"{name}"' for name in order)
    dups = duplicates or f"({_duplicates_sql(copies)})"
    return (
        f"SELECT * FROM {copies} ANTI JOIN {dups} d USING (measurement_uid) "
        "UNION ALL "
        f"SELECT * FROM (SELECT * FROM {copies} SEMI JOIN {dups} d USING (measurement_uid)) "
        f"QUALIFY row_number() OVER (PARTITION BY measurement_uid ORDER BY {keys}) = 1"
    )


_DAILY_PARTS_SQL = """
SELECT probe_cc, probe_asn, domain, day,
       count(*) AS measurements,
       count(*) FILTER (WHERE blocked) AS blocked,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       count(*) FILTER (WHERE outcome LIKE 'network/%') AS offline,
       coalesce(sum(CAST(round_even(confidence * 1e9, 0) AS BIGINT)) FILTER (WHERE blocked), 0)
           AS confidence_nanos
FROM v GROUP BY ALL
ORDER BY probe_cc, probe_asn, domain, day
"""

_OUTCOMES_SQL = """
SELECT probe_cc, probe_asn, domain, day, outcome, count(*) AS count
FROM v GROUP BY ALL
ORDER BY probe_cc, probe_asn, domain, day, outcome
"""

_TECHNIQUES_SQL = """
SELECT probe_cc, probe_asn, domain, outcome,
       min(measurement_start_time) AS first_seen,
       max(measurement_start_time) AS last_seen,
       count(*) AS count
FROM v WHERE blocked GROUP BY ALL
ORDER BY probe_cc, probe_asn, domain, outcome
"""


def aggregate_duckdb(out_dir: Path, *, threads: int | None = None) -> dict[str, pa.Table]:
    """``daily``, ``outcomes`` and ``techniques`` from ``OUT/verdicts``, and ``apps`` from
    ``OUT/endpoints``, with DuckDB.

    Empty tables (with the right schemas) when there are no verdict files.
    """
    import duckdb

    files = verdict_files(Path(out_dir))
    apps = aggregate_apps_duckdb(Path(out_dir))
    if not files:
        out = {name: empty_table(name) for name in ("daily", "outcomes", "techniques")}
        out["apps"] = apps
        return out
    con = duckdb.connect(":memory:")
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        # The three queries sort in SQL (parallel, and binary collation = the byte order pyarrow
        # uses), so ``finalize`` need not sort again. Views rather than temp tables: each query
        # pushes its projection down to the Parquet reader and nothing is held in memory but
        # the uids that repeat (``dups``, computed once). Copies are dropped before the row
        # filter (module notes).
        columns = ", ".join(_AGG_COLUMNS)
        con.execute(
            f"CREATE TEMP VIEW copies AS SELECT {columns} FROM {partitioned_parquet_sql(files)}"
        )
        con.execute(f"CREATE TEMP TABLE dups AS {_duplicates_sql('copies')}")
        # No repeated uid (the common case): the copies are the measurements, no join needed.
        has_dups = con.execute("SELECT EXISTS (SELECT 1 FROM dups)").fetchall()[0][0]
        unique = f"({unique_verdicts_sql('copies', duplicates='dups')})" if has_dups else "copies"
        con.execute(f"CREATE TEMP VIEW v AS SELECT * FROM {unique} WHERE {AGGREGATED_ROWS_SQL}")
        parts = con.sql(_DAILY_PARTS_SQL).to_arrow_table()
        outcomes = con.sql(_OUTCOMES_SQL).to_arrow_table()
        techniques = con.sql(_TECHNIQUES_SQL).to_arrow_table()
    finally:
        con.close()
    return {
        "daily": finish_daily(parts, presorted=True),
        "outcomes": finalize("outcomes", outcomes, presorted=True),
        "techniques": finalize("techniques", techniques, presorted=True),
        "apps": apps,
    }


def duplicate_stats(out_dir: Path) -> dict[str, int]:
    """How many measurements of ``OUT/verdicts`` came more than once (over every verdict row,
    before the aggregates' row filter).

    ``rows``: verdict rows; ``measurements``: distinct ``measurement_uid``; ``duplicates``:
    rows beyond the first of their uid (``rows - measurements``, what the aggregates and
    ``netvigil query`` leave out); ``duplicated``: uids with more than one row;
    ``conflicting``: of those, uids whose copies disagree in a column the aggregates read
    (start time, country, network, domain, outcome, blocked, confidence) — the ones where
    ``DEDUP_ORDER`` decided what counts. All zero without verdict files.
    """
    import duckdb

    files = verdict_files(Path(out_dir))
    if not files:
        return dict.fromkeys(("rows", "measurements", "duplicates", "duplicated", "conflicting"), 0)
    aggregated = [name for name in DEDUP_ORDER if name not in ("source", "day")]
    distinct = ", ".join(aggregated)
    con = duckdb.connect(":memory:")
    try:
        con.execute(
            f"CREATE TEMP VIEW copies AS SELECT measurement_uid, {distinct} "
            f"FROM {partitioned_parquet_sql(files)}"
        )
        con.execute(f"CREATE TEMP TABLE dups AS {_duplicates_sql('copies')}")
        rows, measurements = con.execute(
            "SELECT count(*), count(DISTINCT measurement_uid) FROM copies"
        ).fetchall()[0]
        duplicated, conflicting = con.execute(
            f"""
            SELECT count(*), count(*) FILTER (WHERE versions > 1) FROM (
                SELECT measurement_uid, count(*) AS n, count(DISTINCT ({distinct})) AS versions
                FROM copies SEMI JOIN dups USING (measurement_uid) GROUP BY measurement_uid
            ) WHERE n > 1
            """
        ).fetchall()[0]
    finally:
        con.close()
    return {
        "rows": int(rows),
        "measurements": int(measurements),
        "duplicates": int(rows) - int(measurements),
        "duplicated": int(duplicated),
        "conflicting": int(conflicting),
    }


def count_duplicates(out_dir: Path) -> int:
    """Verdict rows of ``OUT`` that repeat a measurement already counted (same
    ``measurement_uid``): what the aggregates left out. 0 when there are none, or no verdicts.
    For ``ingest.json``, so every run pays it: one pass over the uid column (``duplicate_stats``
    tells more, at the cost of more passes)."""
    import duckdb

    files = verdict_files(Path(out_dir))
    if not files:
        return 0
    con = duckdb.connect(":memory:")
    try:
        row = con.execute(
            "SELECT count(*) - count(DISTINCT measurement_uid) "
            f"FROM {partitioned_parquet_sql(files)}"
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def judged_measurements(daily: pa.Table) -> list[int]:
    """Per ``daily`` row, the measurements that judged the site: all but those the network's
    own failure decided (``offline``; a table without the column, from an older run, has
    none). An offline day is then a day without measurements: it neither fires an onset nor
    breaks one, nor dilutes a baseline."""
    measured = daily.column("measurements").to_pylist()
    if "offline" not in daily.column_names:
        return [int(m) for m in measured]
    offline = daily.column("offline").to_pylist()
    return [int(m) - int(o or 0) for m, o in zip(measured, offline, strict=True)]


def detect_events(
    daily: pa.Table,
    *,
    baseline_days: int = DEFAULT_BASELINE_DAYS,
    min_measurements: int = DEFAULT_MIN_MEASUREMENTS,
    min_baseline_days: int = DEFAULT_MIN_BASELINE_DAYS,
    jump: float = DEFAULT_JUMP,
    max_p: float = DEFAULT_MAX_P,
) -> pa.Table:
    """Flag days of sudden onset of blocking per country × network × domain (``events``).

    Measurements are those that judged the site (``judged_measurements``: not ``offline``).
    Day D is flagged when: D has at least ``min_measurements`` measurements; among the
    ``baseline_days`` calendar days before D (D-baseline_days … D-1) at least
    ``min_baseline_days`` have measurements; blocked/measurements on D is at least the
    baseline share + ``jump``, where the baseline share pools those days
    (Σ blocked / Σ measurements); and the rise is unlikely to be chance: the one-sided p-value
    of Fisher's exact test (``onset_p_value``) is at most ``max_p``. The comparisons are exact
    (rationals; ``jump`` and ``max_p`` are taken as the decimals they print as; the p-value in
    integers up to ``EXACT_P_MAX_N`` measurements), so nothing depends on rounding.

    Persistent blocking is flagged on its first day and, while the baseline still mostly
    predates it, on the next few days too: ``detect_onsets`` folds those days into one onset
    (what ``netvigil query --what events`` and ``netvigil report`` show).

    Pure: no engine, no I/O; the same ``daily`` gives the same table.
    """
    if baseline_days < 1 or min_baseline_days < 1 or min_baseline_days > baseline_days:
        raise ValueError("need 1 <= min_baseline_days <= baseline_days")
    if min_measurements < 1:
        raise ValueError("min_measurements must be at least 1")
    if not 0 < jump <= 1:
        raise ValueError("jump must be in (0, 1]")
    if not 0 < max_p <= 1:
        raise ValueError("max_p must be in (0, 1]")
    p_limit = Fraction(repr(float(max_p)))
    threshold = Fraction(repr(float(jump)))
    jump_num, jump_den = threshold.numerator, threshold.denominator
    # Days as integers (days since 1970-01-01): cheaper than date objects, exact calendar math.
    cols = daily.select(["probe_cc", "probe_asn", "domain", "day", "blocked"])
    day_numbers = cols.column("day").cast(pa.int32()).to_pylist()
    series: dict[tuple[str, int, str], dict[int, list[int]]] = defaultdict(dict)
    for cc, asn, domain, day, measured, blocked in zip(
        cols.column("probe_cc").to_pylist(),
        cols.column("probe_asn").to_pylist(),
        cols.column("domain").to_pylist(),
        day_numbers,
        judged_measurements(daily),
        cols.column("blocked").to_pylist(),
        strict=True,
    ):
        if not measured:
            continue
        # a daily table is unique per key and day; add up defensively if it is not
        counts = series[(cc, asn, domain)].setdefault(day, [0, 0])
        counts[0] += measured
        counts[1] += blocked

    flagged: list[tuple[str, int, str, int, Fraction, Fraction, int, int, float]] = []
    for key in sorted(series):
        by_day = series[key]
        days = sorted(by_day)
        measured_at = [by_day[d][0] for d in days]
        blocked_at = [by_day[d][1] for d in days]
        # Two pointers over the sorted days: days[lo:i] are the days in [D - baseline_days, D),
        # with running sums of their counts.
        lo = 0
        base_measured = base_blocked = 0
        for i, day in enumerate(days):
            while days[lo] < day - baseline_days:
                base_measured -= measured_at[lo]
                base_blocked -= blocked_at[lo]
                lo += 1
            window = i - lo
            measured, blocked = measured_at[i], blocked_at[i]
            if measured >= min_measurements and window >= min_baseline_days:
                # blocked/measured >= base_blocked/base_measured + p/q, in integers
                lhs = blocked * base_measured * jump_den
                rhs = base_blocked * measured * jump_den + jump_num * measured * base_measured
                p_value = (
                    onset_p_value(blocked, measured, base_blocked, base_measured)
                    if lhs >= rhs
                    else None
                )
                if p_value is not None and p_value <= p_limit:
                    flagged.append(
                        (
                            *key,
                            day,
                            Fraction(blocked, measured),
                            Fraction(base_blocked, base_measured),
                            window,
                            measured,
                            float(p_value),
                        )
                    )
            base_measured += measured
            base_blocked += blocked

    rows: dict[str, list[object]] = {name: [] for name in AGGREGATE_SCHEMAS["events"].names}
    epoch = dt.date(1970, 1, 1)
    for cc, asn, domain, day, share, base_share, window, measured, p_float in flagged:
        for name, value in zip(
            rows,
            (
                cc,
                asn,
                domain,
                epoch + dt.timedelta(days=day),
                float(share),
                float(base_share),
                window,
                measured,
                p_float,
            ),
            strict=True,
        ):
            rows[name].append(value)
    return finalize("events", pa.table(rows, schema=AGGREGATE_SCHEMAS["events"]))


def detect_onsets(events: pa.Table, daily: pa.Table, *, jump: float = DEFAULT_JUMP) -> pa.Table:
    """One row per onset of blocking (``schema.ONSET_SCHEMA``), from ``events`` and ``daily``.

    ``detect_events`` flags a day and, while the baseline still predates the blocking, the days
    after it as well: the demo's 8 onsets are 30 flagged days. An onset starts on a flagged day
    and *holds* on each following measured day (days without measurements are skipped, not a
    break) whose blocked share is still at least the onset's baseline share + ``jump`` (the
    rule that flagged it; exact, in integers). It ends on the last day it held (``end``), or
    is ongoing (``end`` null) when it held on the last measured day of its country, network
    and domain. A flagged day while an onset holds belongs to it; one after it ended starts a
    new onset. ``peak_share`` is the highest daily share while it held, ``p_value`` and
    ``baseline_share`` are the onset day's.

    Pure, and it reads only tables every engine writes identically, so onsets are the same
    whichever engine ran. ``daily`` may hold more keys than ``events`` (only theirs are read).
    """
    threshold = Fraction(repr(float(jump)))
    flagged: dict[tuple[str, int, str], dict[int, tuple[Fraction, float]]] = defaultdict(dict)
    ev = events.select(["probe_cc", "probe_asn", "domain", "day", "baseline_share", "p_value"])
    for cc, asn, domain, day, base, p_value in zip(
        ev.column("probe_cc").to_pylist(),
        ev.column("probe_asn").to_pylist(),
        ev.column("domain").to_pylist(),
        ev.column("day").cast(pa.int32()).to_pylist(),
        ev.column("baseline_share").to_pylist(),
        ev.column("p_value").to_pylist(),
        strict=True,
    ):
        # baseline_share is the float of an exact ratio; its repr is the decimal it stands for
        flagged[(cc, asn, domain)][day] = (Fraction(repr(float(base))), float(p_value))
    series: dict[tuple[str, int, str], dict[int, list[int]]] = defaultdict(dict)
    if flagged:
        cols = daily.select(["probe_cc", "probe_asn", "domain", "day", "blocked"])
        for cc, asn, domain, day, measured, blocked in zip(
            cols.column("probe_cc").to_pylist(),
            cols.column("probe_asn").to_pylist(),
            cols.column("domain").to_pylist(),
            cols.column("day").cast(pa.int32()).to_pylist(),
            judged_measurements(daily),
            cols.column("blocked").to_pylist(),
            strict=True,
        ):
            key = (cc, asn, domain)
            if key in flagged and measured:
                counts = series[key].setdefault(day, [0, 0])
                counts[0] += measured
                counts[1] += blocked

    epoch = dt.date(1970, 1, 1)
    rows: dict[str, list[object]] = {name: [] for name in ONSET_SCHEMA.names}

    def emit(key: tuple[str, int, str], start: int, end: int | None, held: list[int]) -> None:
        by_day = series[key]
        base, p_value = flagged[key][start]
        values = (
            *key,
            epoch + dt.timedelta(days=start),
            None if end is None else epoch + dt.timedelta(days=end),
            len(held),
            sum(by_day[d][0] for d in held),
            float(max(Fraction(by_day[d][1], by_day[d][0]) for d in held)),
            float(base),
            p_value,
        )
        for name, value in zip(rows, values, strict=True):
            rows[name].append(value)

    for key in sorted(flagged):
        by_day = series[key]
        days = sorted(by_day)
        start: int | None = None
        held: list[int] = []
        base = Fraction(0)
        for day in days:
            measured, blocked = by_day[day]
            if start is not None:
                if Fraction(blocked, measured) >= base + threshold:
                    held.append(day)
                    continue
                emit(key, start, held[-1], held)
                start = None
            if day in flagged[key]:
                start, held, base = day, [day], flagged[key][day][0]
        if start is not None:
            emit(key, start, None, held)
    table = pa.table(rows, schema=ONSET_SCHEMA)
    if table.num_rows == 0:
        return table
    return table.sort_by(
        [(k, "ascending") for k in ("start", "probe_cc", "probe_asn", "domain")]
    ).combine_chunks()


def onset_p_value(blocked: int, measured: int, base_blocked: int, base_measured: int) -> Fraction:
    """One-sided p-value of Fisher's exact test that day D's blocked share exceeds its
    baseline's: with the day's and the baseline's measurements pooled and the total blocked
    fixed, the probability that D would hold ``blocked`` or more of them by chance (the
    hypergeometric upper tail). Counts are integers, ``0 <= blocked <= measured`` and likewise
    for the baseline.

    Exact (a ``Fraction``) up to ``EXACT_P_MAX_N`` measurements in all; above, computed in
    log-gamma floating point and returned as the Fraction of that float.
    """
    total = measured + base_measured
    total_blocked = blocked + base_blocked
    top = min(measured, total_blocked)
    if blocked > top:
        return Fraction(0)
    if total <= EXACT_P_MAX_N:
        # Σ_x C(K, x) C(N-K, n-x) / C(N, n), each term from the one before (exact integers)
        term = math.comb(total_blocked, blocked) * math.comb(
            total - total_blocked, measured - blocked
        )
        tail = 0
        for x in range(blocked, top + 1):
            tail += term
            if x < top:
                term = term * (total_blocked - x) * (measured - x)
                term //= (x + 1) * (total - total_blocked - measured + x + 1)
        return Fraction(tail, math.comb(total, measured))
    log_den = _log_comb(total, measured)
    logs = [
        _log_comb(total_blocked, x) + _log_comb(total - total_blocked, measured - x) - log_den
        for x in range(blocked, top + 1)
    ]
    peak = max(logs)
    return Fraction(min(1.0, math.exp(peak) * math.fsum(math.exp(v - peak) for v in logs)))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_aggregates(out_dir: Path, tables: dict[str, pa.Table]) -> None:
    """Write ``OUT/aggregates/<name>.parquet`` for every aggregate, atomically (temp + rename).

    Tables are cast and sorted (``finalize``); ``events`` is computed from ``daily`` with the
    default thresholds when not given; a missing table is written empty, so a reader always
    finds all four. Unknown names are an error.
    """
    unknown = sorted(set(tables) - set(AGGREGATE_SCHEMAS))
    if unknown:
        raise ValueError(f"unknown aggregate table(s): {', '.join(unknown)}")
    final = {
        name: finalize(name, tables[name]) if name in tables else empty_table(name)
        for name in AGGREGATE_SCHEMAS
    }
    if "events" not in tables:
        final["events"] = detect_events(final["daily"])
    target = Path(out_dir) / "aggregates"
    target.mkdir(parents=True, exist_ok=True)
    for name, table in final.items():
        _write_atomic(table, target / f"{name}.parquet")


def build_aggregates(out_dir: Path) -> dict[str, pa.Table]:
    """Compute every aggregate of ``OUT`` with DuckDB, detect events, write them; return them."""
    tables = aggregate_duckdb(Path(out_dir))
    tables["events"] = detect_events(tables["daily"])
    write_aggregates(Path(out_dir), tables)
    return tables
