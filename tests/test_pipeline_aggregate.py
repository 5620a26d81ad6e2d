"""Aggregates and event detection over hand-built verdict tables (netvigil.pipeline.aggregate).

The story (``write_story``): ``blocked.kz`` in KZ AS9198 is reachable for 7 days (3 measurements
a day), then intercepted (``tls/interception``) on 2024-03-08 and 09; ``mixed.kz`` on the 8th
has a DNS NXDOMAIN, an HTTP blockpage, a ``down`` and an ``ok``; another Kazakh network sees
``blocked.kz`` fine; an ``ndt`` row without a domain is left out of every aggregate.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from netvigil.pipeline.aggregate import (
    DAILY_PARTS_SCHEMA,
    aggregate_duckdb,
    build_aggregates,
    detect_events,
    finalize,
    finish_daily,
    onset_p_value,
    write_aggregates,
)
from netvigil.pipeline.schema import AGGREGATE_SCHEMAS, VERDICT_SCHEMA

UTC = dt.UTC
D = dt.date


def ts(day: dt.date, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def verdict(
    uid: str,
    when: dt.datetime,
    outcome: str,
    *,
    domain: str = "blocked.kz",
    cc: str = "KZ",
    asn: int = 9198,
    blocked: bool | None = None,
    confidence: float = 0.9,
    fingerprint: str | None = None,
    root: str | None = None,
    test_name: str = "web_connectivity",
) -> dict[str, Any]:
    is_blocked = (outcome not in ("ok", "down", "unknown")) if blocked is None else blocked
    return {
        "measurement_uid": uid,
        "report_id": "r-" + uid,
        "test_name": test_name,
        "input": f"https://{domain}/" if domain else None,
        "domain": domain,
        "probe_cc": cc,
        "probe_asn": asn,
        "measurement_start_time": when,
        "outcome": outcome,
        "technique": outcome.split("/", 1)[0] if is_blocked else "",
        "blocked": is_blocked,
        "confidence": confidence,
        "blocking": "false" if not is_blocked else "tcp_ip",
        "accessible": not is_blocked,
        "fingerprint": fingerprint,
        "root": root,
        "source": "test.jsonl",
    }


def write_verdicts(out: Path, rows: list[dict[str, Any]], writer: str = "t") -> None:
    """Write rows as the pipeline does: OUT/verdicts/day=YYYY-MM-DD/part-<writer>-0.parquet."""
    by_day: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day[row["measurement_start_time"].astimezone(UTC).date()].append(row)
    for day, day_rows in by_day.items():
        folder = out / "verdicts" / f"day={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(day_rows, schema=VERDICT_SCHEMA)
        pq.write_table(table, folder / f"part-{writer}-0.parquet")


def story() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    n = 0

    def add(*args: Any, **kwargs: Any) -> None:
        nonlocal n
        n += 1
        rows.append(verdict(f"u{n:04d}", *args, **kwargs))

    for i in range(1, 8):
        for k in range(3):
            add(ts(D(2024, 3, i), 8 + k), "ok", confidence=0.0)
    for k in range(4):
        add(
            ts(D(2024, 3, 8), 9, k), "tls/interception", confidence=0.9, root="Qaznet Trust Network"
        )
    for k in range(3):
        add(ts(D(2024, 3, 9), 10, k), "tls/interception", confidence=0.9)
    add(ts(D(2024, 3, 8), 7), "dns/nxdomain", domain="mixed.kz", confidence=0.8)
    add(
        ts(D(2024, 3, 8), 8),
        "http/blockpage",
        domain="mixed.kz",
        confidence=0.95,
        fingerprint="kz_1",
    )
    add(ts(D(2024, 3, 8), 9), "down", domain="mixed.kz", confidence=0.5)
    add(ts(D(2024, 3, 8), 10), "ok", domain="mixed.kz", confidence=0.0)
    add(ts(D(2024, 3, 8), 11), "ok", asn=48716, confidence=0.0)
    add(ts(D(2024, 3, 8), 12), "ok", domain="", cc="RU", asn=12389, test_name="ndt")
    return rows


def write_story(out: Path) -> None:
    write_verdicts(out, story())


def test_daily_outcomes_techniques_exact(tmp_path: Path) -> None:
    write_story(tmp_path)
    tables = aggregate_duckdb(tmp_path)
    for name, table in tables.items():
        assert table.schema == AGGREGATE_SCHEMAS[name], name

    daily = tables["daily"].to_pylist()
    expected_daily = [
        *(
            {
                "probe_cc": "KZ",
                "probe_asn": 9198,
                "domain": "blocked.kz",
                "day": D(2024, 3, i),
                "measurements": 3,
                "blocked": 0,
                "ok": 3,
                "offline": 0,
                "confidence_mean": 0.0,
            }
            for i in range(1, 8)
        ),
        {
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "blocked.kz",
            "day": D(2024, 3, 8),
            "measurements": 4,
            "blocked": 4,
            "ok": 0,
            "offline": 0,
            "confidence_mean": 0.9,
        },
        {
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "blocked.kz",
            "day": D(2024, 3, 9),
            "measurements": 3,
            "blocked": 3,
            "ok": 0,
            "offline": 0,
            "confidence_mean": 0.9,
        },
        {
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "mixed.kz",
            "day": D(2024, 3, 8),
            "measurements": 4,
            "blocked": 2,
            "ok": 1,
            "offline": 0,
            "confidence_mean": 0.875,
        },
        {
            "probe_cc": "KZ",
            "probe_asn": 48716,
            "domain": "blocked.kz",
            "day": D(2024, 3, 8),
            "measurements": 1,
            "blocked": 0,
            "ok": 1,
            "offline": 0,
            "confidence_mean": 0.0,
        },
    ]
    key = lambda r: (r["probe_cc"], r["probe_asn"], r["domain"], r["day"])  # noqa: E731
    assert daily == sorted(expected_daily, key=key)

    outcomes = [
        (r["probe_asn"], r["domain"], r["day"].day, r["outcome"], r["count"])
        for r in tables["outcomes"].to_pylist()
    ]
    assert outcomes == [
        (9198, "blocked.kz", 1, "ok", 3),
        (9198, "blocked.kz", 2, "ok", 3),
        (9198, "blocked.kz", 3, "ok", 3),
        (9198, "blocked.kz", 4, "ok", 3),
        (9198, "blocked.kz", 5, "ok", 3),
        (9198, "blocked.kz", 6, "ok", 3),
        (9198, "blocked.kz", 7, "ok", 3),
        (9198, "blocked.kz", 8, "tls/interception", 4),
        (9198, "blocked.kz", 9, "tls/interception", 3),
        (9198, "mixed.kz", 8, "dns/nxdomain", 1),
        (9198, "mixed.kz", 8, "down", 1),
        (9198, "mixed.kz", 8, "http/blockpage", 1),
        (9198, "mixed.kz", 8, "ok", 1),
        (48716, "blocked.kz", 8, "ok", 1),
    ]

    assert tables["techniques"].to_pylist() == [
        {
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "blocked.kz",
            "outcome": "tls/interception",
            "first_seen": ts(D(2024, 3, 8), 9, 0),
            "last_seen": ts(D(2024, 3, 9), 10, 2),
            "count": 7,
        },
        {
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "mixed.kz",
            "outcome": "dns/nxdomain",
            "first_seen": ts(D(2024, 3, 8), 7),
            "last_seen": ts(D(2024, 3, 8), 7),
            "count": 1,
        },
        {
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "mixed.kz",
            "outcome": "http/blockpage",
            "first_seen": ts(D(2024, 3, 8), 8),
            "last_seen": ts(D(2024, 3, 8), 8),
            "count": 1,
        },
    ]


def test_events_from_story(tmp_path: Path) -> None:
    write_story(tmp_path)
    events = detect_events(aggregate_duckdb(tmp_path)["daily"])
    assert events.schema == AGGREGATE_SCHEMAS["events"]
    assert events.to_pylist() == [
        {
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "blocked.kz",
            "day": D(2024, 3, 8),
            "blocked_share": 1.0,
            "baseline_share": 0.0,
            "baseline_days": 7,
            "measurements": 4,
            # 4 of 4 blocked against 0 of 21: of the C(25, 4) ways to pick the day's 4, one
            "p_value": 1 / 12650,
        },
        {
            # the baseline (2nd–8th) now holds the 4 blocked of the 8th: 4/22
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "blocked.kz",
            "day": D(2024, 3, 9),
            "blocked_share": 1.0,
            "baseline_share": 4 / 22,
            "baseline_days": 7,
            "measurements": 3,
            # 3 of 3 against 4 of 22: C(7, 3) of the C(25, 3) ways to pick the day's 3
            "p_value": 35 / 2300,
        },
    ]


def test_empty_and_missing_verdicts(tmp_path: Path) -> None:
    for out in (tmp_path / "missing", tmp_path):
        (tmp_path / "verdicts").mkdir(exist_ok=True)
        tables = aggregate_duckdb(out)
        assert set(tables) == {"daily", "outcomes", "techniques", "apps"}
        for name, table in tables.items():
            assert table.num_rows == 0
            assert table.schema == AGGREGATE_SCHEMAS[name]
    built = build_aggregates(tmp_path)
    assert built["events"].num_rows == 0
    for name in AGGREGATE_SCHEMAS:
        table = pq.read_table(tmp_path / "aggregates" / f"{name}.parquet")
        assert table.num_rows == 0
        assert table.schema.remove_metadata() == AGGREGATE_SCHEMAS[name]


def test_temp_files_and_several_writers(tmp_path: Path) -> None:
    rows = story()
    write_verdicts(tmp_path, rows[:10], writer="a")
    write_verdicts(tmp_path, rows[10:], writer="b")
    # a writer's unfinished temporary file must not be read
    junk = tmp_path / "verdicts" / "day=2024-03-08" / ".part-c-0.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:3], schema=VERDICT_SCHEMA), junk)
    split = aggregate_duckdb(tmp_path)
    whole_dir = tmp_path / "whole"
    write_story(whole_dir)
    whole = aggregate_duckdb(whole_dir)
    for name in split:
        assert split[name].equals(whole[name]), name


def test_build_writes_atomically_and_reads_back(tmp_path: Path) -> None:
    write_story(tmp_path)
    tables = build_aggregates(tmp_path)
    agg = tmp_path / "aggregates"
    assert sorted(p.name for p in agg.iterdir()) == [
        "apps.parquet",  # empty: no messaging measurement here
        "daily.parquet",
        "events.parquet",
        "outcomes.parquet",
        "techniques.parquet",
    ]
    for name, table in tables.items():
        assert pq.read_table(agg / f"{name}.parquet").cast(AGGREGATE_SCHEMAS[name]).equals(table)
    # events computed from daily when not given
    write_aggregates(tmp_path, {"daily": tables["daily"]})
    assert pq.read_table(agg / "events.parquet").num_rows == 2
    assert pq.read_table(agg / "outcomes.parquet").num_rows == 0
    with pytest.raises(ValueError, match="unknown"):
        write_aggregates(tmp_path, {"nope": tables["daily"]})


def test_finish_daily_rounds_exactly_half_to_even() -> None:
    parts = pa.table(
        {
            "probe_cc": ["KZ"] * 4,
            "probe_asn": [1, 2, 3, 4],
            "domain": ["a"] * 4,
            "day": [D(2024, 1, 1)] * 4,
            "measurements": [1, 1, 2, 5],
            "blocked": [1, 1, 0, 3],
            "ok": [0, 0, 2, 0],
            "offline": [0, 0, 0, 0],
            # 1.5 and 2.5 millionths: ties go to the even neighbour; 3 × 0.9 = 0.9
            "confidence_nanos": [1500, 2500, 0, 2_700_000_000],
        },
        schema=DAILY_PARTS_SCHEMA,
    )
    assert finish_daily(parts).column("confidence_mean").to_pylist() == [
        0.000002,
        0.000002,
        0.0,
        0.9,
    ]


def assert_tables_equal(
    left: dict[str, pa.Table], right: dict[str, pa.Table], names: Sequence[str] | None = None
) -> None:
    """The same tables (``names``, default all of ``left``), schema and bits, with a readable
    diff when they are not."""
    for name in names if names is not None else list(left):
        a, b = left[name], right[name]
        assert a.schema.equals(b.schema), name
        if not a.equals(b):
            raise AssertionError(f"{name} differs:\n{a.to_pylist()}\n!=\n{b.to_pylist()}")


def _daily(
    series: dict[int, tuple[int, int]],
    start: dt.date = dt.date(2024, 3, 1),
    *,
    asn: int = 9198,
    domain: str = "x.kz",
) -> pa.Table:
    rows = [
        {
            "probe_cc": "KZ",
            "probe_asn": asn,
            "domain": domain,
            "day": start + dt.timedelta(days=offset),
            "measurements": measured,
            "blocked": blocked,
            "ok": measured - blocked,
            "confidence_mean": 0.9 if blocked else 0.0,
        }
        for offset, (measured, blocked) in series.items()
    ]
    return pa.Table.from_pylist(rows, schema=AGGREGATE_SCHEMAS["daily"])


def _event_days(table: pa.Table) -> list[int]:
    return [(d - D(2024, 3, 1)).days for d in table.column("day").to_pylist()]


def test_detect_events_thresholds() -> None:
    base = {i: (3, 0) for i in range(7)}
    # onset on day 7
    assert _event_days(detect_events(_daily({**base, 7: (3, 3)}))) == [7]
    # too few measurements on the day
    assert _event_days(detect_events(_daily({**base, 7: (2, 2)}))) == []
    assert _event_days(detect_events(_daily({**base, 7: (2, 2)}), min_measurements=2)) == [7]
    # share exactly baseline + jump is flagged (2/4 = 0 + 0.5); just below is not
    assert _event_days(detect_events(_daily({**base, 7: (4, 2)}))) == [7]
    assert _event_days(detect_events(_daily({**base, 7: (5, 2)}))) == []
    # a blocked baseline: 0.6 → 1.0 is not a jump of 0.5
    blocked_base = {i: (5, 3) for i in range(7)}
    assert _event_days(detect_events(_daily({**blocked_base, 7: (5, 5)}))) == []
    # a sparse baseline: only 2 of the 7 previous days have data
    sparse = {0: (3, 0), 5: (3, 0), 7: (3, 3)}
    assert _event_days(detect_events(_daily(sparse))) == []
    assert _event_days(detect_events(_daily(sparse), min_baseline_days=2)) == [7]
    # days outside the window do not count: data on days 0-2, gap, onset on day 10
    old = {0: (3, 0), 1: (3, 0), 2: (3, 0), 10: (3, 3)}
    assert _event_days(detect_events(_daily(old))) == []
    assert _event_days(detect_events(_daily(old), baseline_days=10)) == [10]
    # the first days of a series never have a baseline
    assert _event_days(detect_events(_daily({0: (9, 9), 1: (9, 9)}))) == []
    # chance: 3 of 3 blocked after 0 of 3 has p = 1/C(6, 3) = 0.05 exactly — flagged at the
    # default 0.05, not just below it
    thin = {0: (1, 0), 1: (1, 0), 2: (1, 0), 3: (3, 3)}
    assert _event_days(detect_events(_daily(thin))) == [3]
    assert _event_days(detect_events(_daily(thin), max_p=0.0499)) == []
    # a noisy domain: 6 of 13 blocked in the baseline, then 4 of 4 — a jump of 0.54, but
    # p = C(10, 4) / C(17, 4) = 210/2380 = 0.088: not flagged unless the limit allows it
    noisy = {0: (5, 2), 1: (4, 2), 2: (4, 2), 3: (4, 4)}
    assert _event_days(detect_events(_daily(noisy))) == []
    assert _event_days(detect_events(_daily(noisy), max_p=0.1)) == [3]
    flagged = detect_events(_daily(noisy), max_p=0.1).to_pylist()[0]
    assert flagged["p_value"] == 210 / 2380
    with pytest.raises(ValueError):
        detect_events(_daily(base), max_p=0.0)
    with pytest.raises(ValueError):
        detect_events(_daily(base), baseline_days=2, min_baseline_days=3)


def test_detect_events_keys_are_separate_and_output_sorted() -> None:
    base = {i: (3, 0) for i in range(7)}
    a = _daily({**base, 7: (3, 3)})
    b = _daily({**base, 7: (3, 3)}, domain="a.kz")
    c = _daily({**base, 7: (3, 3)}, asn=1)
    events = detect_events(pa.concat_tables([a, b, c]))
    assert [(r["probe_asn"], r["domain"]) for r in events.to_pylist()] == [
        (1, "x.kz"),
        (9198, "a.kz"),
        (9198, "x.kz"),
    ]
    assert detect_events(AGGREGATE_SCHEMAS["daily"].empty_table()).num_rows == 0
    # deterministic: same input, same output
    assert detect_events(pa.concat_tables([c, b, a])).equals(events)


def test_sql_order_is_pyarrow_order(tmp_path: Path) -> None:
    """DuckDB sorts the aggregates; ``finalize`` (pyarrow, byte order) must agree exactly."""
    names = [
        "zeta.kz",
        "Alpha.kz",
        "alpha.kz",
        "ä.example",
        "xn--80ak6aa92e.com",
        "a-b.kz",
        "a.b.kz",
    ]
    rows = [
        verdict(f"s{i}", ts(D(2024, 3, 1 + i % 3), i // 60, i % 60), outcome, domain=name, asn=asn)
        for i, (name, outcome, asn) in enumerate(
            (n, o, a)
            for n in names
            for o in ("ok", "dns/nxdomain", "http/blockpage", "tls/reset")
            for a in (9198, 48716, 0)
        )
    ]
    write_verdicts(tmp_path, rows)
    tables = aggregate_duckdb(tmp_path)
    tables.pop("apps")  # from OUT/endpoints: no messaging rows here (pyarrow sorts it anyway)
    for name, table in tables.items():
        assert table.num_rows > 0
        assert finalize(name, table).equals(table), name


def _fisher_p(blocked: int, measured: int, base_blocked: int, base_measured: int) -> Fraction:
    """One-sided Fisher's exact p-value, term by term from the hypergeometric formula."""
    n_all, k_all = measured + base_measured, blocked + base_blocked
    tail = sum(
        math.comb(k_all, x) * math.comb(n_all - k_all, measured - x)
        for x in range(blocked, measured + 1)
    )
    return Fraction(tail, math.comb(n_all, measured))


