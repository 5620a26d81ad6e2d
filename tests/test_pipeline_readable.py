"""Issue 12, items 4 and 5: ``netvigil query`` readable at 80 columns and exact in JSON/CSV,
events as onsets, the report's charts (axes, ticks, full width, distinct colours, one day),
``report --asn/--domain``, and the pipeline rejecting invalid countries, networks, hosts and
start times (counted per file, never in the tables or the report).

The demo-like data is generated as ``make demo`` does (real OONI templates, a sudden onset of
TLS blocking in KZ on day 9), smaller.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from netvigil.cli import main as netvigil_main
from netvigil.pipeline import report
from netvigil.pipeline.aggregate import detect_onsets
from netvigil.pipeline.cli import print_summary
from netvigil.pipeline.local import run_local
from netvigil.pipeline.query import (
    QUESTIONS,
    Filters,
    Result,
    ask,
    ellipsize,
    make_filters,
    render_table,
    run_sql,
)
from netvigil.pipeline.schema import AGGREGATE_SCHEMAS

D = dt.date
ONSET_DAY = D(2022, 1, 5)
EVENT_DOMAINS = ("docs.google.com", "facebook.com")
NETWORKS = (9198, 206026)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ``make demo``: 16 days from 2021-12-27, TLS blocking of two domains from day 9."""
    root = tmp_path_factory.mktemp("demo")
    rc = netvigil_main(
        [
            "pipeline",
            "generate",
            "--out",
            str(root / "ooni"),
            "--count",
            "2500",
            "--days",
            "16",
            "--start",
            "2021-12-27",
            "--seed",
            "7",
            "--country",
            "KZ:AS9198,AS206026",
            "--domains",
            "8",
            "--event",
            "KZ:9:" + ",".join(EVENT_DOMAINS) + ":tls",
            "--json",
        ]
    )
    assert rc == 0
    run_local([root / "ooni"], root / "pipeline", workers=1)
    return root / "pipeline"


# --- onsets ---------------------------------------------------------------------------------


def test_events_are_onsets_on_demo_like_data(demo: Path) -> None:
    onsets = ask(demo, "events", Filters())
    assert [(r["probe_asn"], r["domain"], r["start"], r["end"]) for r in onsets.rows] == [
        (asn, domain, ONSET_DAY, None) for asn in NETWORKS for domain in EVENT_DOMAINS
    ]
    for row in onsets.rows:
        assert row["peak_share"] == 1.0 and 0 < row["p_value"] <= 0.05
        assert row["days_held"] == 7  # 2022-01-05 to 2022-01-11, every day measured
    # the flagged days are more than the onsets: the blocking is flagged again while the
    # baseline still predates it (the demo printed 30 "events" for 8 onsets)
    flagged = run_sql(demo, "SELECT count(*) AS n FROM events").rows[0]["n"]
    assert flagged > len(onsets.rows)
    # the report counts onsets, not flagged days
    summary = report.write_report(demo, demo.parent / "r.html")
    assert summary.events == len(onsets.rows)
    assert '<div class="card"><b>4</b>onsets of blocking</div>' in (
        demo.parent / "r.html"
    ).read_text(encoding="utf-8")
    # a range that starts after the onset still shows it while it holds
    assert len(ask(demo, "events", make_filters(since="2022-01-08")).rows) == 4
    assert ask(demo, "events", make_filters(until="2022-01-04")).rows == []


def _daily(rows: list[tuple[D, int, int]], domain: str = "a.kz") -> pa.Table:
    return pa.table(
        {
            "probe_cc": ["KZ"] * len(rows),
            "probe_asn": [1] * len(rows),
            "domain": [domain] * len(rows),
            "day": [d for d, _, _ in rows],
            "measurements": [m for _, m, _ in rows],
            "blocked": [b for _, _, b in rows],
            "ok": [m - b for _, m, b in rows],
            "offline": [0] * len(rows),
            "confidence_mean": [0.9] * len(rows),
        },
        schema=AGGREGATE_SCHEMAS["daily"],
    )


