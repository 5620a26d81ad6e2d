"""``netvigil query`` and ``netvigil report`` over hand-built pipeline outputs.

The story is the one of test_pipeline_aggregate (``blocked.kz`` intercepted in KZ AS9198 from
2024-03-08, ``mixed.kz`` with NXDOMAIN and a blockpage), plus a hostile domain name for the
report.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from netvigil.cli import main as netvigil_main
from netvigil.pipeline import query, report
from netvigil.pipeline.aggregate import build_aggregates
from netvigil.pipeline.query import Filters, QueryError, ask, make_filters, run_sql
from test_pipeline_aggregate import D, story, ts, verdict, write_story, write_verdicts

HOSTILE = "<script>alert(1)</script>.example"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The story with its aggregates, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("story")
    write_story(root)
    build_aggregates(root)
    return root


def _cli(module: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # Through the real entry point: ``netvigil query …`` / ``netvigil report …``.
    rc = netvigil_main([module.__name__.rsplit(".", 1)[1], *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --- query -------------------------------------------------------------------------------------


def test_blocked_in_kz_between_two_dates(out: Path) -> None:
    result = ask(out, "blocked", make_filters(cc="kz", since="2024-03-08", until="2024-03-08"))
    assert result.columns[:3] == ["probe_cc", "domain", "how"]
    assert result.rows == [
        {
            "probe_cc": "KZ",
            "domain": "blocked.kz",
            "how": {"tls/interception": 4},
            "blocked": 4,
            "measurements": 5,
            "blocked_share": 0.8,
            "first_seen": ts(D(2024, 3, 8), 9, 0),
            "last_seen": ts(D(2024, 3, 8), 9, 3),
            "networks": [9198],
            "fingerprints": [],
            "roots": ["Qaznet Trust Network"],
        },
        {
            "probe_cc": "KZ",
            "domain": "mixed.kz",
            "how": {"dns/nxdomain": 1, "http/blockpage": 1},
            "blocked": 2,
            "measurements": 4,
            "blocked_share": 0.5,
            "first_seen": ts(D(2024, 3, 8), 7),
            "last_seen": ts(D(2024, 3, 8), 8),
            "networks": [9198],
            "fingerprints": ["kz_1"],
            "roots": [],
        },
    ]
    assert not result.truncated
    # before the onset nothing was blocked; another country has nothing
    assert ask(out, "blocked", make_filters(until="2024-03-07")).rows == []
    assert ask(out, "blocked", make_filters(cc="RU")).rows == []
    # limit and truncation
    limited = ask(out, "blocked", Filters(), limit=1)
    assert [r["domain"] for r in limited.rows] == ["blocked.kz"] and limited.truncated


def test_timeline_events_networks_outcomes(out: Path) -> None:
    timeline = ask(out, "timeline", make_filters(domain="Blocked.KZ.", since="2024-03-07"))
    assert [
        (r["day"], r["measurements"], r["blocked"], r["blocked_share"], r["outcomes"])
        for r in timeline.rows
    ] == [
        (D(2024, 3, 7), 3, 0, 0.0, "ok 3"),
        (D(2024, 3, 8), 5, 4, 0.8, "tls/interception 4, ok 1"),
        (D(2024, 3, 9), 3, 3, 1.0, "tls/interception 3"),
    ]
    # two flagged days (3-8 and 3-9), one onset: it still held on the last measured day
    events = ask(out, "events", make_filters(asn="AS9198"))
    assert [(r["domain"], r["start"], r["end"], r["peak_share"]) for r in events.rows] == [
        ("blocked.kz", D(2024, 3, 8), None, 1.0),
    ]
    networks = ask(out, "networks", make_filters(cc="KZ"))
    assert [
        (r["probe_asn"], r["measurements"], r["blocked"], r["blocked_domains"], r["techniques"])
        for r in networks.rows
    ] == [
        (9198, 32, 9, 2, "tls/interception 7, dns/nxdomain 1, http/blockpage 1"),
        (48716, 1, 0, 0, None),
    ]
    outcomes = ask(out, "outcomes", Filters())
    assert [(r["outcome"], r["count"], r["blocking"]) for r in outcomes.rows] == [
        ("ok", 23, False),
        ("tls/interception", 7, True),
        ("dns/nxdomain", 1, True),
        ("down", 1, False),
        ("http/blockpage", 1, True),
    ]


def test_aggregates_computed_in_memory_when_not_written(tmp_path: Path) -> None:
    write_story(tmp_path)
    events = ask(tmp_path, "events", Filters())
    assert len(events.rows) == 1
    assert not (tmp_path / "aggregates").exists()  # query never writes


def test_sql_escape_hatch(out: Path) -> None:
    result = run_sql(
        out,
        "WITH b AS (SELECT domain FROM verdicts WHERE blocked) "
        "SELECT domain, count(*) AS n FROM b GROUP BY domain ORDER BY n DESC",
    )
    assert result.rows == [{"domain": "blocked.kz", "n": 7}, {"domain": "mixed.kz", "n": 2}]
    for view in ("observations", "daily", "outcomes", "techniques", "events"):
        run_sql(out, f"SELECT count(*) FROM {view}")
    capped = run_sql(out, "SELECT * FROM verdicts", limit=5)
    assert len(capped.rows) == 5 and capped.truncated


@pytest.mark.parametrize(
    "sql",
    [
        "COPY verdicts TO 'x.csv'",
        "CREATE TABLE t AS SELECT 1",
        "ATTACH 'other.db' AS o",
        "SELECT 1; DROP VIEW verdicts",
        "SELECT 1; SELECT 2",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "PRAGMA version",
        "CALL pragma_version()",
        "EXPORT DATABASE 'x'",
        "DROP VIEW verdicts",
        "",
    ],
)
def test_sql_guard_rejects_writes(out: Path, sql: str) -> None:
    with pytest.raises(QueryError):
        run_sql(out, sql)
    assert not (out / "x.csv").exists() and not (out / "x").exists()


def test_sql_cannot_read_outside_out(out: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(QueryError, match="query failed"):
        run_sql(out, f"SELECT * FROM read_csv('{secret}')")
    # the configuration is locked: the statement cannot undo it even inside a SELECT
    with pytest.raises(QueryError):
        run_sql(out, "SELECT current_setting('enable_external_access'); SET threads = 1")


def test_query_cli_json_and_table(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, stdout, _ = _cli(
        query,
        [str(out), "--cc", "KZ", "--since", "2024-03-01", "--until", "2024-03-31", "--json"],
        capsys,
    )
    assert rc == 0
    doc = json.loads(stdout)
    assert doc["what"] == "blocked" and doc["truncated"] is False
    assert doc["filters"]["cc"] == "KZ"
    assert [r["domain"] for r in doc["rows"]] == ["blocked.kz", "mixed.kz"]
    assert doc["rows"][0]["first_seen"] == "2024-03-08T09:00:00Z"
    assert doc["rows"][0]["how"] == {"tls/interception": 7}

    rc, stdout, _ = _cli(query, [str(out), "--what", "events"], capsys)
    assert rc == 0 and "blocked.kz" in stdout and "2024-03-08" in stdout

    rc, stdout, _ = _cli(query, [str(out), "--sql", "SELECT 42 AS answer", "--json"], capsys)
    assert rc == 0 and json.loads(stdout)["rows"] == [{"answer": 42}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "2024-13-01"], "bad --since"),
        (["--until", "yesterday"], "bad --until"),
        (["--since", "2024-03-09", "--until", "2024-03-01"], "after"),
        (["--cc", "KAZ"], "country code"),
        (["--asn", "ASX"], "ASN"),
        (["--limit", "0"], "--limit"),
        (["--sql", "DELETE FROM verdicts"], "read-only"),
        (["--sql", "SELECT 1", "--cc", "KZ"], "cannot be combined"),
    ],
)
def test_query_cli_bad_input(
    out: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, stdout, stderr = _cli(query, [str(out), *argv], capsys)
    assert rc == 2 and stdout == ""
    assert message in stderr and stderr.count("\n") == 1


def test_query_cli_missing_or_empty_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, stderr = _cli(query, [str(tmp_path / "missing")], capsys)
    assert rc == 2 and "no such directory" in stderr
    rc, _, stderr = _cli(query, [str(tmp_path)], capsys)
    assert rc == 2 and "no pipeline output" in stderr
    # an empty run (verdicts/ without files) answers with no rows
    (tmp_path / "verdicts").mkdir()
    rc, stdout, _ = _cli(query, [str(tmp_path), "--json"], capsys)
    assert rc == 0 and json.loads(stdout)["rows"] == []


def test_query_table_does_not_pass_terminal_controls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_verdicts(
        tmp_path, [verdict("h1", ts(D(2024, 3, 8)), "dns/nxdomain", domain="evil\x1b[2J[bold]x")]
    )
    rc, stdout, _ = _cli(query, [str(tmp_path)], capsys)
    assert rc == 0
    assert "\x1b" not in stdout
    assert "evil\\x1b[2J" in stdout


# --- report ------------------------------------------------------------------------------------


def _hostile_out(root: Path) -> Path:
    rows = story()
    for i in range(1, 9):
        rows.append(
            verdict(
                f"x{i}",
                ts(D(2024, 3, i), 6),
                "http/blockpage" if i == 8 else "ok",
                domain=HOSTILE,
                fingerprint='"><img src=x onerror=alert(2)>' if i == 8 else None,
            )
        )
    write_verdicts(root, rows)
    build_aggregates(root)
    (root / "ingest.json").write_text(
        json.dumps({"engine": "local", "totals": {"files": 3, "measurements": len(rows)}})
    )
    return root


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    out = _hostile_out(tmp_path / "out")
    html_path = tmp_path / "report.html"
    summary = report.write_report(
        out, html_path, cc="KZ", since=None, until=None, title="<b>KZ</b>"
    )
    page = html_path.read_text(encoding="utf-8")
    assert summary.path == html_path and summary.bytes == len(page.encode())
    assert summary.blocked == 10 and summary.blocked_domains == 3 and summary.events == 1
    assert not summary.truncated and summary.days == 9
    # self-contained: nothing to fetch, no script at all
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    assert "<svg" in page and "Content-Security-Policy" in page
    # hostile text is escaped wherever it appears
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.example" in page
    assert "<img" not in page and "&lt;b&gt;KZ&lt;/b&gt;" in page
    # sections and provenance
    for heading in (
        "Timeline per domain",
        "Timeline per technique",
        "Outcome mix",
        "Onsets of blocking",
        "First and last seen",
        "Networks",
        "Method",
    ):
        assert heading in page
    assert "input files 3" in page and "verdict files 9" in page
    assert "tls/interception" in page


def test_report_bounds_domains(tmp_path: Path) -> None:
    rows = [
        verdict(f"d{i}", ts(D(2024, 3, 1), 1, i), "dns/nxdomain", domain=f"site{i:02d}.kz")
        for i in range(12)
    ]
    write_verdicts(tmp_path, rows)
    build_aggregates(tmp_path)
    summary = report.write_report(tmp_path, tmp_path / "r.html", top=5)
    page = (tmp_path / "r.html").read_text()
    assert summary.truncated and summary.domains_shown == 5 and summary.blocked_domains == 12
    assert "Showing the 5 domains" in page
    assert "site04.kz" in page and "site05.kz" not in page.split("<h2>Timeline per technique")[0]


def test_report_cli(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html_path = tmp_path / "r.html"
    rc, stdout, _ = _cli(
        report, [str(out), "--html", str(html_path), "--cc", "KZ", "--since", "2024-03-05"], capsys
    )
    assert rc == 0 and html_path.is_file() and "1 onset of blocking" in stdout
    assert "2024-03-05 to 2024-03-09" in html_path.read_text()
    rc, _, stderr = _cli(report, [str(out), "--html", str(html_path), "--since", "03/05"], capsys)
    assert rc == 2 and "bad --since" in stderr
    rc, _, stderr = _cli(report, [str(tmp_path / "nope"), "--html", str(html_path)], capsys)
    assert rc == 2 and "no such directory" in stderr


def test_report_on_empty_output(tmp_path: Path) -> None:
    (tmp_path / "verdicts").mkdir()
    summary = report.write_report(tmp_path, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert summary.measurements == 0 and "No measurements match" in page


def test_dates_are_days(out: Path) -> None:
    # --until is inclusive of the whole UTC day
    result = ask(out, "blocked", Filters(until=dt.date(2024, 3, 9)))
    assert result.rows[0]["blocked"] == 7


def test_report_long_range_is_bucketed_not_cut(tmp_path: Path) -> None:
    rows = [
        verdict("old", ts(D(2017, 5, 16)), "dns/bogus", domain="old.example"),
        verdict("new", ts(D(2025, 5, 27)), "http/blockpage", domain="new.example"),
    ]
    write_verdicts(tmp_path, rows)
    summary = report.write_report(tmp_path, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert summary.days == (D(2025, 5, 27) - D(2017, 5, 16)).days + 1
    assert "each bar of the timelines is 9 days" in page
    # 2,934 days in bars of ceil(2934 / 366) = 9 days; both ends of the archive are drawn
    assert "2017-05-16 to 2017-05-24: 1/1 blocked (dns 1)" in page
    assert "2025-05-19 to 2025-05-27: 1/1 blocked (http 1)" in page


def test_report_marks_events(out: Path, tmp_path: Path) -> None:
    report.write_report(out, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    # the onset day is marked, not the following day the blocking still held
    assert "2024-03-08: 4/5 blocked (tls 4) — onset" in page
    assert page.count('class="onset"') == 1
