"""Messaging apps through the pipeline: rows per app and endpoint, ``query --what apps``, and
the report's "Messaging apps" section, on the real measurements of ``tests/data/conformance_im``
plus a hostile one (an endpoint name that is markup)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from netvigil.pipeline.local import run_local
from netvigil.pipeline.query import QueryError, ask, make_filters, render_table
from netvigil.pipeline.report import write_report

IM_DATA = Path(__file__).parent / "data" / "conformance_im" / "messaging.jsonl"
HOSTILE_HOST = "x<script>alert(1)</script>.signal.org"


def _hostile() -> bytes:
    m = next(
        json.loads(line)
        for line in IM_DATA.read_text("utf-8").splitlines()
        if '"test_version": "0.2.5"' in line
    )
    m["report_id"] = "hostile"
    m["test_keys"]["requests"][0]["request"]["url"] = f"https://{HOSTILE_HOST}/"
    m["test_keys"]["requests"][0]["failure"] = "connection_reset"
    return json.dumps(m).encode()


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("apps")
    (base / "in").mkdir()
    (base / "in" / "im.jsonl").write_bytes(IM_DATA.read_bytes() + _hostile() + b"\n")
    run_local([base / "in"], base / "out", workers=1)
    return base / "out"


def test_rows_per_app_and_endpoint(out: Path) -> None:
    rows = pq.read_table(out / "endpoints").to_pylist()
    whole = [r for r in rows if r["endpoint"] == "*"]
    assert len(whole) == len(IM_DATA.read_text().splitlines()) + 1  # one per measurement
    assert {r["app"] for r in whole} == {"telegram", "whatsapp", "signal", "facebook_messenger"}
    ru_telegram = [r for r in rows if r["app"] == "telegram" and r["probe_cc"] == "RU"]
    web = next(r for r in ru_telegram if r["endpoint"] == "https://web.telegram.org/")
    assert web["blocked"] and web["outcome"] == "tcp/timeout"
    assert web["failure"] == "generic_timeout_error"
    # the web verdicts are not mixed into the site tables
    daily = pq.read_table(out / "aggregates" / "daily.parquet")
    assert daily.num_rows == 0


def test_query_apps_fits_80_columns(out: Path) -> None:
    result = ask(out, "apps", make_filters(), limit=40)
    assert result.rows and result.truncated
    lines = render_table(result, width=80)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    ru = ask(out, "apps", make_filters(cc="RU"), limit=100)
    whole = {(r["app"]): r for r in ru.rows if r["endpoint"] == "*"}
    assert whole["telegram"]["blocked"] == 1 and whole["telegram"]["blocked_share"] == 1.0
    assert str(whole["telegram"]["first_blocked"]) == "2022-11-09"
    with pytest.raises(QueryError, match="--domain"):
        ask(out, "apps", make_filters(domain="example.org"))


def test_report_has_a_messaging_section_and_escapes_names(out: Path, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    write_report(out, page)
    text = page.read_text("utf-8")
    assert "<h2>Messaging apps</h2>" in text
    section = text[text.index("<h2>Messaging apps</h2>") :]
    for app in ("telegram", "whatsapp", "signal", "facebook_messenger"):
        assert f'<span class="dom">{app}</span>' in section
    assert "<script>" not in text and "x&lt;script&gt;" in text
    # one domain's report has no messaging rows
    write_report(out, page, domain="example.org")
    assert "No messaging-app measurement" in page.read_text("utf-8")
