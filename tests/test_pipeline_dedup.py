"""A measurement seen twice is counted once (``aggregate``'s "Each measurement once").

Copies share ``measurement_uid``: the same file given twice (two paths), overlapping files,
copies whose contents differ (the first in ``DEDUP_ORDER`` wins, whatever the files, writers or
days they sit in). Both engines, every aggregate and ``netvigil query`` count each uid once.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

from netvigil.pipeline.aggregate import (
    DEDUP_ORDER,
    aggregate_duckdb,
    build_aggregates,
    count_duplicates,
    detect_events,
    duplicate_stats,
)
from netvigil.pipeline.cli import print_summary
from netvigil.pipeline.dask_engine import aggregate_dask, local_cluster
from netvigil.pipeline.local import run_local
from netvigil.pipeline.query import ask, open_pipeline, run_sql
from test_pipeline_aggregate import (
    D,
    assert_tables_equal,
    story,
    ts,
    verdict,
    write_verdicts,
)

DATA = Path(__file__).parent / "data" / "ooni_samples.jsonl"
TABLES = ("daily", "outcomes", "techniques", "events")


def _aggregates(out: Path) -> dict[str, pa.Table]:
    tables = aggregate_duckdb(out)
    tables["events"] = detect_events(tables["daily"])
    return tables


def _copy(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**row, **changes}


# --- the same file given twice -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The 109 real samples once, and the same file at two paths (two folders given)."""
    base = tmp_path_factory.mktemp("dedup-real")
    (base / "a").mkdir()
    (base / "b").mkdir()
    shutil.copy(DATA, base / "a" / "samples.jsonl")
    shutil.copy(DATA, base / "b" / "samples.jsonl")
    run_local([base / "a"], base / "once", workers=1)
    run_local([base / "a", base / "b"], base / "twice", workers=2)
    build_aggregates(base / "once")  # whether or not the run wrote them already
    build_aggregates(base / "twice")
    return base / "once", base / "twice"


def test_same_file_twice_aggregates_as_once(real_runs: tuple[Path, Path]) -> None:
    once, twice = real_runs
    # The rows are all there twice (written by different workers)…
    assert duplicate_stats(twice) == {
        "rows": 218,
        "measurements": 109,
        "duplicates": 109,
        "duplicated": 109,
        "conflicting": 0,
    }
    assert count_duplicates(once) == 0
    # …and every aggregate is the single copy's, bit for bit, read back from the files too.
    assert_tables_equal(_aggregates(once), _aggregates(twice))
    for name in TABLES:
        written = pq.read_table(twice / "aggregates" / f"{name}.parquet")
        assert written.equals(pq.read_table(once / "aggregates" / f"{name}.parquet"))
    assert sum(_aggregates(twice)["daily"].column("measurements").to_pylist()) == 29
    # The run says so: in ingest.json and in the terminal summary.
    ingest_twice = json.loads((twice / "ingest.json").read_text())
    assert ingest_twice["totals"]["duplicates"] == 109
    assert json.loads((once / "ingest.json").read_text())["totals"]["duplicates"] == 0
    text = io.StringIO()
    print_summary(ingest_twice, text)
    assert "duplicates: 109 verdict rows repeat a measurement_uid" in text.getvalue()


def test_same_file_twice_queries_as_once(real_runs: tuple[Path, Path]) -> None:
    once, twice = real_runs
    for what in ("blocked", "timeline", "networks", "outcomes", "events"):
        assert ask(twice, what).rows == ask(once, what).rows, what
    blocked = ask(twice, "blocked").rows
    assert blocked and all(row["measurements"] == 1 for row in blocked)
    count = "SELECT count(*) AS n, count(DISTINCT measurement_uid) AS u FROM "
    assert run_sql(twice, count + "verdicts").rows == [{"n": 109, "u": 109}]
    assert run_sql(twice, count + "verdict_copies").rows == [{"n": 218, "u": 109}]


# --- overlapping files ---------------------------------------------------------------------------


