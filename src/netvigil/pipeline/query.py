"""``netvigil query OUT``: the common questions over a pipeline's output, with DuckDB.

``--what blocked`` (default)  which domains were blocked, and how: per country and domain, the
                              blocked count and share, the outcomes, the networks, first and
                              last seen, blockpage fingerprints and interception roots
``--what timeline``           per domain and day: measurements, blocked share, outcome mix
``--what events``             onsets of blocking: start, end or ongoing, peak share, p-value
``--what networks``           per country and network: blocked share, blocked domains, outcomes
``--what outcomes``           the mix of outcomes
``--what apps``               messaging apps (telegram, whatsapp, signal, facebook_messenger):
                              per country, app and endpoint ("*": the app as a whole) the
                              measurements, blocked share, and first and last blocked day
``--what network``            periods when a probe found its own network offline or degraded
                              (``test_keys.x_network_status``), per country and network: from,
                              to, how many measurements; these measurements are never blocked
``--sql 'SELECT …'``          anything else, read-only, over the views ``verdicts``,
                              ``observations``, ``daily``, ``outcomes``, ``techniques``, ``events``,
                              ``onsets``, ``network_periods``, ``verdict_copies``, ``apps`` and
                              ``endpoints`` (the messaging endpoint rows, every copy as written)

A measurement that came more than once (same ``measurement_uid``: the same file given twice,
OONI's file and the collector's store…) counts once. ``verdicts`` holds one row per
measurement, its winning copy as the aggregates chose it (``aggregate.DEDUP_ORDER``, then the
other columns, so the row is fixed in every column); ``verdict_copies`` holds every row as
written, to look at the copies. ``observations`` is *not* deduplicated: its rows do not say
which copy they came from, so a measurement given twice has its observations twice there
(none of the questions reads it; in ``--sql``, count ``DISTINCT measurement_uid``).

Filters: ``--cc KZ --asn 9198 --domain example.org --since 2024-03-01 --until 2024-03-31``
(dates are UTC days, inclusive); ``--network offline`` (or ``online``, ``degraded``,
``unchecked``) keeps the measurements whose probe found its network so (questions read from
the verdicts: ``blocked``, ``outcomes``, ``network``). At most ``--limit`` rows are printed, and the output says when
there were more. On a terminal the table fits its width: each question's usual columns, days
without the time, long names shortened in the middle (``inje…t.kz``), one line per row;
``--wide`` shows every column in full. ``--json`` (one JSON document) and ``--csv`` print every
column and exact values.

``--what events`` lists *onsets*, one row each: its start, its end (or ``ongoing``), the peak
blocked share and the onset day's p-value (``aggregate.detect_onsets``; the ``onsets`` view).
The ``events`` view keeps every flagged day.

The aggregates are read from ``OUT/aggregates``; when the run did not write them (yet), they
are computed from the verdicts into a private temporary directory (nothing is written to
``OUT``). Exit status 2, with a one-line message, for bad input (a date, a country code, an
``OUT`` without pipeline output, a ``--sql`` that is not one read-only query). The ``--sql`` escape hatch runs in
an in-memory DuckDB whose only views are the tables above: one ``SELECT``/``WITH`` statement is
accepted (no ``COPY``, ``ATTACH``, ``CREATE``, ``SET``, ``PRAGMA``, several statements…), file
access is confined to ``OUT`` and the configuration is locked before the statement runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from netvigil.verdict.model import NOT_BLOCKED

from .aggregate import (
    AGGREGATED_ROWS_SQL,
    DEDUP_ORDER,
    aggregate_duckdb,
    detect_events,
    detect_onsets,
    partitioned_parquet_sql,
    unique_verdicts_sql,
    verdict_files,
)
from .options import DEFAULT_LIMIT, MAX_LIMIT, NETWORK_STATUSES, QUESTIONS
from .schema import AGGREGATE_SCHEMAS, ENDPOINT_SCHEMA, OBSERVATION_SCHEMA, VERDICT_SCHEMA

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "QUESTIONS",
    "Filters",
    "QueryError",
    "Result",
    "answer",
    "ask",
    "open_pipeline",
    "parse_day",
    "run",
    "run_sql",
]

VIEWS = (
    "verdicts",
    "observations",
    "daily",
    "outcomes",
    "techniques",
    "events",
    "onsets",
    "network_periods",
    "verdict_copies",
)

# Periods of a network's own status (``--what network``, the report's band): in each country
# and network, the measurements in time order (ties by status), cut into runs of one status;
# online runs are left out. A period is from its first measurement's start to its last's.
NETWORK_PERIODS_SQL = """
WITH s AS (
    SELECT probe_cc, probe_asn, measurement_start_time AS t, network_status AS status
    FROM verdicts WHERE network_status IS NOT NULL
), g AS (
    SELECT *,
           row_number() OVER (PARTITION BY probe_cc, probe_asn ORDER BY t, status)
           - row_number() OVER (PARTITION BY probe_cc, probe_asn, status ORDER BY t, status)
           AS run
    FROM s
)
SELECT probe_cc, probe_asn, status, min(t) AS start, max(t) AS "end",
       count(*) AS measurements, CAST(min(t) AS DATE) AS first_day, CAST(max(t) AS DATE) AS last_day
