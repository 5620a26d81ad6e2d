"""The dataset generator: OONI's layout, valid envelopes, template verdicts kept, seeded output."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from netvigil.pipeline.generate import (
    _REWRITTEN as REWRITTEN,
)
from netvigil.pipeline.generate import (
    TEMPLATES_DIR,
    Event,
    build_index,
    generate,
    load_templates,
)
from netvigil.verdict import analyze, load_fingerprints

LAYOUT = re.compile(r"^raw/(\d{8})/(\d{2})/([A-Z]{2})/web_connectivity/(\d+)\.jsonl\.gz$")
UID = re.compile(r"^(\d{14})\.\d{6}_([A-Z]{2})_webconnectivity_[0-9a-f]{16}$")
REPORT = re.compile(r"^(\d{8}T\d{6})Z_webconnectivity_([A-Z]{2})_(\d+)_n1_[0-9A-Za-z]{16}$")
ENVELOPE = (
    "measurement_uid",
    "report_id",
    "probe_cc",
    "probe_asn",
    "probe_network_name",
    "probe_ip",
    "resolver_ip",
    "resolver_asn",
    "resolver_network_name",
    "measurement_start_time",
    "test_start_time",
    "input",
    "test_name",
    "test_keys",
    "data_format_version",
    "annotations",
)
TWO = [("KZ", ["AS9198", "AS48716"]), ("RU", ["AS12389"])]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _lines(root: Path) -> list[tuple[str, bytes]]:
    out = []
    for p in sorted((root / "raw").rglob("*.jsonl.gz")):
        if p.name.startswith("corrupt-"):
            continue
        for line in gzip.decompress(p.read_bytes()).splitlines():
            out.append((str(p.relative_to(root)), line))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("gen")
    summary = generate(out, count=400, days=2, start=date(2024, 5, 1), seed=7, per_file=2)
    return out, summary


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", count=150, days=2, countries=TWO, seed=3)
    b = generate(tmp_path / "b", count=150, days=2, countries=TWO, seed=3, workers=2)
    c = generate(tmp_path / "c", count=150, days=2, countries=TWO, seed=4)
    assert a.measurements == b.measurements == c.measurements == 150
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_layout_and_bounded_count(dataset: tuple[Path, Any]) -> None:
    out, summary = dataset
    files = [p for p in (out / "raw").rglob("*") if p.is_file()]
    assert summary.measurements == 400 and summary.corrupt_lines == 0
    assert len(files) == summary.files
    per_file: Counter[str] = Counter()
    for rel, line in _lines(out):
        match = LAYOUT.match(rel)
        assert match, rel
        day, hour, cc, _ = match.groups()
        m = orjson.loads(line)
        assert m["probe_cc"] == cc
        start = datetime.strptime(m["measurement_start_time"], "%Y-%m-%d %H:%M:%S")
        assert (f"{start:%Y%m%d}", f"{start:%H}") == (day, hour)
        assert date(2024, 5, 1) <= start.date() <= date(2024, 5, 2)
        per_file[rel] += 1
    assert sum(per_file.values()) == 400
    assert max(per_file.values()) <= 2  # per_file=2: a busy hour is split into numbered files
    assert any(rel.endswith("/1.jsonl.gz") for rel in per_file)
    assert not list(out.rglob("*.partial"))


def test_every_line_is_ooni_with_its_templates_verdict(dataset: tuple[Path, Any]) -> None:
    out, summary = dataset
    templates = {t.id: t for t in load_templates()}
    index = {
        e["id"]: e for e in json.loads((TEMPLATES_DIR / "index.json").read_text())["templates"]
    }
    fps = load_fingerprints()
    uids = set()
    analyzed: set[str] = set()
    outcomes: Counter[str] = Counter()
    for _, line in _lines(out):
        m = orjson.loads(line)
        assert set(ENVELOPE) <= set(m), set(ENVELOPE) - set(m)
        assert m["test_name"] == "web_connectivity"
        uid = UID.match(m["measurement_uid"])
        assert uid and uid.group(2) == m["probe_cc"]
        assert uid.group(1) >= m["measurement_start_time"].translate({45: "", 58: "", 32: ""})
        report = REPORT.match(m["report_id"])
        assert report and report.group(2) == m["probe_cc"]
        assert f"AS{report.group(3)}" == m["probe_asn"] == m["resolver_asn"]
        assert m["test_start_time"] <= m["measurement_start_time"]
        uids.add(m["measurement_uid"])
        tid = m["annotations"]["x_netvigil_template"]
        outcomes[index[tid]["outcome"]] += 1
        # Everything but the envelope is the template's, byte for byte (so is the verdict:
        # test_index_agrees_with_the_verdict_engine runs the engine over every template).
        rest = {k: v for k, v in m.items() if k not in REWRITTEN}
        assert orjson.dumps(rest) == b"{" + templates[tid].rest + b"}", tid
        if len(analyzed) < 40 and tid not in analyzed:
            analyzed.add(tid)
            verdict = analyze(m, fps)
            expected = (index[tid]["outcome"], index[tid]["blocked"])
            assert (verdict.outcome_base, verdict.blocked) == expected, tid
            assert (verdict.probe_cc, verdict.probe_asn) == (m["probe_cc"], m["probe_asn"])
    assert len(uids) == 400
    assert outcomes == summary.outcomes
    assert outcomes["ok"] and len(outcomes) > 8


def test_index_agrees_with_the_verdict_engine(tmp_path: Path) -> None:
    # The shipped index against a fresh one: stale after a template or verdict-engine change.
    for name in [*(p.name for p in TEMPLATES_DIR.glob("*.jsonl.gz"))]:
        (tmp_path / name).write_bytes((TEMPLATES_DIR / name).read_bytes())
    fresh = build_index(tmp_path)["templates"]
    shipped = json.loads((TEMPLATES_DIR / "index.json").read_text())["templates"]
    assert fresh == shipped
    assert len(load_templates()) == len(shipped) > 300


def _small_templates(tmp_path: Path, domains: set[str]) -> Path:
    """A template folder with only the given domains' measurements (the shipped verdicts)."""
    index = {
        e["id"]: e for e in json.loads((TEMPLATES_DIR / "index.json").read_text())["templates"]
    }
    lines, entries = [], []
    for t in load_templates():
        if t.domain in domains:
            name, number = t.id.rsplit(":", 1)
            with gzip.open(TEMPLATES_DIR / name, "rb") as fh:
                line = fh.read().splitlines()[int(number) - 1]
            lines.append(line)
            entries.append({**index[t.id], "id": f"t.jsonl.gz:{len(lines)}"})
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "t.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    (folder / "index.json").write_text(json.dumps({"templates": entries}))
    return folder


