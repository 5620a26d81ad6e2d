"""The shipped profiles load, and profile mistakes come back as one line: file, line, fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netvigil.testbed.plan import Plan, make_plan
from netvigil.testbed.profile import (
    ProfileError,
    builtin_profiles,
    domain_matches,
    load_profile,
    messaging_endpoint_names,
)

SHIPPED = [
    "all-techniques",
    "clean",
    "kz-2016-protests",
    "kz-2019-interception",
    "kz-2022-january",
    "kz-2024",
]


def test_all_six_profiles_are_shipped() -> None:
    assert builtin_profiles() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_and_plans(name: str) -> None:
    profile = load_profile(name)
    plan = make_plan(profile)
    assert Plan.from_json(plan.to_json()) == plan
    # a rule names a site, or a messaging endpoint (by name or real IP literal), or a wildcard
    names = {s.domain for s in profile.sites} | set(
        messaging_endpoint_names(profile.messaging_apps)
    )
    for rule in (*profile.rules, *(r for p in profile.phases for r in p.rules)):
        if rule.matcher not in ("keyword", "ip"):
            for value in rule.values:
                assert any(domain_matches(value, n) for n in names), (rule.id, value)
    text = Path(profile.source).read_text(encoding="utf-8")
    assert text.startswith("#"), "each profile starts with a comment saying what it emulates"


def test_all_techniques_uses_every_action() -> None:
    from netvigil.testbed.profile import ACTIONS

    profile = load_profile("all-techniques")
    assert {r.action for r in profile.rules} == set(ACTIONS)
    rejects = {r.params["reject_with"] for r in profile.rules if r.action == "ip-reject"}
    assert rejects == {"tcp-reset", "icmp-admin-prohibited"}
    assert {s.kind for s in profile.sites} == {"normal", "down", "slow", "forbidden", "cdn"}


def test_kz_2019_intercepts_37_snis() -> None:
    profile = load_profile("kz-2019-interception")
    [rule] = profile.rules
    assert rule.action == "tls-intercept" and rule.params["root"] == "qaznet"
    assert len(rule.values) == len(set(rule.values)) == 37
    [root] = profile.national_roots
    assert root.subject == {"C": "KZ", "CN": "Qaznet Trust Network"}
    assert root.leaf_rsa_exponent == 3 and root.validity_shift_hours == 6
    assert len({s.domain for s in profile.sites} - set(rule.values)) >= 10


def test_kz_2024_follows_the_ooni_data() -> None:
    data = Path("/work/shared/data/kz-ooni-report-2024")
    profile = load_profile("kz-2024")
    intercept, timeout = profile.rules
    assert (intercept.action, timeout.action) == ("tls-intercept", "tls-timeout")
    assert len(intercept.values) == 14 and not set(intercept.values) & set(timeout.values)
    if data.is_dir():
        rows = (data / "kz_blocked_domains.csv").read_text(encoding="utf-8").splitlines()[1:]
        blocked = {r.split(",")[0] for r in rows if r}
        mitm = set((data / "kz_mitm_targeted_domains.txt").read_text(encoding="utf-8").split())
        assert set(intercept.values) == mitm
        assert set(timeout.values) == blocked - mitm
        assert blocked | mitm <= {s.domain for s in profile.sites}


BASE = """name = "bad"
domains = ["a.example.org", "b.example.org"]
"""


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return message


def _line_of(message: str) -> int:
    match = re.match(r"^.*\.toml:(\d+): ", message)
    assert match, message
    return int(match.group(1))


def test_unknown_action(tmp_path: Path) -> None:
    message = _error(tmp_path, BASE + '\n[[rule]]\naction = "dns-nuke"\ndomain = "a.example.org"\n')
    assert _line_of(message) == 5
    assert "unknown action 'dns-nuke'" in message and "use one of: dns-nxdomain" in message


def test_bad_cidr(tmp_path: Path) -> None:
    message = _error(tmp_path, BASE + '\n[[rule]]\naction = "ip-drop"\nip = ["198.18.300.1/32"]\n')
    assert _line_of(message) == 6
    assert "'198.18.300.1/32' is not a valid CIDR" in message and "198.19.0.5/32" in message


def test_rule_naming_no_site(tmp_path: Path) -> None:
    text = BASE + '\n[[rule]]\naction = "tls-reset"\nsni = ["c.example.org"]\n'
    message = _error(tmp_path, text)
    assert _line_of(message) == 6
    assert "sni 'c.example.org' names no site of this profile" in message
    assert 'add a [[site]] with domain = "c.example.org"' in message


def test_toml_syntax_error(tmp_path: Path) -> None:
    message = _error(tmp_path, BASE + '\n[[rule]]\naction = "dns-nxdomain\n')
    assert _line_of(message) == 5
    assert "TOML syntax error" in message and "fix the TOML syntax" in message


def test_wildcard_in_plain_domains_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, 'name = "bad"\ndomains = ["*.example.org"]\n')
    assert _line_of(message) == 2
    assert "wildcard" in message


@pytest.mark.parametrize("rate", ["fast", "32", "1bit", "2gbit", 32])
def test_bad_serve_rate_is_one_line_naming_the_key(tmp_path: Path, rate: object) -> None:
    value = f'"{rate}"' if isinstance(rate, str) else str(rate)
    text = BASE + f'\n[[site]]\ndomain = "c.example.org"\nkind = "slow"\nserve_rate = {value}\n'
    message = _error(tmp_path, text)
    assert _line_of(message) == 7
    assert "serve_rate" in message and "'32kbit'" in message


def test_serve_rate_becomes_bytes_per_second_in_the_plan() -> None:
    from netvigil.testbed.plan import make_plan
    from netvigil.testbed.profile import parse_profile, rate_bytes_per_second

    assert rate_bytes_per_second("32kbit") == 4000
    assert rate_bytes_per_second("4kbps") == 4000
    text = BASE + '\n[[site]]\ndomain = "c.example.org"\nkind = "slow"\nserve_rate = "32kbit"\n'
    plan = make_plan(parse_profile(text))
    site = plan.site("c.example.org")
    assert site is not None and site.serve_rate_bps == 4000
    assert plan.site("a.example.org").serve_rate_bps == 0  # type: ignore[union-attr]


def test_all_techniques_has_a_throttle_slower_than_the_probe_and_an_honest_slow_site() -> None:
    from netvigil.testbed.plan import make_plan
    from netvigil.testbed.truth import ground_truth

    plan = make_plan(load_profile("all-techniques"))
    rows = {row.url: row for row in ground_truth(plan)}
    throttle = {str(r.params["rate"]) for r in plan.rules if r.action == "throttle"}
    assert "32kbit" in throttle
    assert rows["https://crawling-video.kz/"].outcome == "http/throttled"
    crawling = plan.site("crawling-video.kz")
    # 300 kB at 4 kB/s is ~75 s: longer than any budget the probe gives one URL.
    assert crawling is not None and crawling.body_bytes >= 300 * 1024
    mirror = plan.site("slow-mirror.kz")
    assert mirror is not None and mirror.serve_rate_bps == 4000 and mirror.kind == "slow"
    assert rows["https://slow-mirror.kz/"].outcome == "ok"
