"""What the explorer reads: the pipeline's Parquet output through DuckDB, read-only.

Overview and country pages read only the small aggregates (``daily``, ``outcomes``,
``techniques``, ``events``), through ``netvigil query``'s read-only views.

Domain, search and measurement pages need verdict rows. Reading them from the Parquet files
per request costs a second on 100,000 measurements (thousands of small files, and the
deduplication reads them several times), so at start-up the explorer copies the verdict
columns, one row per measurement (``aggregate.unique_verdicts_sql``), into a private DuckDB
file in a temporary directory, sorted by day then domain: DuckDB's per-block minima and maxima
then skip most blocks for a date range (measured on 1 M rows: 24 ms instead of 132 ms for a
two-day search; a domain's rows within a day sit together), with an ART index on the uid.
DuckDB keeps it on disk under a memory limit: the server's memory stays bounded whatever
the data's size. Observations are read per measurement from the Parquet files, in the
measurement's day partition.

Every statement is parameterised: a value the user typed is only ever a bound parameter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from netvigil.pipeline.aggregate import partitioned_parquet_sql, unique_verdicts_sql, verdict_files
from netvigil.pipeline.query import _VIEW_ORDER, _empty_select, open_pipeline
from netvigil.pipeline.schema import VERDICT_SCHEMA

__all__ = ["Pipeline", "Scope"]

# Rows a page shows at most (and the export writes at most).
MAX_ROWS = 200
# The verdict index's DuckDB may use this much memory; the rest of the table stays on disk.
INDEX_MEMORY_LIMIT = "512MB"
_DAY_FIELD = pa.field("day", pa.date32())


@dataclasses.dataclass(frozen=True)
class Scope:
    """The filters of a page (all optional): validated before they get here."""

    cc: str | None = None
    asn: int | None = None
    domain: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    outcome: str | None = None
    test_name: str | None = None
    blocked: bool | None = None

    def where(
        self, *, day: str = "day", outcome: bool = False, test: bool = False
    ) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for column, value in (
            ("probe_cc", self.cc),
            ("probe_asn", self.asn),
            ("domain", self.domain),
        ):
            if value is not None:
                clauses.append(f"{column} = ${column}")
                params[column] = value
        if self.since is not None:
            clauses.append(f"{day} >= $since")
            params["since"] = self.since
        if self.until is not None:
            clauses.append(f"{day} <= $until")
            params["until"] = self.until
        if outcome and self.outcome is not None:
            clauses.append("outcome = $outcome")
            params["outcome"] = self.outcome
        if outcome and self.blocked is not None:
            clauses.append("blocked = $blocked")
            params["blocked"] = self.blocked
        if test and self.test_name is not None:
            clauses.append("test_name = $test_name")
            params["test_name"] = self.test_name
        return (" AND ".join(clauses) or "TRUE"), params


class Pipeline:
    """An open pipeline output. Thread-safe: each call uses its own DuckDB cursor."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._stack = contextlib.ExitStack()
        self._con = self._stack.enter_context(open_pipeline(self.out_dir))
        self._lock = threading.Lock()
        try:
            scratch = self._stack.enter_context(
                tempfile.TemporaryDirectory(prefix="netvigil-explorer-")
            )
            started = time.monotonic()
            self._index = self._build_index(Path(scratch) / "verdicts.duckdb")
            self._stack.callback(self._index.close)
            self.index_seconds = time.monotonic() - started
        except BaseException:
            self._stack.close()
            raise

    def _build_index(self, path: Path) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(path))
        try:
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            con.execute(f"SET memory_limit = '{INDEX_MEMORY_LIMIT}'")
            con.execute("SET preserve_insertion_order = false")
            files = verdict_files(self.out_dir.resolve())
            if files:
                source = unique_verdicts_sql(partitioned_parquet_sql(files), order=_VIEW_ORDER)
            else:
                source = _empty_select(VERDICT_SCHEMA.append(_DAY_FIELD))
            columns = ", ".join(f'"{n}"' for n in (*VERDICT_SCHEMA.names, "day"))
            con.execute(
                f"CREATE TABLE verdicts AS SELECT {columns} FROM ({source}) "
                "ORDER BY day, domain, probe_cc, measurement_start_time"
            )
            # A measurement page looks one uid up: an ART index makes it a few ms, not a scan.
            con.execute("CREATE INDEX verdicts_uid ON verdicts (measurement_uid)")
            con.execute("CHECKPOINT")
            # From here on: no file but this one, and no setting may change.
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con

    def close(self) -> None:
        self._stack.close()

    @contextlib.contextmanager
    def _cursor(self, index: bool = False) -> Iterator[Any]:
        with self._lock:
            cur = (self._index if index else self._con).cursor()
        try:
            yield cur
        finally:
            cur.close()

    def rows(
        self, sql: str, params: dict[str, Any] | None = None, *, index: bool = False
    ) -> list[dict[str, Any]]:
        """``sql`` over the aggregates (or, ``index=True``, over the verdict index)."""
        with self._cursor(index) as cur:
            cur.execute(sql, params or {})
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # -- aggregates ---------------------------------------------------------------------------

    def countries(self, s: Scope) -> list[dict[str, Any]]:
        where, p = s.where()
        return self.rows(
            f"""SELECT probe_cc, sum(measurements) AS measurements, sum(blocked) AS blocked,
                       count(DISTINCT probe_asn) AS networks, count(DISTINCT domain) AS domains,
                       min(day) AS first_day, max(day) AS last_day
                FROM daily WHERE {where} GROUP BY probe_cc
                ORDER BY sum(blocked) * 1.0 / sum(measurements) DESC, probe_cc""",
            p,
        )

    def onsets(self, s: Scope, limit: int = 20) -> list[dict[str, Any]]:
        where, p = s.where()
        p["limit"] = limit
        return self.rows(
            f"""SELECT probe_cc, probe_asn, domain, day, blocked_share, baseline_share,
                       measurements, p_value
                FROM events WHERE {where}
                ORDER BY day DESC, p_value, probe_cc, probe_asn, domain LIMIT $limit""",
            p,
        )

    def timeline(self, s: Scope) -> tuple[list[dt.date], dict[str, dict[dt.date, int]]]:
        where, p = s.where()
        rows = self.rows(
            f"SELECT day, outcome, sum(count) AS n FROM outcomes WHERE {where} GROUP BY ALL",
            p,
        )
        counts: dict[str, dict[dt.date, int]] = {}
        for r in rows:
            counts.setdefault(r["outcome"], {})[r["day"]] = int(r["n"])
        days = _day_range([r["day"] for r in rows])
        return days, counts

    def networks(self, s: Scope) -> list[dict[str, Any]]:
        where, p = s.where()
        return self.rows(
            f"""SELECT probe_asn, sum(measurements) AS measurements, sum(blocked) AS blocked,
                       count(DISTINCT domain) FILTER (WHERE blocked > 0) AS blocked_domains,
                       min(day) AS first_day, max(day) AS last_day
                FROM daily WHERE {where} GROUP BY probe_asn
                ORDER BY sum(blocked) * 1.0 / sum(measurements) DESC, probe_asn
                LIMIT {MAX_ROWS}""",
            p,
        )

    def domains(self, s: Scope, limit: int = MAX_ROWS) -> list[dict[str, Any]]:
        where, p = s.where()
        p["limit"] = limit
        return self.rows(
            f"""SELECT domain, sum(measurements) AS measurements, sum(blocked) AS blocked,
                       count(DISTINCT probe_asn) AS networks, min(day) AS first_day,
                       max(day) AS last_day
                FROM daily WHERE {where} GROUP BY domain
                ORDER BY sum(blocked) * 1.0 / sum(measurements) DESC, sum(blocked) DESC, domain
                LIMIT $limit""",
            p,
        )

    def outcome_mix(self, s: Scope) -> list[dict[str, Any]]:
        where, p = s.where()
        return self.rows(
            f"""SELECT outcome, sum(count) AS n FROM outcomes WHERE {where}
                GROUP BY outcome ORDER BY n DESC, outcome""",
            p,
        )

    def techniques(self, s: Scope) -> list[dict[str, Any]]:
        # ``techniques`` has no day: first/last seen are filtered on their own timestamps.
        s2 = dataclasses.replace(s, since=None, until=None)
        where, p = s2.where()
        if s.since is not None:
            where += " AND last_seen >= $since"
            p["since"] = dt.datetime.combine(s.since, dt.time(), dt.UTC)
        if s.until is not None:
            where += " AND first_seen < $until"
            p["until"] = dt.datetime.combine(s.until + dt.timedelta(days=1), dt.time(), dt.UTC)
        return self.rows(
            f"""SELECT probe_cc, probe_asn, outcome, min(first_seen) AS first_seen,
                       max(last_seen) AS last_seen, sum(count) AS n
                FROM techniques WHERE {where} GROUP BY ALL
                ORDER BY n DESC, probe_cc, probe_asn, outcome LIMIT {MAX_ROWS}""",
            p,
        )

    def network_timelines(
        self, s: Scope, limit: int = 12
    ) -> list[tuple[tuple[str, int], list[dt.date], dict[str, dict[dt.date, int]]]]:
        where, p = s.where()
        rows = self.rows(
            f"""SELECT probe_cc, probe_asn, day, outcome, sum(count) AS n FROM outcomes
                WHERE {where} GROUP BY ALL ORDER BY probe_cc, probe_asn""",
            p,
        )
        per: dict[tuple[str, int], dict[str, dict[dt.date, int]]] = {}
        for r in rows:
            key = (r["probe_cc"], int(r["probe_asn"]))
            per.setdefault(key, {}).setdefault(r["outcome"], {})[r["day"]] = int(r["n"])
        days = _day_range([r["day"] for r in rows])
        ranked = sorted(per, key=lambda k: -sum(sum(v.values()) for v in per[k].values()))
        return [(k, days, per[k]) for k in ranked[:limit]]

    # -- verdict rows (one domain, one uid, a search) -----------------------------------------

    def evidence_names(self, s: Scope, column: str) -> list[dict[str, Any]]:
        assert column in ("fingerprint", "root")
        where, p = s.where()
        return self.rows(
            f"""SELECT probe_cc, probe_asn, {column} AS name, count(DISTINCT measurement_uid) AS n,
                       min(measurement_start_time) AS first_seen,
                       max(measurement_start_time) AS last_seen
                FROM verdicts WHERE {where} AND {column} IS NOT NULL AND {column} <> ''
                GROUP BY ALL ORDER BY n DESC, name LIMIT {MAX_ROWS}""",
            p,
            index=True,
        )

    def search(self, s: Scope, *, offset: int, limit: int) -> list[dict[str, Any]]:
        where, p = s.where(outcome=True, test=True)
        p.update(offset=offset, limit=limit)
        return self.rows(
            f"""SELECT measurement_uid, measurement_start_time, probe_cc, probe_asn, test_name,
                       domain, input, outcome, technique, blocked, confidence, fingerprint, root
                FROM verdicts WHERE {where}
                ORDER BY measurement_start_time DESC, measurement_uid
                LIMIT $limit OFFSET $offset""",
            p,
            index=True,
        )

    def measurement(self, uid: str) -> dict[str, Any] | None:
        """The measurement's verdict row (its winning copy, as the aggregates counted it)."""
        rows = self.rows(
            "SELECT * FROM verdicts WHERE measurement_uid = $uid LIMIT 1", {"uid": uid}, index=True
        )
        return rows[0] if rows else None

    def observations(self, uid: str, day: dt.date | None) -> list[dict[str, Any]]:
        """The measurement's observations: from its day's files only when the day is known
        (the file list is a bound parameter, like every value)."""
        columns = """obs_type, hostname, resolver, query_type, answer_type, answer, ip,
                       port, server_name, tls_version, cert_sha256, url, status_code,
                       body_length, body_truncated, failure, t"""
        order = f"""ORDER BY CASE obs_type WHEN 'dns' THEN 0 WHEN 'tcp' THEN 1 WHEN 'tls' THEN 2
                         ELSE 3 END, t NULLS LAST, hostname, answer, ip, url
                LIMIT {MAX_ROWS}"""
        if day is not None:
            folder = self.out_dir.resolve() / "observations" / f"day={day.isoformat()}"
            files = sorted(
                str(f)
                for f in folder.glob("*.parquet")
                if f.is_file() and not f.name.startswith((".", "_"))
            )
            if not files:
                return []
            return self.rows(
                f"""SELECT DISTINCT {columns} FROM read_parquet($files, union_by_name = true)
                    WHERE measurement_uid = $uid {order}""",
                {"files": files, "uid": uid},
            )
        return self.rows(
            f"SELECT DISTINCT {columns} FROM observations WHERE measurement_uid = $uid {order}",
            {"uid": uid},
        )

    def countries_list(self) -> list[str]:
        return [r["probe_cc"] for r in self.rows("SELECT DISTINCT probe_cc FROM daily ORDER BY 1")]

    def domain_pairs(self, limit: int) -> list[tuple[str, str]]:
        rows = self.rows(
            """SELECT probe_cc, domain FROM daily GROUP BY ALL
               ORDER BY sum(blocked) DESC, probe_cc, domain LIMIT $limit""",
            {"limit": limit},
        )
        return [(r["probe_cc"], r["domain"]) for r in rows]


def _day_range(days: Sequence[dt.date]) -> list[dt.date]:
    if not days:
        return []
    lo, hi = min(days), max(days)
    span = min((hi - lo).days, 3660)
    return [lo + dt.timedelta(days=i) for i in range(span + 1)]
