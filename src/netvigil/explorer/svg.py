"""Charts drawn on the server as SVG: a daily timeline stacked by outcome, onsets marked.

The SVG goes through :mod:`.html` like everything else (labels are escaped text); colours are
presentation attributes chosen here from the outcome's stage, never taken from data. Each chart
has a ``<title>`` and a ``<desc>`` (``role="img"``, ``aria-labelledby``) saying what it shows,
and every bar a ``<title>`` with its day, outcome and count (a tooltip, and for screen readers).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Mapping, Sequence

from .html import Safe, el

__all__ = ["colour", "nice_ticks", "timeline"]

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 40

_COLOURS = {
    "ok": "#3a9d5d",
    "down": "#9a9a9a",
    "unknown": "#c4c4c4",
    "captive-portal": "#b0a27a",
    "dns": "#e08a1e",
    "tcp": "#8e5bbf",
    "tls": "#d33d3d",
    "http": "#2f74c0",
}
_SHADES = ("", "cc", "99", "77")
_ids = itertools.count(1)


def colour(outcome: str) -> str:
    """A fixed colour per outcome: its stage's hue, varied a little within the stage."""
    if outcome in _COLOURS:
        return _COLOURS[outcome]
    stage, _, kind = outcome.partition("/")
    base = _COLOURS.get(stage, "#6d6d6d")
    return base + _SHADES[sum(map(ord, kind)) % len(_SHADES)]


def nice_ticks(top: float, count: int = 4) -> list[int]:
    """Round y-axis ticks from 0 to at least ``top``."""
    if top <= 0:
        return [0, 1]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(1, int(step))
    return list(range(0, math.ceil(top / step) * step + 1, step))


def timeline(
    title: str,
    days: Sequence[dt.date],
    counts: Mapping[str, Mapping[dt.date, int]],
    onsets: Mapping[dt.date, str] | None = None,
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Safe:
    """Stacked daily bars: ``counts[outcome][day]``; ``onsets[day]`` a label for a marker."""
    onsets = onsets or {}
    uid = f"chart{next(_ids)}"
    outcomes = sorted(counts, key=lambda o: (o != "ok", o.split("/")[0], o))
    totals = {d: sum(counts[o].get(d, 0) for o in outcomes) for d in days}
    ticks = nice_ticks(max(totals.values(), default=0))
    top = ticks[-1] or 1
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    n = max(len(days), 1)
    slot = plot_w / n
    bar = max(1.0, slot * 0.8)

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * v / top

    parts: list[Safe] = []
    for t in ticks:
        parts.append(
            el(
                "line",
                {
                    "x1": LEFT,
                    "x2": width - RIGHT,
                    "y1": f"{y(t):.1f}",
                    "y2": f"{y(t):.1f}",
                    "stroke": "#e3e3e3",
                },
            )
        )
        parts.append(
            el(
                "text",
                {"x": LEFT - 6, "y": f"{y(t) + 4:.1f}", "text-anchor": "end", "class": "tick"},
                f"{t:,}",
            )
        )
    parts.append(
        el(
            "text",
            {
                "x": 12,
                "y": TOP + plot_h / 2,
                "class": "axis-label",
                "transform": f"rotate(-90 12 {TOP + plot_h / 2:.0f})",
                "text-anchor": "middle",
            },
            "measurements",
        )
    )
    every = max(1, math.ceil(n / 8))
    for i, d in enumerate(days):
        x = LEFT + i * slot + (slot - bar) / 2
        base = 0
        for o in outcomes:
            v = counts[o].get(d, 0)
            if not v:
                continue
            parts.append(
                el(
                    "rect",
                    {
                        "x": f"{x:.1f}",
                        "y": f"{y(base + v):.1f}",
                        "width": f"{bar:.1f}",
                        "height": f"{y(base) - y(base + v):.1f}",
                        "fill": colour(o),
                        "class": "bar",
                    },
                    el("title", None, f"{d.isoformat()}: {o} {v:,}"),
                )
            )
            base += v
        if i % every == 0:
            parts.append(
                el(
                    "text",
                    {
                        "x": f"{x + bar / 2:.1f}",
                        "y": height - BOTTOM + 16,
                        "text-anchor": "middle",
                        "class": "tick",
                    },
                    d.strftime("%d %b"),
                )
            )
        if d in onsets:
            cx = x + bar / 2
            parts.append(
                el(
                    "g",
                    {"class": "onset"},
                    el("title", None, f"onset {d.isoformat()}: {onsets[d]}"),
                    el(
                        "line",
                        {
                            "x1": f"{cx:.1f}",
                            "x2": f"{cx:.1f}",
                            "y1": TOP,
                            "y2": TOP + plot_h,
                            "stroke": "#000",
                            "stroke-dasharray": "3 3",
                        },
                    ),
                    el(
                        "path",
                        {
                            "d": f"M{cx - 5:.1f} {TOP} L{cx + 5:.1f} {TOP} L{cx:.1f} {TOP + 8}",
                            "fill": "#000",
                        },
                    ),
                )
            )
    if days:
        parts.append(
            el(
                "text",
                {"x": LEFT, "y": height - 6, "class": "tick"},
                f"{days[0].isoformat()} … {days[-1].isoformat()} (UTC days)",
            )
        )
    parts.append(
        el("line", {"x1": LEFT, "x2": LEFT, "y1": TOP, "y2": TOP + plot_h, "stroke": "#555"})
    )
    parts.append(
        el(
            "line",
            {
                "x1": LEFT,
                "x2": width - RIGHT,
                "y1": TOP + plot_h,
                "y2": TOP + plot_h,
                "stroke": "#555",
            },
        )
    )
    total = sum(totals.values())
    desc = f"{total:,} measurements over {len(days)} days, stacked by outcome" + (
        f"; {len(onsets)} onset(s) of blocking marked" if onsets else ""
    )
    svg = el(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {width} {height}",
            "role": "img",
            "aria-labelledby": f"{uid}-t {uid}-d",
            "class": "chart",
        },
        el("title", {"id": f"{uid}-t"}, title),
        el("desc", {"id": f"{uid}-d"}, desc),
        parts,
    )
    legend = el(
        "ul",
        {"class": "legend"},
        [
            el(
                "li",
                None,
                el(
                    "svg",
                    {"width": 12, "height": 12, "aria-hidden": "true"},
                    el("rect", {"width": 12, "height": 12, "fill": colour(o)}),
                ),
                " ",
                o,
            )
            for o in outcomes
        ],
        el("li", None, "▼ onset of blocking") if onsets else None,
    )
    return el("figure", {"class": "timeline"}, svg, el("figcaption", None, title), legend)
