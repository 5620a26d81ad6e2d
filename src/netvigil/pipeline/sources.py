"""What the pipeline reads: finding input files and streaming measurements out of them.

Inputs are OONI's files as published (JSONL, gzip, the ``raw/YYYYMMDD/HH/CC/testname/``
layout), single-measurement ``.json`` files, legacy YAML reports (counted, not parsed) and the
collector's SQLite database (read read-only). Every read is bounded: lines longer than
``MAX_LINE`` are skipped without being held in memory, gzip output is decompressed in slices,
and a truncated gzip keeps every complete line before the truncation.

A gzip file of one member whose sizes are within ``FAST_MAX_INPUT`` (compressed) and
``FAST_MAX_OUTPUT`` (uncompressed) is decompressed whole, in one call to libdeflate (the
``deflate`` package, ~3x faster than zlib); anything else, or anything libdeflate refuses
(several members, truncation, corruption, trailing bytes), is streamed through zlib as before,
with the same records and counts.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import urllib.parse
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import deflate
import orjson

__all__ = [
    "CORRUPT_REASONS",
    "MAX_LINE",
    "OONI_TEST_NAMES",
    "FileReport",
    "PipelineInputError",
    "SourceFile",
    "discover",
    "read_records",
    "read_stream",
]

MAX_LINE = 32 * 1024 * 1024  # bytes: one measurement longer than this is skipped
CHUNK = 1024 * 1024  # bytes read (and at most decompressed) per step
MAX_EXAMPLES = 5

# The whole-file gzip path (``_inflate_whole``). A worker holds at most one file's compressed
# bytes and its decompressed bytes at a time, so these bound its memory: 64 + 256 MiB while
# libdeflate runs, then the 256 MiB output (and one line copied out of it) while its records
# are processed. That is ~1/3 GiB per worker, and it does not grow with the number of files;
# the streaming path (~CHUNK plus one line) remains for bigger files, which lose only the
# speed-up. OONI's hourly files are a few MB; the generator's biggest was 17 MB (~70 MB out).
# The ISIZE trailer (uncompressed size mod 2**32) chooses the output buffer: one that lies (a
# file of several members, a real size of 4 GiB or more, a forged value) costs at most one
# failed libdeflate call of at most FAST_MAX_OUTPUT bytes, then the stream. A forged ISIZE is
# also held to what DEFLATE can encode (1032:1), so a tiny hostile file cannot make us
# allocate more than ~1000x its own size.
FAST_MAX_INPUT = 64 * 1024 * 1024
FAST_MAX_OUTPUT = 256 * 1024 * 1024
_DEFLATE_MAX_RATIO = 1032  # DEFLATE's most: a 258-byte match per ~2 bits
_GZIP_MIN = 20  # 10-byte header, the smallest DEFLATE block (2 bytes), 8-byte trailer
_FHCRC_OR_RESERVED = 0xE2  # header flags zlib checks and libdeflate does not: stream those
_STEP_MIN = 4096  # bytes of input first fed for each gzip member (then doubled, up to CHUNK)
SQLITE_MAGIC = b"SQLite format 3\x00"

# Why a record was not processed. ``corrupt-payload``: a collector row whose zlib payload does
# not decompress; ``unreadable``: the file could not be opened or read at all.
CORRUPT_REASONS = (
    "truncated-gzip",
    "invalid-json",
    "wrong-types",
    "unknown-test-name",
    "line-too-long",
    "not-an-object",
    "corrupt-payload",
    "unreadable",
    # a readable envelope with a wrong value (``transform``): never reaches the tables
    "invalid-country",
    "invalid-asn",
    "invalid-host",
    "invalid-start-time",
)

# OONI's registry of test names (ooni/spec ``nettests/``, current and legacy, as they appear in
# measurements' ``test_name``). A name outside it is a corrupt or foreign record.
OONI_TEST_NAMES = frozenset(
    {
        "bridge_reachability",
        "browser_web",
        "dash",
        "dns_consistency",
        "dns_injection",
        "dnscheck",
        "dnsping",
        "echcheck",
        "facebook_messenger",
        "http_filtering_bypass",
        "http_header_field_manipulation",
        "http_host",
        "http_invalid_request_line",
        "http_requests",
        "http_keyword_filtering",
        "http_uk_mobile_networks",
        "lantern",
        "meek_fronted_requests_test",
        "multi_protocol_traceroute",
        "ndt",
        "openvpn",
        "openvpn_client_test",
        "portfiltering",
        "psiphon",
        "quicping",
        "riseupvpn",
        "signal",
        "simplequicping",
        "sni_blocking",
        "stun_reachability",
        "stunreachability",
        "tcp_connect",
        "tcpping",
        "telegram",
        "tlsmiddlebox",
        "tlsping",
        "tlstool",
        "tor",
        "torsf",
        "urlgetter",
        "vanilla_tor",
        "web_connectivity",
        "whatsapp",
    }
)

Kind = Literal["jsonl", "json", "yaml", "sqlite"]


class PipelineInputError(ValueError):
    """Bad input to a pipeline run; the message is one line that says what to fix."""


@dataclass(frozen=True, order=True)
class SourceFile:
    """One input file. ``name`` is its path relative to the ingest root it was found under
    (the ``source`` column); plain data, so it pickles to any engine's workers."""

    name: str
    path: str
    kind: Kind
    size: int = 0


