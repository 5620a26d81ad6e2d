"""``netvigil report OUT --html FILE``: one self-contained HTML page about a pipeline output.

The page has the headline numbers, a timeline per domain (share of blocked measurements per
day, coloured by technique; onset days marked), a timeline per technique, the messaging apps
(a timeline per app, a table by country and app), the outcome mix, the
onsets of blocking (one row each, ``aggregate.detect_onsets``), first and last seen of each
blocking outcome per network, a per-network summary, notes on method and a footer with
provenance. ``--cc``, ``--asn``, ``--domain``, ``--since`` and ``--until`` narrow it.

The charts are inline SVG with a viewBox, drawn 100 % wide in a grid (two columns on a wide
page, one on a phone), with a y axis and date ticks; the colours are Okabe and Ito's, distinct
for colour-blind readers. Wide tables scroll in their own box, so the page never scrolls
sideways at 420 px.

Self-contained means no request ever leaves the file: no scripts, no external fonts, style
sheets or images; the charts are inline SVG drawn here. A Content-Security-Policy meta tag
forbids scripts and external loads as a second line of defence. Every text that comes from the
data (domains, fingerprints, roots, outcomes — chosen by whoever wrote the measurement) is
HTML-escaped. Sizes are bounded: the top ``--top`` domains (30) by blocked measurements, at most
366 bars per timeline (a longer range is drawn in buckets of several days), at most 200 rows
per table; the page says when it left something out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import html
import json
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netvigil import textsafe
from netvigil.verdict.model import NOT_BLOCKED

from .aggregate import verdict_files
from .options import DEFAULT_TOP
from .query import (
    Filters,
    QueryError,
    answer,
    make_filters,
    onsets_where,
    open_pipeline,
)

if TYPE_CHECKING:
    import duckdb

__all__ = ["ReportSummary", "run", "write_report"]

MAX_BARS = 366
MAX_TABLE_ROWS = 200
MAX_NETWORK_BANDS = 30

# Okabe & Ito's palette ("Color Universal Design", 2002): the four techniques stay distinct for
# readers with any common colour-vision deficiency, and differ in lightness too (blue and
# vermillion dark, orange and sky blue light), so a grey-scale print still tells them apart.
TECHNIQUE_COLOURS = {
    "dns": "#0072B2",  # blue
    "tcp": "#E69F00",  # orange
    "tls": "#56B4E9",  # sky blue
    "http": "#D55E00",  # vermillion
}
OTHER_COLOUR = "#CC79A7"  # reddish purple
OK_COLOUR = "#009E73"  # bluish green
NO_BLOCK_COLOUR = "#e4e7eb"
ONSET_COLOUR = "#000000"
# The network's own status (the band of "Network status"): offline dark, degraded yellow
# (Okabe & Ito), online the grey of "not blocked".
NETWORK_COLOURS = {"offline": "#3c4650", "degraded": "#F0E442", "online": NO_BLOCK_COLOUR}


@dataclasses.dataclass(frozen=True)
class ReportSummary:
    path: Path
    measurements: int
    blocked: int
    blocked_domains: int
    domains_shown: int
    events: int
    days: int
    truncated: bool
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


def _e(value: object) -> str:
    """HTML-escape anything for text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _technique(outcome: str) -> str:
    return outcome.split("/", 1)[0] if "/" in outcome else outcome


def _colour(technique: str) -> str:
    return TECHNIQUE_COLOURS.get(technique, OTHER_COLOUR)


def _technique_order(technique: str) -> tuple[int, str]:
    order = list(TECHNIQUE_COLOURS)
    return (order.index(technique) if technique in order else len(order), technique)


def _outcome_colour(outcome: str) -> str:
    if outcome == "ok":
        return OK_COLOUR
    if outcome in NOT_BLOCKED:
        return "#b0b7bf"
    return _colour(_technique(outcome))


# --- data --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Data:
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    measurements: int = 0
    blocked: int = 0
    ok: int = 0
    domains: int = 0
    blocked_domains: int = 0
    networks: int = 0
    countries: list[str] = dataclasses.field(default_factory=list)
    top: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # (domain, day) → measurements; (domain, day) → {technique: blocked}
    measured: dict[tuple[str, dt.date], int] = dataclasses.field(default_factory=dict)
    blocked_by: dict[tuple[str, dt.date], dict[str, int]] = dataclasses.field(default_factory=dict)
    technique_days: dict[tuple[str, dt.date], int] = dataclasses.field(default_factory=dict)
    onset_days: set[tuple[str, dt.date]] = dataclasses.field(default_factory=set)
    technique_domains: dict[str, int] = dataclasses.field(default_factory=dict)
    outcomes: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events_total: int = 0
    seen: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seen_total: int = 0
    apps: _Apps | None = None
    offline: int = 0  # measurements the network's own failure decided (outcome network/*)
    # (cc, asn) → day → {network status: measurements}, for networks not always online
    network_days: dict[tuple[str, int], dict[dt.date, dict[str, int]]] = dataclasses.field(
        default_factory=dict
    )
    network_periods: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    network_periods_total: int = 0


