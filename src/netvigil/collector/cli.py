"""`netvigil collector`: run the collector HTTP API (uvicorn)."""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys
from pathlib import Path
from typing import Any

from netvigil import textsafe
from netvigil.collector.app import CollectorConfig, create_app
from netvigil.collector.guard import ConnectionLimits
from netvigil.collector.service import CollectorLog
from netvigil.evidence.log import log_id_for

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
    p.add_argument(
        "--max-connections",
        type=int,
        default=ConnectionLimits.max_connections,
        metavar="N",
        help="open connections in all; more are refused with 503 (default %(default)s)",
    )
    p.add_argument(
        "--max-client-connections",
        type=int,
        default=ConnectionLimits.max_per_client,
        metavar="N",
        help="open connections per client IP; more are refused with 503 (default %(default)s)",
    )
    return p


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
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
    try:
        host, port = parse_listen(args.listen)
        token = read_token(args.admin_token_file) if args.admin_token_file else None
        if args.database and not args.database.startswith(("postgresql://", "postgres://")):
            raise ValueError("--database must be a postgresql://… DSN")
        if args.max_connections < 1 or args.max_client_connections < 1:
            raise ValueError("--max-connections and --max-client-connections must be at least 1")
        if args.data.exists() and not args.data.is_dir():
            raise ValueError(f"--data {args.data} is not a directory")
    except (OSError, ValueError) as exc:
        return _fail(exc)
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
    from netvigil.collector import guard

    limits = guard.fit_limits(
        ConnectionLimits(
            max_connections=args.max_connections, max_per_client=args.max_client_connections
        )
    )
    app = create_app(cfg)
    try:
        # opened here, not in uvicorn's lifespan, so that a bad data directory or database is
        # one line on stderr rather than a traceback from inside the server
        collector_log = open_log(app, cfg)
    except Exception as exc:  # any start-up fault is one line, not a traceback
        return _fail(exc)
    try:
        sock = guard.listen_socket(host, port)
    except OSError as exc:
        collector_log.close()
        return _fail(OSError(f"cannot listen on {args.listen}: {exc.strerror or exc}"))
    bound_host, bound_port = sock.getsockname()[:2]
    address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
    log_id = log_id_for(collector_log.key.public_key())
    lines = [
        f"netvigil collector listening on http://{address}/",
        f"  data directory: {cfg.data_dir.resolve()}"
        + (" (measurements in PostgreSQL)" if cfg.database_url else ""),
        "  log key fingerprint (log_id, SHA-256 of the public key):"
        f" {base64.b64encode(log_id).decode()}",
        f"  public key: http://{address}/api/v1/log/public-key"
        " (save it for `netvigil verify --log-key`)",
        f"  API schema: http://{address}/openapi.json",
        f"  limits: {limits.max_connections} connections, {limits.max_per_client} per client,"
        f" request headers within {limits.header_timeout:g} s",
    ]
    for line in lines:
        print(textsafe.visible(line))
    sys.stdout.flush()
    server = guard.uvicorn_server(app, sock, limits)
    server.run(sockets=[sock])
    return 0


def open_log(app: Any, cfg: CollectorConfig) -> CollectorLog:
    """Open the evidence log now and hand it to ``app`` (its lifespan then reuses it)."""
    collector_log = CollectorLog(cfg.data_dir, database_url=cfg.database_url)
    app.state.collector["log"] = collector_log
    return collector_log


def _fail(exc: BaseException) -> int:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(textsafe.visible(f"netvigil collector: {detail}"), file=sys.stderr)
    return 2