@dataclass
class FileReport:
    """What happened to one input file."""

    source: str
    kind: str = ""
    measurements: int = 0  # records read that were processed into rows
    verdict_rows: int = 0
    observation_rows: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # not errors: legacy-yaml, removed
    corrupt: dict[str, int] = field(default_factory=dict)  # reason → count
    examples: list[str] = field(default_factory=list)  # "line N: reason: detail", at most 5

    @property
    def rows(self) -> int:
        return self.verdict_rows + self.observation_rows

    @property
    def corrupt_total(self) -> int:
        return sum(self.corrupt.values())

    def bad(self, reason: str, line: int, detail: str) -> None:
        self.corrupt[reason] = self.corrupt.get(reason, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {line}: {reason}: {detail[:200]}")

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "measurements": self.measurements,
            "verdict_rows": self.verdict_rows,
            "observation_rows": self.observation_rows,
            "skipped": dict(sorted(self.skipped.items())),
            "corrupt": dict(sorted(self.corrupt.items())),
            "examples": list(self.examples),
        }


# ---------------------------------------------------------------------------------------------
# Discovery


def _kind_by_name(name: str) -> Kind | None:
    lower = name.lower()
    if lower.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        return "jsonl"
    if lower.endswith(".json"):
        return "json"
    if lower.endswith((".yaml", ".yaml.gz", ".yml", ".yml.gz")):
        return "yaml"
    return None


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _classify(path: Path) -> Kind | None:
    kind = _kind_by_name(path.name)
    if kind is None and _is_sqlite(path):
        return "sqlite"
    return kind


