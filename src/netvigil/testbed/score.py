"""Score the probe against the ground truth: every URL of a profile, measured from `client`.

``netvigil testbed score --profile P`` runs this inside the testbed. It measures every URL the
profile serves with the real probe (``netvigil measure``'s code), compares each verdict's
outcome with ``testbed truth`` and prints a per-technique table. Exit 0 when all agree.

A profile with phases is scored by time: each measurement meets the truth of the phase in
force when it was made (``compare_by_time``), and ``testbed score`` measures every URL once in
each phase. A measurement that spans a phase boundary has no single truth and is left out
(counted as ``straddles``).
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from netvigil.testbed.plan import Plan
from netvigil.testbed.truth import TruthRow, ground_truth, truth_at


def outcome_agrees(truth: str, verdict: str) -> bool:
    """A verdict may name the fingerprint after a colon (http/blockpage:ooni.ru_3)."""
    return verdict.split(":", 1)[0] == truth


@dataclass(frozen=True)
class Score:
    url: str
    truth: str
    verdict: str
    blocking: Any
    agrees: bool
    action: str
    phase: str = ""


def compare(rows: list[TruthRow], verdicts: list[dict[str, Any]]) -> list[Score]:
    by_url = {str(v.get("input")): v for v in verdicts}
    scores = []
    for row in rows:
        verdict = by_url.get(row.url, {})
        outcome = str(verdict.get("outcome", "missing"))
        scores.append(
            Score(
                row.url,
                row.outcome,
                outcome,
                verdict.get("blocking"),
                outcome_agrees(row.outcome, outcome),
                row.action or row.site_kind,
            )
        )
    return scores


def measurement_window(measurement: dict[str, Any]) -> tuple[float, float] | None:
    """(earliest, latest) Unix time the measurement may have touched the network: OONI's
    start time has whole seconds, so the window opens at it and closes one second plus the
    runtime later. None when the measurement carries no readable start time."""
    text = str(measurement.get("measurement_start_time", ""))
    try:
        start = calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None
    runtime = measurement.get("test_runtime", 0)
    runtime = float(runtime) if isinstance(runtime, int | float) and runtime >= 0 else 0.0
    return float(start), float(start) + 1.0 + runtime


def compare_by_time(
    plan: Plan, measurements: list[dict[str, Any]], started_at: float
) -> tuple[list[Score], int]:
    """Each measurement against the truth of the phase in force when it was made (the
    testbed started at `started_at`). Returns the scores and how many measurements were left
    out because they span a phase boundary (or carry no time)."""
    scores: list[Score] = []
    straddles = 0
    for measurement in measurements:
        window = measurement_window(measurement)
        verdict = (measurement.get("test_keys") or {}).get("x_netvigil_verdict") or {}
        url = str(measurement.get("input") or verdict.get("input") or "")
        if window is None:
            straddles += 1
            continue
        first = plan.phase_index_at(window[0] - started_at)
        last = plan.phase_index_at(window[1] - started_at)
        if first != last:
            straddles += 1
            continue
        row = truth_at(plan, url, window[0] - started_at)
        outcome = str(verdict.get("outcome", "missing"))
        scores.append(
            Score(
                url,
                row.outcome,
                outcome,
                verdict.get("blocking"),
                outcome_agrees(row.outcome, outcome),
                row.action or row.site_kind,
                row.phase,
            )
        )
    return scores, straddles


def technique_table(scores: list[Score]) -> list[tuple[str, int, int, list[str]]]:
    """(truth outcome, URLs, agreeing, examples of disagreement) per technique."""
    groups: dict[str, list[Score]] = defaultdict(list)
    for score in scores:
        # With phases, a technique is told per phase: "window-1: tls/reset".
        groups[f"{score.phase}: {score.truth}" if score.phase else score.truth].append(score)
    return [
        (
            truth,
            len(items),
            sum(s.agrees for s in items),
            [f"{s.url} → {s.verdict}" for s in items if not s.agrees][:3],
        )
        for truth, items in sorted(groups.items())
    ]


def print_scores(profile: str, scores: list[Score]) -> None:
    from rich.table import Table
    from rich.text import Text

    from netvigil import textsafe
    from netvigil.testbed.report import make_console

    console = make_console()
    table = Table(
        title=textsafe.text(f"Probe verdicts against the ground truth of '{profile}'"),
        title_justify="left",
    )
    table.add_column("censor does (truth)")
    table.add_column("URLs", justify="right")
    table.add_column("probe agrees", justify="right")
    table.add_column("disagreements", overflow="fold")
    for truth, total, agree, bad in technique_table(scores):
        style = "green" if agree == total else "bold red"
        table.add_row(
            textsafe.text(truth), str(total), Text(str(agree), style), textsafe.text("; ".join(bad))
        )
    console.print(table)
    agree = sum(s.agrees for s in scores)
    console.print(Text(f"  {agree}/{len(scores)} verdicts agree with the ground truth."))


async def measure_truth(plan: Plan, config: Any, concurrency: int = 100) -> list[dict[str, Any]]:
    from netvigil.experiments.web_connectivity import WebConnectivity
    from netvigil.measure import run_measurements

    rows = ground_truth(plan)
    result = await run_measurements(
        WebConnectivity(config), [r.url for r in rows], concurrency=concurrency
    )
    return result.verdicts


async def measure_phases(
    plan: Plan, config: Any, concurrency: int = 100, settle: float = 0.5
) -> tuple[list[Score], int]:
    """Measure every URL once in each phase still ahead (waiting `settle` seconds into it),
    and score each measurement by the phase in force when it was made."""
    from netvigil.experiments.web_connectivity import WebConnectivity
    from netvigil.measure import run_measurements

    started_at = plan.started_at()
    if started_at is None:
        raise RuntimeError("the testbed's clock is not there yet")
    urls = [r.url for r in ground_truth(plan)]
    measurements: list[dict[str, Any]] = []
    experiment = WebConnectivity(config)
    for phase in plan.phases:
        nxt = plan.next_phase(phase.start_seconds)
        if nxt is not None and plan.offset() >= nxt.start_seconds:
            continue  # already over
        wait = phase.start_seconds + settle - plan.offset()
        if wait > 0:
            await asyncio.sleep(wait)
        await run_measurements(experiment, urls, concurrency=concurrency, collected=measurements)
    return compare_by_time(plan, measurements, started_at)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netvigil.testbed.score")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    state = os.environ.get("NETVIGIL_TESTBED_STATE")
    if not state:
        print("run this inside the testbed: netvigil testbed score --profile P", file=sys.stderr)
        return 2
    from netvigil.measure import testbed_config

    plan = Plan.load(state)
    if plan.phases:
        scores, straddles = asyncio.run(measure_phases(plan, testbed_config(timeout=args.timeout)))
        if straddles and not args.json:
            print(f"{straddles} measurements spanned a phase boundary and are not scored.")
    else:
        verdicts = asyncio.run(measure_truth(plan, testbed_config(timeout=args.timeout)))
        scores = compare(ground_truth(plan), verdicts)
    if args.json:
        for score in scores:
            print(json.dumps(asdict(score)))
    else:
        print_scores(plan.profile, scores)
    return 0 if all(s.agrees for s in scores) else 1


if __name__ == "__main__":
    sys.exit(main())
