"""``netvigil query OUT``: the common questions over a pipeline's output, with DuckDB.

``--what blocked`` (default)  which domains were blocked, and how: per country and domain, the
                              blocked count and share, the outcomes, the networks, first and
                              last seen, blockpage fingerprints and interception roots
``--what timeline``           per domain and day: measurements, blocked share, outcome mix
``--what events``             sudden onsets of blocking (the ``events`` aggregate)
``--what networks``           per country and network: blocked share, blocked domains, outcomes
``--what outcomes``           the mix of outcomes
``--sql 'SELECT …'``          anything else, read-only, over the views ``verdicts``,
                              ``observations``, ``daily``, ``outcomes``, ``techniques``, ``events``
                              and ``verdict_copies``

A measurement that came more than once (same ``measurement_uid``: the same file given twice,
OONI's file and the collector's store…) counts once. ``verdicts`` holds one row per
measurement, its winning copy as the aggregates chose it (``aggregate.DEDUP_ORDER``, then the
other columns, so the row is fixed in every column); ``verdict_copies`` holds every row as
written, to look at the copies. ``observations`` is *not* deduplicated: its rows do not say
which copy they came from, so a measurement given twice has its observations twice there
(none of the questions reads it; in ``--sql``, count ``DISTINCT measurement_uid``).

Filters: ``--cc KZ --asn 9198 --domain example.org --since 2024-03-01 --until 2024-03-31``
(dates are UTC days, inclusive). At most ``--limit`` rows are printed, and the output says when
there were more. ``--json`` prints one JSON document.

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
    partitioned_parquet_sql,
    unique_verdicts_sql,
    verdict_files,
)
from .options import DEFAULT_LIMIT, MAX_LIMIT, QUESTIONS
from .schema import AGGREGATE_SCHEMAS, OBSERVATION_SCHEMA, VERDICT_SCHEMA

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
    "verdict_copies",
)

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "cc": self.cc,
            "asn": self.asn,
            "domain": self.domain,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }

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
) -> Filters:
    if cc is not None and not (len(cc) == 2 and cc.isascii() and cc.isalpha()):
        raise QueryError(f"bad country code {cc!r}: expected two letters like KZ")
    since_d = parse_day(since, "--since") if isinstance(since, str) else since
    until_d = parse_day(until, "--until") if isinstance(until, str) else until
    if since_d and until_d and since_d > until_d:
        raise QueryError(f"--since {since_d} is after --until {until_d}")
    return Filters(
        cc=cc.upper() if cc else None,
        asn=parse_asn(asn) if isinstance(asn, str) else asn,
        domain=domain.strip().lower().rstrip(".") if domain else None,
        since=since_d,
        until=until_d,
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
                allowed.append(str(Path(scratch).resolve()) + "/")
            for name in AGGREGATE_SCHEMAS:
                path = out / "aggregates" / f"{name}.parquet"
                if name in missing:
                    path = Path(scratch).resolve() / f"{name}.parquet"
                    pq.write_table(computed[name], path)
                _parquet_view(con, name, path)
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
    sql = f"""
        WITH v AS (
            SELECT * FROM verdicts WHERE {AGGREGATED_ROWS_SQL} AND {where}
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


def _events(con: duckdb.DuckDBPyConnection, f: Filters, limit: int) -> Result:
    where, params = f.where()
    sql = f"""
        SELECT probe_cc, probe_asn, domain, day, measurements,
               round(blocked_share, 4) AS blocked_share,
               round(baseline_share, 4) AS baseline_share, baseline_days,
               p_value
        FROM events WHERE {where}
        ORDER BY day, probe_cc, probe_asn, domain
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


_ASK = {
    "blocked": _blocked,
    "timeline": _timeline,
    "events": _events,
    "networks": _networks,
    "outcomes": _outcomes,
}


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


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        value = [f"{k} {v}" for k, v in value.items()]
    if isinstance(value, list | tuple):
        # a cell is for reading: the first few, and how many more (--json has them all)
        shown = ", ".join(_cell(v) for v in value[:_CELL_ITEMS])
        more = len(value) - _CELL_ITEMS
        return shown + (f", … {more} more" if more > 0 else "")
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.4g}"
    return _printable(str(value))


def print_table(result: Result, file: Any = None) -> None:
    from rich.table import Table
    from rich.text import Text

    from netvigil import textsafe

    stream = file or sys.stdout
    # Piped output is still read by people (and by ``less -S``): do not fold it to 80 columns
    # (make_console's width when not a terminal); it prints literally, never markup.
    console = textsafe.make_console(stream)
    title = f"netvigil query: {result.what}"
    shown = {k: v for k, v in result.filters.to_dict().items() if v is not None}
    if shown:
        title += " (" + ", ".join(f"{k} {v}" for k, v in shown.items()) + ")"
    table = Table(title=Text(_printable(title)))
    for column in result.columns:
        table.add_column(Text(_printable(column)), overflow="fold")
    for row in result.rows:
        table.add_row(*(Text(_cell(row.get(c))) for c in result.columns))
    if not result.rows:
        console.print(Text(_printable(f"{title}: no rows")))
        return
    console.print(table)
    if result.truncated:
        console.print(Text(f"only the first {len(result.rows)} rows; raise --limit for more"))


# --- the command ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        out = Path(args.out)
        if args.sql is not None:
            if any(getattr(args, k) is not None for k in ("cc", "asn", "domain", "since", "until")):
                raise QueryError("--sql cannot be combined with filters: put them in the query")
            result = run_sql(out, args.sql, limit=args.limit)
        else:
            filters = make_filters(args.cc, args.asn, args.domain, args.since, args.until)
            result = ask(out, args.what, filters, limit=args.limit)
    except QueryError as exc:
        print(_printable(f"netvigil query: {exc}"), file=sys.stderr)
        return 2
    try:
        if args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
        else:
            print_table(result)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader (head, less) went away: not an error; keep Python's exit flush quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
