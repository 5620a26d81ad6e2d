"""One scheduled run (``run_once``) and a foreground loop of them (``run_loop``).

A run: measure the suite, queue every measurement in the outbox (scrubbed: no public IP is
kept), then, if the user chose a collector, send everything pending there. An unreachable
collector leaves the measurements pending for the next run. Each run appends one record to the
history (``settings.append_history``); a lock keeps two runs from overlapping. A fault in a run
becomes the record's ``error``, never an exception out of ``run_once``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from netvigil.measure import InputError

from .settings import SUITES, Settings, append_history, state_dir

__all__ = [
    "RunBusy",
    "measure_suite",
    "run_loop",
    "run_once",
    "supported_suites",
]

UPLOAD_ATTEMPTS = 2  # per measurement and run: the next run tries again
_MAX_ERROR = 300
_MAX_KEY = 64
_MAX_MEASUREMENT_LINE = 64 * 1024 * 1024


class RunBusy(Exception):
    """Another scheduled run holds the lock."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_MAX_ERROR]


@contextlib.contextmanager
def run_lock(folder: Path | None = None) -> Iterator[None]:
    """Exclusive while held; ``RunBusy`` at once if another run has it (never waits)."""
    folder = folder or state_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RunBusy("another 'netvigil schedule run' is in progress") from None
            raise
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# -- choosing the experiments: the one place that does ----------------------------------------


def _measure_parser() -> argparse.ArgumentParser:
    from netvigil import measure

    root = argparse.ArgumentParser(prog="netvigil", add_help=False)
    measure.add_parser(root.add_subparsers(dest="command"))
    commands = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = commands.choices["measure"]
    return parser


def supported_suites() -> tuple[str, ...]:
    """``web`` always; ``im`` and ``all`` when ``netvigil measure`` has ``--suite`` (the
    messaging-app experiments)."""
    return SUITES if "--suite" in _measure_parser()._option_string_actions else ("web",)


def measure_args(settings: Settings, output: Path | None = None) -> argparse.Namespace:
    """``settings`` as ``netvigil measure``'s own options, parsed by its own parser: a run
    gets measure's defaults (network checks, resolvers, DoH) whatever they become."""
    argv = ["--suite", settings.suite] if settings.suite != "web" else []
    argv += [*settings.urls]
    argv += [w for f in settings.input_files for w in ("--input-file", f)]
    argv += [w for code in settings.lists for w in ("--list", code)]
    argv += ["--json", "--no-progress"] + (["--output", str(output)] if output else [])
    argv += ["--timeout", str(settings.timeout), "--concurrency", str(settings.concurrency)]
    for option, value in (
        ("--helper", settings.helper),
        ("--resolver", settings.resolver),
        ("--ca-bundle", settings.ca_bundle),
        ("--probe-cc", settings.probe_cc),
        ("--probe-asn", settings.probe_asn),
        ("--im-endpoints", settings.im_endpoints),
    ):
        if value is not None:
            argv += [option, value]
    if settings.no_doh:
        argv.append("--no-doh")
    argv += [w for url in settings.references for w in ("--reference", url)]
    parser = _measure_parser()
    known = parser._option_string_actions
    if not settings.network_check and "--no-network-check" in known:
        argv.append("--no-network-check")  # (a measure without the check has nothing to stop)
    for option in ("--im-endpoints", "--reference"):
        if option in argv and option not in known:
            raise InputError(f"{option}: this netvigil's 'measure' does not take it")
    try:
        return parser.parse_args(argv)
    except SystemExit:  # argparse has printed why; a run records it and goes on
        raise InputError(f"'netvigil measure' refused the options {argv}") from None