def _gather(con: duckdb.DuckDBPyConnection, f: Filters, top: int) -> _Data:
    where, params = f.where()
    data = _Data()
    row = con.execute(
        f"""
        SELECT min(day), max(day), coalesce(sum(measurements), 0), coalesce(sum(blocked), 0),
               coalesce(sum(ok), 0), coalesce(sum(offline), 0), count(DISTINCT domain),
               count(DISTINCT domain) FILTER (WHERE blocked > 0),
               count(DISTINCT (probe_cc, probe_asn)),
               list(DISTINCT probe_cc ORDER BY probe_cc)
        FROM daily WHERE {where}
        """,
        params,
    ).fetchone()
    assert row is not None
    (
        data.first_day,
        data.last_day,
        data.measurements,
        data.blocked,
        data.ok,
        data.offline,
        data.domains,
        data.blocked_domains,
        data.networks,
        countries,
    ) = row
    data.countries = list(countries or [])
    data.measurements, data.blocked, data.ok, data.offline = (
        int(data.measurements),
        int(data.blocked),
        int(data.ok),
        int(data.offline),
    )

    tops = con.execute(
        f"""
        SELECT domain, sum(blocked) AS blocked, sum(measurements) AS measurements,
               count(DISTINCT (probe_cc, probe_asn)) FILTER (WHERE blocked > 0) AS networks
        FROM daily WHERE {where} GROUP BY domain HAVING sum(blocked) > 0
        ORDER BY blocked DESC, domain LIMIT {top}
        """,
        params,
    ).fetchall()
    data.top = [
        {"domain": d, "blocked": int(b), "measurements": int(m), "networks": int(n)}
        for d, b, m, n in tops
    ]
    names = [t["domain"] for t in data.top]
    if names:
        for domain, day, measured in con.execute(
            f"""
            SELECT domain, day, sum(measurements - offline) FROM daily
            WHERE {where} AND list_contains(?, domain) GROUP BY ALL
            HAVING sum(measurements - offline) > 0
            """,
            [*params, names],
        ).fetchall():
            data.measured[(domain, day)] = int(measured)
        onset_where, onset_params = onsets_where(f)
        data.onset_days = {
            (domain, day)
            for domain, day in con.execute(
                f"SELECT DISTINCT domain, start FROM onsets WHERE {onset_where} "
                "AND list_contains(?, domain)",
                [*onset_params, names],
            ).fetchall()
        }
    not_blocked = list(NOT_BLOCKED)
    for domain, day, outcome, n, is_top in con.execute(
        f"""
        SELECT domain, day, outcome, sum(count), list_contains(?, domain) FROM outcomes
        WHERE {where} AND NOT list_contains(?, outcome) GROUP BY ALL
        """,
        [names, *params, not_blocked],
    ).fetchall():
        technique = _technique(outcome)
        if is_top:
            mix = data.blocked_by.setdefault((domain, day), {})
            mix[technique] = mix.get(technique, 0) + int(n)
        tkey = (technique, day)
        data.technique_days[tkey] = data.technique_days.get(tkey, 0) + int(n)
    for technique, n in con.execute(
        f"""
        SELECT split_part(outcome, '/', 1), count(DISTINCT domain) FROM outcomes
        WHERE {where} AND NOT list_contains(?, outcome) GROUP BY ALL
        """,
        [*params, not_blocked],
    ).fetchall():
        data.technique_domains[technique] = int(n)

    data.outcomes = [
        (o, int(n))
        for o, n in con.execute(
            f"SELECT outcome, sum(count) AS n FROM outcomes WHERE {where} "
            "GROUP BY outcome ORDER BY n DESC, outcome",
            params,
        ).fetchall()
    ]

    onset_where, onset_params = onsets_where(f)
    total_onsets = con.execute(
        f"SELECT count(*) FROM onsets WHERE {onset_where}", onset_params
    ).fetchone()
    data.events_total = int(total_onsets[0]) if total_onsets else 0
    cur = con.execute(
        f"""
        SELECT probe_cc, probe_asn, domain, start, "end", peak_share, p_value, baseline_share,
               days_held, measurements
        FROM onsets WHERE {onset_where}
        ORDER BY start, probe_cc, probe_asn, domain LIMIT {MAX_TABLE_ROWS}
        """,
        onset_params,
    )
    cols = [d[0] for d in cur.description or []]
    data.events = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    # techniques has no day: keep the rows whose seen interval meets the date range
    seen_where, seen_params = dataclasses.replace(f, since=None, until=None).where()
    if f.since is not None:
        seen_where += " AND last_seen >= ?"
        seen_params.append(dt.datetime.combine(f.since, dt.time(), dt.UTC))
    if f.until is not None:
        seen_where += " AND first_seen < ?"
        seen_params.append(dt.datetime.combine(f.until + dt.timedelta(days=1), dt.time(), dt.UTC))
    total_seen = con.execute(
        f"SELECT count(*) FROM techniques WHERE {seen_where}", seen_params
    ).fetchone()
    data.seen_total = int(total_seen[0]) if total_seen else 0
    cur = con.execute(
        f"""
        SELECT probe_cc, probe_asn, domain, outcome, first_seen, last_seen, count
        FROM techniques WHERE {seen_where}
        ORDER BY count DESC, probe_cc, probe_asn, domain, outcome LIMIT {MAX_TABLE_ROWS}
        """,
        seen_params,
    )
    cols = [d[0] for d in cur.description or []]
    data.seen = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    data.apps = _gather_apps(con, f)
    _gather_network(con, f, data)
    return data


