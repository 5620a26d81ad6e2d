"""``netvigil analyze FILE... [--json]``: verdicts for OONI-format measurement files.

Input: JSON Lines (one measurement per line) or one JSON document (a measurement, perhaps
pretty-printed, or a list of them), gzip-compressed or not (told by its magic bytes), any
mix; ``-`` reads stdin.

Memory stays bounded whatever a file holds: files are streamed (gzip is decompressed in
slices, never whole), a line longer than 32 MiB is skipped while it is read, a JSON document
larger than 32 MiB is refused, and a line whose parse would cost too much memory (too many
values) is refused before it is parsed. Each bad input (invalid JSON, NaN, Infinity or a
number too large for a double, nesting deeper than 1024, not an object, too long, too many
values) is reported on stderr as ``file:line: reason`` (at most 20 per file, then a count)
and skipped; the rest of the file is still analysed.

Exit status:
  0  every file was read to its end and at least one measurement was analysed
     (bad lines, if any, were reported and skipped)
  1  a file is missing, unreadable, cut short (truncated or corrupt gzip) or refused
     (a JSON document over the cap); whatever could be read was analysed
  2  usage error
  3  nothing to analyse: every file was read, but none held a measurement
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

from netvigil import textsafe
from netvigil.pipeline.sources import MAX_LINE, FileReport, Record, read_stream
from netvigil.verdict.engine import analyze
from netvigil.verdict.fingerprints import load_fingerprints
from netvigil.verdict.model import Verdict

# A whole-document JSON (pretty-printed, or a list) is held whole to be parsed: at most this.
MAX_DOCUMENT = MAX_LINE
# What parsing one line may cost in Python objects, estimated before parsing (_parse_cost):
# ~1.6 million values. Measured, the costliest JSON per value (a list of one-character
# strings) takes ~92 bytes per value, so this is <= ~150 MiB of objects; with the line itself
# (<= MAX_LINE) and the interpreter (~80 MB with the fingerprints), a process stays under
# ~300 MB whatever the line holds. A real measurement has a few thousand values.
MAX_PARSE_COST = 160 * 1024 * 1024
_VALUE_COST = 100
MAX_MESSAGES_PER_FILE = 20

EXIT_OK = 0
EXIT_FILE_FAILED = 1
EXIT_NOTHING_READ = 3

_ERROR_AT = re.compile(r"\(char (\d+)\)$")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="verdicts for OONI-format measurements (JSON/JSONL, .gz, '-' for stdin)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="measurement files, or - for stdin")
    p.add_argument("--json", action="store_true", help="one verdict object per line")


@dataclass
class _Problems(FileReport):
    """One file's bad inputs: each is printed at once as ``file:line: reason`` (at most
    MAX_MESSAGES_PER_FILE of them), and counted. ``failed``: the file could not be read to its
    end (missing, unreadable, cut short, refused)."""

    shown: int = 0
    failed: bool = False

    def bad(self, reason: str, line: int, detail: str) -> None:
        super().bad(reason, line, detail)
        if reason in ("truncated-gzip", "unreadable", "document-too-large"):
            self.failed = True
        where = f"{self.source}:{line}" if line else self.source
        self.say(f"{where}: {_REASONS.get(reason, reason)}: {detail}")

    def say(self, message: str) -> None:
        if self.shown < MAX_MESSAGES_PER_FILE:
            self.shown += 1
            print(textsafe.visible(message), file=sys.stderr, flush=True)

    def close(self) -> None:
        hidden = self.corrupt_total - self.shown
        if hidden > 0:
            print(
                textsafe.visible(f"{self.source}: {hidden} more bad input(s) not shown"),
                file=sys.stderr,
            )


_REASONS = {
    "analysis-failed": "analysis failed",
    "document-too-large": "document refused",
    "invalid-json": "invalid JSON",
    "line-too-long": "line skipped",
    "not-an-object": "not a JSON object",
    "too-many-values": "line refused",
    "truncated-gzip": "file cut short",
    "unreadable": "cannot read",
}


def _open(name: str) -> IO[bytes]:
    return sys.stdin.buffer if name == "-" else open(name, "rb")


def _parse_cost(raw: bytes) -> int:
    """An upper bound, in bytes, of the Python objects ``orjson.loads(raw)`` makes, counted
    without parsing (a few ``bytes.count`` passes): every value, key and container is
    preceded by ``,`` ``:`` ``[`` or ``{`` (or is the first; these bytes inside strings only
    make the bound looser), and none costs more than _VALUE_COST bytes with its slot in its
    container; string data is at most 4 bytes per character, and one byte for ASCII."""
    tokens = raw.count(b",") + raw.count(b":") + raw.count(b"[") + raw.count(b"{") + 1
    return _VALUE_COST * tokens + len(raw) * (1 if raw.isascii() else 4)


_JSON_TYPES: dict[type, str] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
_UNREADABLE: Any = object()  # what _parse gives for a line it reported (JSON null is None)


def _parse(raw: bytes, line: int, problems: _Problems) -> Any:
    """The JSON value of one line (or document), or _UNREADABLE after reporting why not."""
    cost = _parse_cost(raw)
    if cost > MAX_PARSE_COST:
        problems.bad(
            "too-many-values", line, f"too many JSON values (parsing would take ~{cost >> 20} MiB)"
        )
        return _UNREADABLE
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson (unlike Python's json) accepts no NaN/Infinity, no number beyond a double,
        # and no nesting deeper than 1024 (checked while parsing, without recursion).
        text = str(exc)
        at = _ERROR_AT.search(text)
        if at and raw.isascii():  # orjson counts characters: bytes only when ASCII
            pos = int(at.group(1))
            if raw[pos : pos + 9].lstrip(b"-").startswith((b"NaN", b"Infinity")):
                text = f"NaN or Infinity is not a JSON number ({text})"
        problems.bad("invalid-json", line, text)
        return _UNREADABLE


def _is_document_start(first: Record, second: Record | None) -> bool:
    """Does the file hold one JSON document rather than JSON Lines? A list, or an object that
    does not end on its first line and is not followed by a line that starts an object
    (a JSONL file whose first line is broken goes on line by line)."""
    lead = first.raw.lstrip()[:1]
    if lead == b"[":
        return True
    if lead != b"{" or (second is not None and second.raw.lstrip()[:1] == b"{"):
        return False
    if _parse_cost(first.raw) > MAX_PARSE_COST:
        return False  # not parsed here: _parse refuses it as a line
    try:
        orjson.loads(first.raw)
    except orjson.JSONDecodeError:
        return True
    return False


def _values(name: str, problems: _Problems) -> Iterator[tuple[int, Any]]:
    """(line, parsed value) of each input in one file; what cannot be read is reported."""
    try:
        stream = _open(name)
    except OSError as exc:
        problems.bad("unreadable", 0, exc.strerror or str(exc))
        return
    try:
        records = read_stream(stream, problems, max_line=MAX_LINE)
        first = next(records, None)
        if first is None:
            return
        second = next(records, None)
        if _is_document_start(first, second):
            yield from _document(first, second, records, problems)
            return
        for record in (first, second):
            if record is not None:
                yield record.line, _parse(record.raw, record.line, problems)
        for record in records:
            yield record.line, _parse(record.raw, record.line, problems)
    except OSError as exc:
        problems.bad("unreadable", 0, f"read error ({exc.strerror or exc})")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _document(
    first: Record, second: Record | None, rest: Iterator[Record], problems: _Problems
) -> Iterator[tuple[int, Any]]:
    """A whole-document JSON, read up to MAX_DOCUMENT bytes (refused beyond), then parsed."""
    parts = [first.raw] if second is None else [first.raw, second.raw]
    size = sum(len(p) + 1 for p in parts)
    for record in rest:
        size += len(record.raw) + 1
        if size > MAX_DOCUMENT:
            problems.bad(
                "document-too-large",
                first.line,
                f"a JSON document larger than {MAX_DOCUMENT} bytes: refused",
            )
            return
        parts.append(record.raw)
    data = b"\n".join(parts)
    parts.clear()
    value = _parse(data, first.line, problems)
    del data
    if isinstance(value, list):
        for i, item in enumerate(value, 1):
            if isinstance(item, dict):
                yield first.line, item
            else:
                problems.bad("not-an-object", first.line, f"item {i} of the list")
    elif value is not _UNREADABLE:
        yield first.line, value


def run(args: argparse.Namespace) -> int:
    fps = load_fingerprints()
    bad_total = 0
    files_failed = 0
    counts: Counter[str] = Counter()
    rows: list[Verdict] = []
    out = sys.stdout
    for name in args.files:
        problems = _Problems(source="<stdin>" if name == "-" else name)
        for line, value in _values(name, problems):
            if value is _UNREADABLE:
                continue  # reported by _parse
            if not isinstance(value, dict):
                problems.bad("not-an-object", line, f"a JSON {_JSON_TYPES[type(value)]}")
                continue
            try:
                verdict = analyze(value, fps)
                text = json.dumps(
                    verdict.to_dict(), ensure_ascii=False, default=str, allow_nan=False
                )
            except Exception as exc:  # a bug must cost one measurement, not the rest
                problems.bad("analysis-failed", line, f"{type(exc).__name__}: {exc}"[:200])
                continue
            counts[verdict.outcome] += 1
            if args.json:
                out.write(text + "\n")
            elif len(rows) < 10_000:
                rows.append(verdict)
        problems.close()
        bad_total += problems.corrupt_total
        files_failed += problems.failed
    if not args.json:
        _table(rows, counts, bad_total)
    elif bad_total:
        print(f"{bad_total} bad input(s) skipped", file=sys.stderr)
    if files_failed:
        return EXIT_FILE_FAILED
    return EXIT_OK if counts else EXIT_NOTHING_READ


def _table(rows: list[Verdict], counts: Counter[str], bad: int) -> None:
    from rich.table import Table
    from rich.text import Text

    # Inputs, probe_cc/asn and outcomes come from the file: plain text only, never markup.
    console = textsafe.make_console()
    table = Table(title=Text("netvigil verdicts"), show_lines=False)
    for col in ("outcome", "input", "blocking", "accessible", "confidence", "probe"):
        table.add_column(col)
    for v in sorted(rows, key=lambda v: (v.outcome_base, v.outcome, v.input or "")):
        style = "red" if v.blocked else ("green" if v.outcome == "ok" else "yellow")
        table.add_row(
            textsafe.text(v.outcome, style),
            textsafe.text(v.input or ""),
            textsafe.text(repr(v.blocking)),
            textsafe.text(repr(v.accessible)),
            f"{v.confidence:.2f}",
            textsafe.text(f"{v.probe_cc or '?'} {v.probe_asn or ''}".strip()),
        )
    console.print(table)
    totals = Table(title=Text("totals"))
    totals.add_column("outcome")
    totals.add_column("count", justify="right")
    for outcome, n in sorted(counts.items()):
        totals.add_row(textsafe.text(outcome), str(n))
    totals.add_row(Text("measurements", "bold"), str(sum(counts.values())))
    if bad:
        totals.add_row(Text("bad inputs", "bold"), str(bad))
    console.print(totals)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netvigil")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["analyze", *(argv if argv is not None else sys.argv[1:])])
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