def test_onset_p_value_is_fishers_exact_test() -> None:
    # worked by hand: C(7,3)/C(25,3) = 35/2300; 1/C(12,3) = 1/220; C(10,4)/C(17,4) = 210/2380
    assert onset_p_value(3, 3, 4, 22) == Fraction(35, 2300)
    assert onset_p_value(3, 3, 0, 9) == Fraction(1, 220)
    assert onset_p_value(4, 4, 6, 13) == Fraction(210, 2380)
    # 2 of 4 against 1 of 6: x = 2 and x = 3 of the 3 blocked in the day's 4
    assert onset_p_value(2, 4, 1, 6) == Fraction(3 * 21 + 1 * 7, 210)
    assert onset_p_value(0, 5, 0, 5) == 1
    for args in [
        (b, m, bb, bm)
        for m in range(1, 7)
        for b in range(m + 1)
        for bm in range(0, 7)
        for bb in range(bm + 1)
    ]:
        assert onset_p_value(*args) == _fisher_p(*args), args
    # past EXACT_P_MAX_N, floating point: close to the exact value
    big = (2800, 3000, 1000, 3000)
    assert abs(float(onset_p_value(*big)) - float(_fisher_p(*big))) < 1e-12
    assert (
        abs(float(onset_p_value(40, 3000, 30, 3000)) - float(_fisher_p(40, 3000, 30, 3000))) < 1e-9
    )


