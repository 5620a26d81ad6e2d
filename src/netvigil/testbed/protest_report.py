"""The protest-day report: a timeline of probe rounds against a phased censor, as one HTML page.

The pipeline's tables count by day; the protest-day demo compresses days into seconds, so this
page counts by *probe round* instead: one column per round of the scheduled probe, one row per
domain, each cell coloured by the round's outcome for that domain. The onsets are found by the
pipeline's own event rule (``aggregate.detect_events`` then ``detect_onsets``), with a round as
its time unit in place of a day. Measurements whose run was offline (``network/offline`` or
``network/degraded``, the probe's shutdown awareness) are counted apart, as a band over the
timeline, never as blocking of a site. The testbed's phases (what the censor really did, from
the profile) run along the top, so a reader sees the probe's view next to the truth.

Pure: ``build_timeline`` takes verdict rows (as the pipeline writes them) and the demo's
``timeline.json``; ``render_html`` turns the result into a page. Every string from a
measurement is escaped.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from netvigil.pipeline.aggregate import detect_events, detect_onsets

OFFLINE_OUTCOMES = ("network/offline", "network/degraded")
IM_TESTS = ("telegram", "whatsapp", "signal", "facebook_messenger")
# The event rule, with a probe round as its unit: a domain's round is flagged when at least
# half of its measurements more than in the rounds before it are blocked and Fisher's test says
# it is no chance (its baseline: up to 6 earlier rounds, at least 3 of them measured).
EVENT_RULE = {
    "baseline_days": 6,
    "min_baseline_days": 3,
    "min_measurements": 2,
    "jump": 0.5,
    "max_p": 0.05,
}
EPOCH = dt.date(1970, 1, 1)
MAX_ROUNDS = 400
MAX_DOMAINS = 120


@dataclass(frozen=True)
class VerdictRow:
    """What the report needs of one pipeline verdict row."""

    report_id: str
    start: float  # Unix seconds (whole seconds: OONI's measurement_start_time)
    domain: str
    test_name: str
    outcome: str
    blocked: bool
    probe_cc: str = "ZZ"
    probe_asn: int = 0
    uid: str = ""  # measurement_uid: ties a messaging app's endpoint rows to its verdict


@dataclass(frozen=True)
class EndpointRow:
    """One endpoint of a messaging-app measurement (the pipeline's ``endpoints`` table)."""

    uid: str
    endpoint: str
    blocked: bool


@dataclass
class Onset:
    domain: str
    start_round: int
    end_round: int | None
    peak_share: float
    p_value: float


@dataclass
class Timeline:
    started_at: float
    every: float
    round_offsets: list[float]  # seconds after the testbed's start
    phases: list[dict[str, Any]]
    domains: list[str]
    cells: dict[tuple[str, int], Counter[str]] = field(default_factory=dict)
    offline: dict[int, int] = field(default_factory=dict)  # round → offline measurements
    measured: dict[int, int] = field(default_factory=dict)  # round → measurements
    onsets: list[Onset] = field(default_factory=list)

    def phase_of_round(self, index: int) -> dict[str, Any] | None:
        offset = self.round_offsets[index]
        current = None
        for phase in self.phases:
            if offset + 1e-6 >= float(phase["start_seconds"]):
                current = phase
        return current

    def story(self) -> list[str]:
        """The timeline in a few sentences, from the probe's data (not from the profile)."""
        lines: list[str] = []
        by_round: dict[int, list[Onset]] = defaultdict(list)
        for onset in self.onsets:
            by_round[onset.start_round].append(onset)
        offline_rounds = sorted(r for r, n in self.offline.items() if n)
        events: list[tuple[float, str]] = []
        for index, found in sorted(by_round.items()):
            names = ", ".join(sorted(o.domain for o in found))
            events.append((self.round_offsets[index], f"onset of blocking ({len(found)}): {names}"))
        # offline stretches: consecutive offline rounds
        stretch: list[int] = []
        for index in [*offline_rounds, -10]:
            if stretch and index != stretch[-1] + 1:
                first, last = stretch[0], stretch[-1]
                events.append(
                    (
                        self.round_offsets[first],
                        f"network offline: rounds {first + 1}–{last + 1} "
                        f"(+{self.round_offsets[first]:.0f} s to +{self.round_offsets[last]:.0f} s)",
                    )
                )
                stretch = []
            if index >= 0:
                stretch.append(index)
        restored = self.restored_round()
        if restored is not None:
            events.append((self.round_offsets[restored], "restored: every domain answers again"))
        for offset, text in sorted(events, key=lambda e: e[0]):
            lines.append(f"+{offset:.0f} s  {text}")
        return lines

    def restored_round(self) -> int | None:
        """The first round after which every measurement of every round is ok, if it came."""
        bad = [
            r
            for r in range(len(self.round_offsets))
            if self.offline.get(r)
            or any(
                self.cells.get((d, r), Counter())["measured"]
                != self.cells.get((d, r), Counter())["ok"]
                for d in self.domains
            )
        ]
        if not bad:
            return None
        after = bad[-1] + 1
        measured_after = [r for r in range(after, len(self.round_offsets)) if self.measured.get(r)]
        return measured_after[0] if measured_after else None


def load_verdict_rows(pipeline_dir: Path) -> list[VerdictRow]:
    """The verdict rows of a pipeline output directory (DuckDB over its Parquet files)."""
    import duckdb

    files = sorted((pipeline_dir / "verdicts").glob("day=*/*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    try:
        listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        result = con.execute(
            "SELECT coalesce(report_id, ''), epoch(measurement_start_time), domain, test_name, "
            "outcome, blocked, probe_cc, probe_asn, measurement_uid "
            f"FROM read_parquet([{listing}])"
        ).fetchall()
    finally:
        con.close()
    return [
        VerdictRow(
            str(r[0]),
            float(r[1]),
            str(r[2]),
            str(r[3]),
            str(r[4]),
            bool(r[5]),
            str(r[6]),
            int(r[7]),
            str(r[8]),
        )
        for r in result
    ]


def load_endpoint_rows(pipeline_dir: Path) -> list[EndpointRow]:
    """The messaging apps' endpoint rows (``OUT/endpoints``), when the pipeline wrote them."""
    import duckdb

    files = sorted((pipeline_dir / "endpoints").glob("day=*/*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    try:
        listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        result = con.execute(
            "SELECT measurement_uid, endpoint, blocked FROM "
            f"read_parquet([{listing}]) WHERE endpoint <> '*'"
        ).fetchall()
    finally:
        con.close()
    return [EndpointRow(str(r[0]), str(r[1]), bool(r[2])) for r in result]


def _round_of(row: VerdictRow, by_report: Mapping[str, int], starts: Sequence[float]) -> int | None:
    if row.report_id in by_report:
        return by_report[row.report_id]
    # A measurement from elsewhere: the last round that began before it (its time has whole
    # seconds, so it may read up to one second early).
    found = None
    for index, start in enumerate(starts):
        if start <= row.start + 1.0:
            found = index
    return found


def build_timeline(
    rows: Iterable[VerdictRow],
    meta: Mapping[str, Any],
    endpoints: Iterable[EndpointRow] = (),
) -> Timeline:
    """Cells per domain and round, the offline band and the onsets (the event rule per round).

    A messaging app is measured once per round: for the event rule its round counts its
    endpoints (measured, blocked), when the pipeline wrote them, so one round can be evidence.
    """
    by_uid: dict[str, list[EndpointRow]] = defaultdict(list)
    for endpoint in endpoints:
        by_uid[endpoint.uid].append(endpoint)
    started_at = float(meta["started_at"])
    rounds = list(meta.get("rounds", []))[:MAX_ROUNDS]
    offsets = [float(r["offset"]) for r in rounds]
    by_report = {str(r["report_id"]): i for i, r in enumerate(rounds) if r.get("report_id")}
    starts = [started_at + o for o in offsets]
    timeline = Timeline(
        started_at=started_at,
        every=float(meta.get("every", 0)),
        round_offsets=offsets,
        phases=list(meta.get("phases", [])),
        domains=[],
    )
    domains: dict[str, None] = {}
    series: dict[tuple[str, int, str], dict[int, list[int]]] = defaultdict(dict)
    for row in rows:
        index = _round_of(row, by_report, starts)
        if index is None:
            continue
        timeline.measured[index] = timeline.measured.get(index, 0) + 1
        if row.outcome in OFFLINE_OUTCOMES:
            # Counted apart: the network was off, no site was singled out.
            timeline.offline[index] = timeline.offline.get(index, 0) + 1
            continue
        # A messaging-app measurement has no URL: its row is the app (OONI's test name).
        name = row.domain or (f"{row.test_name} (app)" if row.test_name in IM_TESTS else "")
        if not name:
            continue
        if name not in domains and len(domains) >= MAX_DOMAINS:
            continue
        domains.setdefault(name)
        cell = timeline.cells.setdefault((name, index), Counter())
        cell["measured"] += 1
        if row.blocked:
            cell["blocked"] += 1
            cell[row.outcome] += 1
        elif row.outcome == "ok":
            cell["ok"] += 1
        else:  # not blocked, not fine either: down, unknown (no control to compare with)
            cell["unclear"] += 1
        counts = series[(row.probe_cc, row.probe_asn, name)].setdefault(index, [0, 0])
        parts = by_uid.get(row.uid, []) if row.uid else []
        if parts:
            counts[0] += len(parts)
            counts[1] += sum(p.blocked for p in parts)
        else:
            counts[0] += 1
            counts[1] += int(row.blocked)
    timeline.domains = list(domains)
    timeline.onsets = _onsets(series)
    return timeline


def _onsets(series: Mapping[tuple[str, int, str], Mapping[int, list[int]]]) -> list[Onset]:
    """The pipeline's event rule over rounds: a round is written as the day EPOCH + round."""
    names = ["probe_cc", "probe_asn", "domain", "day", "measurements", "blocked"]
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for (cc, asn, domain), by_round in sorted(series.items()):
        for index, (measured, blocked) in sorted(by_round.items()):
            for name, value in zip(
                names,
                (cc, asn, domain, EPOCH + dt.timedelta(days=index), measured, blocked),
                strict=True,
            ):
                columns[name].append(value)
    daily = pa.table(
        {
            "probe_cc": pa.array(columns["probe_cc"], pa.string()),
            "probe_asn": pa.array(columns["probe_asn"], pa.int64()),
            "domain": pa.array(columns["domain"], pa.string()),
            "day": pa.array(columns["day"], pa.date32()),
            "measurements": pa.array(columns["measurements"], pa.int64()),
            "blocked": pa.array(columns["blocked"], pa.int64()),
        }
    )
    events = detect_events(daily, **EVENT_RULE)  # type: ignore[arg-type]
    onsets = detect_onsets(events, daily, jump=float(EVENT_RULE["jump"]))
    found = []
    for row in onsets.to_pylist():
        start = (row["start"] - EPOCH).days
        end = None if row["end"] is None else (row["end"] - EPOCH).days
        found.append(
            Onset(str(row["domain"]), start, end, float(row["peak_share"]), float(row["p_value"]))
        )
    return found


# --------------------------------------------------------------------------------------------
# HTML

_COLOURS = {
    "ok": "#3a9d5d",
    "dns": "#8e44ad",
    "tcp": "#c0392b",
    "tls": "#d35400",
    "http": "#b7950b",
    "network": "#555",
    "other": "#7f8c8d",
}


def _cell_colour(cell: Counter[str] | None) -> tuple[str, str]:
    if not cell or not cell["measured"]:
        return "#fff", "not measured"
    blocked = {k: v for k, v in cell.items() if k not in ("measured", "blocked", "ok", "unclear")}
    if not blocked:
        if cell["unclear"] and not cell["ok"]:
            return _COLOURS["other"], f"{cell['unclear']} unclear (down or no control)"
        return _COLOURS["ok"], f"{cell['ok']} ok" + (
            f", {cell['unclear']} unclear" if cell["unclear"] else ""
        )
    outcome = max(blocked, key=lambda k: blocked[k])
    stage = outcome.split("/", 1)[0]
    tip = ", ".join(f"{k} {v}" for k, v in sorted(blocked.items()))
    if cell["ok"]:
        tip += f", ok {cell['ok']}"
    return _COLOURS.get(stage, _COLOURS["other"]), tip


def render_html(timeline: Timeline, title: str) -> str:
    e = html.escape
    rounds = len(timeline.round_offsets)
    width = 20
    onset_at = {(o.domain, o.start_round) for o in timeline.onsets}
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}"
        "table.t{border-collapse:collapse;font-size:12px}"
        "table.t td{padding:0;height:18px;border:1px solid #fff}"
        "td.name{padding-right:8px!important;white-space:nowrap;text-align:right}"
        "td.c{width:20px}td.onset{outline:2px solid #000;outline-offset:-2px}"
        ".phase{font-size:11px;text-align:center;color:#fff;overflow:hidden;white-space:nowrap}"
        ".key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;"
        "vertical-align:middle}pre{background:#f4f4f4;padding:8px}"
        "table.o td,table.o th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
        "</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<p>Each column is one round of the scheduled probe (every "
        f"{timeline.every:g} s), each row a domain; a cell is the round's outcome for it. "
        "A black frame marks an onset of blocking found by the pipeline's event rule "
        "(a probe round as its time unit). The <b>truth</b> row is what the emulated censor "
        "did (the profile's phases: green without rules, brown with rules in force, grey a "
        "shutdown); the <b>offline</b> row counts measurements whose run found "
        "the whole network unreachable: they are counted apart, never as blocking of a site.</p>",
        "<h2>What happened, from the probe's data</h2><pre>",
    ]
    story = timeline.story()
    out.append(e("\n".join(story) if story else "nothing found"))
    out.append("</pre>")
    key = "".join(
        f"<span style='background:{c}'></span>{e(name)}"
        for name, c in (
            ("ok", _COLOURS["ok"]),
            ("dns/*", _COLOURS["dns"]),
            ("tcp/*", _COLOURS["tcp"]),
            ("tls/*", _COLOURS["tls"]),
            ("http/*", _COLOURS["http"]),
            ("unclear", _COLOURS["other"]),
            ("offline", _COLOURS["network"]),
        )
    )
    out.append(f"<p class='key'>{key}</p>")
    out.append("<table class='t'>")
    # the truth: the phases, one cell per round
    out.append("<tr><td class='name'><b>truth</b></td>")
    index = 0
    while index < rounds:
        phase = timeline.phase_of_round(index)
        span = 1
        while index + span < rounds and timeline.phase_of_round(index + span) is phase:
            span += 1
        name = str(phase["name"]) if phase else "?"
        shutdown = bool(phase and phase.get("shutdown"))
        has_rules = bool(phase and phase.get("rules"))
        colour = "#555" if shutdown else ("#a04000" if has_rules else "#3a9d5d")
        tip = str(phase.get("description", "")) if phase else ""
        out.append(
            f"<td colspan='{span}' class='phase' style='background:{colour};"
            f"max-width:{span * width}px' title='{e(tip)}'>{e(name)}</td>"
        )
        index += span
    out.append("</tr>")
    out.append("<tr><td class='name'><b>offline</b></td>")
    for r in range(rounds):
        n = timeline.offline.get(r, 0)
        colour = _COLOURS["network"] if n else "#fff"
        out.append(
            f"<td class='c' style='background:{colour}' title='round {r + 1}: "
            f"{n} of {timeline.measured.get(r, 0)} measurements offline'></td>"
        )
    out.append("</tr>")
    for domain in timeline.domains:
        out.append(f"<tr><td class='name'>{e(domain)}</td>")
        for r in range(rounds):
            colour, tip = _cell_colour(timeline.cells.get((domain, r)))
            frame = " onset" if (domain, r) in onset_at else ""
            out.append(
                f"<td class='c{frame}' style='background:{colour}' "
                f"title='{e(domain)}, round {r + 1} (+{timeline.round_offsets[r]:.0f} s): "
                f"{e(tip)}{' — onset' if frame else ''}'></td>"
            )
        out.append("</tr>")
    out.append("<tr><td class='name'>seconds</td>")
    for r in range(rounds):
        label = f"{timeline.round_offsets[r]:.0f}" if r % 5 == 0 else ""
        out.append(f"<td style='font-size:9px'>{label}</td>")
    out.append("</tr></table>")
    out.append("<h2>Onsets of blocking (the event rule)</h2>")
    if timeline.onsets:
        out.append(
            "<table class='o'><tr><th>domain</th><th>from</th><th>until</th>"
            "<th>peak share</th><th>p-value</th></tr>"
        )
        for onset in sorted(timeline.onsets, key=lambda o: (o.start_round, o.domain)):
            start = timeline.round_offsets[onset.start_round]
            end = (
                "ongoing"
                if onset.end_round is None
                else f"+{timeline.round_offsets[onset.end_round]:.0f} s"
            )
            out.append(
                f"<tr><td>{e(onset.domain)}</td><td>+{start:.0f} s (round "
                f"{onset.start_round + 1})</td><td>{e(end)}</td>"
                f"<td>{onset.peak_share:.2f}</td><td>{onset.p_value:.3g}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append("<p>No onset of blocking.</p>")
    out.append("<h2>The phases of the emulated censor (the truth)</h2><table class='o'>")
    out.append("<tr><th>phase</th><th>from</th><th>what</th></tr>")
    for phase in timeline.phases:
        what = str(phase.get("description", ""))
        if phase.get("shutdown"):
            what += " (shutdown)"
        out.append(
            f"<tr><td>{e(str(phase['name']))}</td><td>+{float(phase['start_seconds']):g} s</td>"
            f"<td>{e(what)}</td></tr>"
        )
    out.append("</table></body></html>")
    return "\n".join(out)


def write_report(pipeline_dir: Path, meta_file: Path, out_html: Path, title: str) -> Timeline:
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    timeline = build_timeline(
        load_verdict_rows(pipeline_dir), meta, load_endpoint_rows(pipeline_dir)
    )
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(render_html(timeline, title), encoding="utf-8")
    return timeline
