"""``netvigil pipeline run SRC... -o DIR``: OONI files / collector store → Parquet tables.

Reads OONI's published files (JSONL, .jsonl.gz, the raw/YYYYMMDD/HH/CC/testname/ layout),
single .json measurements and the collector's SQLite database; writes verdicts and
observations partitioned by day under DIR, DIR/ingest.json (per-file counts, corrupt input by
reason) and, when available, the aggregates. Locally with -j N processes, or on a Dask
cluster with --cluster ADDR.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any, TextIO

from netvigil.pipeline.options import DEFAULT_LIMIT, DEFAULT_TOP, NETWORK_STATUSES, QUESTIONS
from netvigil.pipeline.sources import PipelineInputError

__all__ = ["add_parser", "add_query_parser", "add_report_parser", "run"]

QUERY_HELP = """\
Ask a pipeline output (netvigil pipeline run … --out OUT) the common questions: which domains
were blocked, where, since when and how (--what blocked), a domain's timeline, sudden onsets
of blocking (events), networks, the outcome mix; or one read-only SQL SELECT over the views
verdicts, observations, daily, outcomes, techniques and events (--sql).
"""

REPORT_HELP = """\
Write one self-contained HTML file (inline SVG charts, no scripts, nothing fetched): headline
numbers, a blocked-share timeline per domain and per technique, the outcome mix, onsets, and
first/last seen of each technique per domain and network.
"""


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "pipeline",
        help="OONI measurements and the collector's store → Parquet tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="pipeline_command", metavar="ACTION")
    r = sub.add_parser(
        "run",
        help="ingest files and directories into an output directory (-o)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("srcs", nargs="+", metavar="SRC", help="files or directories to ingest")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory")
    r.add_argument("--cluster", metavar="ADDR", help="a Dask scheduler (tcp://host:8786)")
    r.add_argument("--workers", type=int, metavar="N", help="local processes (default: CPUs)")
    r.add_argument(
        "--overwrite", action="store_true", help="replace a previous run in the output directory"
    )
    r.add_argument("--json", action="store_true", help="print the run summary as JSON")
    from netvigil.pipeline import generate

    generate.add_parser_to(sub)
    p.set_defaults(func=run)


def add_query_parser(commands: Any) -> None:
    p = commands.add_parser(
        "query",
        help="ask a pipeline output which domains were blocked, where, when and how",
        description=QUERY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="the pipeline's output directory")
    p.add_argument("--cc", help="country code, e.g. KZ")
    p.add_argument("--asn", help="network, e.g. 9198 or AS9198")
    p.add_argument("--domain", help="one domain, e.g. www.example.org")
    _add_days(p)
    p.add_argument("--what", choices=QUESTIONS, default="blocked", help="which question")
    p.add_argument(
        "--network",
        choices=NETWORK_STATUSES,
        help="only measurements whose probe found its network so (--what blocked, outcomes, "
        "network)",
    )
    p.add_argument(
        "--sql", metavar="QUERY", help="one read-only SELECT over the views (ignores --what)"
    )
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="at most this many rows")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--csv", action="store_true", help="print CSV: every column, exact values")
    p.add_argument(
        "--wide", action="store_true", help="every column in full (default: fit the terminal)"
    )
    p.set_defaults(func=_run_query)


def add_report_parser(commands: Any) -> None:
    p = commands.add_parser(
        "report",
        help="write a self-contained HTML report (timelines, onsets, first/last seen)",
        description=REPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="the pipeline's output directory")
    p.add_argument("--html", required=True, metavar="FILE", help="where to write the report")
    p.add_argument("--cc", help="one country, e.g. KZ")
    p.add_argument("--asn", help="one network, e.g. 9198 or AS9198")
    p.add_argument("--domain", help="one domain, e.g. www.example.org")
    _add_days(p)
    p.add_argument("--title", help="the page's title")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help="how many domains get a timeline")
    p.set_defaults(func=_run_report)


def _add_days(p: argparse.ArgumentParser) -> None:
    """The range of UTC days, alike for query and report."""
    p.add_argument("--since", metavar="YYYY-MM-DD", help="first UTC day (inclusive)")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="last UTC day (inclusive)")


def _run_query(args: argparse.Namespace) -> int:
    from netvigil.pipeline import query

    return query.run(args)


def _run_report(args: argparse.Namespace) -> int:
    from netvigil.pipeline import report

    return report.run(args)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 2 bad input (one line on stderr)."""
    command = getattr(args, "pipeline_command", None)
    if command == "generate":
        from netvigil.pipeline import generate

        return generate.main(args)
    if command != "run":
        print("netvigil pipeline: choose an action: run, generate", file=sys.stderr)
        return 2
    progress = _Progress(sys.stderr)
    try:
        if args.workers is not None and args.workers < 1:
            raise PipelineInputError("--workers must be at least 1")
        if args.cluster:
            if args.workers is not None:
                raise PipelineInputError("--workers is for local runs; the cluster has its own")
            # Looked up by name: the Dask engine is optional (and written separately).
            engine: Any = importlib.import_module("netvigil.pipeline.dask_engine")
            summary = engine.run_on_cluster(
                args.srcs,
                args.out,
                args.cluster,
                overwrite=args.overwrite,
                progress=progress,
            )
        else:
            from netvigil.pipeline.local import run_local

            summary = run_local(
                args.srcs,
                args.out,
                workers=args.workers,
                progress=progress,
                overwrite=args.overwrite,
            )
    except PipelineInputError as exc:
        progress.end()
        from netvigil import textsafe

        print(textsafe.visible(f"netvigil pipeline: {exc}"), file=sys.stderr)
        return 2
    except ImportError as exc:
        progress.end()
        print(f"netvigil pipeline: the Dask engine is not available ({exc})", file=sys.stderr)
        return 2
    progress.end()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print_summary(summary.to_dict(), sys.stdout)
    return 0


