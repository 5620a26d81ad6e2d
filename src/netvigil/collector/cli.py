"""`netvigil collector`: run the collector HTTP API (uvicorn)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from netvigil import textsafe
from netvigil.collector.app import CollectorConfig, create_app

MAX_TOKEN_FILE = 4096


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "collector",
        help="run the measurement collector (HTTP API and evidence log)",
        description=(
            "Accept OONI-format measurements over HTTP, store them durably (SQLite in --data, or"
            " PostgreSQL with --database) and"
            " commit each one to a signed, RFC 6962-style evidence log. The Ed25519 log key is"
            " created in --data on first start (mode 0600). The schema is served at /openapi.json."
        ),
    )
    p.add_argument(
        "--listen", default="127.0.0.1:8480", help="HOST:PORT to listen on (default %(default)s)"
    )
    p.add_argument(
        "--data", required=True, type=Path, help="data directory (log key, and the SQLite database)"
    )
    p.add_argument(
        "--database",
        metavar="DSN",
        default=os.environ.get("NETVIGIL_DATABASE_URL") or None,
        help=(
            "store in PostgreSQL instead of SQLite: a postgresql://… DSN (default: the"
            " NETVIGIL_DATABASE_URL environment variable, which keeps a password out of ps)"
        ),
    )
    p.add_argument(
        "--admin-token-file", type=Path, default=None, help="file holding the admin bearer token"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="requests/s per client IP; 0 disables (default %(default)s)",
    )
    p.add_argument(
        "--burst",
        type=float,
        default=400.0,
        help="token bucket size per client IP (default %(default)s)",
    )
    return p


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen must be HOST:PORT, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def read_token(path: Path) -> bytes:
    data = path.read_bytes()[: MAX_TOKEN_FILE + 1]
    if len(data) > MAX_TOKEN_FILE:
        raise ValueError(f"{path}: token file is larger than {MAX_TOKEN_FILE} bytes")
    token = data.strip()
    if len(token) < 16:
        raise ValueError(f"{path}: the admin token must be at least 16 characters")
    return token


def run(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        host, port = parse_listen(args.listen)
        token = read_token(args.admin_token_file) if args.admin_token_file else None
        if args.database and not args.database.startswith(("postgresql://", "postgres://")):
            raise ValueError("--database must be a postgresql://… DSN")
    except (OSError, ValueError) as exc:
        print(textsafe.visible(f"netvigil collector: {exc}"), file=sys.stderr)
        return 2
    # request paths in log lines are the client's choice: logged as plain text
    log_format = "%(asctime)s %(name)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, handlers=[textsafe.log_handler(log_format)])
    cfg = CollectorConfig(
        data_dir=args.data,
        database_url=args.database,
        admin_token=token,
        rate=args.rate,
        burst=args.burst,
    )
    app = create_app(cfg)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        limit_concurrency=2000,
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
    )
    return 0