# --- messaging apps ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Apps:
    """The messaging section: per app and day (endpoint "*") measured and blocked, the blocked
    measurements' techniques, and a table per country and app."""

    first_day: dt.date | None = None
    last_day: dt.date | None = None
    measured: dict[tuple[str, dt.date], int] = dataclasses.field(default_factory=dict)
    blocked_by: dict[tuple[str, dt.date], dict[str, int]] = dataclasses.field(default_factory=dict)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _gather_apps(con: duckdb.DuckDBPyConnection, f: Filters) -> _Apps | None:
    """None when the scope has no messaging measurement (or is one domain: apps have none)."""
    if f.domain is not None:
        return None
    where, params = f.where()
    apps = _Apps()
    for app, day, measured in con.execute(
        f"SELECT app, day, sum(measurements) FROM apps WHERE endpoint = '*' AND {where} "
        "GROUP BY ALL",
        params,
    ).fetchall():
        apps.measured[(app, day)] = int(measured)
    if not apps.measured:
        return None
    days = [day for _, day in apps.measured]
    apps.first_day, apps.last_day = min(days), max(days)
    # the technique of each blocked measurement of an app (its outcome's stage); copies of one
    # measurement counted once
    for app, day, outcome, n in con.execute(
        f"""
        SELECT app, CAST(day AS DATE), outcome, count(DISTINCT measurement_uid) FROM endpoints
        WHERE endpoint = '*' AND blocked AND {where} GROUP BY ALL
        """,
        params,
    ).fetchall():
        mix = apps.blocked_by.setdefault((app, day), {})
        technique = _technique(outcome)
        mix[technique] = mix.get(technique, 0) + int(n)
    cur = con.execute(
        f"""
        WITH whole AS (
            SELECT probe_cc, app, sum(measurements) AS measurements, sum(blocked) AS blocked,
                   round(sum(blocked) / sum(measurements), 4) AS blocked_share,
                   count(DISTINCT probe_asn) AS networks,
                   min(day) FILTER (WHERE blocked > 0) AS first_blocked,
                   max(day) FILTER (WHERE blocked > 0) AS last_blocked
            FROM apps WHERE endpoint = '*' AND {where} GROUP BY probe_cc, app
        ), ends AS (
            SELECT probe_cc, app, endpoint, sum(blocked) AS n
            FROM apps WHERE endpoint <> '*' AND blocked > 0 AND {where}
            GROUP BY probe_cc, app, endpoint
        ), worst AS (
            SELECT probe_cc, app,
                   string_agg(endpoint || ' ' || n, ', ' ORDER BY n DESC, endpoint)
                       FILTER (WHERE rank <= 4) AS failing_endpoints
            FROM (SELECT *, row_number() OVER (PARTITION BY probe_cc, app
                                               ORDER BY n DESC, endpoint) AS rank FROM ends)
            GROUP BY probe_cc, app
        )
        SELECT * FROM whole LEFT JOIN worst USING (probe_cc, app)
        ORDER BY blocked DESC, probe_cc, app LIMIT {MAX_TABLE_ROWS}
        """,
        params + params,
    )
    cols = [d[0] for d in cur.description or []]
    apps.rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    return apps


def _apps_html(apps: _Apps | None, f: Filters) -> str:
    """The "Messaging apps" section: a timeline per app and the table by country."""
    out = ["<h2>Messaging apps</h2>"]
    if apps is None or apps.first_day is None or apps.last_day is None:
        out.append('<p class="note">No messaging-app measurement in this scope.</p>')
        return "".join(out)
    first = f.since or apps.first_day
    last = f.until or apps.last_day
    out.append(
        '<p class="note">OONI\'s <code>telegram</code>, <code>whatsapp</code>, '
        "<code>signal</code> and <code>facebook_messenger</code> tests (and netvigil's own). "
        "An app is blocked in a measurement when the endpoints it needs failed (Telegram: "
        "every access point, or its web client; WhatsApp: every endpoint, the registration "
        "server or its web client; Signal: any backend; Facebook Messenger: any endpoint), "
        "coloured by the stage that failed; the table names the endpoints that failed most. "
        "Each bar is a day.</p>"
    )
    if first <= last:
        axis = _Axis.of(first, last)
        series: dict[str, _Series] = defaultdict(_Series)
        for (app, day), n in apps.measured.items():
            i = axis.index(day)
            if i is not None:
                series[app].measured[i] = series[app].measured.get(i, 0) + n
        for (app, day), mix in apps.blocked_by.items():
            i = axis.index(day)
            if i is not None:
                bar = series[app].blocked.setdefault(i, {})
                for technique, n in mix.items():
                    bar[technique] = bar.get(technique, 0) + n
        figures = []
        for app in sorted(series):
            total = sum(series[app].measured.values())
            blocked = sum(sum(mix.values()) for mix in series[app].blocked.values())
            figures.append(
                f'<figure><figcaption><span class="dom">{_e(app)}</span>'
                f'<span class="n">{blocked:,}/{total:,} blocked</span></figcaption>'
                f"{_domain_svg(app, series[app], axis)}</figure>"
            )
        out.append(f'<div class="charts">{"".join(figures)}</div>')
    out.append(
        _table(
            apps.rows,
            [
                "probe_cc",
                "app",
                "measurements",
                "blocked",
                "blocked_share",
                "networks",
                "first_blocked",
                "last_blocked",
                "failing_endpoints",
            ],
            numeric=["measurements", "blocked", "blocked_share", "networks"],
        )
    )
    return "".join(out)