def measure_suite(settings: Settings) -> list[dict[str, Any]]:
    """The measurements of one run of ``settings.suite`` (OONI format, as measured): the one
    place that chooses the experiments.

    ``web``: measure's own functions (gather_inputs, config_from_args, run_measurements).
    ``im`` and ``all``: ``netvigil measure --suite`` itself, so that whatever experiments it
    runs, a scheduled run runs the same; its OONI JSONL output is read back.
    """
    if settings.suite == "web":
        return _measure_web(measure_args(settings))
    if settings.suite not in supported_suites():
        raise InputError(
            f"--suite {settings.suite}: this netvigil's 'measure' has no messaging-app "
            "experiments yet — use --suite web"
        )
    return _measure_command(settings)


def _measure_web(args: argparse.Namespace) -> list[dict[str, Any]]:
    from netvigil import measure
    from netvigil.experiments.web_connectivity import WebConnectivity

    inputs = measure.gather_inputs(list(args.urls), list(args.input_file), list(args.list))
    experiment = WebConnectivity(measure.config_from_args(args))
    collected: list[dict[str, Any]] = []
    try:
        asyncio.run(
            measure.run_measurements(
                experiment, inputs.urls, concurrency=args.concurrency, collected=collected
            )
        )
    finally:
        experiment.close()  # the verdict thread
    return collected


def _measure_command(settings: Settings) -> list[dict[str, Any]]:
    from netvigil import measure

    with tempfile.TemporaryDirectory(prefix="netvigil-schedule-") as folder:
        output = Path(folder) / "measurements.jsonl"
        args = measure_args(settings, output)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            measure.run(args)  # its verdicts on stdout: the history counts them instead
        measurements: list[dict[str, Any]] = []
        if output.exists():
            with open(output, "rb") as handle:
                while line := handle.readline(_MAX_MEASUREMENT_LINE + 1):
                    if len(line) > _MAX_MEASUREMENT_LINE:  # the rest of it is skipped too
                        while line and not line.endswith(b"\n"):
                            line = handle.readline(_MAX_MEASUREMENT_LINE)
                        continue
                    with contextlib.suppress(ValueError):
                        value = json.loads(line)
                        if isinstance(value, dict):
                            measurements.append(value)
        return measurements


# -- one run ---------------------------------------------------------------------------------


def consent_given() -> bool:
    """As ``measure``: inside the testbed no consent is asked; elsewhere it must be on file."""
    from netvigil.measure import consent_path

    return os.environ.get("NETVIGIL_TESTBED") == "1" or consent_path().exists()


def _key(value: Any) -> str:
    return str(value)[:_MAX_KEY] if isinstance(value, str) and value else "unknown"


