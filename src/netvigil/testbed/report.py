"""Terminal output of the testbed commands (tables that read well; --json elsewhere)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from netvigil.testbed.plan import Plan
from netvigil.testbed.truth import TruthRow

if TYPE_CHECKING:
    from netvigil.testbed.observe import Observation


def make_console() -> Console:
    """A terminal console; when piped, wide enough that URLs are not folded."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=160)


def _style(outcome: str) -> str:
    if outcome == "ok":
        return "green"
    if outcome == "down":
        return "yellow"
    return "bold red"


def print_truth(plan: Plan, rows: list[TruthRow], console: Console | None = None) -> None:
    console = console or make_console()
    table = Table(
        title=f"What the censor of '{plan.profile}' does ({plan.isp_name})", title_justify="left"
    )
    table.add_column("URL", overflow="fold")
    table.add_column("outcome")
    table.add_column("because")
    for row in rows:
        because = row.rule or (f"site is {row.site_kind}" if row.site_kind != "normal" else "")
        if row.detail:
            because += f" ({row.detail})"
        table.add_row(row.url, f"[{_style(row.outcome)}]{row.outcome}[/]", because)
    console.print(table)
    counts = Counter(r.outcome for r in rows)
    console.print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


def print_observations(
    plan: Plan, observations: list[Observation], console: Console | None = None
) -> None:
    console = console or make_console()
    table = Table(title=f"Seen from the client on '{plan.profile}'", title_justify="left")
    table.add_column("URL", overflow="fold")
    table.add_column("censor does")
    table.add_column("client sees")
    table.add_column("evidence", overflow="fold")
    table.add_column("")
    for obs in observations:
        mark = "[green]✓[/]" if obs.agrees else "[bold red]✗[/]"
        table.add_row(
            obs.url, f"[{_style(obs.expected)}]{obs.expected}[/]", obs.observed, obs.detail, mark
        )
    console.print(table)
    agree = sum(o.agrees for o in observations)
    console.print(f"  {agree}/{len(observations)} URLs behave as the profile says.")