def discover(srcs: Sequence[str | os.PathLike[str]]) -> list[SourceFile]:
    """The input files under ``srcs`` (files, or directories walked recursively in sorted
    order). Files of other types inside a directory are ignored; given by name, they are an
    error. A file reached twice is listed once."""
    if not srcs:
        raise PipelineInputError("no input: give at least one file or directory")
    out: list[SourceFile] = []
    seen: set[str] = set()

    def add(path: Path, name: str, kind: Kind) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        out.append(SourceFile(name=name, path=str(path), kind=kind, size=size))

    for src in srcs:
        root = Path(src)
        if not root.exists():
            raise PipelineInputError(f"{src}: no such file or directory")
        if root.is_file():
            kind = _classify(root)
            if kind is None:
                raise PipelineInputError(
                    f"{src}: not JSONL (.jsonl, .jsonl.gz), JSON, YAML or a collector database"
                )
            add(root, root.name, kind)
            continue
        if not root.is_dir():
            raise PipelineInputError(f"{src}: not a regular file or directory")
        found: list[tuple[tuple[str, ...], Path]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for filename in filenames:
                path = Path(dirpath) / filename
                if not filename.startswith("."):
                    found.append((path.relative_to(root).parts, path))
        # Sorted by path components, so raw/YYYYMMDD/HH/... comes out in time order.
        for parts, path in sorted(found):
            kind = _classify(path) if path.is_file() else None
            if kind is not None:
                add(path, "/".join(parts), kind)
    return out


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Record:
    """One measurement's bytes and where it was (line number, or the collector's leaf index).
    ``uid`` is the collector's id for a collector row."""

    line: int
    raw: bytes
    uid: str | None = None


def read_records(src: SourceFile, report: FileReport) -> Iterator[Record]:
    """Every measurement record in ``src``, as bytes; counts what it cannot read in ``report``
    (``truncated-gzip``, ``line-too-long``, ``corrupt-payload``, ``unreadable``, skipped YAML)."""
    report.kind = src.kind
    try:
        if src.kind == "yaml":
            # Legacy YAML reports (2012-2016) are not parsed: counted, so a run says how many.
            report.skip("legacy-yaml")
            return
        if src.kind == "sqlite":
            yield from _sqlite_records(src, report)
            return
        if src.kind == "json" and 0 < src.size <= MAX_LINE:
            yield from _json_records(src, report)
            return
        yield from _jsonl_records(src.path, report)
    except OSError as exc:
        report.bad("unreadable", 0, exc.strerror or str(exc))


def _json_records(src: SourceFile, report: FileReport) -> Iterator[Record]:
    """A ``.json`` file: one (perhaps pretty-printed) measurement, else JSONL."""
    with open(src.path, "rb") as handle:
        data = handle.read(MAX_LINE + 1)
    stripped = data.strip()
    if stripped.startswith(b"{") and b"\n" in stripped:
        try:
            orjson.loads(stripped)
        except orjson.JSONDecodeError:
            pass  # not one document: read it as JSONL below
        else:
            yield Record(1, stripped)
            return
    yield from _split_lines(iter((data,)), report, _Stream())


def _jsonl_records(path: str, report: FileReport) -> Iterator[Record]:
    with open(path, "rb") as handle:
        magic = handle.read(2)
        handle.seek(0)
        if magic == b"\x1f\x8b":
            whole = _inflate_whole(handle)
            if whole is not None:
                yield from _split_buffer(whole, report)
                return
            handle.seek(0)
            state = _Stream()
            yield from _split_lines(_gunzip(handle, state), report, state)
            if state.truncated:
                report.bad("truncated-gzip", state.line, state.detail)
        else:
            yield from _split_lines(iter(lambda: handle.read(CHUNK), b""), report, _Stream())


def _inflate_whole(handle: Any) -> bytearray | None:
    """The decompressed bytes of a gzip file of exactly one member, within FAST_MAX_INPUT and
    FAST_MAX_OUTPUT, in one libdeflate call; None for anything else (to be streamed instead,
    which says what is wrong with it).

    libdeflate decodes the first member and verifies its CRC32 and ISIZE, but ignores whatever
    follows it: a second member, garbage, zero padding. So the member's trailer (CRC32 and
    size of what was decoded) must be the file's last 8 bytes *and* occur nowhere earlier in
    the file: libdeflate found it right after the member's DEFLATE data, so the member then
    ends exactly at the end of the file."""
    size = os.fstat(handle.fileno()).st_size
    if not _GZIP_MIN <= size <= FAST_MAX_INPUT:
        return None
    data = handle.read(size + 1)  # not FAST_MAX_INPUT: Python would allocate that much
    n = len(data)
    if n != size or data[3] & _FHCRC_OR_RESERVED:
        return None  # the file changed while it was read, or a header for zlib to check
    crc, isize = struct.unpack_from("<II", data, n - 8)
    # ISIZE 0 would make the wrapper read the size itself (and return b"" without decoding).
    if not 0 < isize <= min(FAST_MAX_OUTPUT, n * _DEFLATE_MAX_RATIO):
        return None
    try:
        out = deflate.gzip_decompress(data, isize)
    except (deflate.DeflateError, MemoryError):
        return None  # several members, a lying ISIZE, truncated or corrupt: stream it
    if len(out) != isize or deflate.crc32(out) != crc or data.find(data[n - 8 :]) != n - 8:
        return None
    return out


@dataclass
class _Stream:
    truncated: bool = (
        False  # the gzip stream was cut (or corrupt): its last partial line is dropped
    )
    detail: str = ""
    line: int = 0  # the line the stream ended in


def _gunzip(handle: Any, state: _Stream) -> Iterator[bytes]:
    """Decompressed slices of a (multi-member) gzip stream, never more than CHUNK at a time,
    so a small file that inflates hugely cannot fill memory. On truncation or corruption
    it stops and says so in ``state``; what was decompressed before is kept.

    Each ``CHUNK`` read from the file is decompressed in steps of at most CHUNK output, as if
    by ``d.decompress(rest_of_the_read, CHUNK)`` (a step's output is lost if it fails, as
    zlib's is). But the input of a step is fed in pieces, starting at _STEP_MIN bytes for each
    member and doubling: at a member's end zlib copies the input left over (``unused_data``),
    and with the whole rest of the read that is quadratic in a file of many small members."""
    d = zlib.decompressobj(wbits=31)
    fed = False  # has the current member received any input (else EOF here is clean)
    step = _STEP_MIN
    while True:
        data = handle.read(CHUNK)
        if not data:
            break
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            fed = True
            parts: list[bytes] = []
            room = CHUNK
            try:
                while True:
                    piece = view[pos : pos + step]
                    out = d.decompress(piece, room)
                    if out:
                        parts.append(out)
                        room -= len(out)
                    if d.eof:
                        pos += len(piece) - len(d.unused_data)
                        break
                    pos += len(piece) - len(d.unconsumed_tail)
                    if not room or pos >= end:
                        break
                    step = min(2 * step, CHUNK)
            except zlib.error as exc:
                state.truncated, state.detail = True, f"corrupt gzip data ({exc})"
                return
            if parts:
                yield parts[0] if len(parts) == 1 else b"".join(parts)
            if d.eof:
                # Another gzip member may follow (concatenated files are valid gzip); trailing
                # zero padding (to the end of this read) is not one.
                d = zlib.decompressobj(wbits=31)
                fed = False
                step = _STEP_MIN
                if pos < end and data[pos] == 0 and data.count(0, pos) == end - pos:
                    pos = end
    if fed and not d.eof:
        state.truncated, state.detail = True, "gzip stream ends before its end marker"


def _split_lines(
    chunks: Iterator[bytes], report: FileReport, state: _Stream, max_line: int | None = None
) -> Iterator[Record]:
    """Lines of a byte stream, each at most ``max_line`` (default MAX_LINE); a longer line is
    counted and skipped while being read (its bytes are dropped, not accumulated). A final line
    without a newline is kept unless the stream was truncated (then it is the cut-off part of a
    line). Blank lines are not records, wherever the chunks are cut (``_split_buffer`` gives
    the same)."""
    limit = MAX_LINE if max_line is None else max_line  # MAX_LINE read now: tests patch it
    pending = bytearray()
    skipping = False
    line = 0
    too_long = f"longer than {limit} bytes"
    for chunk in chunks:
        parts = chunk.split(b"\n")
        last = parts.pop()
        for part in parts:
            line += 1
            if skipping:
                skipping = False
                report.bad("line-too-long", line, too_long)
                continue
            if pending:
                pending += part
                if len(pending) > limit:
                    report.bad("line-too-long", line, too_long)
                elif not pending.isspace():
                    yield Record(line, bytes(pending))
                pending.clear()
            elif len(part) > limit:
                report.bad("line-too-long", line, too_long)
            elif part.strip():
                yield Record(line, part)
        if skipping:
            continue
        if len(pending) + len(last) > limit:
            skipping = True
            pending.clear()
        else:
            pending += last
    state.line = line + 1
    if state.truncated:
        return  # the last partial line is where the stream was cut: not a measurement
    if skipping:
        report.bad("line-too-long", line + 1, too_long)
    elif pending.strip():
        yield Record(line + 1, bytes(pending))


class _Prefixed:
    """A byte stream whose first bytes were already read (to look at its magic number): gives
    them back first, then the rest of the stream. Works on pipes, which cannot seek."""

    def __init__(self, prefix: bytes, handle: IO[bytes]) -> None:
        self._prefix = prefix
        self._handle = handle

    def read(self, size: int) -> bytes:
        if self._prefix:
            out, self._prefix = self._prefix, b""
            return out
        return self._handle.read(size)


def read_stream(
    handle: IO[bytes], report: FileReport, *, max_line: int | None = None
) -> Iterator[Record]:
    """The lines of an open byte stream (a file, a pipe, stdin), plain or gzip (told by its
    magic bytes, never by a name), as records: the streaming path of ``read_records``, for
    callers that hold one stream rather than a ``SourceFile`` (``netvigil analyze``).

    Memory stays bounded whatever the stream holds: gzip is decompressed at most CHUNK at a
    time (never the whole file: no libdeflate fast path here), and at most one line of at most
    ``max_line`` bytes (default MAX_LINE) is held; a longer line is skipped while it is read.
    ``line-too-long`` and ``truncated-gzip`` are counted in ``report``; OSError propagates."""
    magic = b""
    while len(magic) < 2:
        more = handle.read(2 - len(magic))
        if not more:
            break
        magic += more
    stream = _Prefixed(magic, handle)
    state = _Stream()
    if magic == b"\x1f\x8b":
        yield from _split_lines(_gunzip(stream, state), report, state, max_line)
        if state.truncated:
            report.bad("truncated-gzip", state.line, state.detail)
    else:
        chunks = iter(lambda: stream.read(CHUNK), b"")
        yield from _split_lines(chunks, report, state, max_line)


def _split_buffer(buf: bytearray, report: FileReport) -> Iterator[Record]:
    """``_split_lines`` of one whole (untruncated) buffer, without splitting it all at once
    (which would double its memory): each line is copied out once, as its record's bytes."""
    max_line = MAX_LINE
    too_long = f"longer than {max_line} bytes"
    view = memoryview(buf)
    find = buf.find
    start, end, line = 0, len(buf), 0
    while start < end:
        stop = find(b"\n", start)
        if stop < 0:
            stop = end
        line += 1
        if stop - start > max_line:
            report.bad("line-too-long", line, too_long)
        else:
            raw = view[start:stop].tobytes()
            if raw and not raw.isspace():
                yield Record(line, raw)
        start = stop + 1


def _sqlite_records(src: SourceFile, report: FileReport) -> Iterator[Record]:
    """The collector's measurements in log order, read-only (the collector may be running)."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(src.path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        cur = conn.execute("SELECT leaf_index, uid, payload FROM measurements ORDER BY leaf_index")
    except sqlite3.Error as exc:
        report.bad("unreadable", 0, f"not a collector database ({exc})")
        return
    try:
        for leaf, uid, payload in cur:
            line = int(leaf) + 1
            if payload is None:
                report.skip("removed")  # payload removed on request: only its log leaf is kept
                continue
            d = zlib.decompressobj()
            try:
                raw = d.decompress(bytes(payload), MAX_LINE + 1)
            except zlib.error as exc:
                report.bad("corrupt-payload", line, str(exc))
                continue
            if len(raw) > MAX_LINE:
                report.bad("line-too-long", line, f"payload longer than {MAX_LINE} bytes")
                continue
            if not d.eof:
                report.bad("corrupt-payload", line, "payload ends before its end marker")
                continue
            yield Record(line, raw, uid if isinstance(uid, str) else None)
    except sqlite3.Error as exc:
        report.bad("unreadable", 0, f"database read failed ({exc})")
    finally:
        conn.close()