def _reference_events(
    daily: pa.Table,
    baseline_days: int,
    min_measurements: int,
    min_baseline_days: int,
    jump: float,
    max_p: float,
) -> list[tuple[Any, ...]]:
    """The rule as written, the slow way: calendar windows and exact fractions."""

    data: dict[tuple[str, int, str], dict[dt.date, tuple[int, int]]] = defaultdict(dict)
    for r in daily.to_pylist():
        data[(r["probe_cc"], r["probe_asn"], r["domain"])][r["day"]] = (
            r["measurements"],
            r["blocked"],
        )
    out = []
    for key, days in data.items():
        for day, (m, b) in days.items():
            window = [
                days[day - dt.timedelta(days=k)]
                for k in range(1, baseline_days + 1)
                if day - dt.timedelta(days=k) in days
            ]
            if m < min_measurements or len(window) < min_baseline_days:
                continue
            base_b, base_m = sum(x[1] for x in window), sum(x[0] for x in window)
            base = Fraction(base_b, base_m)
            if Fraction(b, m) < base + Fraction(repr(jump)):
                continue
            p = _fisher_p(b, m, base_b, base_m)
            if p <= Fraction(repr(max_p)):
                out.append(
                    (*key, day, float(Fraction(b, m)), float(base), len(window), m, float(p))
                )
    return sorted(out)