FROM g WHERE status <> 'online'
GROUP BY probe_cc, probe_asn, status, run
"""

# The winning copy of a measurement in the ``verdicts`` view: ``aggregate``'s order (so the
# view and the aggregates count the same copy), then every other column, so that even copies
# that tie there give one fixed row.
_VIEW_ORDER = (*DEDUP_ORDER, *(name for name in VERDICT_SCHEMA.names if name not in DEDUP_ORDER))


class QueryError(Exception):
    """Bad input or an OUT without pipeline output: a one-line message, exit status 2."""


@dataclasses.dataclass(frozen=True)
class Filters:
    cc: str | None = None
    asn: int | None = None
    domain: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    network: str | None = None  # a network status (options.NETWORK_STATUSES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cc": self.cc,
            "asn": self.asn,
            "domain": self.domain,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "network": self.network,
        }

    def network_where(self) -> tuple[str, list[Any]]:
        """The ``--network`` condition on verdict rows (``TRUE`` without it)."""
        if self.network is None:
            return "TRUE", []
        if self.network == "unchecked":
            return "network_status IS NULL", []
        return "network_status = ?", [self.network]

    def where(self, *, day: str = "day", with_cc_asn: bool = True) -> tuple[str, list[Any]]:
        """A SQL condition (``TRUE`` when nothing is filtered) and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if with_cc_asn and self.cc is not None:
            clauses.append("probe_cc = ?")
            params.append(self.cc)
        if with_cc_asn and self.asn is not None:
            clauses.append("probe_asn = ?")
            params.append(self.asn)
        if self.domain is not None:
            clauses.append("domain = ?")
            params.append(self.domain)
        if self.since is not None:
            clauses.append(f"{day} >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{day} <= ?")
            params.append(self.until)
        return (" AND ".join(clauses) or "TRUE"), params


@dataclasses.dataclass
class Result:
    what: str
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool
    filters: Filters = dataclasses.field(default_factory=Filters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "filters": self.filters.to_dict(),
            "columns": self.columns,
            "rows": [{k: _jsonable(v) for k, v in row.items()} for row in self.rows],
            "truncated": self.truncated,
        }


def parse_day(text: str, what: str = "date") -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"bad {what} {text!r}: expected YYYY-MM-DD") from None


def parse_asn(text: str) -> int:
    raw = text.strip().upper().removeprefix("AS")
    if not raw.isdigit() or len(raw) > 10:
        raise QueryError(f"bad ASN {text!r}: expected a number like 9198 or AS9198")
    return int(raw)


def make_filters(
    cc: str | None = None,
    asn: str | int | None = None,
    domain: str | None = None,
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    network: str | None = None,
) -> Filters:
    if cc is not None and not (len(cc) == 2 and cc.isascii() and cc.isalpha()):
        raise QueryError(f"bad country code {cc!r}: expected two letters like KZ")
    since_d = parse_day(since, "--since") if isinstance(since, str) else since
    until_d = parse_day(until, "--until") if isinstance(until, str) else until
    if since_d and until_d and since_d > until_d:
        raise QueryError(f"--since {since_d} is after --until {until_d}")
    if network is not None and network not in NETWORK_STATUSES:
        raise QueryError(f"bad --network {network!r}: one of {', '.join(NETWORK_STATUSES)}")
    return Filters(
        cc=cc.upper() if cc else None,
        asn=parse_asn(asn) if isinstance(asn, str) else asn,
        domain=domain.strip().lower().rstrip(".") if domain else None,
        since=since_d,
        until=until_d,
        network=network,
    )


