"""netvigil.pipeline sources/local/cli: discovery, streaming reads, corrupt input counted per
file, the collector's store, run_local → partitioned Parquet read back by DuckDB, the CLI."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from netvigil.collector.store import MeasurementRow, SQLiteStore
from netvigil.evidence.log import TreeHead
from netvigil.pipeline import cli as pipeline_cli
from netvigil.pipeline import local, sources
from netvigil.pipeline.local import process_files, run_local
from netvigil.pipeline.sources import FileReport, PipelineInputError, SourceFile, discover
from netvigil.pipeline.writer import PartitionedWriter

DATA = Path(__file__).parent / "data"
SAMPLES = (DATA / "ooni_samples.jsonl").read_bytes().splitlines()
YAML = DATA / "ooni_legacy_binary_city.yaml"
# The web_connectivity samples (29), in file order.
WEB = [raw for raw in SAMPLES if orjson.loads(raw)["test_name"] == "web_connectivity"]


@pytest.fixture(autouse=True)
def no_aggregates(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The aggregates step is another module's (tested there): record the call instead."""
    calls: list[Path] = []
    monkeypatch.setattr(local, "build_aggregates", calls.append)
    return calls


def _gz(path: Path, lines: list[bytes]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(b"".join(line + b"\n" for line in lines))
    path.write_bytes(data)
    return data


def _by_name(reports: list[FileReport]) -> dict[str, FileReport]:
    return {r.source: r for r in reports}


def test_raw_layout_with_corrupt_inputs_counted_per_file(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    day = raw / "20240101" / "00" / "KZ" / "web_connectivity"
    wrong = orjson.loads(WEB[0])
    wrong["probe_cc"] = 42
    unknown = orjson.loads(WEB[1])
    unknown["test_name"] = "not_a_test"
    mixed = [
        WEB[0],
        b'{"test_name": "web_connectivity", "probe_cc": ',  # invalid JSON
        WEB[1],
        orjson.dumps(wrong),
        orjson.dumps(unknown),
        b"[1, 2, 3]",
        WEB[2],
    ]
    _gz(day / "a.jsonl.gz", mixed)
    # Truncated: cut the compressed stream; every line complete before the cut is kept.
    whole = _gz(day / "b.jsonl.gz", WEB[3:13])
    cut = whole[: len(whole) * 2 // 3]
    (day / "b.jsonl.gz").write_bytes(cut)
    partial = zlib.decompressobj(wbits=31).decompress(cut)
    complete = partial.count(b"\n")
    assert 0 < complete < 10
    shutil.copy(YAML, day / "legacy.yaml")
    (day / "notes.txt").write_text("not a measurement file")

    files = discover([raw])
    assert [f.name for f in files] == [
        "20240101/00/KZ/web_connectivity/a.jsonl.gz",
        "20240101/00/KZ/web_connectivity/b.jsonl.gz",
        "20240101/00/KZ/web_connectivity/legacy.yaml",
    ]
    reports = _by_name(process_files(files, tmp_path / "out", "t0"))
    a = reports["20240101/00/KZ/web_connectivity/a.jsonl.gz"]
    assert a.measurements == 3 and a.verdict_rows == 3
    assert a.corrupt == {
        "invalid-json": 1,
        "wrong-types": 1,
        "unknown-test-name": 1,
        "not-an-object": 1,
    }
    assert [e.split(":")[0] for e in a.examples] == ["line 2", "line 4", "line 5", "line 6"]
    b = reports["20240101/00/KZ/web_connectivity/b.jsonl.gz"]
    assert b.measurements == complete
    assert b.corrupt == {"truncated-gzip": 1}
    y = reports["20240101/00/KZ/web_connectivity/legacy.yaml"]
    assert y.skipped == {"legacy-yaml": 1} and y.measurements == 0

    con = duckdb.connect()
    glob = str(tmp_path / "out" / "verdicts" / "**" / "*.parquet")
    sources_seen = con.execute(
        f"SELECT source, count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert sources_seen == [
        ("20240101/00/KZ/web_connectivity/a.jsonl.gz", 3),
        ("20240101/00/KZ/web_connectivity/b.jsonl.gz", complete),
    ]


def test_line_splitting_across_chunks_and_too_long_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK", 7)
    monkeypatch.setattr(sources, "MAX_LINE", 20)
    lines = [b"a" * 5, b"b" * 20, b"c" * 21, b"", b"d" * 100, b"e" * 3, b"f" * 19]
    text = b"\n".join(lines)  # the last line has no newline: still a line
    path = tmp_path / "x.jsonl"
    path.write_bytes(text)
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(text))
    for f in (path, gz):
        report = FileReport(source=f.name)
        src = SourceFile(name=f.name, path=str(f), kind="jsonl", size=f.stat().st_size)
        got = [(r.line, r.raw) for r in sources.read_records(src, report)]
        assert got == [(1, lines[0]), (2, lines[1]), (6, lines[5]), (7, lines[6])]
        assert report.corrupt == {"line-too-long": 2}
        assert [e.split(":")[0] for e in report.examples] == ["line 3", "line 5"]


def test_concatenated_gzip_members_and_json_files(tmp_path: Path) -> None:
    path = tmp_path / "multi.jsonl.gz"
    path.write_bytes(gzip.compress(WEB[0] + b"\n") + gzip.compress(WEB[1] + b"\n"))
    pretty = tmp_path / "one.json"
    pretty.write_bytes(json.dumps(orjson.loads(WEB[2]), indent=2).encode())
    jsonl = tmp_path / "two.json"
    jsonl.write_bytes(WEB[3] + b"\n" + WEB[4] + b"\n")
    reports = _by_name(process_files(discover([tmp_path]), tmp_path / "out", "t0"))
    assert {k: (r.measurements, r.corrupt) for k, r in reports.items()} == {
        "multi.jsonl.gz": (2, {}),
        "one.json": (1, {}),
        "two.json": (2, {}),
    }


def test_discover_errors_and_order(tmp_path: Path) -> None:
    with pytest.raises(PipelineInputError, match="no such file"):
        discover([tmp_path / "missing"])
    odd = tmp_path / "notes.txt"
    odd.write_text("x")
    with pytest.raises(PipelineInputError, match="not JSONL"):
        discover([odd])
    with pytest.raises(PipelineInputError, match="no input"):
        discover([])
    for name in ("b/2.jsonl", "b/1.jsonl", "a/z.jsonl.gz", "c.yml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = discover([tmp_path, tmp_path / "b" / "1.jsonl"])  # a file reached twice: once
    assert [(f.name, f.kind) for f in found] == [
        ("a/z.jsonl.gz", "jsonl"),
        ("b/1.jsonl", "jsonl"),
        ("b/2.jsonl", "jsonl"),
        ("c.yml", "yaml"),
    ]


def _store_row(index: int, payload: bytes | None, uid: str) -> MeasurementRow:
    try:
        body = orjson.loads(zlib.decompress(payload)) if payload else {}
    except (zlib.error, orjson.JSONDecodeError):
        body = {}  # a damaged payload: the index columns are made up
    return MeasurementRow(
        uid=uid,
        content_sha256=hashlib.sha256(uid.encode()).digest(),
        leaf_index=index,
        leaf_hash=hashlib.sha256(b"leaf" + uid.encode()).digest(),
        received_at="2024-01-01T00:00:00Z",
        probe_cc=body.get("probe_cc", "KZ"),
        probe_asn=body.get("probe_asn", "AS1"),
        test_name=body.get("test_name", "web_connectivity"),
        input=None,
        domain=None,
        measurement_start_time=body.get("measurement_start_time", "2024-01-01 00:00:00"),
        payload=payload,
        removed_reason=None if payload is not None else "request",
    )


def test_collector_store_read_only(tmp_path: Path) -> None:
    data = tmp_path / "collector"
    data.mkdir()
    store = SQLiteStore(data / "collector.sqlite3")
    payloads = [zlib.compress(raw, 6) for raw in WEB[:4]]
    rows = [
        _store_row(0, payloads[0], "u0"),
        _store_row(1, None, "u1"),  # payload removed on request
        _store_row(2, payloads[2], "u2"),
        _store_row(3, payloads[3][:-8], "u3"),  # damaged payload
        _store_row(4, zlib.compress(b"{not json"), "u4"),
    ]
    store.commit_batch(rows, TreeHead(5, 0, b"\0" * 32, b"\1" * 32, b"\2" * 64))
    store.close()
    files = discover([data])
    assert [(f.name, f.kind) for f in files] == [("collector.sqlite3", "sqlite")]
    before = (data / "collector.sqlite3").read_bytes()
    (report,) = process_files(files, tmp_path / "out", "c0")
    assert (data / "collector.sqlite3").read_bytes() == before  # read-only
    assert report.measurements == 2
    assert report.skipped == {"removed": 1}
    assert report.corrupt == {"corrupt-payload": 1, "invalid-json": 1}
    con = duckdb.connect()
    glob = str(tmp_path / "out" / "verdicts" / "**" / "*.parquet")
    uids = con.execute(f"SELECT measurement_uid FROM read_parquet('{glob}') ORDER BY 1").fetchall()
    # The samples carry no measurement_uid: the collector's id is used.
    assert uids == [("u0",), ("u2",)]


def test_run_local_end_to_end(tmp_path: Path, no_aggregates: list[Path]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "first.jsonl").write_bytes(b"\n".join(SAMPLES[:60]) + b"\n")
    _gz(src / "sub" / "second.jsonl.gz", SAMPLES[60:])
    shutil.copy(YAML, src / "sub" / "old.yaml")
    out = tmp_path / "out"
    seen: list[tuple[int, int, int]] = []
    summary = run_local([src], out, workers=2, progress=lambda *a: seen.append(a))
    assert summary.totals["measurements"] == 109
    assert summary.totals["observation_rows"] == 1589
    assert summary.totals["skipped"] == {"legacy-yaml": 1}
    assert summary.totals["corrupt"] == {}
    assert seen and seen[-1] == (3, 3, 109)
    assert no_aggregates == [out]
    ingest = json.loads((out / "ingest.json").read_text())
    assert [f["source"] for f in ingest["files"]] == [
        "first.jsonl",
        "sub/old.yaml",
        "sub/second.jsonl.gz",
    ]
    assert ingest["engine"] == "local"

    con = duckdb.connect()
    v = f"read_parquet('{out}/verdicts/**/*.parquet', hive_partitioning=true)"
    o = f"read_parquet('{out}/observations/**/*.parquet', hive_partitioning=true)"
    assert con.execute(f"SELECT count(*), count(DISTINCT measurement_uid) FROM {v}").fetchone() == (
        109,
        109,
    )
    assert con.execute(f"SELECT count(*) FROM {o}").fetchone() == (1589,)
    # The day partition is the UTC day of the start time.
    mismatched = con.execute(
        f"SELECT count(*) FROM {v} WHERE CAST(day AS VARCHAR) <> "
        "strftime(measurement_start_time AT TIME ZONE 'UTC', '%Y-%m-%d')"
    ).fetchone()
    assert mismatched == (0,)
    assert not list(out.rglob("*.tmp"))
    names = {p.name for p in out.rglob("*.parquet")}
    assert all(n.startswith("part-l") for n in names)

    # A second run into the same OUT is refused, unless asked to overwrite.
    with pytest.raises(PipelineInputError, match="previous run"):
        run_local([src], out, workers=1)
    again = run_local([src / "first.jsonl"], out, workers=1, overwrite=True)
    assert again.totals["measurements"] == 60
    assert con.execute(f"SELECT count(*) FROM {v}").fetchone() == (60,)


def test_writer_bounds_open_files_and_row_groups(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field("n", pa.int64(), nullable=False)])
    w = PartitionedWriter(tmp_path, "t", schema, "w1", row_group_rows=3, max_open=2)
    for i in range(10):
        for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
            w.append({"n": i}, day)
    w.close()
    files = sorted(tmp_path.rglob("*.parquet"))
    # Three days with two files open at most: days are reopened as new seq files.
    assert len(files) > 3
    total = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        assert all(meta.row_group(i).num_rows <= 3 for i in range(meta.num_row_groups))
        total += meta.num_rows
    assert total == 30
    assert {f.parent.name for f in files} == {"day=2024-01-01", "day=2024-01-02", "day=2024-01-03"}
    with pytest.raises(ValueError):
        PartitionedWriter(tmp_path, "t", schema, "../x")


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="netvigil")
    commands = parser.add_subparsers(dest="command")
    pipeline_cli.add_parser(commands)
    return parser.parse_args(argv)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli(["pipeline", "run", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert pipeline_cli.run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or directory" in err
    args = _cli(["pipeline", "run", str(YAML), "--out", str(tmp_path / "o"), "--workers", "0"])
    assert pipeline_cli.run(args) == 2
    assert "--workers" in capsys.readouterr().err


def test_cli_run_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join([*WEB[:3], b"{oops"]) + b"\n")
    out = tmp_path / "out"
    args = _cli(["pipeline", "run", str(src), "--out", str(out), "--workers", "1", "--json"])
    assert pipeline_cli.run(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["measurements"] == 3 and d["totals"]["corrupt"] == {"invalid-json": 1}
    args = _cli(["pipeline", "run", str(src), "--out", str(out), "--workers", "1"])
    assert pipeline_cli.run(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    args = _cli(["pipeline", "run", str(src), "--out", str(out), "--overwrite"])
    assert pipeline_cli.run(args) == 0
    text = capsys.readouterr().out
    assert "3 measurements" in text and "in.jsonl" in text and "invalid-json 1" in text


def test_print_summary_shows_only_files_with_problems() -> None:
    buf = io.StringIO()
    clean = FileReport(source="clean.jsonl", measurements=5).to_dict()
    bad = FileReport(source="bad.jsonl.gz", measurements=2, corrupt={"truncated-gzip": 1})
    d: dict[str, Any] = {
        "totals": {"files": 2, "measurements": 7, "corrupt": {"truncated-gzip": 1}},
        "files": [clean, bad.to_dict()],
    }
    pipeline_cli.print_summary(d, buf)
    text = buf.getvalue()
    assert "bad.jsonl.gz" in text and "clean.jsonl" not in text