@pytest.mark.parametrize("seed", range(5))
def test_detect_events_matches_the_rule(seed: int) -> None:
    import random

    rnd = random.Random(seed)
    rows = []
    for asn in (1, 2):
        for domain in ("a.kz", "b.kz"):
            for offset in rnd.sample(range(40), 25):
                m = rnd.randint(1, 6)
                rows.append(
                    {
                        "probe_cc": "KZ",
                        "probe_asn": asn,
                        "domain": domain,
                        "day": D(2024, 2, 20) + dt.timedelta(days=offset),
                        "measurements": m,
                        "blocked": rnd.choice([0, 0, 0, m, rnd.randint(0, m)]),
                        "ok": 0,
                        "offline": 0,
                        "confidence_mean": 0.0,
                    }
                )
    daily = pa.Table.from_pylist(rows, schema=AGGREGATE_SCHEMAS["daily"])
    for params in ((7, 3, 3, 0.5, 0.05), (5, 1, 2, 0.3, 0.2), (3, 2, 1, 0.25, 1.0)):
        got = [
            tuple(r.values())
            for r in detect_events(
                daily,
                **dict(
                    zip(
                        (
                            "baseline_days",
                            "min_measurements",
                            "min_baseline_days",
                            "jump",
                            "max_p",
                        ),
                        params,
                        strict=True,
                    )
                ),
            ).to_pylist()
        ]
        assert got == _reference_events(daily, *params), params
