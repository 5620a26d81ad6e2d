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

Output, as the verdicts come: a row per measurement up to a screenful, then (past it) a
summary at the end: the blocked URLs, the most measured first, and the counts by test and
outcome; --all lists every row, --json prints one JSON object per line. Nothing is cut to the
terminal's width. Large input is judged by -j N processes (default: all cores), the output in
input order. A progress line is drawn on stderr when it is a terminal and the run lasts.

Examples:
  netvigil analyze measurements.jsonl.gz
  netvigil analyze --json - < measurements.jsonl | jq .outcome
  netvigil analyze --all -j 4 *.jsonl

Exit status:
  0  every file was read to its end and at least one measurement was analysed
     (bad lines, if any, were reported and skipped)
  1  a file is missing, unreadable, cut short (truncated or corrupt gzip) or refused
     (a JSON document over the cap); whatever could be read was analysed
  2  usage error
  3  nothing to analyse: every file was read, but none held a measurement
  141  the reader of the output went away (a closed pipe, as in "| head"): stopped quietly
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import orjson

from netvigil import textsafe
from netvigil.pipeline.sources import MAX_LINE, FileReport, Record, read_stream

# The verdict engine and its fingerprints are imported when a measurement is judged, not when
# the command line is parsed (``netvigil analyze --help`` stays quick).

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
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool the pipe ended

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
    p.add_argument(
        "--all",
        action="store_true",
        help="list every verdict (default: a screenful, then a summary by test and outcome)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="processes for large input (default: all cores); output stays in input order",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError("between 1 and 1024")
    return value


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


def _stdin() -> IO[bytes]:
    # Unbuffered: a read returns what the pipe holds, so that a verdict is printed as soon as
    # its line arrives (a buffered read would wait for a whole chunk or the end).
    buffer = sys.stdin.buffer
    raw: IO[bytes] = getattr(buffer, "raw", buffer)
    return raw


def _open(name: str) -> IO[bytes]:
    return _stdin() if name == "-" else open(name, "rb")


def _parse_cost(raw: bytes) -> int:
    """An upper bound, in bytes, of the Python objects ``orjson.loads(raw)`` makes, counted
    without parsing (a few ``bytes.count`` passes): every value, key and container is
    preceded by ``,`` ``:`` ``[`` or ``{`` (or is the first; these bytes inside strings only
    make the bound looser), and none costs more than _VALUE_COST bytes with its slot in its
    container; string data is at most 4 bytes per character, and one byte for ASCII."""
    if len(raw) < MAX_PARSE_COST // (_VALUE_COST + 4):  # ~1.6 MB
        # no line this short can reach MAX_PARSE_COST (every byte a token, 4 bytes a
        # character): the four counting passes, as costly as parsing, are skipped
        return (_VALUE_COST + 4) * (len(raw) + 1)
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
    """The JSON value of one document, or _UNREADABLE after reporting why not."""
    value, reason, detail = _decode(raw)
    if value is _UNREADABLE:
        problems.bad(reason, line, detail)
    return value


def _is_document_start(first: Record, rest: Iterator[Record]) -> tuple[bool, Record | None]:
    """Does the file hold one JSON document rather than JSON Lines? A list, or an object that
    does not end on its first line and is not followed by a line that starts an object
    (a JSONL file whose first line is broken goes on line by line). Also the second record
    when it had to be read to tell (only then: a stream's first verdict need not wait)."""
    lead = first.raw.lstrip()[:1]
    if lead == b"[":
        return True, None
    if lead != b"{" or _parse_cost(first.raw) > MAX_PARSE_COST:
        return False, None  # (too costly: not parsed here, _judge refuses it as a line)
    try:
        orjson.loads(first.raw)
        return False, None
    except orjson.JSONDecodeError:
        second = next(rest, None)
        return second is None or second.raw.lstrip()[:1] != b"{", second


def _values(name: str, problems: _Problems, progress: _Progress) -> Iterator[tuple[int, Any]]:
    """(line, raw bytes of a JSON line or an item of a JSON document already parsed) of each
    input in one file; what cannot be read is reported."""
    try:
        stream = _open(name)
    except OSError as exc:
        problems.bad("unreadable", 0, exc.strerror or str(exc))
        return
    progress.reading(stream)
    try:
        records = read_stream(stream, problems, max_line=MAX_LINE)
        first = next(records, None)
        if first is None:
            return
        is_document, second = _is_document_start(first, records)
        if is_document:
            if second is None:
                second = next(records, None)
            yield from _document(first, second, records, problems)
            return
        for record in (first, second):
            if record is not None:
                yield record.line, record.raw
        for record in records:
            yield record.line, record.raw
    except OSError as exc:
        problems.bad("unreadable", 0, f"read error ({exc.strerror or exc})")
    finally:
        progress.reading(None)
        if name != "-":
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


# ---------------------------------------------------------------------------------------------
# Judging: one input (raw line or parsed document item) -> a verdict's output, or a bad input.
# The same functions run in this process and in the pool's workers, so both give one answer.

_BAD = "bad"
_OK = "ok"
# (kind, payload…): (_OK, JSON line or _Row) or (_BAD, reason, detail)
_Result = tuple[Any, ...]


class _Row(NamedTuple):
    """What the table and the summary need of a verdict (small: crosses process boundaries)."""

    outcome: str
    input: str
    blocking: str
    accessible: str
    confidence: float
    probe: str
    test_name: str
    blocked: bool
    # messaging-app tests: one (endpoint, kind, outcome, failure) per endpoint measured
    endpoints: tuple[tuple[str, str, str, str], ...] = ()


MAX_ENDPOINT_LINES = 40  # a messaging measurement lists at most this many endpoints
ENDPOINT_LINE_WIDTH = 80


def _endpoint_rows(verdict: Any) -> tuple[tuple[str, str, str, str], ...]:
    found = verdict.evidence.get("endpoints") if isinstance(verdict.evidence, dict) else None
    if not isinstance(found, list):
        return ()
    out = []
    for e in found[:MAX_ENDPOINT_LINES]:
        if isinstance(e, dict):
            out.append(
                (
                    str(e.get("endpoint") or ""),
                    str(e.get("kind") or ""),
                    str(e.get("outcome") or ""),
                    str(e.get("failure") or ""),
                )
            )
    return tuple(out)


def _endpoint_line(endpoint: tuple[str, str, str, str]) -> str:
    """One endpoint under its measurement, at most 80 columns (untrusted text made visible)."""
    name, kind, outcome, failure = (textsafe.visible(x, limit=60) for x in endpoint)
    line = f"    {outcome:<16} {kind:<5} {name}"
    if failure:
        line += f"  ({failure})"
    return line if len(line) <= ENDPOINT_LINE_WIDTH else line[: ENDPOINT_LINE_WIDTH - 1] + "…"


def _decode(raw: bytes) -> tuple[Any, str, str]:
    """(value, "", "") or (_UNREADABLE, reason, detail) for one line or document."""
    cost = _parse_cost(raw)
    if cost > MAX_PARSE_COST:
        return (
            _UNREADABLE,
            "too-many-values",
            f"too many JSON values (parsing would take ~{cost >> 20} MiB)",
        )
    try:
        return orjson.loads(raw), "", ""
    except orjson.JSONDecodeError as exc:
        # orjson (unlike Python's json) accepts no NaN/Infinity, no number beyond a double,
        # and no nesting deeper than 1024 (checked while parsing, without recursion).
        text = str(exc)
        at = _ERROR_AT.search(text)
        if at and raw.isascii():  # orjson counts characters: bytes only when ASCII
            pos = int(at.group(1))
            if raw[pos : pos + 9].lstrip(b"-").startswith((b"NaN", b"Infinity")):
                text = f"NaN or Infinity is not a JSON number ({text})"
        return _UNREADABLE, "invalid-json", text


def _judge(item: Any, as_json: bool) -> _Result:
    """The output for one input: ``item`` is a raw line (bytes) or an already parsed value."""
    from netvigil.verdict.engine import analyze
    from netvigil.verdict.fingerprints import load_fingerprints

    if isinstance(item, bytes):
        item, reason, detail = _decode(item)
        if item is _UNREADABLE:
            return (_BAD, reason, detail)
    if not isinstance(item, dict):
        return (_BAD, "not-an-object", f"a JSON {_JSON_TYPES[type(item)]}")
    try:
        verdict = analyze(item, load_fingerprints())
        if as_json:
            return (_OK, _json_line(verdict.to_dict()))
        return (
            _OK,
            _Row(
                verdict.outcome,
                verdict.input
                or (f"({verdict.test_name})" if "endpoints" in verdict.evidence else ""),
                str(verdict.blocking),
                str(verdict.accessible),
                verdict.confidence,
                f"{verdict.probe_cc or '?'} {verdict.probe_asn or ''}".strip(),
                verdict.test_name or "?",
                verdict.blocked,
                _endpoint_rows(verdict),
            ),
        )
    except Exception as exc:  # a bug must cost one measurement, not the rest
        return (_BAD, "analysis-failed", f"{type(exc).__name__}: {exc}"[:200])


def _json_line(value: dict[str, Any]) -> str:
    """One verdict as a JSON line: orjson (a tenth of ``json``'s cost); ``json`` with ASCII
    escapes for what orjson refuses (a lone surrogate from a ``\\ud800`` escape in the input)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=True, default=str, allow_nan=False)


def _judge_chunk(items: list[Any], as_json: bool) -> list[_Result]:
    return [_judge(item, as_json) for item in items]


def _worker_start() -> None:
    # Ctrl-C is the parent's to handle (it stops the pool): no traceback from every worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# Chunks sent to a worker: enough work (~0.1-0.3 s) to hide the cost of sending it.
CHUNK_ITEMS = 128
CHUNK_BYTES = 8 * 1024 * 1024
# The pool starts only after this many inputs were judged here: a small file never pays for it.
PARALLEL_AFTER = 256


class _Judge:
    """Judges chunks in input order: here, or (large input, ``jobs`` > 1) in a process pool
    with at most 2 × ``jobs`` chunks in flight (memory stays bounded); ``deliver`` receives
    each chunk's results in input order."""

    def __init__(self, jobs: int, as_json: bool, deliver: Any) -> None:
        self.jobs = jobs
        self.as_json = as_json
        self.deliver = deliver
        self.judged = 0
        self.pool: Any = None
        self.pending: deque[tuple[_Problems, list[int], Any]] = deque()

    def submit(self, problems: _Problems, lines: list[int], items: list[Any]) -> None:
        if self.pool is None and (self.jobs <= 1 or self.judged < PARALLEL_AFTER):
            self.judged += len(items)
            self.deliver(problems, lines, _judge_chunk(items, self.as_json))
            return
        if self.pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork: workers inherit the compiled fingerprints instead of loading them again
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = ProcessPoolExecutor(
                self.jobs, mp_context=context, initializer=_worker_start
            )
        self.judged += len(items)
        future = self.pool.submit(_judge_chunk, items, self.as_json)
        self.pending.append((problems, lines, future))
        while self.pending and (len(self.pending) > 2 * self.jobs or self.pending[0][2].done()):
            self._take()

    @property
    def pooled(self) -> bool:
        """Whether inputs now go to the pool (the caller then groups them in chunks)."""
        return self.pool is not None or (self.jobs > 1 and self.judged >= PARALLEL_AFTER)

    def close_file(self, problems: _Problems) -> None:
        """Every chunk of this file judged and delivered (its report can then be closed)."""
        while self.pending:
            self._take()

    def _take(self) -> None:
        problems, lines, future = self.pending.popleft()
        try:
            results = future.result()
        except Exception as exc:  # a worker died (killed, out of memory): its chunk fails
            results = [(_BAD, "analysis-failed", f"worker failed: {type(exc).__name__}")] * len(
                lines
            )
        self.deliver(problems, lines, results)

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _chunks(
    values: Iterator[tuple[int, Any]], judge: _Judge
) -> Iterator[tuple[list[int], list[Any]]]:
    """Inputs grouped for the pool; one by one while they are judged here, so that a verdict
    is printed as soon as its line is read (``analyze -`` on a live stream)."""
    lines: list[int] = []
    items: list[Any] = []
    size = 0
    for line, item in values:
        lines.append(line)
        items.append(item)
        size += len(item) if isinstance(item, bytes) else 4096
        if len(items) >= CHUNK_ITEMS or size >= CHUNK_BYTES or not judge.pooled:
            yield lines, items
            lines, items, size = [], [], 0
    if items:
        yield lines, items


# ---------------------------------------------------------------------------------------------
# Output


class _Progress:
    """A progress line on stderr, only when stderr is a terminal and the run lasts: after
    SHOW_AFTER seconds, redrawn at most 10 times a second, erased at the end."""

    SHOW_AFTER = 0.5

    def __init__(self, total_bytes: int) -> None:
        self.enabled = _isatty(sys.stderr)
        self.total = total_bytes
        self.done_bytes = 0  # of the files already read
        self.stream: IO[bytes] | None = None
        self.start = time.monotonic()
        self.next_draw = self.start + self.SHOW_AFTER
        self.shown = False

    def reading(self, stream: IO[bytes] | None) -> None:
        if self.stream is not None:
            self.done_bytes += self._position()
        self.stream = stream

    def _position(self) -> int:
        try:
            return self.stream.tell() if self.stream is not None else 0
        except (OSError, ValueError):
            return 0

    def update(self, measurements: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self.next_draw:
            return
        self.next_draw = now + 0.1
        rate = measurements / max(now - self.start, 1e-6)
        text = f"analyze: {measurements:,} measurements ({rate:,.0f}/s)"
        if self.total:
            share = min(1.0, (self.done_bytes + self._position()) / self.total)
            filled = int(share * 30)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%}  " + text
        sys.stderr.write("\r" + text + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


_COLOURS = {"blocked": "\x1b[31m", "ok": "\x1b[32m", "other": "\x1b[33m"}
MAX_BLOCKED_SHOWN = 20  # blocked URLs listed in the summary (the most measured first)
MAX_BLOCKED_KEPT = 100_000  # distinct blocked (input, outcome) pairs counted: memory bound


class _Output:
    """Verdicts as they come: JSON lines, or table rows up to a screenful and then (unless
    ``show_all``) a summary at the end instead of the rest. Everything from the input is
    printed through ``textsafe.visible``; nothing is cut to the terminal's width (the input,
    the only long column, comes last and wraps)."""

    def __init__(self, as_json: bool, show_all: bool, progress: _Progress) -> None:
        self.out = sys.stdout
        self.as_json = as_json
        self.show_all = show_all
        self.progress = progress
        self.tty = _isatty(self.out)
        self.colour = self.tty and not os.environ.get("NO_COLOR")
        self.screen = max(10, shutil.get_terminal_size().lines - 4)
        self.counts: Counter[str] = Counter()
        self.by_test: Counter[tuple[str, str]] = Counter()
        self.blocked: Counter[tuple[str, str]] = Counter()
        self.blocked_other = 0
        self.rows_shown = 0
        self.header_shown = False

    def deliver(self, problems: _Problems, lines: list[int], results: list[_Result]) -> None:
        for line, result in zip(lines, results, strict=True):
            if result[0] == _BAD:
                self.progress.clear()
                problems.bad(result[1], line, result[2])
                continue
            payload = result[1]
            if self.as_json:
                self.counts["measurements"] += 1
                self.out.write(payload + "\n")
            else:
                self._row(payload)
        self.out.flush()  # as they come, to a pipe too: one write per chunk (or verdict)
        self.progress.update(self.total)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _row(self, row: _Row) -> None:
        self.counts[row.outcome] += 1
        self.by_test[(row.test_name, row.outcome.split(":", 1)[0])] += 1
        if row.blocked:
            key = (row.input, row.outcome)
            if key in self.blocked or len(self.blocked) < MAX_BLOCKED_KEPT:
                self.blocked[key] += 1
            else:
                self.blocked_other += 1
        if not self.show_all and self.rows_shown >= self.screen:
            return
        self.progress.clear()
        if not self.header_shown:
            self.header_shown = True
            self.out.write(
                f"{'outcome':<28} {'blocking':<10} {'access':<6} conf probe        input\n"
            )
        self.rows_shown += 1
        outcome = textsafe.visible(row.outcome)
        if self.colour:
            tone = "blocked" if row.blocked else ("ok" if row.outcome == "ok" else "other")
            outcome = f"{_COLOURS[tone]}{outcome:<28}\x1b[0m"
        line = (
            f"{outcome:<28} {textsafe.visible(row.blocking):<10} "
            f"{textsafe.visible(row.accessible):<6} {row.confidence:.2f} "
            f"{textsafe.visible(row.probe):<12} {textsafe.visible(row.input, limit=None)}"
        )
        self.out.write(line + "\n")
        if row.endpoints:
            # the endpoints that did not answer, one line each; the rest counted (--json: all)
            fine = sum(1 for e in row.endpoints if e[2] == "ok")
            for endpoint in row.endpoints:
                if endpoint[2] != "ok":
                    self.out.write(_endpoint_line(endpoint) + "\n")
            self.out.write(f"    {fine} of {len(row.endpoints)} endpoint(s) ok\n")

    def _totals_by_test(self, write: Any) -> None:
        """Counts by test and outcome, the most frequent first; the tests netvigil does not
        judge (every verdict 'unsupported') in one line."""
        say = textsafe.visible
        unsupported: Counter[str] = Counter()
        judged: list[tuple[tuple[str, str], int]] = []
        tests_judged = {test for (test, outcome) in self.by_test if outcome != "unsupported"}
        for (test, outcome), n in self.by_test.items():
            if outcome == "unsupported" and test not in tests_judged:
                unsupported[test] += n
            else:
                judged.append(((test, outcome), n))
        judged.sort(key=lambda kv: (kv[0][0], kv[0][1] == "ok", -kv[1], kv[0][1]))
        write("\ntotals by test and outcome:\n")
        if judged:
            test_width = min(32, max(len(say(test)) for (test, _), _ in judged))
            outcome_width = min(40, max(len(say(outcome)) for (_, outcome), _ in judged))
            for (test, outcome), n in judged:
                write(f"  {say(test):<{test_width}} {say(outcome):<{outcome_width}} {n:>8,}\n")
        if unsupported:
            names = ", ".join(say(t, limit=40) for t, _ in unsupported.most_common(12))
            if len(unsupported) > 12:
                names += f", … ({len(unsupported) - 12} more)"
            write(
                f"  not judged (unsupported): {sum(unsupported.values()):,} measurement(s) "
                f"of {len(unsupported)} other test(s): {names}\n"
            )

    def finish(self, bad: int) -> None:
        self.progress.clear()
        if self.as_json:
            if bad:
                print(f"{bad} bad input(s) skipped", file=sys.stderr)
            return
        say = textsafe.visible
        write = self.out.write
        total = self.total
        hidden = total - self.rows_shown
        blocked = sum(self.blocked.values()) + self.blocked_other
        if hidden:
            write(f"… {hidden:,} more verdict(s) not listed (--all lists every one, --json too)\n")
            if self.blocked:
                ranked = sorted(self.blocked.items(), key=lambda kv: (-kv[1], kv[0]))
                shown = ranked[:MAX_BLOCKED_SHOWN]
                width = min(48, max(len(say(outcome)) for (_, outcome), _ in shown))
                write("\nblocked URLs (most measurements first):\n")
                write(f"  {'count':>7}  {'outcome':<{width}} input\n")
                for (url, outcome), n in shown:
                    write(f"  {n:>7,}  {say(outcome):<{width}} {say(url, limit=None)}\n")
                more = len(ranked) - MAX_BLOCKED_SHOWN
                if more > 0:
                    write(f"  … and {more:,} more blocked URL/outcome pair(s)\n")
            self._totals_by_test(write)
        else:
            write("\ntotals:\n")
            for outcome, n in sorted(self.counts.items()):
                write(f"  {say(outcome):<40} {n:>7,}\n")
        summary = f"{total:,} measurements, {blocked:,} blocked"
        if bad:
            summary += f", {bad:,} bad input(s) skipped"
        write(f"\n{summary}\n")


def run(args: argparse.Namespace) -> int:
    from netvigil.verdict.fingerprints import load_fingerprints

    load_fingerprints()  # before the pool forks: workers inherit it
    sizes = 0
    for name in args.files:
        with contextlib.suppress(OSError):
            sizes += os.stat(name).st_size if name != "-" else 0
    progress = _Progress(sizes)
    output = _Output(args.json, getattr(args, "all", False), progress)
    jobs = getattr(args, "jobs", None) or len(os.sched_getaffinity(0)) or 1
    judge = _Judge(jobs, args.json, output.deliver)
    bad_total = 0
    files_failed = 0
    try:
        for name in args.files:
            problems = _Problems(source="<stdin>" if name == "-" else name)
            for lines, items in _chunks(_values(name, problems, progress), judge):
                judge.submit(problems, lines, items)
            judge.close_file(problems)
            progress.clear()
            problems.close()
            bad_total += problems.corrupt_total
            files_failed += problems.failed
        output.finish(bad_total)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``analyze … | head -1``): stop quietly, like other Unix tools.
        judge.stop()
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        judge.stop()
    if files_failed:
        return EXIT_FILE_FAILED
    return EXIT_OK if output.total else EXIT_NOTHING_READ


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's last flush must not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests): nothing to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netvigil")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["analyze", *(argv if argv is not None else sys.argv[1:])])
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
