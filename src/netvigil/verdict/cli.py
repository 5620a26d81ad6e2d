"""``netvigil analyze FILE... [--json]``: verdicts for OONI-format measurement files.

Input: JSON (one measurement, or a list) or JSON Lines, gzip-compressed or not, any mix;
``-`` reads stdin. JSONL is streamed line by line (bounded memory). A bad line is reported on
stderr as ``file:line: error`` and counted; the rest is processed. Exit status 0.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import IO, Any

from netvigil import textsafe
from netvigil.verdict.engine import analyze
from netvigil.verdict.fingerprints import load_fingerprints
from netvigil.verdict.model import Verdict

MAX_WHOLE_JSON = 256 * 1024 * 1024


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="verdicts for OONI-format measurements (JSON/JSONL, .gz, '-' for stdin)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="measurement files, or - for stdin")
    p.add_argument("--json", action="store_true", help="one verdict object per line")


def _open(name: str) -> IO[bytes]:
    raw: IO[bytes] = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    peek = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if peek == b"\x1f\x8b" or name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def _measurements(name: str, errors: list[str]) -> Iterator[dict[str, Any]]:
    """Yield measurements of one file; record ``file:line: error`` for bad ones."""
    label = "<stdin>" if name == "-" else name
    try:
        stream = _open(name)
    except OSError as exc:
        errors.append(f"{label}: {exc.strerror or exc}")
        return
    try:
        first = b""
        lineno = 0
        for raw in stream:
            lineno += 1
            line = raw.strip()
            if not line:
                continue
            if lineno == 1 or not first:
                first = line[:1]
            if first == b"[" or (first == b"{" and lineno == 1 and not _is_complete(line)):
                # a whole-document JSON (pretty-printed or a list): read the rest at once
                rest = line + b"\n" + stream.read(MAX_WHOLE_JSON)
                yield from _document(rest, label, errors)
                return
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                errors.append(f"{label}:{lineno}: invalid JSON ({exc})")
                continue
            if isinstance(obj, dict):
                yield obj
            else:
                errors.append(f"{label}:{lineno}: not a JSON object")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        errors.append(f"{label}: read error ({exc})")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _is_complete(line: bytes) -> bool:
    try:
        json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def _document(data: bytes, label: str, errors: list[str]) -> Iterator[dict[str, Any]]:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        errors.append(f"{label}:1: invalid JSON ({exc})")
        return
    items = obj if isinstance(obj, list) else [obj]
    for i, item in enumerate(items, 1):
        if isinstance(item, dict):
            yield item
        else:
            errors.append(f"{label}:item {i}: not a JSON object")


def run(args: argparse.Namespace) -> int:
    fps = load_fingerprints()
    errors: list[str] = []
    reported = 0
    counts: Counter[str] = Counter()
    rows: list[Verdict] = []
    out = sys.stdout
    for name in args.files:
        for m in _measurements(name, errors):
            while reported < len(errors):
                print(textsafe.visible(errors[reported]), file=sys.stderr)
                reported += 1
            verdict = analyze(m, fps)
            counts[verdict.outcome] += 1
            if args.json:
                out.write(json.dumps(verdict.to_dict(), ensure_ascii=False, default=str) + "\n")
            elif len(rows) < 10_000:
                rows.append(verdict)
        while reported < len(errors):
            print(textsafe.visible(errors[reported]), file=sys.stderr)
            reported += 1
    if not args.json:
        _table(rows, counts, len(errors))
    elif errors:
        print(f"{len(errors)} bad input(s) skipped", file=sys.stderr)
    return 0


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