def _overlap_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A and B share u3, u4 and u5 (identical copies); A has u1, u2, B has u6."""
    day = D(2024, 3, 8)
    rows = {
        "u1": verdict("u1", ts(day, 8), "ok", confidence=0.0),
        "u2": verdict("u2", ts(day, 9), "ok", confidence=0.0),
        "u3": verdict("u3", ts(day, 10), "tls/interception", confidence=0.9),
        "u4": verdict("u4", ts(day, 11), "tls/interception", confidence=0.8),
        "u5": verdict("u5", ts(day, 12), "dns/nxdomain", domain="mixed.kz", confidence=0.7),
        "u6": verdict("u6", ts(day, 13), "ok", domain="mixed.kz", confidence=0.0),
    }
    a = [_copy(rows[u], source="ooni/a.jsonl.gz") for u in ("u1", "u2", "u3", "u4", "u5")]
    b = [_copy(rows[u], source="collector.sqlite") for u in ("u3", "u4", "u5", "u6")]
    return a, b


def test_overlapping_files_hand_computed(tmp_path: Path) -> None:
    a, b = _overlap_rows()
    write_verdicts(tmp_path, a, writer="a")
    write_verdicts(tmp_path, b, writer="b")
    assert count_duplicates(tmp_path) == 3
    tables = _aggregates(tmp_path)
    daily = {r["domain"]: r for r in tables["daily"].to_pylist()}
    # blocked.kz: u1, u2 ok; u3, u4 intercepted (0.9 and 0.8: mean 0.85). Not 6 and 4.
    assert daily["blocked.kz"]["measurements"] == 4
    assert daily["blocked.kz"]["blocked"] == 2
    assert daily["blocked.kz"]["ok"] == 2
    assert daily["blocked.kz"]["confidence_mean"] == 0.85
    # mixed.kz: u5 blocked, u6 ok.
    assert (daily["mixed.kz"]["measurements"], daily["mixed.kz"]["blocked"]) == (2, 1)
    outcomes = {(r["domain"], r["outcome"]): r["count"] for r in tables["outcomes"].to_pylist()}
    assert outcomes == {
        ("blocked.kz", "ok"): 2,
        ("blocked.kz", "tls/interception"): 2,
        ("mixed.kz", "dns/nxdomain"): 1,
        ("mixed.kz", "ok"): 1,
    }
    techniques = {(r["domain"], r["outcome"]): r["count"] for r in tables["techniques"].to_pylist()}
    assert techniques == {("blocked.kz", "tls/interception"): 2, ("mixed.kz", "dns/nxdomain"): 1}
    # Union of the two = the six distinct measurements written once.
    write_verdicts(single := tmp_path / "single", [*a, b[-1]])
    assert_tables_equal(_aggregates(single), tables)


def test_events_not_inflated_by_copies(tmp_path: Path) -> None:
    """The story's onset, with the seven quiet days given again under other uids' copies: the
    event's measurements and shares are the story's, not doubled."""
    rows = story()
    write_verdicts(tmp_path / "once", rows)
    write_verdicts(tmp_path / "twice", rows, writer="a")
    write_verdicts(tmp_path / "twice", [_copy(r, source="again.jsonl") for r in rows], writer="b")
    once, twice = _aggregates(tmp_path / "once"), _aggregates(tmp_path / "twice")
    assert once["events"].num_rows > 0
    assert_tables_equal(once, twice)


# --- copies that differ -------------------------------------------------------------------------


def _conflicting_rows() -> list[list[dict[str, Any]]]:
    """Copies that disagree, spread over files and days; returns the rows of three files."""
    day = D(2024, 3, 8)
    base = verdict("c1", ts(day, 10), "ok", confidence=0.0)
    return [
        [
            # c1: the same uid from two sources; "b-collector.sqlite" < "ooni/…": its copy
            # (blocked, and a day later) wins, wherever it is written.
            _copy(base, source="ooni/2024-03-08.jsonl.gz"),
            # c2: same source name (two roots), outcomes differ: "dns/nxdomain" < "ok".
            verdict("c2", ts(day, 11), "ok", confidence=0.0, domain="mixed.kz"),
            # c3: the winning copy is "unsupported": the measurement is not aggregated at all,
            # though its other copy would be.
            _copy(
                verdict("c3", ts(day, 12), "ok", confidence=0.0, domain="other.kz"),
                source="z.jsonl",
            ),
            # c4: copies equal but for confidence: the lower one wins.
            verdict("c4", ts(day, 13), "tcp/reset", confidence=0.6, domain="other.kz"),
        ],
        [
            _copy(
                base,
                source="b-collector.sqlite",
                measurement_start_time=ts(D(2024, 3, 9), 1),
                outcome="tls/interception",
                technique="tls",
                blocked=True,
                confidence=0.9,
            ),
            verdict("c2", ts(day, 11), "dns/nxdomain", confidence=0.8, domain="mixed.kz"),
            _copy(
                verdict("c3", ts(day, 12), "unsupported", confidence=0.0, domain="other.kz"),
                source="a.jsonl",
                blocked=False,
            ),
        ],
        [verdict("c4", ts(day, 13), "tcp/reset", confidence=0.4, domain="other.kz")],
    ]


def _write_files(out: Path, files: list[list[dict[str, Any]]]) -> None:
    for n, rows in enumerate(files):
        write_verdicts(out, rows, writer=f"w{n}")


def test_conflicting_copies_deterministic_winner(tmp_path: Path) -> None:
    files = _conflicting_rows()
    _write_files(tmp_path / "fwd", files)
    _write_files(tmp_path / "rev", files[::-1])  # other writers hold other copies
    stats = duplicate_stats(tmp_path / "fwd")
    assert stats == {
        "rows": 8,
        "measurements": 4,
        "duplicates": 4,
        "duplicated": 4,
        "conflicting": 4,
    }
    tables = _aggregates(tmp_path / "fwd")
    assert_tables_equal(tables, _aggregates(tmp_path / "rev"))
    daily = {(r["domain"], r["day"]): r for r in tables["daily"].to_pylist()}
    # c1 counts once, on the 9th, blocked (the collector's copy); nothing on the 8th.
    assert ("blocked.kz", D(2024, 3, 8)) not in daily
    assert daily[("blocked.kz", D(2024, 3, 9))]["blocked"] == 1
    assert daily[("blocked.kz", D(2024, 3, 9))]["confidence_mean"] == 0.9
    # c2: dns/nxdomain; c3 left out (its winner is unsupported); c4: confidence 0.4.
    assert daily[("mixed.kz", D(2024, 3, 8))]["blocked"] == 1
    other = daily[("other.kz", D(2024, 3, 8))]
    assert (other["measurements"], other["blocked"], other["confidence_mean"]) == (1, 1, 0.4)
    # The query's view keeps the same copies.
    with open_pipeline(tmp_path / "fwd") as con:
        winners = con.execute(
            "SELECT measurement_uid, source, outcome, confidence FROM verdicts ORDER BY 1"
        ).fetchall()
    assert winners == [
        ("c1", "b-collector.sqlite", "tls/interception", 0.9),
        ("c2", "test.jsonl", "dns/nxdomain", 0.8),
        ("c3", "a.jsonl", "unsupported", 0.0),
        ("c4", "test.jsonl", "tcp/reset", 0.4),
    ]
    blocked = {(r["probe_cc"], r["domain"]): r for r in ask(tmp_path / "fwd", "blocked").rows}
    assert {k: (r["blocked"], r["measurements"]) for k, r in blocked.items()} == {
        ("KZ", "blocked.kz"): (1, 1),
        ("KZ", "mixed.kz"): (1, 1),
        ("KZ", "other.kz"): (1, 1),
    }


def test_dedup_order_names_verdict_columns() -> None:
    from netvigil.pipeline.schema import VERDICT_SCHEMA

    assert DEDUP_ORDER[0] == "source"
    assert set(DEDUP_ORDER) - {"day"} <= set(VERDICT_SCHEMA.names)


# --- the Dask engine on duplicated input ---------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        local_cluster(n_workers=2, threads_per_worker=1) as cluster,
        Client(cluster.scheduler_address, timeout=30, set_as_default=False) as c,
    ):
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        c.wait_for_workers(2, timeout=30)
        yield c


@pytest.mark.timeout(120)
def test_dask_equals_duckdb_on_duplicated_input(tmp_path: Path, client: Client) -> None:
    # Copies that differ, across files, writers and days, files holding copies of their own
    # rows, and the story given twice (other source name, other writer)…
    files = _conflicting_rows()
    a, b = _overlap_rows()
    rows = story()
    files += [a, b, [*b, *b], rows, [_copy(r, source="again.jsonl") for r in rows]]
    out = tmp_path / "out"
    _write_files(out, files)
    tables = aggregate_dask(out, client)
    assert_tables_equal(tables, aggregate_duckdb(out))
    daily = {(r["domain"], r["day"]): r for r in tables["daily"].to_pylist()}
    assert daily[("blocked.kz", D(2024, 3, 9))]["blocked"] == 1 + 3  # c1's winner, the story's
    # …and without copies the Dask side takes its plain path: the same tables as one copy.
    write_verdicts(single := tmp_path / "single", story())
    assert_tables_equal(aggregate_dask(single, client), aggregate_duckdb(single))
