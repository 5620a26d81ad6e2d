"""The protest-day demo, run inside `client` of a testbed whose profile has phases.

``netvigil testbed demo --profile kz-2022-january`` (``make demo-protest``) runs this: a probe
scheduled every N seconds measures the profile's URLs while the censor goes through its phases
(messaging apps blocked, a shutdown, windows of filtered access, restoration). Each round's
measurements go into the outbox, and the outbox is uploaded whenever the collector can be
reached: during a shutdown they wait there. When the last phase has run a while, the
collector's log is copied out, the pipeline runs over it, and the protest-day report
(``protest_report``) shows the timeline: what the probe saw per round, the onsets its event
rule found and the offline band, under the phases the censor really went through.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.text import Text

from netvigil import textsafe
from netvigil.testbed.plan import Plan
from netvigil.testbed.report import make_console
from netvigil.testbed.truth import ground_truth

UPLOAD_TIMEOUT = 2.0  # per request: a collector that does not answer in 2 s is unreachable now
DEFAULT_EVERY = 10.0
DEFAULT_TAIL = 30.0  # how long the last phase is measured
PROBE_TIMEOUT = 4.0


@dataclass
class RoundResult:
    index: int
    offset: float  # when the round began, seconds after the testbed's start
    phase: str  # the phase in force then (by the testbed's clock)
    report_id: str
    measured: int
    outcomes: dict[str, int]
    uploaded: int
    pending: int
    seconds: float


def round_urls(plan: Plan) -> list[str]:
    """The URLs every round measures: all of the profile's."""
    return [row.url for row in ground_truth(plan)]


def suite_inputs(plan: Plan, suite: str) -> tuple[list[str], tuple[str, ...]]:
    """(URLs, messaging apps) a round of `suite` measures: the profile's URLs for web, the
    apps its testbed serves (messaging_apps) for im, both for all."""
    urls = round_urls(plan) if suite in ("web", "all") else []
    apps = tuple(plan.messaging_apps) if suite in ("im", "all") else ()
    return urls, apps


async def measure_round(
    urls: list[str], timeout: float, apps: tuple[str, ...] = ()
) -> tuple[str, list[dict[str, Any]]]:
    """One round: the URLs (web_connectivity) and the messaging `apps` (``measure --suite
    all``), at once, the network checked around each; (the URLs' report id, measurements)."""
    from netvigil.experiments.web_connectivity import WebConnectivity
    from netvigil.measure import run_measurements, testbed_config

    config = testbed_config(timeout=timeout)
    experiment = WebConnectivity(config)
    collected: list[dict[str, Any]] = []

    async def web() -> None:
        if urls:
            # Both URLs of a site at once: in a shutdown every URL waits for its timeouts, and
            # a round must fit its slot for the outbox to be tried while the network is off.
            await run_measurements(
                experiment, urls, concurrency=100, per_host=2, collected=collected
            )

    async def im() -> None:
        if apps:
            collected.extend(await measure_apps(config, apps))

    try:
        await asyncio.gather(web(), im())  # at once: in a shutdown each waits its timeouts
    finally:
        experiment.close()  # its verdict thread
    return experiment.report_id, collected


