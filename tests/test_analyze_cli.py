"""`netvigil analyze` (verdict/cli.py): files, JSONL, gzip, stdin, bad lines."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pytest

from netvigil.verdict.cli import main

DATA = Path(__file__).parent / "data" / "ooni_web_connectivity.jsonl"


def test_jsonl_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DATA), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 29
    first = json.loads(lines[0])
    assert {"input", "report_id", "blocking", "accessible", "outcome"} <= first.keys()


def test_mixed_files_gz_and_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = DATA.read_text("utf-8").splitlines()
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(samples[0] + "\n{not json\n" + samples[1] + "\n[1, 2]\n")
    single = tmp_path / "one.json"
    single.write_text(json.dumps(json.loads(samples[2]), indent=2), "utf-8")
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([json.loads(samples[3]), json.loads(samples[4])]), "utf-8")
    # a missing file: exit 1, the other files are still analysed
    assert main([str(gz), str(single), str(listing), str(tmp_path / "missing.json"), "--json"]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 5
    assert f"{gz}:2:" in captured.err
    assert f"{gz}:4:" in captured.err
    assert "missing.json" in captured.err


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    line = DATA.read_text("utf-8").splitlines()[0]
    fake = io.TextIOWrapper(io.BufferedReader(io.BytesIO((line + "\n").encode())))
    monkeypatch.setattr(sys, "stdin", fake)
    assert main(["-", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DATA)]) == 0
    out = capsys.readouterr().out
    assert "totals" in out and "measurements" in out
