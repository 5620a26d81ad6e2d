"""``netvigil explorer DIR``: browse a pipeline output (and the collector's log) in a browser."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from netvigil import textsafe

DESCRIPTION = """\
Browse the pipeline's output in a browser: countries, networks, domains, timelines of
blocking with their onsets, and each measurement with its evidence (the DNS answers against
the control's, the steps, the forged chain beside the real one, the blockpage match) and, with
--collector-data (or --database for a collector on PostgreSQL), its place in the evidence log
and the `netvigil verify` command to check it.

Read-only. Listens on 127.0.0.1 unless told otherwise (and then warns: anyone who can reach
the address can read the measurements). --export OUT writes the same pages as a static site.

Example:
  netvigil pipeline run data/ --out out/
  netvigil explorer out/ --collector-data collector-data/
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explorer",
        help="browse the pipeline output and the evidence log in a browser",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dir", metavar="DIR", help="the pipeline output (netvigil pipeline run --out DIR)"
    )
    # Not an argparse exclusive group: its error is a usage block; run() says it in one line.
    p.add_argument(
        "--collector-data", metavar="DIR", help="the collector's data directory (read-only)"
    )
    p.add_argument(
        "--database",
        metavar="DSN",
        help="the collector's PostgreSQL database, postgresql://... (read-only; instead of "
        "--collector-data; the DSN is never shown). Default: the NETVIGIL_DATABASE_URL "
        "environment variable, as for the collector (it keeps a password out of ps)",
    )
    p.add_argument(
        "--inputs",
        metavar="PATH",
        action="append",
        default=[],
        help="the files or directories the pipeline read (repeatable): a measurement's raw "
        "JSON is then shown from them when the collector has no copy",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8080)",
    )
    p.add_argument("--export", metavar="OUT", help="write a static site to OUT instead of serving")
    p.add_argument(
        "--max-domains", type=int, default=200, help="domains in the static export (default 200)"
    )


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad --listen {value!r}: expected HOST:PORT like 127.0.0.1:8080")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"bad --listen {value!r}: HOST must be an IP address") from None
    return host, int(port)


def _is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def run(args: Any) -> int:
    from netvigil.pipeline.query import QueryError

    collector = Path(args.collector_data) if args.collector_data else None
    database: str | None = args.database
    if database is None and collector is None:
        database = os.environ.get("NETVIGIL_DATABASE_URL") or None
    inputs = [Path(x) for x in args.inputs]
    try:
        host, port = _listen(args.listen)
        if args.export:
            from .export import export_site

            counts = export_site(
                Path(args.dir),
                Path(args.export),
                collector,
                inputs,
                database=database,
                max_domains=max(1, min(args.max_domains, 10_000)),
            )
            print(
                f"wrote {counts['pages']} pages and {counts['measurements']} measurements to "
                f"{textsafe.visible(args.export)}"
            )
            return 0
        from .app import create_app

        app = create_app(Path(args.dir), collector, inputs, database=database)
    except (QueryError, ValueError, FileNotFoundError) as exc:
        print(f"netvigil: {textsafe.visible(str(exc), limit=300)}", file=sys.stderr)
        return 2
    if not _is_loopback(host):
        print(
            f"netvigil: WARNING: listening on {host}, not loopback: anyone who can reach it "
            "can read these measurements",
            file=sys.stderr,
        )
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    print(f"netvigil explorer: http://{shown}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    return 0