class _Progress:
    """``files 12/40 · 120,000 measurements · 11,800/s`` on stderr, redrawn in place on a
    terminal, a line at most every few seconds otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.last = 0.0
        self.drawn = False

    def __call__(self, files_done: int, files_total: int, measurements: int) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 5 and files_done < files_total:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        text = (
            f"files {files_done}/{files_total} · {measurements:,} measurements · "
            f"{measurements / elapsed:,.0f}/s"
        )
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def print_summary(d: dict[str, Any], out: TextIO) -> None:
    """A readable summary: totals, then the files with anything skipped or corrupt."""
    from netvigil import textsafe

    def line(text: str) -> None:
        # File names and corrupt-line examples come from the input: plain text only.
        out.write(textsafe.visible(text) + "\n")

    t = d.get("totals", {})
    line(
        f"{t.get('files', 0)} files, {t.get('measurements', 0):,} measurements → "
        f"{t.get('verdict_rows', 0):,} verdicts, {t.get('observation_rows', 0):,} observations "
        f"in {d.get('seconds', 0):.1f} s ({d.get('measurements_per_second', 0):,.0f}/s, "
        f"{d.get('engine', '?')})"
    )
    line(f"output: {d.get('out_dir', '')}")
    if t.get("duplicates"):
        line(
            f"duplicates: {t['duplicates']:,} verdict rows repeat a measurement_uid already "
            "read (counted once in the aggregates and queries)"
        )
    for label, key in (("skipped", "skipped"), ("corrupt", "corrupt")):
        counts = t.get(key) or {}
        if counts:
            line(f"{label}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    flagged = [f for f in d.get("files", []) if f.get("corrupt") or f.get("skipped")]
    if not flagged:
        return
    names = [textsafe.visible(f["source"]) for f in flagged]
    width = min(60, max(len("file"), *(len(n) for n in names)))
    out.write(f"\n{'file':<{width}}  {'read':>9}  problems\n")
    for f, source in zip(flagged, names, strict=True):
        problems = [f"{k} {v}" for k, v in {**f.get("skipped", {}), **f.get("corrupt", {})}.items()]
        name = source if len(source) <= width else "…" + source[-(width - 1) :]
        out.write(
            f"{name:<{width}}  {f.get('measurements', 0):>9,}  "
            + textsafe.visible(", ".join(problems))
            + "\n"
        )
        for example in f.get("examples", [])[:2]:
            out.write(f"{'':<{width}}  {'':>9}    " + textsafe.visible(example) + "\n")
