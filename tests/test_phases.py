"""Phases in a profile: validation, the censor in force at each offset, per-phase truth, the
nftables of each phase, and the agents consulting the testbed's clock (no testbed needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from netvigil.testbed import topology
from netvigil.testbed.dns_servers import injection_for, isp_answers
from netvigil.testbed.middlebox import HttpRequest, http_rule, tls_rule
from netvigil.testbed.plan import CLOCK_FILE, Plan, make_plan
from netvigil.testbed.profile import ProfileError, load_profile, offset_seconds, parse_profile
from netvigil.testbed.truth import ground_truth, messaging_truth, phase_truth, truth_at

PHASED = """
name = "phased"
domains = ["dns.example", "ip.example", "tls.example", "http.example", "calm.example"]

[[rule]]
action = "http-blockpage"
host = "calm.example"

[[phase]]
name = "open"
start = "0s"
description = "nothing blocked but calm.example's HTTP"

[[phase]]
name = "filtered"
start = "90s"

[[phase.rule]]
action = "dns-nxdomain"
domain = "dns.example"

[[phase.rule]]
action = "ip-drop"
domain = "ip.example"

[[phase.rule]]
action = "tls-reset"
sni = "tls.example"

[[phase.rule]]
action = "http-reset"
host = "http.example"

[[phase.rule]]
action = "dns-inject"
domain = "calm.example"

[[phase]]
name = "off"
start = "2m"
shutdown = true

