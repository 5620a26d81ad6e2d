"""Score the probe against the ground truth: every URL of a profile, measured from `client`.

``netvigil testbed score --profile P`` runs this inside the testbed. It measures every URL the
profile serves with the real probe (``netvigil measure``'s code), compares each verdict's
outcome with ``testbed truth`` and prints a per-technique table. Exit 0 when all agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from netvigil.testbed.plan import Plan
from netvigil.testbed.truth import TruthRow, ground_truth


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


def technique_table(scores: list[Score]) -> list[tuple[str, int, int, list[str]]]:
    """(truth outcome, URLs, agreeing, examples of disagreement) per technique."""
    groups: dict[str, list[Score]] = defaultdict(list)
    for score in scores:
        groups[score.truth].append(score)
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