def _events(days: list[tuple[D, float]], domain: str = "a.kz") -> pa.Table:
    return pa.table(
        {
            "probe_cc": ["KZ"] * len(days),
            "probe_asn": [1] * len(days),
            "domain": [domain] * len(days),
            "day": [d for d, _ in days],
            "blocked_share": [1.0] * len(days),
            "baseline_share": [b for _, b in days],
            "baseline_days": [7] * len(days),
            "measurements": [4] * len(days),
            "p_value": [0.001 * (i + 1) for i in range(len(days))],
        },
        schema=AGGREGATE_SCHEMAS["events"],
    )


def test_onset_ends_when_blocking_lifts_and_a_new_one_starts() -> None:
    day = D(2024, 3, 1)

    def at(n: int) -> D:
        return day + dt.timedelta(days=n)

    daily = _daily(
        [
            (at(10), 4, 4),  # onset 1 (flagged)
            (at(11), 4, 4),  # flagged again: the same onset
            # at(12) not measured: a gap does not end it
            (at(13), 4, 3),  # 0.75 >= 0 + 0.5: holds
            (at(14), 4, 1),  # 0.25: lifted, onset 1 ended on at(13)
            (at(20), 5, 5),  # onset 2, still holding on the last measured day
            (at(21), 5, 4),
        ]
    )
    events = _events([(at(10), 0.0), (at(11), 0.0), (at(20), 0.25)])
    rows = detect_onsets(events, daily).to_pylist()
    assert [(r["start"], r["end"], r["days_held"], r["measurements"]) for r in rows] == [
        (at(10), at(13), 3, 12),
        (at(20), None, 2, 10),
    ]
    assert rows[0]["peak_share"] == 1.0 and rows[0]["p_value"] == 0.001
    assert rows[1]["baseline_share"] == 0.25 and rows[1]["p_value"] == 0.003
    # with no events there is nothing to read and no onset
    assert detect_onsets(_events([]), daily).num_rows == 0


# --- query at 80 columns ----------------------------------------------------------------------


# ``network`` has no rows in the generated demo (its probes record no network status) and shows
# times on purpose: tests/test_network_status.py checks its table.
@pytest.mark.parametrize("what", [q for q in QUESTIONS if q != "network"])
def test_query_fits_80_columns_one_line_per_row(demo: Path, what: str) -> None:
    if what == "apps":
        pytest.skip("the demo has no messaging measurements: tests/test_pipeline_apps.py")
    result = ask(demo, what, make_filters(cc="KZ"), limit=30)
    assert result.rows
    lines = render_table(result, width=80)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    # title, header, rule, one line per row (no cell wrapped), then the notes
    body = lines[3 : 3 + len(result.rows)]
    assert len(body) == len(result.rows)
    assert not any(line.startswith(" " * 10) for line in body)  # no continuation lines
    for line in body:
        # dates without the time
        assert not re.search(r"\d\d:\d\d:\d\d", line)


def test_query_narrow_columns_and_wide(demo: Path) -> None:
    result = ask(demo, "events", Filters())
    narrow = render_table(result, width=80)
    assert narrow[1].split() == ["cc", "asn", "domain", "start", "end", "peak", "p"]
    assert all("ongoing" in line and "100%" in line for line in narrow[3:7])
    wide = render_table(result, wide=True)
    assert wide[1].split() == result.columns
    blocked = ask(demo, "blocked", Filters())
    wide_blocked = render_table(blocked, wide=True)
    assert "roots" in wide_blocked[1] and re.search(r"\d\d:\d\d:\d\dZ", wide_blocked[3])


def test_long_names_are_cut_in_the_middle() -> None:
    name = "injected-chat.very-long-subdomain.example.kz"
    assert ellipsize(name, 15) == "injecte…mple.kz"
    assert ellipsize("short.kz", 15) == "short.kz"
    rows = [
        {
            "probe_cc": "KZ",
            "probe_asn": 9198,
            "domain": "a" * 60 + ".example.kz",
            "start": D(2024, 3, 8),
            "end": None,
            "peak_share": 0.875,
            "p_value": 1.5e-7,
            "baseline_share": 0.0,
            "days_held": 3,
            "measurements": 24,
        }
    ]
    result = Result("events", list(rows[0]), rows, False)
    lines = render_table(result, width=80)
    assert max(len(line) for line in lines) <= 80
    cell = lines[3].split()[2]
    assert re.fullmatch(r"a+…a+\.example\.kz", cell) and cell.count("a") < 60
    assert "ongoing" in lines[3] and "87.5%" in lines[3] and "1.5e-07" in lines[3]


