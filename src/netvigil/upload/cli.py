"""``netvigil upload``: send the outbox to a collector the user chose, and ``queue_measurements``.

Nothing is uploaded unless the user names a collector: ``--collector URL`` on every run, or a
choice saved once with ``--collector URL --remember`` (``~/.config/netvigil/upload.json``).
``--collector`` without a URL takes ``$NETVIGIL_COLLECTOR_URL`` (set inside the testbed): the
variable alone never starts an upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from netvigil import textsafe

from .outbox import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    Outbox,
    OutboxBusy,
    OutboxFull,
    default_outbox_dir,
)
from .scrub import ScrubOptions, is_kept_resolver
from .uploader import CollectorURLError, UploadConfig, parse_collector_url, upload_outbox

__all__ = ["add_parser", "config_path", "queue_measurements", "run", "saved_choice"]

ENV_COLLECTOR = "NETVIGIL_COLLECTOR_URL"
_FROM_ENV = "\0env"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "netvigil" / "upload.json"


def saved_choice() -> dict[str, Any]:
    try:
        value = json.loads(config_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _save_choice(choice: dict[str, Any]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(choice, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def queue_measurements(
    measurements: Iterable[dict[str, Any]],
    outbox_dir: str | os.PathLike[str] | None = None,
    *,
    scrub_ip: Iterable[str] = (),
    keep_network_name: bool = False,
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> int:
    """Scrub and store measurements in the outbox; returns how many were new.

    Raises ``OutboxFull`` (one-line message, ``.queued`` = stored before it filled) rather than
    dropping anything; ``ValueError`` for an invalid ``scrub_ip``.
    """
    outbox = Outbox(
        outbox_dir,
        max_files=max_files,
        max_bytes=max_bytes,
        scrub_options=ScrubOptions(keep_network_name=keep_network_name, scrub_ips=tuple(scrub_ip)),
    )
    queued = 0
    for measurement in measurements:
        try:
            _, new = outbox.add(measurement)
        except OutboxFull as exc:
            raise OutboxFull(str(exc), queued) from None
        queued += new
    return queued


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "upload",
        help="send measurements waiting in the local outbox to a collector you choose",
        description=(
            "Send the measurements waiting in the local outbox (scrubbed: only country and ASN "
            "identify you) to a collector. Nothing is sent unless you name the collector with "
            "--collector URL, every time or once with --remember. Measurements a collector "
            "refuses (4xx) move to rejected/; the others stay pending until accepted."
        ),
    )
    p.add_argument(
        "--collector",
        nargs="?",
        const=_FROM_ENV,
        metavar="URL",
        help=f"collector base URL (without URL: ${ENV_COLLECTOR}, set inside the testbed)",
    )
    p.add_argument(
        "--outbox", metavar="DIR", help=f"outbox directory (default {default_outbox_dir()})"
    )
    p.add_argument(
        "--remember",
        action="store_true",
        help=f"save this collector as your choice ({config_path()})",
    )
    p.add_argument("--forget", action="store_true", help="delete the saved choice, send nothing")
    p.add_argument("--max-attempts", type=int, default=5, metavar="N", help="tries per measurement")
    p.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="requests in flight (default 8)"
    )
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per request")
    p.add_argument(
        "--scrub-ip",
        action="append",
        default=[],
        metavar="IP",
        help="your public address: removed wherever it appears before sending (repeatable)",
    )
    p.add_argument(
        "--keep-network-name",
        action="store_true",
        help="keep probe_network_name (your ISP's name); dropped by default",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--dry-run", action="store_true", help="list what would be sent, send nothing")


def _error(message: str) -> int:
    # Messages may quote a URL, a file or a collector's answer: plain text only.
    print(textsafe.visible(f"netvigil: {message}"), file=sys.stderr)
    return 2


def _choose_collector(args: Any) -> tuple[str | None, str | None]:
    """(url, error)."""
    if args.collector == _FROM_ENV:
        url = os.environ.get(ENV_COLLECTOR, "").strip()
        if not url:
            return None, f"--collector without URL needs ${ENV_COLLECTOR}"
        return url, None
    if args.collector:
        return str(args.collector), None
    saved = saved_choice().get("collector")
    if isinstance(saved, str) and saved:
        return saved, None
    return None, None


def _dry_run(outbox: Outbox, collector: str | None, as_json: bool) -> int:
    entries = outbox.pending()
    rows: list[dict[str, Any]] = []
    for entry in entries:
        raw = outbox.read(entry.id) or b"{}"
        try:
            data = json.loads(raw)
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        rows.append(
            {
                "id": entry.id,
                "bytes": entry.size,
                "test_name": data.get("test_name"),
                "input": data.get("input"),
                "probe_cc": data.get("probe_cc"),
                "probe_asn": data.get("probe_asn"),
                "resolver_ip_kept": is_kept_resolver(str(data.get("resolver_ip") or "")),
            }
        )
    if as_json:
        print(json.dumps({"collector": collector, "would_send": rows}))
        return 0
    target = collector or "(no collector chosen: nothing would be sent)"
    print(
        textsafe.visible(
            f"{len(rows)} measurement(s) pending in {outbox.root}, would go to {target}"
        )
    )
    for row in rows:
        # test_name and input are read from the queued measurements: untrusted
        print(
            textsafe.visible(
                f"  {row['id'][:16]}  {row['bytes']:>8} B  {row['test_name']}  {row['input']}"
            )
        )
    return 0


def run(args: Any) -> int:
    if args.forget:
        with contextlib.suppress(FileNotFoundError):
            config_path().unlink()
        print(
            textsafe.visible(f"netvigil: forgot the saved collector ({config_path()})"),
            file=sys.stderr,
        )
        return 0
    url, error = _choose_collector(args)
    if error:
        return _error(error)
    if url is not None:
        try:
            parse_collector_url(url)
        except CollectorURLError as exc:
            return _error(str(exc))
    if args.remember:
        if not args.collector or url is None:
            return _error("--remember needs --collector URL")
        path = _save_choice({"collector": url, "keep_network_name": bool(args.keep_network_name)})
        print(
            textsafe.visible(f"netvigil: saved {url} as your collector in {path}"),
            file=sys.stderr,
        )
    try:
        options = ScrubOptions(
            keep_network_name=bool(args.keep_network_name)
            or (not args.collector and saved_choice().get("keep_network_name") is True),
            scrub_ips=tuple(args.scrub_ip),
        )
        if args.scrub_ip:
            from .scrub import scrub

            scrub({}, options)  # validates the addresses
    except ValueError as exc:
        return _error(str(exc))
    outbox = Outbox(args.outbox, scrub_options=options)
    if args.dry_run:
        return _dry_run(outbox, url, bool(args.json))
    if url is None:
        return _error(
            "nothing uploaded: choose a collector with --collector URL "
            "(add --remember to save the choice)"
        )
    try:
        config = UploadConfig(
            collector=url,
            concurrency=args.concurrency,
            timeout=args.timeout,
            max_attempts=args.max_attempts,
            scrub_options=options,
        )
        summary = asyncio.run(upload_outbox(outbox, config))
    except (ValueError, OutboxBusy) as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return _error("interrupted: unsent measurements stay in the outbox")
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        print(
            f"sent {summary.sent} ({summary.duplicates} already known), "
            f"rejected {summary.rejected}, still pending {summary.pending}"
        )
        for line in summary.errors:
            # the collector's answers are quoted here: plain text only
            print(textsafe.visible(f"netvigil: {line}"), file=sys.stderr)
    return 0 if summary.pending == 0 and summary.rejected == 0 else 1
