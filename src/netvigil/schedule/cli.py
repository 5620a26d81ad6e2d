"""``netvigil schedule``: measure unattended, keep results while offline, send them later.

``install`` writes a systemd user timer (or a crontab line where there is no systemd user
session) that calls ``schedule run``; ``loop`` runs in the foreground instead (containers, the
testbed); ``status`` shows the last runs; ``remove`` undoes the install.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from netvigil import textsafe
from netvigil.cliformat import hide_aliases
from netvigil.measure import InputError

from . import runner, timers
from .settings import (
    SUITES,
    Installed,
    Settings,
    config_file,
    format_duration,
    load_installed,
    parse_duration,
    read_history,
    save_installed,
    state_dir,
    validate,
)

HELP = "measure on a schedule: a systemd user timer or cron, results kept until sent"
ENV_COLLECTOR = "NETVIGIL_COLLECTOR_URL"
_FROM_ENV = "\0env"
MAX_JITTER = 3600.0
_MEASUREMENT_OPTIONS = (
    "urls",
    "input_files",
    "lists",
    "upload",
    "helper",
    "resolver",
    "ca_bundle",
    "probe_cc",
    "probe_asn",
    "outbox",
    "im_endpoints",
    "references",
    "no_network_check",
)


def _say(line: str, *, err: bool = False) -> None:
    # URLs, paths and collectors' answers are quoted: plain text only.
    print(textsafe.visible(line), file=sys.stderr if err else sys.stdout)


def _add_measurement_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("urls", nargs="*", metavar="URL", help="http:// or https:// URLs to measure")
    p.add_argument(
        "--suite",
        choices=SUITES,
        default=None,
        help="web (the URLs and lists, default), im (the messaging apps) or all",
    )
    hide_aliases(
        p.add_argument(
            "--input-file",
            "-f",
            "--input",
            "--file",
            dest="input_files",
            action="append",
            default=[],
            metavar="FILE",
            help="one URL per line, or a Citizen Lab CSV (read again at every run)",
        ),
        "--input",
        "--file",
    )
    p.add_argument(
        "--list",
        "-l",
        dest="lists",
        action="append",
        default=[],
        metavar="CC",
        help="a shipped Citizen Lab test list (kz, ru, ir, cn, by, cis, global)",
    )
    p.add_argument(
        "--upload",
        nargs="?",
        const=_FROM_ENV,
        metavar="URL",
        help=f"send the outbox to this collector after each run (without URL: ${ENV_COLLECTOR}, "
        "set inside the testbed); without --upload nothing is ever sent",
    )
    p.add_argument("--helper", metavar="URL", help="control helper URL (OONI-compatible)")
    p.add_argument("--resolver", metavar="IP", help="the resolver to test (default: system)")
    p.add_argument("--ca-bundle", metavar="PEM", help="trust anchors (default: Mozilla's roots)")
    p.add_argument("--no-doh", action="store_true", help="no DoH second opinion")
    p.add_argument("--probe-cc", metavar="CC", help="country code to record (default ZZ)")
    p.add_argument(
        "--probe-asn", metavar="ASN", help="network to record, e.g. AS9198 (default AS0)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds per network step (default 10)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=20,
        metavar="N",
        help="URLs in flight per run (default 20)",
    )
    p.add_argument("--outbox", metavar="DIR", help="outbox directory (default: netvigil's own)")
    p.add_argument(
        "--im-endpoints",
        metavar="FILE",
        help="messaging-app endpoints instead of the shipped ones, for --suite im or all "
        "(passed to measure; the testbed writes one)",
    )
    p.add_argument(
        "--reference",
        dest="references",
        action="append",
        default=[],
        metavar="URL",
        help="a reference target for measure's network check (repeatable; passed to measure)",
    )
    p.add_argument(
        "--no-network-check",
        action="store_true",
        help="no network check around a run (then an offline network makes every site look "
        "blocked)",
    )
    p.add_argument(
        "--upload-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per request to the collector (default 10; each measurement is tried twice a run)",
    )


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("schedule", help=HELP, description=__doc__)
    actions = p.add_subparsers(dest="schedule_command", metavar="ACTION")

    a = actions.add_parser(
        "install",
        help="write and enable a systemd user timer (or a crontab line) that measures",
        description="Ask for consent as 'netvigil measure' does, check every option, then "
        "write a systemd user timer and service (or, without a systemd user session, a tagged "
        "crontab line) that runs 'netvigil schedule run' every --every, and save the schedule "
        "in netvigil's config directory. Results go to the outbox; nothing is uploaded "
        "unless you give --upload. docs/schedule.md lists every file written.",
    )
    a.add_argument(
        "--every",
        required=True,
        metavar="DURATION",
        help="how often: 5m … 30m, 1h, 2h, 3h, 4h, 6h, 8h, 12h, 1d",
    )
    a.add_argument(
        "--jitter",
        metavar="DURATION",
        help="start each run up to this much later, at random (default: a tenth of --every, "
        "at most 1h)",
    )
    a.add_argument(
        "--via",
        choices=("auto", "systemd", "cron"),
        default="auto",
        help="the trigger (default auto: systemd when a user manager answers, else cron)",
    )
    a.add_argument(
        "--consent",
        action="store_true",
        help="I have read the risks: measuring from my network is visible to whoever watches it",
    )
    _add_measurement_options(a)

    r = actions.add_parser(
        "run",
        help="one run now: measure, keep the results in the outbox, send what is pending",
        description="One run, as the timer does it: the installed schedule (or the options "
        "given here), results to the outbox, then everything pending to the collector if one "
        "was chosen and it answers. A run while another is in progress is skipped.",
    )
    r.add_argument(
        "--config", metavar="FILE", help=f"the schedule to run (default {config_file()})"
    )
    r.add_argument(
        "--jitter", metavar="DURATION", help="first wait a random time up to this (e.g. 10m)"
    )
    r.add_argument("--json", action="store_true", help="print the run's record as JSON")
    _add_measurement_options(r)

    lp = actions.add_parser(
        "loop",
        help="run in the foreground every --every (containers, the testbed), --count times",
        description="The same run as 'schedule run', repeated in the foreground: for a "
        "machine without systemd or cron, or inside the testbed. Ends after --count runs, on "
        "Ctrl-C or on SIGTERM (a run in progress finishes first).",
    )
    lp.add_argument(
        "--every", required=True, metavar="DURATION", help="time between run starts, e.g. 30s, 5m"
    )
    lp.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="how many runs (default 0: until interrupted)",
    )
    lp.add_argument(
        "--jitter",
        metavar="DURATION",
        help="wait up to this much more before each run (default: a tenth of --every)",
    )
    lp.add_argument("--config", metavar="FILE", help="a saved schedule to run instead of options")
    lp.add_argument("--json", action="store_true", help="print each run's record as JSON")
    lp.add_argument(
        "--consent",
        action="store_true",
        help="I have read the risks: measuring from my network is visible to whoever watches it",
    )
    _add_measurement_options(lp)

    s = actions.add_parser(
        "status", help="the installed schedule, its next run, the last runs, the outbox"
    )
    s.add_argument("--last", type=int, default=5, metavar="N", help="runs shown (default 5)")
    s.add_argument("--json", action="store_true", help="print everything as one JSON object")

    rm = actions.add_parser(
        "remove",
        help="undo 'schedule install': timer, service, crontab line and config (idempotent)",
    )
    rm.add_argument("--json", action="store_true", help="print what was removed as JSON")


# -- turning options into settings -----------------------------------------------------------


def _collector(value: str | None) -> str | None:
    if value != _FROM_ENV:
        return value
    url = os.environ.get(ENV_COLLECTOR, "").strip()
    if not url:
        raise InputError(f"--upload without URL needs ${ENV_COLLECTOR}")
    return url


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        suite=args.suite or "web",
        urls=tuple(args.urls),
        input_files=tuple(f if f == "-" else str(_absolute(f)) for f in args.input_files),
        lists=tuple(code.lower() for code in args.lists),
        upload=_collector(args.upload),
        helper=args.helper,
        resolver=args.resolver,
        ca_bundle=_absolute(args.ca_bundle),
        no_doh=bool(args.no_doh),
        probe_cc=args.probe_cc.upper() if args.probe_cc else None,
        probe_asn=args.probe_asn.upper() if args.probe_asn else None,
        timeout=float(args.timeout),
        concurrency=int(args.concurrency),
        outbox=_absolute(args.outbox),
        upload_timeout=float(args.upload_timeout),
        im_endpoints=_absolute(args.im_endpoints),
        network_check=not args.no_network_check,
        references=tuple(args.references),
    )


def _gave_measurement_options(args: argparse.Namespace) -> bool:
    return bool(args.suite) or any(getattr(args, name) for name in _MEASUREMENT_OPTIONS)


def _settings_to_run(args: argparse.Namespace) -> Settings:
    """The options given on the command line, else the saved schedule."""
    if _gave_measurement_options(args):
        if args.config:
            raise InputError("--config or measurement options, not both")
        settings = settings_from_args(args)
    else:
        path = Path(args.config) if args.config else config_file()
        installed = load_installed(path)
        if installed is None:
            raise InputError(
                f"no schedule in {path} — give what to measure (--list CC, URLs, --input-file "
                "FILE or --suite im) or run 'netvigil schedule install'"
            )
        settings = installed.settings
    validate(settings, suites_supported=runner.supported_suites())
    return settings


def _jitter(text: str | None, every: float, option: str = "--jitter") -> float:
    if text is None:
        return min(every / 10, MAX_JITTER)
    jitter = parse_duration(text, option)
    if jitter >= every:
        raise InputError(f"{option} {text}: must be shorter than --every")
    return jitter


def _consent(assume_yes: bool) -> None:
    from netvigil.measure import ensure_consent

    if os.environ.get("NETVIGIL_TESTBED") != "1":
        ensure_consent(assume_yes, sys.stdin.isatty())


# -- the actions -----------------------------------------------------------------------------


def _install(args: argparse.Namespace) -> int:
    from netvigil.upload.outbox import default_outbox_dir

    every = parse_duration(args.every, "--every")
    timers.calendar_for(every)  # divides the hour or the day
    jitter = _jitter(args.jitter, every)
    settings = settings_from_args(args)
    if settings.outbox is None:  # fixed now: the timer and 'netvigil upload' use the same one
        settings = Settings(**{**settings.to_dict(), "outbox": str(default_outbox_dir())})
    validate(settings, suites_supported=runner.supported_suites())
    via = timers.choose_via(args.via)
    _consent(args.consent)
    timers.remove_systemd()
    timers.remove_cron()
    installed = Installed(
        settings=settings,
        every=every,
        jitter=jitter,
        via=via,
        installed_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    path = save_installed(installed)
    try:
        if via == "systemd":
            written = timers.install_systemd(every, jitter, path)
        else:
            line = timers.install_cron(every, jitter, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    _say(f"schedule saved in {path}")
    if via == "systemd":
        for unit in written:
            _say(f"wrote {unit}")
        _say(f"enabled {timers.UNIT}.timer (systemctl --user list-timers shows it)")
        _say(
            "  runs only while you are logged in, unless: loginctl enable-linger "
            + os.environ.get("USER", "$USER")
        )
    else:
        _say(f"added to your crontab: {line}")
    _say(
        f"every {format_duration(every)}, up to {format_duration(jitter)} later at random; "
        f"next run: {timers.next_trigger(via, every) or 'unknown'}"
    )
    _say(_where_results_go(settings))
    if settings.helper is None and os.environ.get("NETVIGIL_TESTBED") != "1":
        _say("note: no control helper (--helper URL): verdicts will be less certain", err=True)
    return 0


def _where_results_go(settings: Settings) -> str:
    box = settings.outbox or "the outbox"
    if settings.upload is None:
        return f"results stay in {box}: nothing is uploaded (send them with 'netvigil upload')"
    return f"results wait in {box} and go to {settings.upload} when it answers"


def _print_record(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, sort_keys=True))
        sys.stdout.flush()
        return
    _say(_record_line(record))


def _counts(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    return ", ".join(f"{k} {v}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))


def _record_line(record: dict[str, Any]) -> str:
    """One history record as a line (the history is a file: every field may be anything)."""
    counted = _counts(record.get("outcomes"))
    line = (
        f"{record.get('started', '?')}  {record.get('status', '?')!s:7}  "
        f"{record.get('measurements', 0)} measurement(s)" + (f" ({counted})" if counted else "")
    )
    network = _counts(record.get("network"))
    if network:
        line += f"; network {network}"
    upload = record.get("upload")
    if isinstance(upload, dict):
        if "sent" in upload:
            line += f"; upload: sent {upload.get('sent')}, pending {upload.get('pending')}" + (
                " (collector unreachable)" if upload.get("reachable") is False else ""
            )
        else:
            line += "; upload: not sent"
    if record.get("outbox_pending") is not None:
        line += f"; outbox {record['outbox_pending']} pending"
    if record.get("error"):
        line += f"; error: {record['error']}"
    return line


def _run(args: argparse.Namespace) -> int:
    settings = _settings_to_run(args)
    if args.jitter:
        delay = parse_duration(args.jitter, "--jitter")
        time.sleep(random.uniform(0.0, min(delay, 86400.0)))
    record = runner.run_once(settings)
    _print_record(record, bool(args.json))
    return 0 if record["status"] in ("ok", "skipped") else 1


def _loop(args: argparse.Namespace) -> int:
    every = parse_duration(args.every, "--every")
    if every < 1:
        raise InputError(f"--every {args.every}: at least 1s")
    if args.count < 0:
        raise InputError("--count: give 0 (until interrupted) or more")
    jitter = _jitter(args.jitter, every)
    settings = _settings_to_run(args)
    _consent(args.consent)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        records = runner.run_loop(
            settings,
            every=every,
            count=args.count or None,
            jitter=jitter,
            stop=stop,
            on_run=lambda record: _print_record(record, bool(args.json)),
        )
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0 if all(r["status"] in ("ok", "skipped") for r in records) else 1


def _outbox_pending(folder: str | None) -> tuple[str, int]:
    from netvigil.upload.outbox import Outbox, default_outbox_dir

    root = Path(folder) if folder else default_outbox_dir()
    if not (root / "pending").is_dir():
        return str(root), 0
    return str(root), Outbox(root).count("pending")


def _status(args: argparse.Namespace) -> int:
    installed = load_installed()
    runs = read_history(limit=max(0, args.last))
    box, pending = _outbox_pending(installed.settings.outbox if installed else None)
    next_run = timers.next_trigger(installed.via, installed.every) if installed else None
    if args.json:
        print(
            json.dumps(
                {
                    "installed": installed.to_dict() if installed else None,
                    "config": str(config_file()),
                    "next_run": next_run,
                    "outbox": {"dir": box, "pending": pending},
                    "history": str(state_dir() / "history.jsonl"),
                    "runs": runs,
                },
                sort_keys=True,
            )
        )
        return 0
    if installed is None:
        _say("no schedule installed (netvigil schedule install --every 6h --list CC)")
    else:
        s = installed.settings
        what = ", ".join(
            [f"suite {s.suite}"]
            + ([f"lists {' '.join(s.lists)}"] if s.lists else [])
            + ([f"{len(s.urls)} URL(s)"] if s.urls else [])
            + ([f"files {' '.join(s.input_files)}"] if s.input_files else [])
        )
        _say(
            f"schedule: every {format_duration(installed.every)} (up to "
            f"{format_duration(installed.jitter)} later) via {installed.via}, {what}"
        )
        _say(f"  config: {config_file()}")
        _say(f"  next run: {next_run or 'unknown'}")
        _say(f"  {_where_results_go(s)}")
    _say(f"outbox: {pending} measurement(s) pending in {box}")
    if runs:
        _say(f"last {len(runs)} run(s), oldest first:")
        for record in runs:
            _say("  " + _record_line(record))
    else:
        _say("no runs yet")
    return 0


def _remove(args: argparse.Namespace) -> int:
    done = timers.remove_systemd() + timers.remove_cron()
    path = config_file()
    if path.exists():
        path.unlink()
        done.append(f"deleted {path}")
    if args.json:
        print(json.dumps({"removed": done}))
        return 0
    for line in done:
        _say(line)
    _say("nothing to remove: no schedule was installed" if not done else "schedule removed")
    _say(f"kept: the run history ({state_dir()}) and the outbox; delete them by hand if you wish")
    return 0


def run(args: argparse.Namespace) -> int:
    action = args.schedule_command
    handlers = {
        "install": _install,
        "run": _run,
        "loop": _loop,
        "status": _status,
        "remove": _remove,
    }
    return handlers[action](args)
