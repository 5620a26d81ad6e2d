"""Large, realistic OONI-format datasets for benchmarks, built from real measurements.

Every generated measurement is a *template* — one of the 29 real OONI ``web_connectivity``
samples or a measurement recorded in the testbed (``data/templates/``, see its README) — with
a rewritten envelope: when (``measurement_start_time``, ``test_start_time``), where
(``probe_cc``, ``probe_asn``, resolver fields), ``report_id`` and a fresh ``measurement_uid``.
``test_keys`` are copied byte for byte, so each line gets exactly the verdict of its template
(``templates/index.json`` records it) and stays internally consistent (the input URL is never
changed; it appears throughout ``test_keys``).

The output follows OONI's published layout, one gzip file per (day, hour, country) chunk::

    OUT/raw/YYYYMMDD/HH/CC/web_connectivity/<n>.jsonl.gz

How templates are picked, so a (country, network, domain) has a stable baseline:

* an input URL is drawn uniformly from the templates' inputs;
* whether the *domain* is blocked in a network is a fixed, seeded property of (country, ASN,
  domain) (a country's ``block_rate``), and so is *which* blocked template (technique) that
  network uses for the URL: a blocked domain shows its blocked template 95 % of the time, an
  unblocked one shows it 0.5 % of the time (transient noise), else an unblocked template of the
  same URL (testbed URLs have both: the testbed was also run with its rules removed);
* an :class:`Event` (a "protest day") makes the chosen domains in one country unblocked before
  its day and blocked with the chosen technique from that day on, in every network.

Generation streams: one (day, hour, country) cell at a time, each from its own seeded random
stream, so the output is byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from netvigil import textsafe

__all__ = [
    "DEFAULT_COUNTRIES",
    "TEMPLATES_DIR",
    "Country",
    "Event",
    "GenerateSummary",
    "Template",
    "add_arguments",
    "add_parser_to",
    "build_index",
    "generate",
    "load_templates",
    "main",
]

TEMPLATES_DIR = Path(__file__).resolve().parent / "data" / "templates"

# Envelope keys the generator writes; the template's own values are dropped.
_REWRITTEN = (
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
    "annotations",
)
BLOCKED_SHARE = (
    0.95  # a blocked (network, domain) still shows its unblocked template 5 % of the time
)
NOISE_SHARE = 0.005  # an unblocked one shows a blocked template this often (transient failures)
PER_FILE = 5000  # measurements per .jsonl.gz at most (OONI's hourly files are split too)
_FLUSH = 1 << 20  # write in ~1 MiB batches

# Probes measure more during the local day than at night: a coarse, fixed diurnal weight per UTC
# hour (the countries here are mostly UTC+3…+6, so the peak is in the UTC morning).
_HOURLY = (
    0.5, 0.4, 0.4, 0.5, 0.7, 0.9, 1.1, 1.3, 1.4, 1.4, 1.4, 1.3,
    1.3, 1.3, 1.2, 1.2, 1.1, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5,
)  # fmt: skip


@dataclass(frozen=True)
class Country:
    """A country: its networks (``AS…``), share of the measurements, share of blocked domains."""

    cc: str
    asns: tuple[str, ...]
    weight: float = 1.0
    block_rate: float = 0.3


# Network names as OONI records them (probe_network_name / resolver_network_name).
_NETWORK_NAMES = {
    "AS9198": "JSC Kazakhtelecom",
    "AS48716": "PS Internet Company LLP",
    "AS206026": "Kar-Tel LLC",
    "AS12389": "PJSC Rostelecom",
    "AS8359": "MTS PJSC",
    "AS31213": "PJSC MegaFon",
    "AS197207": "Mobile Communication Company of Iran PLC",
    "AS58224": "Iran Telecommunication Company PJS",
    "AS44244": "Iran Cell Service and Communication Company",
    "AS9121": "Turk Telekomunikasyon Anonim Sirketi",
    "AS16135": "Turkcell Iletisim Hizmetleri A.S.",
    "AS6697": "Republican Unitary Telecommunication Enterprise Beltelecom",
    "AS4134": "CHINANET-BACKBONE",
    "AS4837": "CHINA UNICOM China169 Backbone",
    "AS7922": "Comcast Cable Communications, LLC",
    "AS3320": "Deutsche Telekom AG",
}

DEFAULT_COUNTRIES: tuple[Country, ...] = (
    Country("KZ", ("AS9198", "AS48716", "AS206026"), weight=3.0, block_rate=0.7),
    Country("RU", ("AS12389", "AS8359", "AS31213"), weight=3.0, block_rate=0.5),
    Country("IR", ("AS197207", "AS58224", "AS44244"), weight=2.0, block_rate=0.7),
    Country("TR", ("AS9121", "AS16135"), weight=1.5, block_rate=0.3),
    Country("BY", ("AS6697",), weight=1.0, block_rate=0.3),
    Country("CN", ("AS4134", "AS4837"), weight=1.0, block_rate=0.7),
    Country("US", ("AS7922",), weight=1.5, block_rate=0.0),
    Country("DE", ("AS3320",), weight=1.0, block_rate=0.0),
)


@dataclass(frozen=True)
class Event:
    """A sudden onset of blocking: ``domains`` in ``cc`` blocked by ``technique`` from ``day``.

    ``day`` counts from the dataset's start (0 = first day). ``technique`` is an outcome or its
    stage: ``tls/timeout``, ``tls``, ``dns``…; empty means any blocked template.
    """

    cc: str
    day: int
    domains: tuple[str, ...]
    technique: str = ""

    @classmethod
    def parse(cls, text: str) -> Event:
        """``CC:DAY:DOMAIN[,DOMAIN…][:TECHNIQUE]`` (the CLI's ``--event``)."""
        parts = text.split(":")
        if len(parts) not in (3, 4) or not parts[1].isdigit():
            raise ValueError(f"--event wants CC:DAY:DOMAIN[,DOMAIN...][:TECHNIQUE], got {text!r}")
        domains = tuple(d.strip().lower() for d in parts[2].split(",") if d.strip())
        return cls(parts[0].upper(), int(parts[1]), domains, parts[3] if len(parts) == 4 else "")


@dataclass(frozen=True)
class Template:
    """One template measurement, serialised once without the envelope keys we rewrite."""

    id: str  # "<file>:<line>" (1-based line)
    input: str
    domain: str
    outcome: str  # the verdict engine's outcome without the fingerprint suffix
    blocked: bool
    annotations: Mapping[str, Any]
    rest: bytes  # the template's other keys, b'"k":v,...' (no braces)


@dataclass
class GenerateSummary:
    out_dir: Path
    measurements: int = 0
    files: int = 0
    bytes_uncompressed: int = 0
    bytes_written: int = 0
    corrupt_lines: int = 0
    corrupt_files: list[str] = field(default_factory=list)
    event_measurements: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # per template outcome, valid lines
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        mb = self.bytes_uncompressed / 1e6
        return {
            "out_dir": str(self.out_dir),
            "measurements": self.measurements,
            "files": self.files,
            "bytes_uncompressed": self.bytes_uncompressed,
            "bytes_written": self.bytes_written,
            "corrupt_lines": self.corrupt_lines,
            "corrupt_files": self.corrupt_files,
            "event_measurements": self.event_measurements,
            "outcomes": dict(sorted(self.outcomes.items())),
            "seconds": round(self.seconds, 3),
            "measurements_per_s": round(self.measurements / self.seconds, 1)
            if self.seconds
            else None,
            "mb_per_s": round(mb / self.seconds, 1) if self.seconds else None,
        }


# ---------------------------------------------------------------------------------------------
# Templates


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[1 : host.find("]")].lower()
    return host.split(":", 1)[0].lower().rstrip(".")


def _template_lines(directory: Path) -> Iterator[tuple[str, bytes]]:
    import gzip

    for path in sorted(directory.glob("*.jsonl.gz")):
        with gzip.open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    yield f"{path.name}:{number}", line


def build_index(directory: Path = TEMPLATES_DIR) -> dict[str, Any]:
    """Run the verdict engine over every template and write ``index.json`` (maintainers only).

    The generator reads the index instead of running the engine, so it needs neither the
    fingerprint database nor the engine's time; a test checks the index still agrees.
    """
    from netvigil.verdict import analyze, load_fingerprints

    fps = load_fingerprints()
    entries = []
    for tid, line in _template_lines(directory):
        m = orjson.loads(line)
        verdict = analyze(m, fps)
        entries.append(
            {
                "id": tid,
                "input": m.get("input"),
                "outcome": verdict.outcome_base,
                "blocked": verdict.blocked,
            }
        )
    index = {"templates": entries}
    (directory / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def load_templates(directory: Path = TEMPLATES_DIR) -> list[Template]:
    """Every template with a string input, in a fixed order (files, then lines)."""
    index = {e["id"]: e for e in json.loads((directory / "index.json").read_text())["templates"]}
    out = []
    for tid, line in _template_lines(directory):
        m = orjson.loads(line)
        entry = index.get(tid)
        if entry is None or not isinstance(m, dict) or not isinstance(m.get("input"), str):
            continue
        annotations = m.get("annotations")
        rest = {k: v for k, v in m.items() if k not in _REWRITTEN}
        out.append(
            Template(
                id=tid,
                input=m["input"],
                domain=_host(m["input"]),
                outcome=str(entry["outcome"]),
                blocked=bool(entry["blocked"]),
                annotations=dict(annotations) if isinstance(annotations, dict) else {},
                rest=orjson.dumps(rest)[1:-1],
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# The plan: which template for which (country, network, URL, day)


def _unit(*parts: object) -> float:
    """A stable uniform number in [0, 1) for ``parts`` (not Python's salted ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _matches(outcome: str, technique: str) -> bool:
    return not technique or outcome == technique or outcome.startswith(technique + "/")


@dataclass(frozen=True)
class _Input:
    url: str
    domain: str
    unblocked: tuple[int, ...]  # template indices
    blocked: tuple[int, ...]


@dataclass(frozen=True)
class _Plan:
    seed: int
    start: date
    countries: tuple[Country, ...]
    event: Event | None
    per_file: int
    templates: tuple[Template, ...]
    inputs: tuple[_Input, ...]

    def choose(self, rng: random.Random, cc: Country, asn: str, day: int) -> tuple[int, bool]:
        """(template index, is it the event's) for one measurement."""
        inp = self.inputs[rng.randrange(len(self.inputs))]
        ev = self.event
        if ev is not None and ev.cc == cc.cc and inp.domain in ev.domains:
            if day >= ev.day:
                fitting = [
                    i for i in inp.blocked if _matches(self.templates[i].outcome, ev.technique)
                ]
                pool = fitting or list(inp.blocked) or list(inp.unblocked)
                return pool[rng.randrange(len(pool))], bool(fitting or inp.blocked)
            pool = list(inp.unblocked) or list(inp.blocked)
            return pool[rng.randrange(len(pool))], False
        if not inp.blocked:
            return inp.unblocked[rng.randrange(len(inp.unblocked))], False
        if not inp.unblocked:
            return inp.blocked[rng.randrange(len(inp.blocked))], False
        blocked_here = _unit(self.seed, cc.cc, asn, inp.domain) < cc.block_rate
        share = BLOCKED_SHARE if blocked_here else NOISE_SHARE
        if rng.random() < share:
            # The network's technique for this URL is fixed: the same blocked template each time.
            which = int(_unit(self.seed, "technique", cc.cc, asn, inp.url) * len(inp.blocked))
            return inp.blocked[which], False
        return inp.unblocked[rng.randrange(len(inp.unblocked))], False


def _plan(
    templates: Sequence[Template],
    *,
    seed: int,
    start: date,
    countries: Sequence[Country],
    event: Event | None,
    per_file: int,
) -> _Plan:
    by_url: dict[str, tuple[list[int], list[int]]] = {}
    for i, t in enumerate(templates):
        by_url.setdefault(t.input, ([], []))[1 if t.blocked else 0].append(i)
    inputs = tuple(
        _Input(url, _host(url), tuple(ok), tuple(bad)) for url, (ok, bad) in by_url.items()
    )
    if event is not None:
        known = {c.cc for c in countries}
        if event.cc not in known:
            raise ValueError(f"event country {event.cc} is not among {sorted(known)}")
        for domain in event.domains:
            mine = [inp for inp in inputs if inp.domain == domain]
            ok = [
                i
                for inp in mine
                for i in inp.blocked
                if _matches(templates[i].outcome, event.technique) and inp.unblocked
            ]
            if not ok:
                choices = sorted(
                    {
                        f"{inp.domain} ({templates[i].outcome})"
                        for inp in inputs
                        for i in inp.blocked
                        if inp.unblocked
                    }
                )
                raise ValueError(
                    f"no template blocks {domain!r} with {event.technique or 'any technique'} "
                    f"and also has an unblocked one; candidates: {', '.join(choices[:40])} …"
                )
    return _Plan(seed, start, tuple(countries), event, per_file, tuple(templates), inputs)


def _cells(plan: _Plan, count: int, days: int) -> list[tuple[int, int, int, int]]:
    """(day, hour, country index, measurements) for every non-empty cell, exactly ``count``."""
    weights = [
        (d, h, c, cc.weight * _HOURLY[h])
        for d in range(days)
        for h in range(24)
        for c, cc in enumerate(plan.countries)
    ]
    total = sum(w for *_, w in weights)
    exact = [count * w / total for *_, w in weights]
    counts = [math.floor(x) for x in exact]
    # Largest remainder, ties broken by position: deterministic and exactly ``count``.
    order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: count - sum(counts)]:
        counts[i] += 1
    return [(d, h, c, n) for (d, h, c, _), n in zip(weights, counts, strict=True) if n]


# ---------------------------------------------------------------------------------------------
# Writing


class _GzipWriter:
    """A single-member .jsonl.gz assembled from independently compressed pieces.

    Deflate pieces that each end on a byte boundary without a final block (a full flush) can be
    concatenated into one valid deflate stream (pigz does the same). A template's bytes are
    compressed once per process and reused for every line made from it, so the per-line work is
    compressing the ~600-byte envelope and a CRC pass, not deflating 30 kB again: zlib's level 1
    runs at ~50 MB/s on this kind of data, which would make generation, not the pipeline, the
    bottleneck of a 1 M-measurement benchmark. Renamed into place when complete.
    """

    def __init__(self, path: Path, level: int) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.partial, "wb")  # noqa: SIM115 - closed in close()
        self.z = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: we frame it
        self.crc = 0
        self.size = 0
        self.buf: list[bytes] = [_GZIP_HEADER]
        self.pending = len(_GZIP_HEADER)
        self.written = 0

    def write(self, data: bytes, deflated: bytes | None = None) -> None:
        """Append ``data``; ``deflated`` is its piece compressed ahead (see :func:`_piece`)."""
        if deflated is None:
            deflated = self.z.compress(data) + self.z.flush(zlib.Z_FULL_FLUSH)
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.buf.append(deflated)
        self.pending += len(deflated)
        if self.pending >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        out = b"".join(self.buf)
        self.fh.write(out)
        self.written += len(out)
        self.buf.clear()
        self.pending = 0

    def close(self, truncate: bool = False) -> int:
        if not truncate:  # a corrupt file: the gzip stream stops before its end
            # An empty final block, then CRC-32 and size mod 2**32 (RFC 1952).
            self.buf.append(b"\x03\x00" + struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        self._flush()
        self.fh.close()
        os.replace(self.partial, self.path)
        return self.written


# Magic, deflate, no flags, no mtime (reproducible bytes), no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _piece(data: bytes, level: int) -> bytes:
    """``data`` as a self-contained raw deflate piece ending on a byte boundary, not final."""
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush(zlib.Z_FULL_FLUSH)


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# Garbage must stay one line for any reader (bytes.splitlines also splits at \r).
_NO_EOL = bytes.maketrans(b"\n\r", b"  ")


def _corrupt_line(rng: random.Random, line: bytes) -> bytes:
    """A broken line of one of the kinds seen in the wild (truncated, garbage, not an object)."""
    kind = rng.randrange(4)
    if kind == 0:
        return line[: max(1, len(line) // 3)] + b"\n"  # cut mid-write
    if kind == 1:
        return b"\xff\xfe" + bytes(rng.randrange(256) for _ in range(40)).translate(_NO_EOL) + b"\n"
    if kind == 2:
        return b'["not", "a", "measurement"]\n'
    return b'{"measurement_start_time": "2020-01-01 00:00:00", "test_keys": \n'


# Per process: template index → (its bytes after the envelope, those bytes deflated).
_Pieces = dict[int, tuple[bytes, bytes]]


def _write_cell(
    plan: _Plan,
    out_dir: Path,
    cell: tuple[int, int, int, int],
    level: int,
    corrupt: float,
    pieces: _Pieces,
) -> GenerateSummary:
    day, hour, ci, n = cell
    cc = plan.countries[ci]
    rng = random.Random(f"{plan.seed}:{day}:{hour}:{cc.cc}")  # str seeds are stable (sha512)
    when = datetime.combine(plan.start + timedelta(days=day), datetime.min.time(), UTC)
    hour_start = when + timedelta(hours=hour)
    folder = out_dir / "raw" / hour_start.strftime("%Y%m%d") / f"{hour:02d}" / cc.cc
    folder = folder / "web_connectivity"
    summary = GenerateSummary(out_dir)

    # One report per network and hour, as a probe running a test list hourly would upload.
    reports: dict[str, tuple[str, datetime]] = {}
    for asn in cc.asns:
        started = hour_start + timedelta(seconds=rng.randrange(60))
        suffix = "".join(rng.choice(_B62) for _ in range(16))
        rid = f"{started:%Y%m%dT%H%M%S}Z_webconnectivity_{cc.cc}_{asn[2:]}_n1_{suffix}"
        reports[asn] = (rid, started)
    # Measurement times inside the hour, in order (a report's measurements follow each other).
    offsets = sorted(rng.uniform(60.0, 3599.0) for _ in range(n))
    writer: _GzipWriter | None = None
    in_file = 0
    file_no = 0
    for offset in offsets:
        if writer is None or in_file >= plan.per_file:
            if writer is not None:
                summary.bytes_written += writer.close()
            writer = _GzipWriter(folder / f"{file_no}.jsonl.gz", level)
            summary.files += 1
            file_no += 1
            in_file = 0
        asn = cc.asns[rng.randrange(len(cc.asns))]
        index, is_event = plan.choose(rng, cc, asn, day)
        t = plan.templates[index]
        rid, started = reports[asn]
        start = hour_start + timedelta(seconds=offset)
        uploaded = start + timedelta(microseconds=rng.randrange(500_000, 30_000_000))
        uid = f"{uploaded:%Y%m%d%H%M%S.%f}_{cc.cc}_webconnectivity_{rng.getrandbits(64):016x}"
        network = _NETWORK_NAMES.get(asn, "")
        envelope = {
            "measurement_uid": uid,
            "report_id": rid,
            "probe_cc": cc.cc,
            "probe_asn": asn,
            "probe_network_name": network,
            "probe_ip": "127.0.0.1",  # OONI never publishes the probe's address
            "resolver_ip": f"10.{int(asn[2:]) % 250}.0.53",
            "resolver_asn": asn,
            "resolver_network_name": network,
            "measurement_start_time": f"{start:%Y-%m-%d %H:%M:%S}",
            "test_start_time": f"{started:%Y-%m-%d %H:%M:%S}",
            "annotations": {**t.annotations, "x_netvigil_template": t.id},
        }
        head = b"{" + orjson.dumps(envelope)[1:-1] + b","
        tail = pieces.get(index)
        if tail is None:
            tail = pieces[index] = (t.rest + b"}\n", _piece(t.rest + b"}\n", level))
        if corrupt and rng.random() < corrupt:
            # In addition to the measurement, so ``count`` stays the number of valid ones.
            broken = _corrupt_line(rng, head + tail[0])
            summary.corrupt_lines += 1
            summary.bytes_uncompressed += len(broken)
            writer.write(broken)
        summary.measurements += 1
        summary.outcomes[t.outcome] += 1
        summary.event_measurements += is_event
        summary.bytes_uncompressed += len(head) + len(tail[0])
        writer.write(head)
        writer.write(*tail)
        in_file += 1
    if writer is not None:
        summary.bytes_written += writer.close()
    return summary


def _write_corrupt_files(plan: _Plan, out_dir: Path, files: int, level: int) -> list[str]:
    """Extra whole-file damage: a truncated gzip stream, then a file that is not gzip at all."""
    names = []
    rng = random.Random(f"{plan.seed}:corrupt-files")
    hour_start = datetime.combine(plan.start, datetime.min.time(), UTC)
    for k in range(files):
        cc = plan.countries[k % len(plan.countries)]
        folder = out_dir / "raw" / hour_start.strftime("%Y%m%d") / "00" / cc.cc
        path = folder / "web_connectivity" / f"corrupt-{k}.jsonl.gz"
        if k % 2 == 0:
            writer = _GzipWriter(path, level)
            for _ in range(3):
                writer.write(
                    b"{" + plan.templates[rng.randrange(len(plan.templates))].rest + b"}\n"
                )
            writer.close(truncate=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"this is not gzip\n" * 10)
        names.append(str(path.relative_to(out_dir)))
    return names


def _merge(into: GenerateSummary, part: GenerateSummary) -> None:
    into.measurements += part.measurements
    into.files += part.files
    into.bytes_uncompressed += part.bytes_uncompressed
    into.bytes_written += part.bytes_written
    into.corrupt_lines += part.corrupt_lines
    into.event_measurements += part.event_measurements
    into.outcomes.update(part.outcomes)


def _worker_cells(
    args: tuple[_Plan, Path, list[tuple[int, int, int, int]], int, float],
) -> GenerateSummary:
    plan, out_dir, cells, level, corrupt = args
    total = GenerateSummary(out_dir)
    pieces: _Pieces = {}
    for cell in cells:
        _merge(total, _write_cell(plan, out_dir, cell, level, corrupt, pieces))
    return total


def generate(
    out_dir: Path,
    *,
    count: int,
    days: int = 7,
    start: date = date(2024, 1, 1),
    countries: Sequence[Country | tuple[str, Sequence[str]]] | None = None,
    seed: int = 0,
    event: Event | None = None,
    corrupt: float = 0.0,
    corrupt_files: int = 0,
    per_file: int = PER_FILE,
    level: int = 6,
    workers: int = 1,
    max_template_bytes: int | None = None,
    domains: int | None = None,
    templates_dir: Path = TEMPLATES_DIR,
) -> GenerateSummary:
    """Write ``count`` measurements (plus corrupt extras) under ``out_dir/raw``; see the module.

    ``corrupt`` is the share of measurements preceded by a broken line (written in addition:
    ``count`` valid measurements are always written); ``corrupt_files`` adds whole broken
    files. ``workers`` > 1 writes cells in processes; the output does not depend on it.
    ``max_template_bytes`` leaves out templates larger than that (modern OONI measurements with
    whole page bodies reach 800 kB; the default keeps them, as real data does). ``domains``
    keeps only that many domains (a seeded choice; the event's are always kept), as a probe
    measuring a short test list does: each domain is then measured often enough per network and
    day for trends and events to show in a small dataset.
    """
    if count < 0 or days < 1 or per_file < 1 or not 0.0 <= corrupt < 1.0:
        raise ValueError("count >= 0, days >= 1, per_file >= 1 and 0 <= corrupt < 1")
    began = time.perf_counter()
    chosen = tuple(
        c if isinstance(c, Country) else Country(c[0].upper(), tuple(c[1]))
        for c in (countries if countries is not None else DEFAULT_COUNTRIES)
    )
    if not chosen or any(not c.asns for c in chosen):
        raise ValueError("every country needs at least one ASN")
    templates = [
        t
        for t in load_templates(templates_dir)
        if max_template_bytes is None or len(t.rest) <= max_template_bytes
    ]
    if not templates:
        raise ValueError("no template is small enough")
    if domains is not None:
        if domains < 1:
            raise ValueError("--domains must be at least 1")
        templates = _test_list(templates, domains, seed, event)
    plan = _plan(
        templates, seed=seed, start=start, countries=chosen, event=event, per_file=per_file
    )
    if event is not None and not 0 <= event.day < days:
        raise ValueError(f"event day {event.day} is outside the {days} days generated")
    cells = _cells(plan, count, days)
    summary = GenerateSummary(out_dir)
    if workers <= 1 or len(cells) < 2:
        pieces: _Pieces = {}
        for cell in cells:
            _merge(summary, _write_cell(plan, out_dir, cell, level, corrupt, pieces))
    else:
        # Round-robin split: neighbouring cells have similar sizes, so the shares balance.
        shares = [cells[w::workers] for w in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(
                _worker_cells, [(plan, out_dir, s, level, corrupt) for s in shares]
            ):
                _merge(summary, part)
    summary.corrupt_files = _write_corrupt_files(plan, out_dir, corrupt_files, level)
    summary.files += corrupt_files
    summary.seconds = time.perf_counter() - began
    return summary


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "-o", type=Path, required=True, help="output directory")
    parser.add_argument("--count", "-n", type=int, required=True, help="measurements to write")
    parser.add_argument("--days", type=int, default=7, help="days covered (default 7)")
    parser.add_argument(
        "--start", type=date.fromisoformat, default=date(2024, 1, 1), help="first day, YYYY-MM-DD"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed: the same seed writes the same data"
    )
    parser.add_argument(
        "--country",
        action="append",
        metavar="CC:ASN[,ASN...]",
        help="a country and its networks (repeatable; default: KZ, RU, IR, TR, BY, CN, US, DE)",
    )
    parser.add_argument(
        "--event",
        type=Event.parse,
        metavar="CC:DAY:DOMAIN[,DOMAIN...][:TECHNIQUE]",
        help="sudden blocking of DOMAINs in CC from day DAY (0-based), e.g. KZ:3:meduza.io:tls",
    )
    parser.add_argument("--corrupt", type=float, default=0.0, help="fraction of broken lines")
    parser.add_argument("--corrupt-files", type=int, default=0, help="broken files to add")
    parser.add_argument("--per-file", type=int, default=PER_FILE, help="measurements per file")
    parser.add_argument("--level", type=int, default=6, choices=range(1, 10), help="gzip level")
    parser.add_argument("--workers", "-j", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "--max-template-kb", type=int, help="leave out templates larger than this (default: none)"
    )
    parser.add_argument(
        "--domains", type=int, metavar="N", help="measure only N domains (default: all templates)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _country(text: str) -> Country:
    cc, _, asns = text.partition(":")
    nets = tuple(a.strip().upper() for a in asns.split(",") if a.strip())
    nets = tuple(a if a.startswith("AS") else f"AS{a}" for a in nets)
    defaults = {c.cc: c for c in DEFAULT_COUNTRIES}
    known = defaults.get(cc.upper())
    if known is not None:
        return Country(known.cc, nets or known.asns, known.weight, known.block_rate)
    if not nets:
        raise ValueError(f"--country {text!r}: give its networks, e.g. {cc.upper()}:AS1234")
    return Country(cc.upper(), nets)


def _test_list(
    templates: list[Template], size: int, seed: int, event: Event | None
) -> list[Template]:
    """The templates of ``size`` domains: the event's, then others in a seeded stable order."""
    keep = list(dict.fromkeys(event.domains)) if event is not None else []
    others = sorted(
        {_host(t.input) for t in templates} - set(keep),
        key=lambda domain: _unit(seed, "test-list", domain),
    )
    chosen = set((keep + others)[: max(size, len(keep))])
    return [t for t in templates if _host(t.input) in chosen]


def main(args: argparse.Namespace) -> int:
    try:
        countries = [_country(c) for c in args.country] if args.country else None
        summary = generate(
            args.out,
            count=args.count,
            days=args.days,
            start=args.start,
            countries=countries,
            seed=args.seed,
            event=args.event,
            corrupt=args.corrupt,
            corrupt_files=args.corrupt_files,
            per_file=args.per_file,
            level=args.level,
            workers=args.workers,
            max_template_bytes=args.max_template_kb * 1000 if args.max_template_kb else None,
            domains=args.domains,
        )
    except ValueError as exc:
        print(textsafe.visible(f"netvigil pipeline generate: {exc}"), file=sys.stderr)
        return 2
    report = summary.to_dict()
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['measurements']:,} measurements in {report['files']:,} files under "
            f"{args.out}/raw: {report['bytes_uncompressed'] / 1e6:,.1f} MB of JSON, "
            f"{report['bytes_written'] / 1e6:,.1f} MB written, {report['seconds']} s "
            f"({report['measurements_per_s']:,} measurements/s, {report['mb_per_s']} MB/s)"
        )
    return 0


def add_parser_to(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``generate`` under ``netvigil pipeline`` (``subparsers`` of its parser)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "generate",
        help="write a large, realistic OONI-format dataset for benchmarks",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(func=main)
    return parser


if __name__ == "__main__":
    _ap = argparse.ArgumentParser(prog="python -m netvigil.pipeline.generate")
    add_arguments(_ap)
    sys.exit(main(_ap.parse_args()))