def test_event_is_a_sudden_onset_in_one_country(tmp_path: Path) -> None:
    templates = _small_templates(tmp_path, {"centralasia.media", "control-news.kz"})
    event = Event.parse("KZ:2:centralasia.media:tls")
    summary = generate(
        tmp_path / "out",
        count=500,
        days=4,
        countries=TWO,
        seed=1,
        event=event,
        templates_dir=templates,
    )
    by: Counter[tuple[str, int, str]] = Counter()
    index = {e["id"]: e for e in json.loads((templates / "index.json").read_text())["templates"]}
    for _, line in _lines(tmp_path / "out"):
        m = orjson.loads(line)
        if "centralasia.media" not in m["input"]:
            continue
        day = int(m["measurement_start_time"][8:10]) - 1
        outcome = index[m["annotations"]["x_netvigil_template"]]["outcome"]
        by[(m["probe_cc"], day, outcome)] += 1
    # KZ: never blocked before day 2, always tls/timeout from day 2 on.
    for day in (0, 1):
        assert by[("KZ", day, "ok")] > 5 and not by[("KZ", day, "tls/timeout")]
    for day in (2, 3):
        assert by[("KZ", day, "tls/timeout")] > 5 and not by[("KZ", day, "ok")]
    assert summary.event_measurements == by[("KZ", 2, "tls/timeout")] + by[("KZ", 3, "tls/timeout")]
    # RU is not part of the event: its share of blocking does not jump on day 2.
    ru = [by[("RU", d, "tls/timeout")] / max(1, by[("RU", d, "tls/timeout")] + by[("RU", d, "ok")])
          for d in range(4)]  # fmt: skip
    assert len({round(share) for share in ru}) == 1


def test_event_needs_a_template_that_blocks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no template blocks"):
        generate(tmp_path, count=10, event=Event.parse("KZ:1:control-news.kz:dns"))
    with pytest.raises(ValueError, match="outside"):
        generate(tmp_path, count=10, days=3, event=Event.parse("KZ:3:centralasia.media:tls"))
    with pytest.raises(ValueError, match="CC:DAY"):
        Event.parse("KZ:soon:meduza.io")


def test_corrupt_lines_and_files_are_counted_apart(tmp_path: Path) -> None:
    summary = generate(tmp_path, count=300, days=1, countries=TWO, seed=2, corrupt=0.1,
                       corrupt_files=2)  # fmt: skip
    good = bad = 0
    for _, line in _lines(tmp_path):
        try:
            m = orjson.loads(line)
            good += isinstance(m, dict) and "test_keys" in m
            bad += not (isinstance(m, dict) and "test_keys" in m)
        except orjson.JSONDecodeError:
            bad += 1
    assert (good, bad) == (300, summary.corrupt_lines) and bad > 10
    assert len(summary.corrupt_files) == 2
    truncated, not_gzip = (tmp_path / f for f in summary.corrupt_files)
    with pytest.raises(EOFError):
        gzip.decompress(truncated.read_bytes())
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(not_gzip.read_bytes())