def summarize(measurements: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts by test, by verdict outcome and by network status: never an address."""
    tests: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    network: Counter[str] = Counter()
    for measurement in measurements:
        tests[_key(measurement.get("test_name"))] += 1
        keys = measurement.get("test_keys")
        keys = keys if isinstance(keys, dict) else {}
        verdict = keys.get("x_netvigil_verdict")
        outcomes[_key(verdict.get("outcome") if isinstance(verdict, dict) else None)] += 1
        status = keys.get("x_network_status")
        if isinstance(status, dict):
            network[_key(status.get("status"))] += 1
    return {"tests": dict(tests), "outcomes": dict(outcomes), "network": dict(network)}


def _upload(settings: Settings) -> dict[str, Any]:
    from netvigil.upload.outbox import Outbox, OutboxBusy
    from netvigil.upload.uploader import UploadConfig, upload_outbox

    assert settings.upload is not None
    record: dict[str, Any] = {"collector": settings.upload}
    try:
        summary = asyncio.run(
            upload_outbox(
                Outbox(settings.outbox),
                UploadConfig(
                    collector=settings.upload,
                    timeout=settings.upload_timeout,
                    max_attempts=UPLOAD_ATTEMPTS,
                ),
            )
        )
    except OutboxBusy as exc:
        record["error"] = _one_line(str(exc))
        return record
    record.update(
        sent=summary.sent,
        duplicates=summary.duplicates,
        rejected=summary.rejected,
        pending=summary.pending,
        # None: nothing was pending, the collector was not contacted
        reachable=None if summary.attempts == 0 else not (summary.stopped and summary.sent == 0),
    )
    if summary.errors:
        record["error"] = _one_line(summary.errors[-1])
    return record


def run_once(settings: Settings, *, state: Path | None = None) -> dict[str, Any]:
    """One run; returns the record it appended to the history (``status``: ``ok``, ``failed``
    or ``skipped`` when another run holds the lock). Never raises for a fault of the run."""
    folder = state or state_dir()
    started, clock = _now(), time.monotonic()
    record: dict[str, Any] = {"started": started, "suite": settings.suite, "error": None}
    try:
        with run_lock(folder):
            _run_locked(settings, record)
    except RunBusy as exc:
        record.update(status="skipped", error=str(exc))
    except Exception as exc:  # a fault is recorded: the timer keeps going
        record.update(status="failed", error=_one_line(f"{type(exc).__name__}: {exc}"))
    record["ended"] = _now()
    record["seconds"] = round(time.monotonic() - clock, 3)
    record.setdefault("status", "failed" if record.get("error") else "ok")
    with contextlib.suppress(OSError):
        append_history(record, folder / "history.jsonl")
    return record


def _run_locked(settings: Settings, record: dict[str, Any]) -> None:
    from netvigil.upload.cli import queue_measurements
    from netvigil.upload.outbox import Outbox, OutboxFull

    measurements: list[dict[str, Any]] = []
    try:
        if not consent_given():
            raise InputError(
                "no informed consent on file — run 'netvigil schedule install' (or "
                "'netvigil measure') once in a terminal"
            )
        measurements = measure_suite(settings)
    except Exception as exc:  # recorded; what is pending is still sent
        record["error"] = _one_line(str(exc) if isinstance(exc, InputError) else repr(exc))
    record["measurements"] = len(measurements)
    record.update(summarize(measurements))
    try:
        record["queued"] = queue_measurements(measurements, settings.outbox)
    except OutboxFull as exc:
        record["queued"] = exc.queued
        record["error"] = _one_line(str(exc))
    # Sent even after a failed measurement: what earlier runs kept goes out now.
    record["upload"] = _upload(settings) if settings.upload is not None else None
    record["outbox_pending"] = Outbox(settings.outbox).count("pending")
    if record.get("error"):
        record["status"] = "failed"


# -- the foreground loop ---------------------------------------------------------------------


def run_loop(
    settings: Settings,
    *,
    every: float,
    count: int | None,
    jitter: float = 0.0,
    stop: threading.Event | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    state: Path | None = None,
) -> list[dict[str, Any]]:
    """``run_once`` ``count`` times (None: until ``stop`` is set), a run starting every
    ``every`` seconds after the previous one started (at once when a run took longer), each
    but the first delayed by a random 0..``jitter`` seconds more. ``on_run`` sees each record
    as it is made; ``stop`` ends the loop between runs (a run in progress finishes). Returns
    the records (the newest ``HISTORY_LIMIT`` when ``count`` is None)."""
    from .settings import HISTORY_LIMIT

    if every <= 0 or jitter < 0 or (count is not None and count < 0):
        raise ValueError("every must be positive, jitter and count not negative")
    stop = stop or threading.Event()
    records: list[dict[str, Any]] = []
    next_start = time.monotonic()
    done = 0
    while (count is None or done < count) and not stop.is_set():
        if done:
            delay = max(0.0, next_start - time.monotonic())
            delay += random.uniform(0.0, jitter) if jitter else 0.0
            if stop.wait(delay):
                break
        next_start = time.monotonic() + every
        record = run_once(settings, state=state)
        done += 1
        records.append(record)
        if count is None and len(records) > HISTORY_LIMIT:
            del records[0]
        if on_run is not None:
            on_run(record)
    return records