def _query(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = netvigil_main(["query", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_query_csv_is_exact(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _query([str(demo), "--what", "blocked", "--json"], capsys)
    assert rc == 0
    doc = json.loads(out)
    rc, out, _ = _query([str(demo), "--what", "blocked", "--csv"], capsys)
    assert rc == 0
    records = list(csv.reader(io.StringIO(out)))
    assert records[0] == doc["columns"]
    assert len(records) == len(doc["rows"]) + 1
    first = dict(zip(records[0], records[1], strict=True))
    row = doc["rows"][0]
    assert first["first_seen"] == row["first_seen"]  # the full time, not the day
    assert first["blocked_share"] == str(row["blocked_share"])
    assert json.loads(first["how"]) == row["how"]
    assert json.loads(first["networks"]) == row["networks"]
    rc, out, _ = _query([str(demo), "--what", "events", "--csv"], capsys)
    events = list(csv.DictReader(io.StringIO(out)))
    assert {e["end"] for e in events} == {""} and {e["start"] for e in events} == {"2022-01-05"}
    rc, _, err = _query([str(demo), "--json", "--csv"], capsys)
    assert rc == 2 and "one of --json and --csv" in err


def test_query_piped_table_is_not_cut(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # not a terminal: no width to fit, so nothing is shortened (grep finds whole names)
    rc, out, _ = _query([str(demo), "--what", "networks"], capsys)
    assert rc == 0 and "…" not in out
    rc, out, _ = _query([str(demo), "--what", "networks", "--wide"], capsys)
    assert rc == 0 and "first_day" in out


# --- the report -------------------------------------------------------------------------------


def _svgs(page: str, cls: str = "tl") -> list[str]:
    return re.findall(rf'<svg class="{cls}".*?</svg>', page, re.S)


def test_report_charts_have_axes_ticks_and_fill_their_width(demo: Path, tmp_path: Path) -> None:
    report.write_report(demo, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    charts = _svgs(page)
    assert len(charts) >= 5  # the blocked domains and the techniques
    for svg in charts:
        head = svg[: svg.index(">")]
        assert re.search(r'viewBox="0 0 \d+ \d+"', head) and 'width="100%"' in head
        assert "height=" not in head  # the height follows the width (aspect ratio kept)
        assert 'class="axis"' in svg  # y and x axis lines
        assert len(re.findall(r'class="ax yt"', svg)) >= 2  # y ticks: 0 and the top
        dates = re.findall(r'class="ax xt[^"]*"[^>]*>(\d{4}-\d\d-\d\d)<', svg)
        assert len(dates) >= 4 and dates == sorted(dates)  # more than the two ends
    assert ">100%</text>" in charts[0] and ">0%</text>" in charts[0]
    outcome_mix = _svgs(page, "mix")
    assert len(outcome_mix) == 1 and 'width="100%"' in outcome_mix[0]
    # layout: the viewport is the device's, tables scroll in their own box, charts in a grid
    assert 'name="viewport" content="width=device-width' in page
    assert 'class="scroll"' in page and 'class="charts"' in page
    assert "minmax(min(100%," in page


def test_report_colours_are_distinct_okabe_ito() -> None:
    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}
    colours = [*report.TECHNIQUE_COLOURS.values(), report.OTHER_COLOUR, report.OK_COLOUR]
    assert len(set(colours)) == len(colours) and set(colours) <= okabe_ito

    def lightness(hex_colour: str) -> float:
        r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    # tls and http (the pair that was hard to tell apart) differ in lightness too, so they
    # stay apart for any colour vision and in grey scale
    tls, http = report.TECHNIQUE_COLOURS["tls"], report.TECHNIQUE_COLOURS["http"]
    assert abs(lightness(tls) - lightness(http)) > 40


def test_one_day_report_draws_a_usable_chart(demo: Path, tmp_path: Path) -> None:
    summary = report.write_report(demo, tmp_path / "d.html", since="2022-01-05", until="2022-01-05")
    assert summary.days == 1 and summary.events == 4
    page = (tmp_path / "d.html").read_text(encoding="utf-8")
    svg = _svgs(page)[0]
    width = int(re.search(r'viewBox="0 0 (\d+) ', svg).group(1))  # type: ignore[union-attr]
    bars = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="([\d.]+)"', svg)]
    assert bars and max(bars) >= 30 and width >= 500  # a broad bar, in a chart of full width
    assert re.findall(r'class="ax xt[^"]*"[^>]*>(2022-01-05)<', svg) == ["2022-01-05"]


def test_report_asn_and_domain(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "f.html"
    rc = netvigil_main(
        ["report", str(demo), "--html", str(html), "--asn", "AS9198", "--domain", "facebook.com"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "1 onset of blocking" in out
    page = html.read_text(encoding="utf-8")
    assert "network AS9198" in page and "domain facebook.com" in page
    assert "docs.google.com" not in page and "206026" not in page
    rc = netvigil_main(["report", str(demo), "--html", str(html), "--asn", "nine"])
    assert rc == 2 and "bad ASN" in capsys.readouterr().err


# --- validation -------------------------------------------------------------------------------


def _measurement(n: int, **fields: Any) -> bytes:
    m: dict[str, Any] = {
        "test_name": "web_connectivity",
        "measurement_start_time": f"2024-03-0{1 + n % 5} 10:00:00",
        "probe_cc": "KZ",
        "probe_asn": "AS9198",
        "input": f"https://site{n}.example.kz/",
        "measurement_uid": f"uid{n}",
        "test_keys": {"accessible": True, "blocking": False},
    }
    m.update(fields)
    return orjson.dumps(m)


MARKUP_CC = "<b>" + "K" * 30 + "</b>Z"  # 39 characters with markup, as in the issue


def test_invalid_rows_are_counted_per_file_and_never_reach_the_tables(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    bad = [
        _measurement(100, probe_cc=MARKUP_CC),
        _measurement(101, probe_cc="kz"),
        _measurement(102, probe_asn="AS<i>1</i>"),
        _measurement(103, probe_asn="9198"),
        _measurement(104, input="https://<script>x</script>/"),
        _measurement(105, measurement_start_time="2031-01-01 00:00:00"),
        _measurement(106, measurement_start_time="1999-01-01 00:00:00"),
    ]
    good = [_measurement(n) for n in range(6)]
    (src / "mixed.jsonl").write_bytes(b"\n".join([*good[:3], *bad, *good[3:]]) + b"\n")
    (src / "clean.jsonl").write_bytes(_measurement(50) + b"\n")
    out = tmp_path / "out"
    summary = run_local([src], out, workers=1)
    expected = {
        "invalid-country": 2,
        "invalid-asn": 2,
        "invalid-host": 1,
        "invalid-start-time": 2,
    }
    assert summary.totals["measurements"] == 7
    assert summary.totals["corrupt"] == expected
    files = {f["source"]: f for f in json.loads((out / "ingest.json").read_text())["files"]}
    assert files["mixed.jsonl"]["corrupt"] == expected and files["clean.jsonl"]["corrupt"] == {}
    assert files["mixed.jsonl"]["measurements"] == 6
    # printed per file, like other bad input, as plain text
    text = io.StringIO()
    print_summary(summary.to_dict(), text)
    printed = text.getvalue()
    assert "invalid-country 2" in printed and "mixed.jsonl" in printed
    assert "\x1b" not in printed
    # nothing of the invalid rows is in the tables, the queries or the report
    countries = run_sql(out, "SELECT DISTINCT probe_cc FROM verdict_copies").rows
    assert countries == [{"probe_cc": "KZ"}]
    uids = {r["measurement_uid"] for r in run_sql(out, "SELECT * FROM verdicts").rows}
    assert uids == {f"uid{n}" for n in (*range(6), 50)}
    report.write_report(out, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "KKKK" not in page and "script&gt;" not in page
