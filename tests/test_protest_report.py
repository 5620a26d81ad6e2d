"""The protest-day report: rounds as columns, the event rule per round, the offline band apart."""

from __future__ import annotations

import dataclasses

from netvigil.testbed.protest_report import EndpointRow, VerdictRow, build_timeline, render_html

STARTED = 1_700_000_000.0
EVERY = 10.0
PHASES = [
    {"name": "before", "start_seconds": 0, "description": "calm", "shutdown": False, "rules": []},
    {
        "name": "messaging",
        "start_seconds": 40,
        "description": "apps restricted",
        "shutdown": False,
        "rules": ["messaging/rule1:tls-reset"],
    },
    {"name": "off", "start_seconds": 70, "description": "cut", "shutdown": True, "rules": []},
    {"name": "restored", "start_seconds": 100, "description": "", "shutdown": False, "rules": []},
]
ROUNDS = 13  # offsets 0..120


def _meta() -> dict[str, object]:
    return {
        "started_at": STARTED,
        "every": EVERY,
        "phases": PHASES,
        "rounds": [{"offset": r * EVERY + 0.3, "report_id": f"r{r}"} for r in range(ROUNDS)],
    }


def _rows(offline_verdicts: bool) -> list[VerdictRow]:
    """What a probe would report: chat blocked from 40 s, everything failing 70-100 s."""
    rows = []
    for r in range(ROUNDS):
        offset = r * EVERY
        for domain in ("chat.example", "news.example"):
            for _scheme in ("http", "https"):
                if 70 <= offset < 100:
                    outcome = "network/offline" if offline_verdicts else "dns/timeout"
                    blocked = not offline_verdicts
                elif domain == "chat.example" and 40 <= offset < 100:
                    outcome, blocked = "tls/reset", True
                else:
                    outcome, blocked = "ok", False
                rows.append(
                    VerdictRow(
                        f"r{r}", STARTED + offset, domain, "web_connectivity", outcome, blocked
                    )
                )
    return rows


def test_messaging_onset_then_offline_band_then_restoration() -> None:
    timeline = build_timeline(_rows(offline_verdicts=True), _meta())
    assert [(o.domain, o.start_round, o.end_round) for o in timeline.onsets] == [
        ("chat.example", 4, 6)
    ]
    assert sorted(r for r, n in timeline.offline.items() if n) == [7, 8, 9]
    assert timeline.restored_round() == 10
    story = timeline.story()
    assert [line.split()[2] for line in story] == ["onset", "network", "restored:"]
    assert story[0].startswith("+40 s") and story[1].startswith("+70 s")
    # offline rounds never count as blocking of a site
    assert all(not timeline.cells.get((d, r)) for d in timeline.domains for r in (7, 8, 9))
    assert timeline.phase_of_round(7) == PHASES[2]


def test_without_offline_verdicts_a_shutdown_reads_as_blocking_of_every_site() -> None:
    # What the issue is about: a probe that does not know the network is off blames each site.
    timeline = build_timeline(_rows(offline_verdicts=False), _meta())
    assert {o.domain for o in timeline.onsets if o.start_round == 7} == {"news.example"}
    assert not timeline.offline


def test_rows_are_placed_by_time_when_their_report_is_unknown() -> None:
    rows = [
        VerdictRow("elsewhere", STARTED + 20, "a.example", "web_connectivity", "ok", False),
        VerdictRow("elsewhere", STARTED + 29.0, "a.example", "web_connectivity", "ok", False),
    ]
    timeline = build_timeline(rows, _meta())
    assert timeline.measured == {2: 2}  # 29 s (whole seconds) may be 29.9: still round 3


def test_a_messaging_app_measurement_is_a_row_of_its_own() -> None:
    rows = [
        VerdictRow(f"r{r}", STARTED + r * EVERY, "", "telegram", outcome, blocked)
        for r in range(ROUNDS)
        for outcome, blocked in [("tcp/timeout", True) if r >= 4 else ("ok", False)]
    ]
    # One measurement per round is no evidence for the event rule...
    assert not build_timeline(rows, _meta()).onsets
    # ...its endpoints are: 6 data centres, all timing out from round 5.
    rows = [dataclasses.replace(r, uid=f"u{i}") for i, r in enumerate(rows)]
    endpoints = [EndpointRow(r.uid, f"dc{n}", r.blocked) for r in rows for n in range(6)]
    timeline = build_timeline(rows, _meta(), endpoints)
    assert timeline.domains == ["telegram (app)"]
    assert [(o.domain, o.start_round) for o in timeline.onsets] == [("telegram (app)", 4)]


def test_report_escapes_what_measurements_say() -> None:
    rows = [
        VerdictRow("r0", STARTED, "<script>x</script>.example", "web_connectivity", "ok", False)
    ]
    page = render_html(build_timeline(rows, _meta()), "t <b>")
    assert "<script>" not in page and "&lt;script&gt;" in page and "t &lt;b&gt;" in page
