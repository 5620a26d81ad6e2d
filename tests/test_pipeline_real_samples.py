"""The pipeline on the 109 real OONI samples, checked against tables worked out by hand.

``tests/data/ooni_samples.jsonl`` holds every real measurement of the project's sample set
(origins in ``tests/data/README.md``). 29 are ``web_connectivity``; the other 80 stay out of
the site aggregates: tests the verdict engine does not judge (``unsupported``), and the
messaging-app tests, which have no URL (their rows are per app and endpoint). For each
``web_connectivity`` sample the expected row below was written from the measurement itself: its
``probe_cc``, ``probe_asn``, input host and UTC day, and the blocking it shows (OONI's own
``blocking`` key, or the blockpage in its body where OONI's probe said ``false``: the Indonesian
Kominfo page of sample 1, the Russian Nevalink forward of sample 47).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from netvigil.pipeline.local import run_local

DATA = Path(__file__).parent / "data"

# (cc, asn, domain, day, measurements, blocked, ok, confidence_mean): every daily row with
# blocking, and the one row holding two measurements (two youtube samples on one day).
BLOCKED_DAILY = [
    ("AU", 9443, "www.feminist.org", "2017-07-25", 1, 1, 0, 0.7),  # http-failure
    ("CN", 4134, "www.efindlove.com", "2017-05-16", 1, 1, 0, 0.7),  # DNS, not a bogon
    ("ID", 23693, "archive.org", "2025-05-27", 1, 1, 0, 0.95),  # Kominfo blockpage
    ("IE", 6830, "www.efindlove.com", "2020-03-03", 1, 1, 0, 0.5),  # http-diff, no fingerprint
    ("IR", 197207, "fa.wikipedia.org", "2020-03-02", 1, 1, 0, 0.95),  # DNS → 10.10.34.x
    ("IR", 197207, "www.facebook.com", "2022-08-15", 1, 1, 0, 0.95),  # DNS → 10.10.34.x
    ("RU", 42668, "rutor.org", "2020-03-03", 1, 1, 0, 0.95),  # Nevalink blockpage
]
TWO_ON_ONE_DAY = ("IT", 30722, "www.youtube.com", "2023-11-30", 2, 0, 2, 0.0)

# The outcome mix over the 29: 12 reachable, 5 down (the site failed for the control too),
# 5 unknown (no usable control), 7 blocked.
OUTCOME_TOTALS = {
    "ok": 12,
    "down": 5,
    "unknown": 5,
    "dns/bogon": 2,
    "dns/bogus": 1,
    "http/failure": 1,
    "http/blockpage": 2,
    "http/diff": 1,
}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copy(DATA / "ooni_samples.jsonl", src / "ooni_samples.jsonl")
    out = tmp_path_factory.mktemp("out") / "pipeline"
    summary = run_local([src], out, workers=1)
    assert summary.to_dict()["totals"]["measurements"] == 109
    return out


def _rows(out: Path, name: str) -> list[dict[str, object]]:
    import pyarrow.parquet as pq

    return list(pq.read_table(out / "aggregates" / f"{name}.parquet").to_pylist())


def test_daily_matches_the_hand_made_table(out: Path) -> None:
    daily = _rows(out, "daily")
    # one row per web_connectivity (cc, asn, domain, day): 29 samples, two share a row
    assert len(daily) == 28
    assert sum(int(str(r["measurements"])) for r in daily) == 29
    got = {
        (r["probe_cc"], r["probe_asn"], r["domain"], str(r["day"])): (
            r["measurements"],
            r["blocked"],
            r["ok"],
            r["confidence_mean"],
        )
        for r in daily
    }
    for cc, asn, domain, day, n, blocked, ok, conf in [*BLOCKED_DAILY, TWO_ON_ONE_DAY]:
        assert got[(cc, asn, domain, day)] == (n, blocked, ok, conf), (cc, domain, day)
    blocked_rows = sorted(k for k, v in got.items() if v[1])
    assert blocked_rows == sorted((r[0], r[1], r[2], r[3]) for r in BLOCKED_DAILY)


def test_outcome_mix_and_first_last_seen(out: Path) -> None:
    totals: dict[str, int] = {}
    for r in _rows(out, "outcomes"):
        totals[str(r["outcome"])] = totals.get(str(r["outcome"]), 0) + int(str(r["count"]))
    assert totals == OUTCOME_TOTALS
    techniques = _rows(out, "techniques")
    assert len(techniques) == len(BLOCKED_DAILY)
    seen = {(r["probe_cc"], r["domain"]): r for r in techniques}
    rutor = seen[("RU", "rutor.org")]
    assert rutor["outcome"] == "http/blockpage" and rutor["count"] == 1
    start = dt.datetime(2020, 3, 3, tzinfo=dt.UTC)
    assert rutor["first_seen"] == rutor["last_seen"]
    assert start <= rutor["first_seen"] < start + dt.timedelta(days=1)  # type: ignore[operator]
    # one measurement per (domain, network): no onset against a baseline, so no event
    assert _rows(out, "events") == []


def test_ingest_report_counts_every_line(out: Path) -> None:
    ingest = json.loads((out / "ingest.json").read_text())
    (report,) = ingest["files"]
    assert report["source"] == "ooni_samples.jsonl"
    assert (report["measurements"], report["verdict_rows"]) == (109, 109)
    assert report["corrupt"] == {} and report["skipped"] == {}
