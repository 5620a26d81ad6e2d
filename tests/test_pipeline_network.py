"""The pipeline counts a network's offline periods apart, never as blocking of its sites.

Input: the real OONI measurements of ``tests/data`` as one network (KZ AS9198) would have sent
them in three runs: online on 2024-03-01, offline (a shutdown) from 12:00 on 2024-03-02, and
degraded on 2024-03-03 (a reference target timing out at TCP: only a matching failure is
excused). Both engines (local DuckDB, Dask) must write the same rows and aggregates.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from netvigil.pipeline import report
from netvigil.pipeline.aggregate import detect_events, detect_onsets
from netvigil.pipeline.dask_engine import run_on_cluster
from netvigil.pipeline.local import run_local
from netvigil.pipeline.query import Filters, QueryError, ask, make_filters, render_table
from netvigil.pipeline.schema import AGGREGATE_SCHEMAS
from netvigil.verdict import analyze
from test_pipeline_dask import _rows, cluster_address  # noqa: F401 (a fixture)

DATA = Path(__file__).parent / "data" / "ooni_web_connectivity.jsonl"
D = dt.date


def _status(status: str, failed: list[tuple[str, str, str]]) -> dict[str, Any]:
    checks = [
        {"check": "resolver", "target": "198.18.10.53", "ok": True, "stage": None, "failure": None}
    ]
    checks += [
        {"check": kind, "target": target, "ok": False, "stage": stage, "failure": failure}
        for kind, target, stage, failure in [
            (k, f"http://ref{n}.example/" if k == "reference" else "x", s, f)
            for n, (k, s, f) in enumerate(failed)
        ]
    ]
    if status == "offline":
        checks = [
            {**c, "ok": False, "stage": "dns", "failure": "generic_timeout_error"} for c in checks
        ]
    for check in checks:
        check["t"] = "2024-03-02 12:00:00"
    return {"status": status, "evidence": checks}


RUNS = (
    ("online", D(2024, 3, 1), 10, _status("online", [])),
    ("offline", D(2024, 3, 2), 12, _status("offline", [("control", "tcp", "x")])),
    (
        "degraded",
        D(2024, 3, 3),
        9,
        _status("degraded", [("reference", "tcp", "generic_timeout_error")]),
    ),
)


def _real() -> list[dict[str, Any]]:
    """The samples that have test_keys (a probe of ours writes them on every measurement)."""
    found = [json.loads(line) for line in DATA.read_text().splitlines()]
    return [m for m in found if isinstance(m.get("test_keys"), dict)]


def _measurements() -> list[dict[str, Any]]:
    real = _real()
    out = []
    for name, day, hour, status in RUNS:
        for n, m in enumerate(real):
            copied = copy.deepcopy(m)
            copied["measurement_uid"] = f"20240301-{name}-{n:03d}"
            copied["probe_cc"], copied["probe_asn"] = "KZ", "AS9198"
            when = dt.datetime.combine(day, dt.time(hour, n))
            copied["measurement_start_time"] = when.strftime("%Y-%m-%d %H:%M:%S")
            copied["test_keys"]["x_network_status"] = status
            out.append(copied)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cluster_address: str) -> tuple[Path, Path]:  # noqa: F811
    base = tmp_path_factory.mktemp("network")
    src = base / "in.jsonl"
    src.write_text("".join(json.dumps(m) + "\n" for m in _measurements()))
    run_local([src], base / "local", workers=1)
    run_on_cluster([src], base / "dask", cluster_address)
    return base / "local", base / "dask"


def test_engines_agree_and_rows_carry_the_network_status(runs: tuple[Path, Path]) -> None:
    local, dask = runs
    a, b = _rows(local, "verdicts"), _rows(dask, "verdicts")
    assert a.equals(b)
    for name in ("daily", "outcomes", "techniques", "events"):
        assert pq.read_table(local / "aggregates" / f"{name}.parquet").equals(
            pq.read_table(dask / "aggregates" / f"{name}.parquet")
        ), name
    rows = a.to_pylist()
    real = _real()
    assert len(rows) == 3 * len(real)
    by_status: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_status.setdefault(row["network_status"], []).append(row)
    assert {k: len(v) for k, v in by_status.items()} == {s: len(real) for s, *_ in RUNS}
    assert all(r["outcome"] == "network/offline" and not r["blocked"] for r in by_status["offline"])
    # online: each measurement's own verdict; degraded: the same, except a tcp/timeout (which
    # matches the failing reference) — there are none in these samples but the rule is applied
    own = sorted(analyze(m).outcome.split(":")[0] for m in real)
    assert sorted(r["outcome"] for r in by_status["online"]) == own
    assert sorted(r["outcome"] for r in by_status["degraded"]) == own


def test_daily_counts_offline_apart_never_as_blocked(runs: tuple[Path, Path]) -> None:
    local, _ = runs
    daily = pq.read_table(local / "aggregates" / "daily.parquet").to_pylist()
    offline_day = [r for r in daily if r["day"] == D(2024, 3, 2)]
    assert offline_day and all(r["blocked"] == 0 and r["ok"] == 0 for r in offline_day)
    assert all(r["offline"] == r["measurements"] for r in offline_day)
    other = [r for r in daily if r["day"] != D(2024, 3, 2)]
    assert sum(r["blocked"] for r in other) > 0 and all(r["offline"] == 0 for r in other)


def test_query_network_periods_and_filter(runs: tuple[Path, Path]) -> None:
    local, _ = runs
    periods = ask(local, "network", Filters())
    n = len(_real())
    assert [(r["status"], r["measurements"]) for r in periods.rows] == [
        ("offline", n),
        ("degraded", n),
    ]
    first = periods.rows[0]
    assert first["probe_cc"] == "KZ" and first["probe_asn"] == 9198
    assert first["from_time"] == dt.datetime(2024, 3, 2, 12, 0, tzinfo=dt.UTC)
    assert first["to_time"] == dt.datetime(2024, 3, 2, 12, n - 1, tzinfo=dt.UTC)
    lines = render_table(periods, width=80)
    assert max(len(line) for line in lines) <= 80
    assert any("2024-03-02 12:00:00Z" in line for line in lines)  # the time, not only the day
    assert ask(local, "network", make_filters(since="2024-03-03")).rows[0]["status"] == "degraded"
    # --network: nothing offline is blocked; online blocking is still found
    assert ask(local, "blocked", make_filters(network="offline")).rows == []
    assert ask(local, "blocked", make_filters(network="online")).rows
    mix = ask(local, "outcomes", make_filters(network="offline")).rows
    assert [(r["outcome"], r["blocking"]) for r in mix] == [("network/offline", False)]
    assert ask(local, "outcomes", make_filters(network="unchecked")).rows == []
    with pytest.raises(QueryError, match="--network"):
        ask(local, "timeline", make_filters(network="offline"))
    with pytest.raises(QueryError, match="--network"):
        make_filters(network="down")


def test_report_band_shows_the_shutdown(runs: tuple[Path, Path], tmp_path: Path) -> None:
    local, _ = runs
    page_path = tmp_path / "r.html"
    report.write_report(local, page_path)
    page = page_path.read_text(encoding="utf-8")
    section = page[page.index('id="network-status"') : page.index("Timeline per technique")]
    bands = re.findall(r'<figure class="net-band">.*?</figure>', section, re.S)
    n = len(_real())
    assert len(bands) == 1 and "KZ AS9198" in bands[0] and f"{n} offline, {n} degraded" in bands[0]
    svg = bands[0]
    assert 'width="100%"' in svg and 'class="axis"' in svg
    # three days: online, offline, degraded, in that order along the x axis
    fills = re.findall(r'<rect class="net-(\w+)" x="([\d.]+)"', svg)
    assert [s for s, _ in sorted(fills, key=lambda f: float(f[1]))] == [
        "online",
        "offline",
        "degraded",
    ]
    assert "2024-03-02 12:00:00Z" in section  # the period's table
    assert "network offline: not judged" in page


def test_a_shutdown_in_the_baseline_does_not_make_an_onset() -> None:
    """A site blocked for a week, then a shutdown, then blocked again: no onset. Counted as
    measured-not-blocked, the offline days would pull the baseline down and fire one."""
    rows = [(D(2024, 3, d), 3, 3, 0) for d in range(1, 6)]  # blocked 3 of 3
    rows += [(D(2024, 3, d), 3, 0, 3) for d in range(6, 11)]  # offline
    rows += [(D(2024, 3, 11), 3, 3, 0)]
    daily = pa.table(
        {
            "probe_cc": ["KZ"] * len(rows),
            "probe_asn": [1] * len(rows),
            "domain": ["a.kz"] * len(rows),
            "day": [r[0] for r in rows],
            "measurements": [r[1] for r in rows],
            "blocked": [r[2] for r in rows],
            "ok": [0] * len(rows),
            "offline": [r[3] for r in rows],
            "confidence_mean": [0.9] * len(rows),
        },
        schema=AGGREGATE_SCHEMAS["daily"],
    )
    assert detect_events(daily).num_rows == 0
    # the same table read as if offline were ordinary measurements fires an onset
    naive = daily.set_column(
        daily.schema.get_field_index("offline"), "offline", pa.array([0] * len(rows), pa.int64())
    )
    events = detect_events(naive)
    assert events.column("day").to_pylist() == [D(2024, 3, 11)]
    assert detect_onsets(events, naive).num_rows == 1
    # and an onset found elsewhere is neither broken nor extended by offline days
    assert detect_onsets(events, daily).column("end").to_pylist() == [None]
