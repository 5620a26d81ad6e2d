"""The OONI conformance corpus is well-formed: every indexed record loads and matches its index row.

This checks the data only (the agreement test lives with the verdict code). It guards against a
corpus edit that silently drops, reorders or relabels a measurement.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).parent / "data" / "conformance"
INDEX = CORPUS / "index.csv"

# OONI's recorded `blocking` as the index spells it (JSON), or `absent` when OONI recorded none
# (test_keys null or no `blocking` key): nothing to compare then.
BLOCKING_VALUES = {'"dns"', '"tcp_ip"', '"http-failure"', '"http-diff"', "false", "null", "absent"}
ACCESSIBLE_VALUES = {"true", "false", "null", "absent"}
GENERATIONS = {"legacy", "probe-cli-0.4", "lte-original", "lte-classic"}
KINDS = {"real", "qa", "scenario"}


def _generation(test_version: str) -> str:
    version = tuple(int(part) for part in test_version.split("."))
    if version < (0, 4, 0):
        return "legacy"
    if version < (0, 5, 0):
        return "probe-cli-0.4"
    if version <= (0, 5, 26):
        return "lte-original"
    return "lte-classic"


def _index_rows() -> list[dict[str, str]]:
    with INDEX.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@functools.cache
def _file_lines(name: str) -> list[bytes]:
    path = CORPUS / name
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    return raw.splitlines()


def _recorded(test_keys: Any, key: str) -> str:
    if not isinstance(test_keys, dict) or key not in test_keys:
        return "absent"
    return json.dumps(test_keys[key])


def test_index_covers_every_line_of_every_file_once() -> None:
    rows = _index_rows()
    assert rows, "the index is empty"
    assert len({row["id"] for row in rows}) == len(rows), "ids must be unique"
    files = {row["file"] for row in rows}
    on_disk = {path.name for path in CORPUS.iterdir() if ".jsonl" in path.name}
    assert files == on_disk
    for name in files:
        lines = _file_lines(name)
        indexed = sorted(int(row["line"]) for row in rows if row["file"] == name)
        assert indexed == list(range(1, len(lines) + 1)), name


@pytest.mark.parametrize("row", _index_rows(), ids=lambda row: row["id"])
def test_record_loads_and_matches_its_index_row(row: dict[str, str]) -> None:
    line = _file_lines(row["file"])[int(row["line"]) - 1]
    record = json.loads(line)
    assert record["test_name"] == "web_connectivity"
    assert isinstance(record["test_version"], str)
    assert record["test_version"] == row["test_version"]
    assert (
        row["generation"] == _generation(row["test_version"]) and row["generation"] in GENERATIONS
    )
    assert row["kind"] in KINDS
    assert row["blocking"] in BLOCKING_VALUES
    assert row["accessible"] in ACCESSIBLE_VALUES
    assert row["blocking"] == _recorded(record.get("test_keys"), "blocking")
    assert row["accessible"] == _recorded(record.get("test_keys"), "accessible")
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical).hexdigest() == row["sha256"]
    for field in ("origin_repo", "origin_path", "origin_commit", "licence", "note"):
        assert row[field].strip(), field
    assert row["label_status"] == "current" or row["label_status"].startswith("superseded")