def _gather_network(con: duckdb.DuckDBPyConnection, f: Filters, data: _Data) -> None:
    """The band of each network whose probes found it offline or degraded, and its periods.

    The status is the whole network's, not a domain's: ``--domain`` does not narrow it."""
    where, params = dataclasses.replace(f, domain=None).where()
    rows = con.execute(
        f"""
        WITH n AS (
            SELECT probe_cc, probe_asn FROM verdicts
            WHERE network_status IN ('offline', 'degraded') AND {where}
            GROUP BY ALL ORDER BY probe_cc, probe_asn LIMIT {MAX_NETWORK_BANDS}
        )
        SELECT probe_cc, probe_asn, day, network_status, count(*) FROM verdicts
        SEMI JOIN n USING (probe_cc, probe_asn)
        WHERE network_status IS NOT NULL AND {where} GROUP BY ALL
        """,
        params + params,
    ).fetchall()
    for cc, asn, day, status, n in rows:
        by_day = data.network_days.setdefault((cc, int(asn)), {})
        by_day.setdefault(day, {})[status] = int(n)
    period_where, period_params = dataclasses.replace(
        f, domain=None, since=None, until=None
    ).where()
    if f.since is not None:
        period_where += " AND last_day >= ?"
        period_params.append(f.since)
    if f.until is not None:
        period_where += " AND first_day <= ?"
        period_params.append(f.until)
    total = con.execute(
        f"SELECT count(*) FROM network_periods WHERE {period_where}", period_params
    ).fetchone()
    data.network_periods_total = int(total[0]) if total else 0
    cur = con.execute(
        f"""
        SELECT start, "end", probe_cc, probe_asn, status, measurements FROM network_periods
        WHERE {period_where} ORDER BY start, probe_cc, probe_asn, status LIMIT {MAX_TABLE_ROWS}
        """,
        period_params,
    )
    cols = [d[0] for d in cur.description or []]
    data.network_periods = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# --- charts ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Axis:
    """The x axis of every timeline: ``bars`` bars of ``size`` days from ``first``.

    A range longer than ``MAX_BARS`` days is drawn in buckets of several days (a multi-year
    archive stays readable, and the page stays small) rather than cut.
    """

    first: dt.date
    last: dt.date
    size: int
    bars: int

    @classmethod
    def of(cls, first: dt.date, last: dt.date) -> _Axis:
        ndays = (last - first).days + 1
        size = max(1, -(-ndays // MAX_BARS))
        return cls(first, last, size, -(-ndays // size))

    def index(self, day: dt.date) -> int | None:
        i = (day - self.first).days // self.size
        return i if 0 <= i < self.bars and day <= self.last else None

    def label(self, i: int) -> str:
        start = self.first + dt.timedelta(days=i * self.size)
        if self.size == 1:
            return start.isoformat()
        end = min(self.last, start + dt.timedelta(days=self.size - 1))
        return f"{start.isoformat()} to {end.isoformat()}"

    def short_label(self, i: int) -> str:
        return (self.first + dt.timedelta(days=i * self.size)).isoformat()

    @property
    def unit(self) -> str:
        return "day" if self.size == 1 else f"{self.size} days"


# Chart geometry, in the units of each SVG's viewBox. The SVGs are drawn 100 % wide (of their
# grid cell, see _CSS) and keep their aspect ratio, so text scales with the chart: 12 units
# are ~11 px in a two-column 1280 px page; a narrow screen gets 15 units (~10 px at 420 px)
# and three date ticks instead of five.
CHART_WIDTH = 600
_LEFT = 54  # the y axis and its labels (room for "100%" at a phone's larger font)
_RIGHT = 10
_TOP = 12  # room for the onset markers
_BOTTOM = 22  # date ticks
_MAX_BAR = 48  # a one-day chart draws one broad bar, not the whole width
_DATE_TICKS = 5


@dataclasses.dataclass
class _Series:
    """One domain's bars: measurements, blocked per technique, onset bars."""

    measured: dict[int, int] = dataclasses.field(default_factory=dict)
    blocked: dict[int, dict[str, int]] = dataclasses.field(default_factory=dict)
    events: set[int] = dataclasses.field(default_factory=set)


def _series(data: _Data, axis: _Axis) -> dict[str, _Series]:
    out: dict[str, _Series] = defaultdict(_Series)
    for (domain, day), n in data.measured.items():
        i = axis.index(day)
        if i is not None:
            series = out[domain]
            series.measured[i] = series.measured.get(i, 0) + n
    for (domain, day), mix in data.blocked_by.items():
        i = axis.index(day)
        if i is not None:
            bar = out[domain].blocked.setdefault(i, {})
            for technique, n in mix.items():
                bar[technique] = bar.get(technique, 0) + n
    for domain, day in data.onset_days:
        i = axis.index(day)
        if i is not None:
            out[domain].events.add(i)
    return out


def _slot(axis: _Axis, i: int) -> tuple[float, float]:
    """x and width of bar ``i`` inside the plot area."""
    slot = (CHART_WIDTH - _LEFT - _RIGHT) / axis.bars
    width = min(_MAX_BAR, slot * 0.85 if slot >= 4 else slot)
    return _LEFT + i * slot + (slot - width) / 2, width


def _frame(axis: _Axis, height: int, ticks: Sequence[tuple[float, str]], label: str) -> str:
    """The y axis (``ticks``: fraction of the height, label) with grid lines, the x axis
    with date ticks, and the whole SVG's opening tag."""
    total = _TOP + height + _BOTTOM
    parts = [
        f'<svg class="tl" viewBox="0 0 {CHART_WIDTH} {total}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="{_e(label)}">'
    ]
    right = CHART_WIDTH - _RIGHT
    for fraction, text in ticks:
        y = _TOP + height * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="ax yt" x="{_LEFT - 5}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(text)}</text>"
        )
    base = _TOP + height
    parts.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{base}"/>'
        f'<line class="axis" x1="{_LEFT}" x2="{right}" y1="{base}" y2="{base}"/>'
    )
    count = min(axis.bars, _DATE_TICKS)
    picks = sorted(
        {round(k * (axis.bars - 1) / (count - 1)) for k in range(count)} if count > 1 else {0}
    )
    for n, i in enumerate(picks):
        x, w = _slot(axis, i)
        cx = x + w / 2
        anchor = "middle"
        if len(picks) > 1 and n == 0 and cx - _LEFT < 34:
            anchor, cx = "start", max(cx - w / 2, _LEFT)
        elif len(picks) > 1 and n == len(picks) - 1 and right - cx < 34:
            anchor, cx = "end", min(cx + w / 2, right)
        # a phone shows the first, middle and last tick (the labels are larger there)
        minor = " minor" if len(picks) == _DATE_TICKS and n in (1, 3) else ""
        parts.append(
            f'<line class="axis" x1="{x + w / 2:.1f}" x2="{x + w / 2:.1f}" y1="{base}" '
            f'y2="{base + 4}"/><text class="ax xt{minor}" x="{cx:.1f}" y="{base + 17}" '
            f'text-anchor="{anchor}">{_e(axis.short_label(i))}</text>'
        )
    return "".join(parts)


def _domain_svg(domain: str, series: _Series, axis: _Axis) -> str:
    height = 80
    parts = [
        _frame(
            axis,
            height,
            [(0.0, "0%"), (0.5, "50%"), (1.0, "100%")],
            f"{domain}: blocked share per {axis.unit}",
        )
    ]
    for i in sorted(series.measured):
        measured = series.measured[i]
        x, w = _slot(axis, i)
        parts.append(
            f'<rect x="{x:.2f}" y="{_TOP}" width="{w:.2f}" height="{height}" '
            f'fill="{NO_BLOCK_COLOUR}"/>'
        )
        y = float(_TOP + height)
        mix = sorted(series.blocked.get(i, {}).items(), key=lambda kv: _technique_order(kv[0]))
        for technique, count in mix:
            h = height * min(count, measured) / measured
            y -= h
            parts.append(
                f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" '
                f'fill="{_colour(technique)}"/>'
            )
        tip = f"{axis.label(i)}: {sum(c for _, c in mix)}/{measured} blocked"
        if mix:
            tip += " (" + ", ".join(f"{t} {c}" for t, c in mix) + ")"
        if i in series.events:
            tip += " — onset"
            cx = x + w / 2
            parts.append(
                f'<path class="onset" d="M{cx - 5:.1f},0 L{cx + 5:.1f},0 L{cx:.1f},{_TOP - 1}Z" '
                f'fill="{ONSET_COLOUR}"/>'
            )
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height + _TOP}" '
            f'fill="transparent"><title>{_e(tip)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _network_svg(network: str, days: dict[dt.date, dict[str, int]], axis: _Axis) -> str:
    """One network's band: per bar, the shares of its measurements whose probe found the
    network offline (dark, from the bottom), degraded (yellow) and online (grey)."""
    height = 24
    parts = [_frame(axis, height, [], f"{network}: network status per {axis.unit}")]
    bars: dict[int, dict[str, int]] = {}
    for day, counts in days.items():
        i = axis.index(day)
        if i is not None:
            bar = bars.setdefault(i, {})
            for status, n in counts.items():
                bar[status] = bar.get(status, 0) + n
    for i in sorted(bars):
        counts = bars[i]
        total = sum(counts.values())
        if not total:
            continue
        x, w = _slot(axis, i)
        y = float(_TOP + height)
        for status in ("offline", "degraded", "online"):
            n = counts.get(status, 0)
            if not n:
                continue
            h = height * n / total
            y -= h
            parts.append(
                f'<rect class="net-{status}" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" '
                f'height="{h:.2f}" fill="{NETWORK_COLOURS[status]}"/>'
            )
        tip = f"{axis.label(i)}: " + ", ".join(
            f"{status} {counts[status]}"
            for status in ("offline", "degraded", "online")
            if counts.get(status)
        )
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height + _TOP}" '
            f'fill="transparent"><title>{_e(tip)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _technique_svg(technique: str, counts: dict[int, int], axis: _Axis) -> str:
    height = 70
    peak = max(counts.values(), default=0)
    ticks = [(0.0, "0")]
    if peak:
        ticks.append((1.0, f"{peak:,}"))
        if peak >= 2:
            ticks.append(((peak // 2) / peak, f"{peak // 2:,}"))
    parts = [_frame(axis, height, ticks, f"{technique}: blocked measurements per {axis.unit}")]
    for i in sorted(counts):
        count = counts[i]
        if not count or not peak:
            continue
        h = height * count / peak
        x, w = _slot(axis, i)
        parts.append(
            f'<rect x="{x:.2f}" y="{_TOP + height - h:.2f}" width="{w:.2f}" height="{h:.2f}" '
            f'fill="{_colour(technique)}"><title>{_e(axis.label(i))}: {count} blocked'
            "</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _outcomes_svg(outcomes: list[tuple[str, int]]) -> str:
    total = sum(n for _, n in outcomes) or 1
    shown = outcomes[:40]
    row, label_w, bar_w = 22, 150, 200
    width = label_w + bar_w + 95
    height = row * len(shown) + 4
    parts = [
        f'<svg class="mix" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="outcome mix">'
    ]
    peak = max((n for _, n in shown), default=1)
    for i, (outcome, n) in enumerate(shown):
        y = i * row + 2
        w = bar_w * n / peak
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" class="lb">{_e(outcome)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.2f}" height="{row - 5}" '
            f'fill="{_outcome_colour(outcome)}"><title>{_e(outcome)}: {n}</title></rect>'
            f'<text x="{label_w + w + 4:.2f}" y="{y + 14}" class="lb">{n} '
            f"({100 * n / total:.1f}%)</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# --- the page ----------------------------------------------------------------------------------

_CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;
max-width:1240px;color:#1d232a;padding:0 1em;overflow-wrap:break-word}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
.sub{color:#59636e}.cards{display:flex;flex-wrap:wrap;gap:.6em;margin:1em 0}
.card{border:1px solid #d8dde3;border-radius:6px;padding:.4em .7em;min-width:8.5em;flex:1 1 8.5em}
.card b{display:block;font-size:1.4em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .6em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top;white-space:nowrap}th{background:#f5f7f9}td.n{text-align:right}
.dom{font-family:ui-monospace,monospace;word-break:break-all}td.dom{white-space:normal;min-width:10em}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,500px),1fr));
gap:1em 1.5em}
figure{margin:0;min-width:0}figcaption{font-size:.95em;margin-bottom:.1em}
figcaption .n{color:#59636e;margin-left:.5em}
svg.tl,svg.mix{display:block;width:100%;height:auto}svg.mix{max-width:520px}
.ax{font-size:12px;fill:#3c4650}.lb{font-size:13px;fill:#1d232a}
.grid{stroke:#d8dde3;stroke-width:1}.axis{stroke:#59636e;stroke-width:1}
.key span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 .8em;vertical-align:-1px}
.key i{display:inline-block;width:0;height:0;margin:0 .3em 0 .8em;border:.45em solid transparent;
border-top:.7em solid #000;border-bottom:0}
.note{color:#59636e}footer{margin-top:3em;color:#59636e;font-size:.9em;border-top:1px solid #ddd}
@media (max-width:600px){body{font-size:14px;padding:0 .6em}td,th{padding:.2em .35em}
.ax{font-size:15px}.lb{font-size:15px}.xt.minor{display:none}}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _key() -> str:
    items = [*TECHNIQUE_COLOURS.items(), ("other", OTHER_COLOUR), ("not blocked", NO_BLOCK_COLOUR)]
    return (
        '<p class="key">'
        + "".join(f'<span style="background:{c}"></span>{_e(t)}' for t, c in items)
        + "<i></i>onset of blocking</p>"
    )


def _cell(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return _e(value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"))
    if isinstance(value, float):
        return _e(f"{value:.3f}")
    if isinstance(value, list | tuple):
        return _e(", ".join(str(v) for v in value))
    return _e(value)


# Short headers: a table must stay narrow enough for a phone (the full names are in --json of
# ``netvigil query`` and in the Method section).
_HEADERS = {
    "probe_cc": "cc",
    "probe_asn": "asn",
    "peak_share": "peak",
    "baseline_share": "baseline",
    "p_value": "p",
    "days_held": "days",
    "measurements": "measured",
    "blocked_share": "share",
    "blocked_domains": "blocked domains",
    "first_seen": "first seen",
    "last_seen": "last seen",
    "first_day": "first day",
    "last_day": "last day",
    "first_blocked": "first blocked",
    "last_blocked": "last blocked",
    "failing_endpoints": "endpoints failing most",
}


def _table(rows: list[dict[str, Any]], columns: Sequence[str], numeric: Sequence[str] = ()) -> str:
    head = "".join(
        f'<th title="{_e(c)}">{_e(_HEADERS.get(c, c.replace("_", " ")))}</th>' for c in columns
    )
    body = []
    for row in rows:
        cells = []
        for c in columns:
            cls = ' class="n"' if c in numeric else (' class="dom"' if c == "domain" else "")
            cells.append(f"<td{cls}>{_cell(row.get(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # a wide table scrolls inside its own box: the page itself never scrolls sideways
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _provenance(out: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"verdict_files": len(verdict_files(out))}
    try:
        with open(out / "ingest.json", encoding="utf-8") as handle:
            ingest = json.load(handle)
    except (OSError, ValueError):
        return info
    if isinstance(ingest, dict):
        totals = ingest.get("totals")
        if isinstance(totals, dict):
            for key in ("files", "measurements", "skipped", "corrupt", "duplicates"):
                if key in totals:
                    info[f"input_{key}"] = totals[key]
        for key in ("engine", "seconds"):
            if key in ingest:
                info[key] = ingest[key]
    return info


def _render(
    data: _Data,
    *,
    title: str,
    f: Filters,
    top: int,
    truncated_domains: bool,
    networks: list[dict[str, Any]],
    networks_truncated: bool,
    provenance: dict[str, Any],
    generated: dt.datetime,
) -> tuple[str, int]:
    out: list[str] = []
    first = f.since or data.first_day
    last = f.until or data.last_day
    axis = _Axis.of(first, last) if first and last and first <= last else None
    ndays = (last - first).days + 1 if axis and first and last else 0
    scope = []
    scope.append(f"country {f.cc}" if f.cc else "all countries")
    if f.asn is not None:
        scope.append(f"network AS{f.asn}")
    if f.domain is not None:
        scope.append(f"domain {f.domain}")
    if first and last:
        scope.append(f"{first.isoformat()} to {last.isoformat()} (UTC days)")
    out.append(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
    )
    out.append(f'<h1>{_e(title)}</h1><p class="sub">{_e(", ".join(scope))}</p>')

    judged = data.measurements - data.offline  # a network offline judged no site
    share = data.blocked / judged if judged else 0.0
    cards = [
        ("measurements", f"{data.measurements:,}"),
        ("blocked", f"{data.blocked:,} ({100 * share:.1f}%)"),
        ("domains measured", f"{data.domains:,}"),
        ("domains blocked", f"{data.blocked_domains:,}"),
        ("networks", f"{data.networks:,}"),
        ("countries", ", ".join(data.countries[:12]) + (" …" if len(data.countries) > 12 else "")),
        ("days", f"{ndays:,}"),
        ("onsets of blocking", f"{data.events_total:,}"),
    ]
    if data.offline:
        cards.append(("network offline: not judged", f"{data.offline:,}"))
    out.append(
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards)
        + "</div>"
    )
    if not data.measurements:
        out.append('<p class="note">No measurements match this scope.</p>')
    unit = axis.unit if axis else "day"
    if axis and axis.size > 1:
        out.append(
            f'<p class="note">The range has {ndays:,} days: each bar of the timelines is '
            f"{axis.size} days.</p>"
        )

    # timelines per domain
    series = _series(data, axis) if axis else {}
    out.append("<h2>Timeline per domain</h2>")
    out.append(
        f'<p class="note">Each bar is a {unit} with measurements: its height is the share of '
        "measurements that were blocked, coloured by technique; a grey bar was measured "
        "without blocking, a gap had no measurements. Hover for counts.</p>"
    )
    out.append(_key())
    if truncated_domains:
        out.append(
            f'<p class="note">Showing the {top} domains with the most blocked measurements of '
            f"{data.blocked_domains:,} blocked domains.</p>"
        )
    if data.top:
        figures = []
        for t in data.top:
            chart = _domain_svg(t["domain"], series[t["domain"]], axis) if axis else ""
            figures.append(
                f'<figure><figcaption><span class="dom">{_e(t["domain"])}</span>'
                f'<span class="n">{t["blocked"]:,}/{t["measurements"]:,} blocked, '
                f"{t['networks']} network{'s' if t['networks'] != 1 else ''}</span>"
                f"</figcaption>{chart}</figure>"
            )
        out.append(f'<div class="charts">{"".join(figures)}</div>')
    else:
        out.append('<p class="note">No blocked domain.</p>')

    _render_network(out, data, axis, unit)

    # timelines per technique
    out.append("<h2>Timeline per technique</h2>")
    out.append(
        f'<p class="note">Blocked measurements per {unit} by the stage at which blocking '
        "happened (all domains; each chart has its own scale).</p>"
    )
    by_technique: dict[str, dict[int, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for (technique, day), n in data.technique_days.items():
        totals[technique] += n
        i = axis.index(day) if axis else None
        if i is not None:
            by_technique[technique][i] = by_technique[technique].get(i, 0) + n
    techniques = sorted(totals, key=_technique_order)
    if techniques and axis:
        figures = [
            f'<figure><figcaption>{_e(t)}<span class="n">{totals[t]:,} blocked, '
            f"{data.technique_domains.get(t, 0):,} domains</span></figcaption>"
            f"{_technique_svg(t, by_technique[t], axis)}</figure>"
            for t in techniques
        ]
        out.append(f'<div class="charts">{"".join(figures)}</div>')
    else:
        out.append('<p class="note">No blocking.</p>')

    out.append(_apps_html(data.apps, f))

    out.append("<h2>Outcome mix</h2>")
    if data.outcomes:
        out.append(_outcomes_svg(data.outcomes))
        if len(data.outcomes) > 40:
            out.append(
                f'<p class="note">The 40 most frequent of {len(data.outcomes)} outcomes.</p>'
            )
    else:
        out.append('<p class="note">No measurements.</p>')

    out.append("<h2>Onsets of blocking</h2>")
    out.append(
        '<p class="note">A day is flagged for a country, network and domain when its blocked '
        "share is at least 0.5 above the pooled share of the 7 days before, with at least 3 "
        "measurements that day and data on at least 3 of those 7 days, and when chance "
        "explains the rise poorly (one-sided Fisher's exact test, <b>p</b> at most 0.05). "
        "An onset is one row: it starts on a flagged day and holds while each later measured "
        "day stays that far above the baseline; <b>end</b> is the last day it held, "
        "<i>ongoing</i> when it still held on the last measured day. <b>peak</b> is the "
        "highest daily blocked share while it held.</p>"
    )
    if data.events:
        rows_ev = [
            # p-values span orders of magnitude: two significant digits, not three decimals
            {
                **ev,
                "end": ev["end"] or "ongoing",
                "peak_share": f"{100 * ev['peak_share']:.0f}%",
                "baseline_share": f"{100 * ev['baseline_share']:.0f}%",
                "p_value": f"{ev['p_value']:.2g}",
            }
            for ev in data.events
        ]
        out.append(
            _table(
                rows_ev,
                [
                    "start",
                    "end",
                    "probe_cc",
                    "probe_asn",
                    "domain",
                    "peak_share",
                    "p_value",
                    "baseline_share",
                    "days_held",
                    "measurements",
                ],
                numeric=[
                    "probe_asn",
                    "peak_share",
                    "p_value",
                    "baseline_share",
                    "days_held",
                    "measurements",
                ],
            )
        )
        if data.events_total > len(data.events):
            out.append(
                f'<p class="note">The first {len(data.events)} of {data.events_total:,}.</p>'
            )
    else:
        out.append('<p class="note">No onset of blocking.</p>')

    out.append("<h2>First and last seen</h2>")
    out.append(
        '<p class="note">Each blocking outcome per country, network and domain: when it was first '
        "and last measured (over the whole run, for rows that meet the range).</p>"
    )
    if data.seen:
        out.append(
            _table(
                data.seen,
                ["probe_cc", "probe_asn", "domain", "outcome", "first_seen", "last_seen", "count"],
                numeric=["probe_asn", "count"],
            )
        )
        if data.seen_total > len(data.seen):
            out.append(
                f'<p class="note">The {len(data.seen)} most frequent of {data.seen_total:,}.</p>'
            )
    else:
        out.append('<p class="note">No blocking.</p>')

    out.append("<h2>Networks</h2>")
    if networks:
        out.append(
            _table(
                networks,
                [
                    "probe_cc",
                    "probe_asn",
                    "measurements",
                    "blocked",
                    "blocked_share",
                    "domains",
                    "blocked_domains",
                    "techniques",
                    "first_day",
                    "last_day",
                ],
                numeric=["probe_asn", "measurements", "blocked", "blocked_share", "domains"],
            )
        )
        if networks_truncated:
            out.append(f'<p class="note">The {len(networks)} networks with most blocking.</p>')
    else:
        out.append('<p class="note">No network.</p>')

    out.append("<h2>Method</h2>")
    out.append(
        "<p>Every measurement gets a verdict from netvigil's verdict engine "
        "(<code>netvigil.verdict.analyze</code>), the same function the probe and "
        "<code>netvigil analyze</code> use: OONI's own fields plus a precise outcome such as "
        "<code>dns/nxdomain</code>, <code>tls/interception</code> or "
        "<code>http/blockpage</code>, with a confidence between 0 and 1 and the evidence. "
        "A measurement is <i>blocked</i> when its outcome is a form of blocking; "
        "<code>down</code>, <code>unknown</code>, <code>unsupported</code>, "
        "<code>captive-portal</code>, <code>network/offline</code> and "
        "<code>network/degraded</code> are not counted as blocking (the last two: the probe "
        "found its own network offline, or failing as the site did; they are counted apart "
        "and left out of the shares and the onsets). The technique is the stage "
        "(DNS, TCP, TLS, HTTP) at which blocking was seen. Blockpages are recognised by OONI's, "
        "Censored Planet's and Citizen Lab's fingerprints; interception roots are named from "
        "netvigil's database.</p>"
        "<p>Only measurements of a URL count here (tests without a domain are left out). Days "
        "are UTC. A single measurement can be wrong (a flaky network looks like a timeout): "
        "shares over several measurements and networks, and the confidence of the verdicts, "
        "say more than any one row. Events compare a day with the week before it and need "
        "enough data on both sides; sparse data shows no event rather than a false one.</p>"
    )

    prov = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in provenance.items())
    out.append(
        f"<footer><p>Generated by netvigil on {_e(generated.strftime('%Y-%m-%d %H:%M:%SZ'))}"
        f" from a pipeline output: {_e(prov)}.</p></footer></body></html>"
    )
    return "".join(out), ndays


def _render_network(out: list[str], data: _Data, axis: _Axis | None, unit: str) -> None:
    """ "Network status": a band per network its probes found offline or degraded, and the
    periods, so that a shutdown reads as one, never as blocking of the sites."""
    out.append('<h2 id="network-status">Network status</h2>')
    out.append(
        f'<p class="note">Before and during a run the probe checks its resolver, its control '
        "helper and reference targets (<code>test_keys.x_network_status</code>). When none "
        "answers the network is <i>offline</i>: its measurements get "
        "<code>network/offline</code>, no site is blamed. When some fail it is "
        "<i>degraded</i>. Each band shows, per "
        f"{_e(unit)}, the share of a network's measurements made offline (dark), degraded "
        "(yellow) and online (grey); hover for counts. The table lists each period: from the "
        "first to the last measurement of a run of one status.</p>"
    )
    if not data.network_days and not data.network_periods:
        out.append('<p class="note">No probe found its network offline or degraded.</p>')
        return
    if axis is not None and data.network_days:
        key = "".join(
            f'<span style="background:{c}"></span>{_e(s)}' for s, c in NETWORK_COLOURS.items()
        )
        out.append(f'<p class="key">{key}</p>')
        figures = []
        for (cc, asn), days in sorted(data.network_days.items()):
            offline = sum(c.get("offline", 0) for c in days.values())
            degraded = sum(c.get("degraded", 0) for c in days.values())
            name = f"{cc} AS{asn}"
            figures.append(
                f'<figure class="net-band"><figcaption>{_e(name)}<span class="n">'
                f"{offline:,} offline, {degraded:,} degraded</span></figcaption>"
                f"{_network_svg(name, days, axis)}</figure>"
            )
        out.append(f'<div class="charts">{"".join(figures)}</div>')
    if data.network_periods:
        out.append(
            _table(
                data.network_periods,
                ["start", "end", "probe_cc", "probe_asn", "status", "measurements"],
                numeric=["probe_asn", "measurements"],
            )
        )
        if data.network_periods_total > len(data.network_periods):
            out.append(
                f'<p class="note">The first {len(data.network_periods)} of '
                f"{data.network_periods_total:,} periods.</p>"
            )


def write_report(
    out_dir: Path,
    html_path: Path,
    *,
    cc: str | None = None,
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    title: str | None = None,
    asn: str | int | None = None,
    domain: str | None = None,
    top: int = DEFAULT_TOP,
) -> ReportSummary:
    """Write the report of ``OUT`` (optionally one country, network or domain, a range of UTC
    days) to ``html_path``.

    Raises ``QueryError`` (one line) on bad input or an ``OUT`` without pipeline output.
    """
    if not 1 <= top <= 500:
        raise QueryError("--top must be between 1 and 500")
    f = make_filters(cc=cc, asn=asn, domain=domain, since=since, until=until)
    out = Path(out_dir)
    with open_pipeline(out) as con:
        data = _gather(con, f, top + 1)
        networks = answer(con, "networks", f, limit=MAX_TABLE_ROWS)
    truncated = len(data.top) > top
    data.top = data.top[:top]
    default_title = "netvigil: censorship report" + "".join(
        f" — {part}"
        for part in (f.cc, f"AS{f.asn}" if f.asn is not None else None, f.domain)
        if part
    )
    page, ndays = _render(
        data,
        title=title or default_title,
        f=f,
        top=top,
        truncated_domains=truncated,
        networks=networks.rows,
        networks_truncated=networks.truncated,
        provenance=_provenance(out),
        generated=dt.datetime.now(dt.UTC),
    )
    encoded = page.encode("utf-8")
    html_path = Path(html_path)
    tmp = html_path.with_name(f".{html_path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(encoded)
        os.replace(tmp, html_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise QueryError(f"{html_path}: cannot write ({exc.strerror or exc})") from None
    return ReportSummary(
        path=html_path,
        measurements=data.measurements,
        blocked=data.blocked,
        blocked_domains=int(data.blocked_domains),
        domains_shown=len(data.top),
        events=data.events_total,
        days=ndays,
        truncated=truncated,
        bytes=len(encoded),
    )


# --- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    try:
        summary = write_report(
            Path(args.out),
            Path(args.html),
            cc=args.cc,
            since=args.since,
            until=args.until,
            title=args.title,
            top=args.top,
            asn=getattr(args, "asn", None),
            domain=getattr(args, "domain", None),
        )
    except QueryError as exc:
        print(textsafe.visible(f"netvigil report: {exc}"), file=sys.stderr)
        return 2
    more = f" (top {summary.domains_shown} shown)" if summary.truncated else ""
    print(
        textsafe.visible(
            f"wrote {summary.path} ({summary.bytes:,} bytes): {summary.measurements:,} "
            f"measurements, {summary.blocked:,} blocked, {summary.blocked_domains:,} blocked "
            f"domains{more}, {summary.events:,} onset{'s' if summary.events != 1 else ''} of blocking"
        )
    )
    return 0