async def measure_apps(config: Any, apps: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every messaging app the testbed serves, as ``measure --suite im`` measures them: the
    testbed's endpoint map (mandatory here) and the network watch, so a shutdown blames no app."""
    from netvigil.measure_im import im_overrides, run_im

    collected: list[dict[str, Any]] = []
    await run_im(config, im_overrides(config), apps=apps, collected=collected)
    return collected


async def upload_pending(outbox_dir: Path, collector: str, budget: float) -> tuple[int, int]:
    """Try to send what the outbox holds; (sent, still pending). Never raises for the network:
    an unreachable collector (a shutdown) leaves everything pending for the next round."""
    from netvigil.upload.outbox import Outbox
    from netvigil.upload.uploader import UploadConfig, upload_outbox

    outbox = Outbox(outbox_dir)
    stop = asyncio.Event()
    config = UploadConfig(collector=collector, timeout=UPLOAD_TIMEOUT, max_attempts=1)
    task = asyncio.create_task(upload_outbox(outbox, config, stop=stop))
    try:
        summary = await asyncio.wait_for(asyncio.shield(task), budget)
    except TimeoutError:
        stop.set()
        summary = await task
    return summary.sent + summary.duplicates, summary.pending


async def run_rounds(
    plan: Plan,
    outbox_dir: Path,
    collector: str,
    *,
    every: float,
    until: float,
    timeout: float,
    say: Any,
    suite: str = "all",
) -> list[RoundResult]:
    """Rounds at offsets 0, every, 2·every, … until `until` seconds after the testbed's start;
    a round that overruns its slot skips to the next free one."""
    from netvigil.upload.cli import queue_measurements

    urls, apps = suite_inputs(plan, suite)
    results: list[RoundResult] = []
    slot = 0
    while True:
        at = slot * every
        if at > until:
            break
        wait = at - plan.offset()
        if wait > 0:
            await asyncio.sleep(wait)
        began = time.monotonic()
        offset = plan.offset()
        phase = plan.at(offset).phase
        report_id, measurements = await measure_round(urls, timeout, apps)
        queue_measurements(measurements, outbox_dir)
        left = max(1.0, (slot + 1) * every - plan.offset() - 0.5)
        sent, pending = await upload_pending(outbox_dir, collector, left)
        outcomes = Counter(
            str(m["test_keys"]["x_netvigil_verdict"].get("outcome", "?")).split(":", 1)[0]
            for m in measurements
        )
        result = RoundResult(
            len(results),
            round(offset, 3),
            phase,
            report_id,
            len(measurements),
            dict(outcomes),
            sent,
            pending,
            round(time.monotonic() - began, 3),
        )
        results.append(result)
        say(result)
        slot = max(slot + 1, int(plan.offset() // every) + 1)
    return results


def run_scheduled(
    plan: Plan,
    outbox_dir: Path,
    collector: str,
    *,
    every: float,
    until: float,
    timeout: float,
    say: Any,
    suite: str = "all",
    state: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> list[RoundResult]:
    """The same rounds through ``netvigil schedule``'s own loop (``schedule.run_loop``): each
    run measures the suite with ``netvigil measure`` (its network checks included), queues the
    measurements in the outbox and uploads what is pending when the collector answers; its
    history record becomes the round's line."""
    from netvigil.schedule import Settings, run_loop

    urls, apps = suite_inputs(plan, suite)
    settings = Settings(
        # measure --suite im|all measures every app: only where the testbed serves them
        suite=suite if apps else "web",
        urls=tuple(urls),
        upload=collector,
        outbox=str(outbox_dir),
        upload_timeout=UPLOAD_TIMEOUT,
        timeout=timeout,
        concurrency=100,
    )
    results: list[RoundResult] = []

    def on_run(record: dict[str, Any]) -> None:
        seconds = float(record.get("seconds") or 0.0)
        offset = max(0.0, plan.offset() - seconds)  # the run began `seconds` ago
        upload = record.get("upload") if isinstance(record.get("upload"), dict) else {}
        assert isinstance(upload, dict)
        outcomes = record.get("outcomes") if isinstance(record.get("outcomes"), dict) else {}
        assert isinstance(outcomes, dict)
        result = RoundResult(
            len(results),
            round(offset, 3),
            plan.at(offset).phase,
            "",  # measure makes one report id per run; the report places rows by time
            int(record.get("measurements") or 0),
            {str(k).split(":", 1)[0]: int(v) for k, v in outcomes.items()},
            int(upload.get("sent") or 0) + int(upload.get("duplicates") or 0),
            int(record.get("outbox_pending") or 0),
            round(seconds, 3),
        )
        if record.get("error") and note is not None:
            note(f"round {result.index + 1}: {str(record['error'])[:200]}")
        results.append(result)
        say(result)

    # Runs until the clock passes `until` (a run in a shutdown waits out its timeouts, so a
    # count of runs would not say when the loop ends).
    stop = threading.Event()

    def on_run_until(record: dict[str, Any]) -> None:
        on_run(record)
        if plan.offset() + every > until:
            stop.set()

    run_loop(settings, every=every, count=None, stop=stop, on_run=on_run_until, state=state)
    return results


def round_line(result: RoundResult) -> str:
    shown = ", ".join(
        f"{k} {v}" for k, v in sorted(result.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return (
        f"round {result.index + 1:2} +{result.offset:5.1f} s [{result.phase}] "
        f"{result.measured} measured ({shown}); uploaded {result.uploaded}, "
        f"{result.pending} waiting in the outbox"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netvigil.testbed.protest")
    parser.add_argument("--out", default="", help="folder for everything the demo keeps")
    parser.add_argument("--every", type=float, default=DEFAULT_EVERY)
    parser.add_argument("--tail", type=float, default=DEFAULT_TAIL)
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT)
    parser.add_argument(
        "--suite",
        choices=("web", "im", "all"),
        default="all",
        help="what each round measures (as measure --suite): web, im (the messaging apps), all",
    )
    parser.add_argument(
        "--scheduler",
        choices=("schedule", "rounds"),
        default="schedule",
        help="schedule: netvigil schedule's loop (run_loop), as a user's timer runs it; "
        "rounds: this module's own rounds (both URLs of a site at once, apps alongside)",
    )
    parser.add_argument(
        "--once",
        metavar="FILE",
        help="measure one round now and write its measurements (OONI JSONL) to FILE (tests)",
    )
    args = parser.parse_args(argv)
    state = os.environ.get("NETVIGIL_TESTBED_STATE")
    if not state:
        print(
            "run this inside the testbed: netvigil testbed demo -p kz-2022-january", file=sys.stderr
        )
        return 2
    plan = Plan.load(state)
    if not plan.phases:
        print(f"profile {plan.profile} has no phases: use netvigil testbed demo", file=sys.stderr)
        return 2
    if args.once:
        urls, apps = suite_inputs(plan, args.suite)
        _rid, measurements = asyncio.run(measure_round(urls, args.timeout, apps))
        with open(args.once, "w", encoding="utf-8") as handle:
            for measurement in measurements:
                handle.write(json.dumps(measurement, separators=(",", ":")) + "\n")
        return 0
    if not args.out:
        parser.error("--out DIR is required (or --once FILE)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = make_console()
    collector = os.environ.get("NETVIGIL_COLLECTOR_URL", "")
    until = plan.phases[-1].start_seconds + max(0.0, args.tail)
    every = max(2.0, float(args.every))
    console.rule(Text("The phases of the censor (the profile's truth)", "bold"))
    for phase in plan.phases:
        kind = "shutdown" if phase.shutdown else f"{len(phase.rules)} rules"
        console.print(
            textsafe.text(
                f"  +{phase.start_seconds:5.0f} s  {phase.name:12} ({kind}) {phase.description}"
            )
        )
    console.rule(
        Text(
            f"A probe every {every:g} s from 'client', for {until:.0f} s; outbox → collector",
            "bold",
        )
    )
    outbox_dir = Path(state) / "outbox"

    def say(result: RoundResult) -> None:
        console.print(textsafe.text("  " + round_line(result)))

    if args.scheduler == "schedule":
        results = run_scheduled(
            plan,
            outbox_dir,
            collector,
            every=every,
            until=until,
            timeout=args.timeout,
            say=say,
            suite=args.suite,
            state=Path(state) / "schedule",
            note=lambda line: console.print(textsafe.text("  " + line, "yellow")),
        )
    else:
        results = asyncio.run(
            run_rounds(
                plan,
                outbox_dir,
                collector,
                every=every,
                until=until,
                timeout=args.timeout,
                say=say,
                suite=args.suite,
            )
        )
    # Whatever is still waiting goes now that the network is back.
    sent, pending = asyncio.run(upload_pending(outbox_dir, collector, 30.0))
    console.print(
        textsafe.text(f"  final upload: {sent} sent, {pending} still waiting in the outbox")
    )
    meta = {
        "profile": plan.profile,
        "started_at": plan.started_at(),
        "every": every,
        "phases": [
            {
                "name": p.name,
                "start": p.start,
                "start_seconds": p.start_seconds,
                "description": p.description,
                "shutdown": p.shutdown,
                "rules": [r.id for r in p.rules],
            }
            for p in plan.phases
        ],
        "rounds": [asdict(r) for r in results],
    }
    (out / "timeline.json").write_text(json.dumps(meta, indent=1))
    from netvigil.testbed.demo import keep_collector_data

    kept = keep_collector_data(Path(state) / "collector", out / "collector")
    console.print(
        textsafe.text(
            f"  the collector's log is kept in {kept}" if kept else "  the collector kept nothing"
        )
    )
    return 0 if results and pending == 0 and kept is not None else 1


def run_protest_demo(
    profile: str, plan: Plan, out: Path, every: float | None = None, tail: float | None = None
) -> int:
    """From the host: the testbed with `profile`, this module inside `client`, then the
    pipeline over the collector's log and the protest-day report (``out/report.html``)."""
    from netvigil.testbed import control
    from netvigil.testbed.protest_report import write_report

    out = out.resolve()
    console = make_console()
    console.rule(textsafe.text(f"netvigil testbed: {plan.profile} (the protest-day demo)", "bold"))
    console.print(textsafe.text(plan.description.strip(), multiline=True))
    began = time.monotonic()
    command = [sys.executable, "-m", "netvigil.testbed.protest", "--out", str(out)]
    if every is not None:
        command += ["--every", str(every)]
    if tail is not None:
        command += ["--tail", str(tail)]
    status = control.run(profile, command, name=f"protest-{os.getpid()}")
    database = out / "collector" / "collector.sqlite3"
    if not database.is_file():
        console.print(Text("  the collector's log was not kept: no pipeline, no report", "red"))
        return status or 1
    console.rule(Text("The pipeline over the collector's log (netvigil pipeline run)", "bold"))
    import subprocess

    netvigil = [sys.executable, "-m", "netvigil.cli"]
    pipeline = out / "pipeline"
    ran = subprocess.run(
        [*netvigil, "pipeline", "run", str(database), "--out", str(pipeline), "--overwrite"],
        check=False,
    )
    if ran.returncode != 0:
        return ran.returncode
    console.rule(Text("The protest-day report", "bold"))
    report = out / "report.html"
    timeline = write_report(
        pipeline,
        out / "timeline.json",
        report,
        f"{plan.profile}: a probe every few seconds through the phases of the censor",
    )
    for line in timeline.story():
        console.print(textsafe.text("  " + line))
    console.print(
        textsafe.text(
            f"  {len(timeline.onsets)} onsets of blocking; the report is {report} "
            f"(the demo took {time.monotonic() - began:.0f} s)"
        )
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