# --- the database --------------------------------------------------------------------------------


def _row_files(out: Path, table: str) -> list[Path]:
    if table == "verdicts":
        return verdict_files(out)
    base = out / table
    if not base.is_dir():
        return []
    return sorted(
        p for p in base.glob("day=*/*.parquet") if p.is_file() and not p.name.startswith((".", "_"))
    )


def has_pipeline_output(out: Path) -> bool:
    return bool(verdict_files(out)) or (out / "verdicts").is_dir() or (out / "aggregates").is_dir()


_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.bool_(): "BOOLEAN",
    pa.float64(): "DOUBLE",
    pa.date32(): "DATE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def _empty_select(schema: pa.Schema) -> str:
    """A typed, empty SELECT with the columns of ``schema``.

    Handing DuckDB a pyarrow table (``register``/``from_arrow``) imports pandas, seconds on a
    cold start; an empty view in SQL costs nothing.
    """
    cols = ", ".join(
        f'CAST(NULL AS {_DUCKDB_TYPES[field.type]}) AS "{field.name}"' for field in schema
    )
    return f"SELECT {cols} WHERE false"


def _parquet_view(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> None:
    quoted = str(path).replace("'", "''")
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{quoted}')")


@contextmanager
def open_pipeline(out_dir: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with read-only views over a pipeline output, its configuration locked.

    Raises ``QueryError`` when ``OUT`` is missing or holds no pipeline output. Aggregates the run
    did not write are computed from the verdicts into a private temporary directory (never into
    ``OUT``), removed on exit.
    """
    import duckdb

    out = Path(out_dir)
    if not out.is_dir():
        raise QueryError(f"{out}: no such directory")
    out = out.resolve()
    if not has_pipeline_output(out):
        raise QueryError(
            f"{out}: no pipeline output here (no verdicts/ or aggregates/); run the pipeline first"
        )
    with tempfile.TemporaryDirectory(prefix="netvigil-query-") as scratch:
        allowed = [str(out) + "/"]
        con = duckdb.connect(":memory:")
        try:
            # No extension may be fetched or loaded behind the user's back (httpfs: network).
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            for table, schema in (
                ("verdict_copies", VERDICT_SCHEMA),
                ("observations", OBSERVATION_SCHEMA),
                ("endpoints", ENDPOINT_SCHEMA),
            ):
                files = _row_files(out, "verdicts" if table == "verdict_copies" else table)
                source = (
                    f"SELECT * FROM {partitioned_parquet_sql(files)}"
                    if files
                    else _empty_select(schema.append(pa.field("day", pa.date32())))
                )
                con.execute(f"CREATE VIEW {table} AS {source}")
            # One row per measurement (module notes); the repeated uids are found when a
            # query reads the view, not here: most questions never do.
            con.execute(
                "CREATE VIEW verdicts AS "
                + unique_verdicts_sql("verdict_copies", order=_VIEW_ORDER)
            )
            missing = [
                name
                for name in AGGREGATE_SCHEMAS
                if not (out / "aggregates" / f"{name}.parquet").is_file()
            ]
            computed: dict[str, pa.Table] = {}
            if missing:
                computed = dict(aggregate_duckdb(out))
                computed["events"] = detect_events(computed["daily"])
            for name in AGGREGATE_SCHEMAS:
                path = out / "aggregates" / f"{name}.parquet"
                if name in missing:
                    path = Path(scratch).resolve() / f"{name}.parquet"
                    pq.write_table(computed[name], path)
                _parquet_view(con, name, path)
            # One row per onset, derived from the flagged days (``detect_onsets``): read only
            # the daily rows of networks and domains that have an event.
            onsets = detect_onsets(
                con.sql("SELECT * FROM events").to_arrow_table(),
                con.sql(
                    "SELECT * FROM daily SEMI JOIN "
                    "(SELECT DISTINCT probe_cc, probe_asn, domain FROM events) "
                    "USING (probe_cc, probe_asn, domain)"
                ).to_arrow_table(),
            )
            con.execute(f"CREATE VIEW network_periods AS {NETWORK_PERIODS_SQL}")
            onsets_path = Path(scratch).resolve() / "onsets.parquet"
            pq.write_table(onsets, onsets_path)
            _parquet_view(con, "onsets", onsets_path)
            allowed.append(str(Path(scratch).resolve()) + "/")
            # From here on a query may read files under OUT only, and cannot change that.
            con.execute("SET allowed_directories = ?", [allowed])
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            con.close()
            raise QueryError(f"{out}: cannot read the pipeline output ({_one_line(exc)})") from None
        except BaseException:
            con.close()
            raise
        try:
            yield con
        finally:
            con.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _fetch(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any], limit: int
) -> tuple[list[str], list[dict[str, Any]], bool]:
    cur = con.execute(sql, list(params))
    columns = [d[0] for d in cur.description or []]
    raw = cur.fetchmany(limit + 1)
    rows = [dict(zip(columns, r, strict=True)) for r in raw[:limit]]
    return columns, rows, len(raw) > limit


# --- the questions --------------------------------------------------------------------------------


def _blocked(con: duckdb.DuckDBPyConnection, f: Filters, limit: int) -> Result:
    where, params = f.where()
    network, network_params = f.network_where()
    params = params + network_params
    sql = f"""
        WITH v AS (
            SELECT * FROM verdicts WHERE {AGGREGATED_ROWS_SQL} AND {where} AND {network}
        ), top AS (
            SELECT probe_cc, domain,
                   count(*) FILTER (WHERE blocked) AS blocked,
                   count(*) AS measurements,
                   round(count(*) FILTER (WHERE blocked) / count(*), 4) AS blocked_share,
                   min(measurement_start_time) FILTER (WHERE blocked) AS first_seen,
                   max(measurement_start_time) FILTER (WHERE blocked) AS last_seen,
                   list(DISTINCT probe_asn ORDER BY probe_asn) FILTER (WHERE blocked) AS networks,
                   list(DISTINCT fingerprint ORDER BY fingerprint)
                       FILTER (WHERE blocked AND fingerprint IS NOT NULL) AS fingerprints,
                   list(DISTINCT root ORDER BY root)
                       FILTER (WHERE blocked AND root IS NOT NULL) AS roots
            FROM v GROUP BY probe_cc, domain HAVING count(*) FILTER (WHERE blocked) > 0
            ORDER BY blocked DESC, probe_cc, domain
            LIMIT {limit + 1}
        ), mix AS (
            -- how: the blocked outcomes of the rows shown, most frequent first
            SELECT probe_cc, domain, outcome, count(*) AS n
            FROM v JOIN top USING (probe_cc, domain) WHERE v.blocked GROUP BY ALL
        ), how AS (
            SELECT probe_cc, domain, list([outcome, CAST(n AS VARCHAR)] ORDER BY n DESC, outcome)
                AS how
            FROM mix GROUP BY ALL
        )
        SELECT top.probe_cc, top.domain, how.how, top.blocked, top.measurements,
               top.blocked_share, top.first_seen, top.last_seen, top.networks,
               top.fingerprints, top.roots
        FROM top LEFT JOIN how USING (probe_cc, domain)
        ORDER BY top.blocked DESC, top.probe_cc, top.domain
    """
    columns, rows, truncated = _fetch(con, sql, params, limit)
    for row in rows:
        row["how"] = {outcome: int(n) for outcome, n in row["how"] or []}
        for key in ("networks", "fingerprints", "roots"):
            row[key] = row[key] or []
    return Result("blocked", columns, rows, truncated, f)


def _timeline(con: duckdb.DuckDBPyConnection, f: Filters, limit: int) -> Result:
    where, params = f.where()
    sql = f"""
        WITH d AS (
            SELECT domain, day, sum(measurements) AS measurements, sum(blocked) AS blocked,
                   sum(ok) AS ok
            FROM daily WHERE {where} GROUP BY domain, day
        ), o AS (
            SELECT domain, day, outcome, sum(count) AS n
            FROM outcomes WHERE {where} GROUP BY domain, day, outcome
        ), m AS (
            SELECT domain, day,
                   string_agg(outcome || ' ' || n, ', ' ORDER BY n DESC, outcome) AS outcomes
            FROM o GROUP BY domain, day
        )
        SELECT d.domain, d.day, d.measurements, d.blocked, d.ok,
               round(d.blocked / d.measurements, 4) AS blocked_share, m.outcomes
        FROM d LEFT JOIN m USING (domain, day)
        ORDER BY d.domain, d.day
        LIMIT {limit + 1}
    """
    columns, rows, truncated = _fetch(con, sql, params + params, limit)
    return Result("timeline", columns, rows, truncated, f)


def onsets_where(f: Filters) -> tuple[str, list[Any]]:
    """The condition on ``onsets`` for ``f``: its country, network and domain, and onsets
    that held on some day of the range (started by ``--until``, not ended before ``--since``)."""
    where, params = dataclasses.replace(f, since=None, until=None).where()
    if f.until is not None:
        where += " AND start <= ?"
        params.append(f.until)
    if f.since is not None:
        where += ' AND ("end" IS NULL OR "end" >= ?)'
        params.append(f.since)
    return where, params


def _events(con: duckdb.DuckDBPyConnection, f: Filters, limit: int) -> Result:
    # One row per onset (``aggregate.detect_onsets``), not per flagged day: the ``events``
    # view still has the days, for --sql.
    where, params = onsets_where(f)
    sql = f"""
        SELECT probe_cc, probe_asn, domain, start, "end", peak_share, p_value,
               round(baseline_share, 4) AS baseline_share, days_held, measurements
        FROM onsets WHERE {where}
        ORDER BY start, probe_cc, probe_asn, domain
        LIMIT {limit + 1}
    """
    columns, rows, truncated = _fetch(con, sql, params, limit)
    return Result("events", columns, rows, truncated, f)


def _not_blocked_sql() -> str:
    return "(" + ", ".join("'" + o + "'" for o in sorted(NOT_BLOCKED)) + ")"


def _networks(con: duckdb.DuckDBPyConnection, f: Filters, limit: int) -> Result:
    where, params = f.where()
    sql = f"""
        WITH d AS (
            SELECT probe_cc, probe_asn, sum(measurements) AS measurements,
                   sum(blocked) AS blocked,
                   count(DISTINCT domain) AS domains,
                   count(DISTINCT domain) FILTER (WHERE blocked > 0) AS blocked_domains,
                   min(day) AS first_day, max(day) AS last_day
            FROM daily WHERE {where} GROUP BY probe_cc, probe_asn
        ), o AS (
            SELECT probe_cc, probe_asn, outcome, sum(count) AS n
            FROM outcomes WHERE {where} AND outcome NOT IN {_not_blocked_sql()}
            GROUP BY ALL
        ), m AS (
            SELECT probe_cc, probe_asn,
                   string_agg(outcome || ' ' || n, ', ' ORDER BY n DESC, outcome) AS techniques
            FROM o GROUP BY ALL
        )
        SELECT d.probe_cc, d.probe_asn, d.measurements, d.blocked,
               round(d.blocked / d.measurements, 4) AS blocked_share,
               d.domains, d.blocked_domains, m.techniques, d.first_day, d.last_day
        FROM d LEFT JOIN m USING (probe_cc, probe_asn)
        ORDER BY d.blocked DESC, d.probe_cc, d.probe_asn
        LIMIT {limit + 1}
    """
    columns, rows, truncated = _fetch(con, sql, params + params, limit)
    return Result("networks", columns, rows, truncated, f)


def _outcomes(con: duckdb.DuckDBPyConnection, f: Filters, limit: int) -> Result:
    where, params = f.where()
    if f.network is not None:  # the aggregates do not keep the status: count the verdicts
        network, network_params = f.network_where()
        sql = f"""
            SELECT outcome, count(*) AS count,
                   round(count(*) / sum(count(*)) OVER (), 4) AS share,
                   outcome NOT IN {_not_blocked_sql()} AS blocking
            FROM verdicts WHERE {AGGREGATED_ROWS_SQL} AND {where} AND {network}
            GROUP BY outcome ORDER BY count DESC, outcome
            LIMIT {limit + 1}
        """
        columns, rows, truncated = _fetch(con, sql, params + network_params, limit)
        return Result("outcomes", columns, rows, truncated, f)
    sql = f"""
        SELECT outcome, sum(count) AS count,
               round(sum(count) / sum(sum(count)) OVER (), 4) AS share,
               outcome NOT IN {_not_blocked_sql()} AS blocking
        FROM outcomes WHERE {where}
        GROUP BY outcome ORDER BY count DESC, outcome
        LIMIT {limit + 1}
    """
    columns, rows, truncated = _fetch(con, sql, params, limit)
    return Result("outcomes", columns, rows, truncated, f)


def _apps(con: duckdb.DuckDBPyConnection, f: Filters, limit: int) -> Result:
    if f.domain is not None:
        raise QueryError("--domain does not apply to --what apps (messaging apps have no domain)")
    where, params = f.where()
    sql = f"""
        SELECT probe_cc, app, endpoint,
               sum(measurements) AS measurements, sum(blocked) AS blocked, sum(ok) AS ok,
               round(sum(blocked) / sum(measurements), 4) AS blocked_share,
               min(day) FILTER (WHERE blocked > 0) AS first_blocked,
               max(day) FILTER (WHERE blocked > 0) AS last_blocked,
               count(DISTINCT probe_asn) AS networks
        FROM apps WHERE {where}
        GROUP BY probe_cc, app, endpoint
        ORDER BY probe_cc, app, endpoint <> '*', blocked_share DESC, endpoint
        LIMIT {limit + 1}
    """
    columns, rows, truncated = _fetch(con, sql, params, limit)
    return Result("apps", columns, rows, truncated, f)


def _network(con: duckdb.DuckDBPyConnection, f: Filters, limit: int) -> Result:
    """Periods of offline or degraded networks (``network_periods``), oldest first; with
    ``--since``/``--until``, those that overlap the range."""
    where, params = dataclasses.replace(f, domain=None, since=None, until=None).where()
    if f.since is not None:
        where += " AND last_day >= ?"
        params.append(f.since)
    if f.until is not None:
        where += " AND first_day <= ?"
        params.append(f.until)
    if f.network is not None:
        where += " AND status = ?"
        params.append(f.network)
    sql = f"""
        SELECT probe_cc, probe_asn, status, start AS from_time, "end" AS to_time, measurements
        FROM network_periods WHERE {where}
        ORDER BY start, probe_cc, probe_asn, status
        LIMIT {limit + 1}
    """
    columns, rows, truncated = _fetch(con, sql, params, limit)
    return Result("network", columns, rows, truncated, f)


_ASK = {
    "blocked": _blocked,
    "timeline": _timeline,
    "events": _events,
    "networks": _networks,
    "outcomes": _outcomes,
    "apps": _apps,
    "network": _network,
}
# The questions that read verdict rows, where the network status is kept.
_NETWORK_FILTERED = ("blocked", "outcomes", "network")


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"--limit must be between 1 and {MAX_LIMIT}")
    return limit


def ask(
    out_dir: Path, what: str, filters: Filters | None = None, *, limit: int = DEFAULT_LIMIT
) -> Result:
    """Answer one of ``QUESTIONS`` over ``OUT``."""
    if what not in _ASK:
        raise QueryError(f"unknown question {what!r}: choose one of {', '.join(QUESTIONS)}")
    with open_pipeline(out_dir) as con:
        return answer(con, what, filters or Filters(), limit=limit)


def answer(
    con: duckdb.DuckDBPyConnection, what: str, filters: Filters, *, limit: int = DEFAULT_LIMIT
) -> Result:
    """Answer one of ``QUESTIONS`` on a connection from ``open_pipeline``."""
    import duckdb

    if what not in _ASK:
        raise QueryError(f"unknown question {what!r}: choose one of {', '.join(QUESTIONS)}")
    if filters.network is not None and what not in _NETWORK_FILTERED:
        raise QueryError(
            f"--network applies to --what {', '.join(_NETWORK_FILTERED)}, not to --what {what}"
        )
    try:
        return _ASK[what](con, filters, _check_limit(limit))
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {_one_line(exc)}") from None


def check_read_only(sql: str) -> None:
    """Accept exactly one SELECT (or WITH … SELECT) statement; raise ``QueryError`` otherwise."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"bad SQL: {_one_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError(f"--sql takes exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryError(f"--sql is read-only: only SELECT/WITH queries, not {kind.name}")


def run_sql(out_dir: Path, sql: str, *, limit: int = DEFAULT_LIMIT) -> Result:
    """Run one read-only query over the views of ``OUT``; at most ``limit`` rows."""
    import duckdb

    check_read_only(sql)
    limit = _check_limit(limit)
    with open_pipeline(out_dir) as con:
        try:
            columns, rows, truncated = _fetch(con, sql, [], limit)
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {_one_line(exc)}") from None
    return Result("sql", columns, rows, truncated)


# --- output ---------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
            return value.isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _printable(text: str) -> str:
    # Domains, fingerprints and SQL results come from measurements: never let them drive the
    # terminal (escape sequences, carriage returns, BiDi overrides): one helper does it.
    from netvigil import textsafe

    return textsafe.visible(text)


_CELL_ITEMS = 8

# What a table shows by default, per question: (column, header) — the columns a reader needs
# to see at 80 columns; ``--wide`` shows every column, ``--json``/``--csv`` every value exactly.
_NARROW: dict[str, tuple[tuple[str, str], ...]] = {
    "blocked": (
        ("probe_cc", "cc"),
        ("domain", "domain"),
        ("how", "how"),
        ("blocked", "blocked"),
        ("blocked_share", "share"),
        ("first_seen", "first"),
        ("last_seen", "last"),
    ),
    "timeline": (
        ("domain", "domain"),
        ("day", "day"),
        ("measurements", "measured"),
        ("blocked_share", "blocked"),
        ("outcomes", "outcomes"),
    ),
    "events": (
        ("probe_cc", "cc"),
        ("probe_asn", "asn"),
        ("domain", "domain"),
        ("start", "start"),
        ("end", "end"),
        ("peak_share", "peak"),
        ("p_value", "p"),
    ),
    "apps": (
        ("probe_cc", "cc"),
        ("app", "app"),
        ("endpoint", "endpoint"),
        ("measurements", "measured"),
        ("blocked_share", "blocked"),
        ("first_blocked", "first"),
        ("last_blocked", "last"),
    ),
    "network": (
        ("probe_cc", "cc"),
        ("probe_asn", "asn"),
        ("status", "status"),
        ("from_time", "from"),
        ("to_time", "to"),
        ("measurements", "measured"),
    ),
    "networks": (
        ("probe_cc", "cc"),
        ("probe_asn", "asn"),
        ("measurements", "measured"),
        ("blocked_share", "blocked"),
        ("blocked_domains", "domains"),
        ("techniques", "techniques"),
    ),
}
# Columns a narrow table may shorten (in the middle: both ends of a name say most), widest
# first; every other cell is short by construction (dates, numbers, codes).
_SHRINKABLE = {
    "domain",
    "endpoint",
    "how",
    "outcomes",
    "techniques",
    "fingerprints",
    "roots",
    "networks",
}
_MIN_SHRUNK = 9
_GAP = "  "


def _cell(value: Any, column: str = "", *, wide: bool = True) -> str:
    if value is None:
        return "ongoing" if column == "end" else ""
    if isinstance(value, dict):
        # narrow: the names, most frequent first (the counts are in --wide and --json)
        value = [f"{k} {v}" for k, v in value.items()] if wide else list(value)
    if isinstance(value, list | tuple):
        # a cell is for reading: the first few, and how many more (--json has them all)
        items = _CELL_ITEMS if wide else 1
        shown = ", ".join(_cell(v) for v in value[:items])
        more = len(value) - items
        return shown + ((f", … {more} more" if wide else f" +{more}") if more > 0 else "")
    if isinstance(value, dt.datetime):
        when: dt.datetime = value.astimezone(dt.UTC)
        # a day is what a reader compares; the time is in --wide, --json and --csv (and in
        # the network periods' *_time columns: a shutdown may last minutes)
        full = wide or column.endswith("_time")
        return when.strftime("%Y-%m-%d %H:%M:%SZ") if full else when.strftime("%Y-%m-%d")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if column == "p_value":
            return f"{value:.2g}"
        if column.endswith("share") and not wide:
            return f"{100 * value:.0f}%" if value in (0.0, 1.0) else f"{100 * value:.1f}%"
        return f"{value:.4g}"
    return _printable(str(value))


def _cell_len(text: str) -> int:
    from rich.cells import cell_len

    return int(cell_len(text))


def ellipsize(text: str, width: int) -> str:
    """``text`` in at most ``width`` terminal cells, cut in the middle (``inje…t.kz``)."""
    if _cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head_budget = (width - 1) // 2
    tail_budget = width - 1 - head_budget
    head = ""
    for ch in text:
        if _cell_len(head + ch) > head_budget:
            break
        head += ch
    tail = ""
    for ch in reversed(text):
        if _cell_len(ch + tail) > tail_budget:
            break
        tail = ch + tail
    return head + "…" + tail


def _is_numeric(rows: list[dict[str, Any]], column: str) -> bool:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def _is_text(rows: list[dict[str, Any]], column: str) -> bool:
    return all(isinstance(r.get(column), str | list | dict | None) for r in rows)


def render_table(result: Result, *, width: int | None = None, wide: bool = False) -> list[str]:
    """The lines of a plain-text table: one line per row, never wrapped. Within ``width``
    terminal cells when it is given and ``wide`` is not: the question's usual columns
    (``_NARROW``), long names shortened in the middle."""
    title = f"netvigil query: {result.what}"
    shown = {k: v for k, v in result.filters.to_dict().items() if v is not None}
    if shown:
        title += " (" + ", ".join(f"{k} {v}" for k, v in shown.items()) + ")"
    title = _printable(title)
    if not result.rows:
        return [f"{title}: no rows"]
    narrow = not wide and result.what in _NARROW
    pairs = _NARROW[result.what] if narrow else tuple((c, c) for c in result.columns)
    columns = [c for c, _ in pairs]
    headers = [_printable(h) for _, h in pairs]
    cells = [[_cell(row.get(c), c, wide=not narrow) for c in columns] for row in result.rows]
    right = [_is_numeric(result.rows, c) for c in columns]
    widths = [max(_cell_len(h), *(_cell_len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if width is not None and not wide:
        budget = width - len(_GAP) * (len(columns) - 1)
        flexible = [
            i
            for i, c in enumerate(columns)
            if c in _SHRINKABLE or (result.what == "sql" and _is_text(result.rows, c))
        ]
        # take one cell at a time from the widest shrinkable column until the table fits
        while sum(widths) > budget:
            candidates = [i for i in flexible if widths[i] > max(_MIN_SHRUNK, len(headers[i]))]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
    if len(title) > sum(widths) + len(_GAP) * (len(columns) - 1) and width is not None:
        title = ellipsize(title, width)

    def line(values: list[str]) -> str:
        out = []
        for i, text in enumerate(values):
            text = ellipsize(text, widths[i])
            pad = " " * (widths[i] - _cell_len(text))
            out.append(pad + text if right[i] else text + pad)
        return _GAP.join(out).rstrip()

    lines = [title, line(headers), _GAP.join("─" * w for w in widths)]
    lines.extend(line(r) for r in cells)
    if result.truncated:
        lines.append(f"only the first {len(result.rows)} rows; raise --limit for more")
    if narrow:
        lines.append("(--wide for every column, --json or --csv for exact values)")
    return [ellipsize(text, width) if width is not None and not wide else text for text in lines]


def print_table(
    result: Result, file: Any = None, *, width: int | None = None, wide: bool = False
) -> None:
    """Print ``render_table``: within the terminal's width when ``file`` is one (or ``width``);
    piped output is not shortened (no width) unless ``width`` says so."""
    stream = file or sys.stdout
    if width is None and not wide and getattr(stream, "isatty", lambda: False)():
        import shutil

        width = max(40, shutil.get_terminal_size().columns)
    stream.write("\n".join(render_table(result, width=width, wide=wide)) + "\n")


def _csv_value(value: Any) -> str:
    value = _jsonable(value)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_csv(result: Result, file: Any = None) -> None:
    """Every column and exact value: a header, then one record per row (RFC 4180 quoting);
    lists and mappings as JSON, dates ISO 8601, a null as an empty field."""
    import csv

    writer = csv.writer(file or sys.stdout, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow([_csv_value(row.get(c)) for c in result.columns])


# --- the command ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        if args.json and getattr(args, "csv", False):
            raise QueryError("choose one of --json and --csv")
        out = Path(args.out)
        if args.sql is not None:
            keys = ("cc", "asn", "domain", "since", "until", "network")
            if any(getattr(args, k, None) is not None for k in keys):
                raise QueryError("--sql cannot be combined with filters: put them in the query")
            result = run_sql(out, args.sql, limit=args.limit)
        else:
            filters = make_filters(
                args.cc,
                args.asn,
                args.domain,
                args.since,
                args.until,
                getattr(args, "network", None),
            )
            result = ask(out, args.what, filters, limit=args.limit)
    except QueryError as exc:
        print(_printable(f"netvigil query: {exc}"), file=sys.stderr)
        return 2
    try:
        if args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
        elif getattr(args, "csv", False):
            write_csv(result)
        else:
            print_table(result, wide=getattr(args, "wide", False))
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader (head, less) went away: not an error; keep Python's exit flush quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