[[phase]]
name = "back"
start = "1.5h"
"""


def plan() -> Plan:
    return make_plan(parse_profile(PHASED))


def error(text: str) -> str:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, source="p.toml")
    message = str(caught.value)
    assert "\n" not in message and " — " in message, message
    return message


def test_offsets() -> None:
    assert [offset_seconds(t) for t in ("0s", "90s", "2m", "1.5h")] == [0, 90, 120, 5400]
    for bad in ("", "90", "s", "-5s", "5d", "1e3s"):
        with pytest.raises(ValueError):
            offset_seconds(bad)


def test_phases_are_parsed_in_order_with_their_rules() -> None:
    profile = parse_profile(PHASED)
    assert [(p.name, p.start_seconds, p.shutdown) for p in profile.phases] == [
        ("open", 0, False),
        ("filtered", 90, False),
        ("off", 120, True),
        ("back", 5400, False),
    ]
    filtered = profile.phases[1]
    assert [r.id for r in filtered.rules][:2] == [
        "filtered/rule1:dns-nxdomain",
        "filtered/rule2:ip-drop",
    ]
    assert filtered.rules[0].line == PHASED.splitlines().index("[[phase.rule]]") + 1
    assert [r.id for r in profile.rules] == ["rule1:http-blockpage"]


def test_a_profile_without_phases_plans_as_before() -> None:
    profile = load_profile("kz-2024")
    assert profile.phases == ()
    kz = make_plan(profile)
    assert kz.at(0) is kz and kz.at(1e6) is kz and kz.now() is kz
    assert kz.all_rules == kz.rules
    assert "phase" not in ground_truth(kz)[0].to_dict()


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (
            '[[phase]]\nname = "a"\nstart = "5s"\n',
            ":3: the first phase 'a' starts at 5s, not at 0s",
        ),
        (
            '[[phase]]\nname = "a"\nstart = "0s"\n[[phase]]\nname = "b"\nstart = "0s"\n',
            ":6: phase 'b' starts at 0s, the same time as phase 'a' (0s) — list the phases "
            "in time order",
        ),
        (
            '[[phase]]\nname = "a"\nstart = "0s"\n[[phase]]\nname = "b"\nstart = "2m"\n'
            '[[phase]]\nname = "c"\nstart = "60s"\n',
            ":9: phase 'c' starts at 60s, before phase 'b' (2m)",
        ),
        ('[[phase]]\nname = "a"\nstart = "soon"\n', ":3: phase 'a' start 'soon' is not an offset"),
        ('[[phase]]\nname = "a"\nstart = 5\n', ":3: phase 'a' start '5' is not an offset"),
        ('[[phase]]\nname = "a"\n', ":1: phase 'a' has no start — add start = \"90s\""),
        ('[[phase]]\nstart = "0s"\n', ":1: phase needs a name"),
        ('[[phase]]\nname = "A b"\nstart = "0s"\n', ":2: phase name 'A b' is not a short"),
        (
            '[[phase]]\nname = "a"\nstart = "0s"\n[[phase]]\nname = "a"\nstart = "1s"\n',
            ":4: phase 'a' is defined twice",
        ),
        (
            '[[phase]]\nname = "a"\nstart = "0s"\nstrat = "1s"\n',
            ":4: unknown phase key 'strat' (did you mean 'start'?)",
        ),
        (
            '[[phase]]\nname = "a"\nstart = "0s"\nshutdown = "yes"\n',
            ":4: phase 'a' shutdown must be true or false",
        ),
        (
            '[[phase]]\nname = "a"\nstart = "0s"\nshutdown = true\n'
            '[[phase.rule]]\naction = "ip-drop"\ndomain = "x.example"\n',
            ":5: phase 'a' is a shutdown and has rules",
        ),
        (
            '[[phase]]\nname = "a"\nstart = "800h"\n',
            ":3: phase 'a' starts 800h after the testbed, more than 30 days",
        ),
        (
            '[[phase]]\nname = "a"\nstart = "0s"\n[[phase]]\nname = "b"\nstart = "800h"\n',
            ":6: phase 'b' starts 800h after the testbed, more than 30 days",
        ),
        ("phases = 1\n", ":1: unknown key 'phases' (did you mean 'phase'?)"),
    ],
)
def test_phase_mistakes_are_one_line(text: str, expect: str) -> None:
    """`expect` is ":LINE: message" with LINE counted in `text`."""
    line, _, rest = expect[1:].partition(":")
    message = error(text_with_name(text))
    assert f"p.toml:{int(line) + 2}:{rest}" in message, message


def text_with_name(text: str) -> str:
    """A profile around `text`: two lines of name and sites first (tables must come last)."""
    return f'name = "p"\ndomains = ["x.example"]\n{text}'


def test_phase_line_numbers_account_for_the_header() -> None:
    # text_with_name adds two lines: check one message in full.
    message = error(text_with_name('[[phase]]\nname = "a"\nstart = "5s"\n'))
    assert message == (
        "p.toml:5: the first phase 'a' starts at 5s, not at 0s — "
        'start the first phase at "0s" (add one for the time before)'
    )


def test_phase_rules_are_checked_like_rules_with_their_own_lines() -> None:
    text = text_with_name(
        '[[phase]]\nname = "a"\nstart = "0s"\n'
        '[[phase.rule]]\naction = "ip-drop"\ndomain = "x.example"\n'
        '[[phase]]\nname = "b"\nstart = "9s"\n'
        '[[phase.rule]]\naction = "tls-reset"\nsni = "x.example"\n'
        '[[phase.rule]]\naction = "dns-bogus"\ndomain = "nowhere.example"\n'
    )
    message = error(text)
    assert message.startswith("p.toml:17: domain 'nowhere.example' names no site of this profile")
    message = error(text.replace('action = "dns-bogus"', 'action = "dns-bogsu"'))
    assert "p.toml:16: unknown action 'dns-bogsu' (did you mean 'dns-bogus'?)" in message
    message = error(text.replace('sni = "x.example"', 'sni = "x.example"\nrate = "1kbit"'))
    assert "p.toml:15: action tls-reset has no parameter 'rate'" in message


def test_the_censor_in_force_at_each_offset() -> None:
    p = plan()
    assert [p.at(t).phase for t in (0, 89.9, 90, 119, 120, 5399, 5400, 1e6)] == [
        "open",
        "open",
        "filtered",
        "filtered",
        "off",
        "off",
        "back",
        "back",
    ]
    assert [r.id for r in p.at(0).rules] == ["rule1:http-blockpage"]
    assert [r.id for r in p.at(100).rules][:2] == [
        "rule1:http-blockpage",
        "filtered/rule1:dns-nxdomain",
    ]
    assert p.at(130).shutdown and not p.at(100).shutdown
    assert p.next_phase(100) is not None and p.next_phase(100).name == "off"  # type: ignore[union-attr]
    assert p.next_phase(6000) is None
    assert len(p.all_rules) == 6
    again = Plan.from_json(p.to_json())
    assert again == p and again.at(100) == p.at(100)


def test_truth_per_phase_and_by_measurement_time() -> None:
    p = plan()
    outcomes = {name: {r.url: r.outcome for r in rows} for name, _start, rows in phase_truth(p)}
    assert outcomes["open"]["https://dns.example/"] == "ok"
    assert outcomes["filtered"]["https://dns.example/"] == "dns/nxdomain"
    assert outcomes["filtered"]["https://ip.example/"] == "tcp/timeout"
    assert outcomes["filtered"]["https://tls.example/"] == "tls/reset"
    assert outcomes["filtered"]["http://tls.example/"] == "ok"
    assert outcomes["filtered"]["http://http.example/"] == "http/reset"
    assert outcomes["filtered"]["http://calm.example/"] == "dns/injected"
    assert outcomes["open"]["http://calm.example/"] == "http/blockpage"  # top level: always
    assert set(outcomes["off"].values()) == {"network/offline"}
    assert outcomes["back"] == outcomes["open"]
    off = truth_at(p, "https://tls.example/", 150)
    assert (off.phase, off.blocked, off.action) == ("off", False, "shutdown")
    assert truth_at(p, "https://tls.example/", 95).to_dict()["phase"] == "filtered"


def test_nftables_of_each_phase() -> None:
    p = plan()
    open_rules = topology.censor_ruleset(p.at(0))
    filtered = topology.censor_ruleset(p.at(100))
    off = topology.censor_ruleset(p.at(130))
    assert "drop" not in open_rules and "tproxy ip to :15053" not in open_rules
    ip = p.site("ip.example")
    assert ip is not None
    assert f"ip daddr {{ {ip.addresses[0]} }} drop" in filtered
    assert "tproxy ip to :15053" in filtered  # the injector sees DNS only while it injects
    assert "tproxy" not in off
    assert off.count('iifname "down0" drop comment "shutdown"') == 2  # forward and input
    swap = topology.censor_swap(p.at(130))
    assert swap.startswith("table inet netvigil_censor\ndelete table inet netvigil_censor\n")


def _clocked(tmp_path: Path, started_at: float) -> Plan:
    (tmp_path / CLOCK_FILE).write_text(json.dumps({"started_at": started_at}))
    return make_plan(parse_profile(PHASED), state_dir=str(tmp_path))


def test_agents_consult_the_phase_in_force_by_the_testbeds_clock(tmp_path: Path) -> None:
    before_clock = make_plan(parse_profile(PHASED), state_dir=str(tmp_path))
    assert before_clock.now().phase == "open"  # no clock yet: the first phase
    filtered = _clocked(tmp_path, time.time() - 100)
    assert filtered.now().phase == "filtered"
    answer = isp_answers(filtered)("dns.example", dns.rdatatype.A)
    assert answer.rcode == dns.rcode.NXDOMAIN
    assert tls_rule(filtered.now(), "tls.example") is not None
    request = HttpRequest("GET", "/", "HTTP/1.1", "http.example")
    assert http_rule(filtered.now(), request) is not None
    query = dns.message.make_query("calm.example", "A").to_wire()
    assert injection_for(filtered.now(), query) is not None

    off = _clocked(_fresh(tmp_path, "off"), time.time() - 130)
    assert isp_answers(off)("calm.example", dns.rdatatype.A).silent

    opened = _clocked(_fresh(tmp_path, "open"), time.time() - 10)
    assert isp_answers(opened)("dns.example", dns.rdatatype.A).addresses
    assert tls_rule(opened.now(), "tls.example") is None
    assert injection_for(opened.now(), query) is None


def _fresh(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_kz_2022_january_tells_the_story() -> None:
    kz = make_plan(load_profile("kz-2022-january"))
    names = [p.name for p in kz.phases]
    assert names[0] == "before" and names[-1] == "restored"
    story = [
        (p.name, {r.outcome for r in rows})
        for p, (_n, _s, rows) in zip(kz.phases, phase_truth(kz), strict=True)
    ]
    assert story[0][1] == {"ok"}
    messaging = kz.at(kz.phases[1].start_seconds)
    blocked = {r.domain for r in ground_truth(messaging) if r.blocked}
    # the apps' websites (the web suite)...
    assert blocked == {"www.whatsapp.com", "telegram.org", "signal.org"}
    # ...and the apps themselves (their endpoints, the messaging suite): all but Messenger
    apps = {t.app: t.anomaly for t in messaging_truth(messaging)}
    assert apps == {
        "whatsapp": True,
        "telegram": True,
        "signal": True,
        "facebook_messenger": False,
    }
    assert not any(messaging_truth(kz.at(0)) and t.anomaly for t in messaging_truth(kz.at(0)))
    off = messaging_truth(kz.at(kz.phases[2].start_seconds))
    assert {e.outcome for t in off for e in t.endpoints} == {"network/offline"}
    assert not any(e.blocked for t in off for e in t.endpoints)
    assert story[2][1] == {"network/offline"} and kz.phases[2].shutdown
    windows = [p for p in kz.phases if p.name.startswith("window")]
    assert windows and all(
        blocked <= {r.domain for r in ground_truth(kz.in_phase(w.name)) if r.blocked}
        for w in windows
    )
    assert story[-1][1] == {"ok"}
    # the demo runs in a few minutes
    assert kz.phases[-1].start_seconds <= 360
