"""Ground truth: the walk a browser would make, stage by stage, through the profile's rules."""

from __future__ import annotations

import json
import subprocess
import sys

from netvigil.testbed.plan import make_plan
from netvigil.testbed.profile import builtin_profiles, load_profile, parse_profile
from netvigil.testbed.truth import ground_truth, url_truth

PROFILE = """
name = "t"
domains = ["plain.example", "www.news.example", "dns.example", "both.example"]

[[site]]
domain = "news.example"
redirect_to = "https://www.news.example/"

[[site]]
domain = "secure.example"
https_redirect = true

[[site]]
domain = "search.example"
urls = ["http://search.example/", "http://search.example/q?w=protest"]

[[site]]
domain = "edge.example"
kind = "cdn"

[[rule]]
action = "dns-nxdomain"
domain = "dns.example"

[[rule]]
action = "tls-reset"
sni = ["www.news.example", "dns.example", "secure.example"]

[[rule]]
action = "http-reset"
keyword = "protest"

[[rule]]
action = "ip-drop"
domain = "both.example"

[[rule]]
action = "tls-timeout"
sni = "both.example"
"""


def plan():  # type: ignore[no-untyped-def]
    return make_plan(parse_profile(PROFILE))


def test_redirects_are_followed_into_the_censored_stage() -> None:
    row = url_truth(plan(), "http://news.example/")
    assert row.outcome == "tls/reset"
    assert row.redirects == ("https://www.news.example/",)
    assert row.domain == "news.example"


def test_https_redirect_brings_sni_rules_into_play() -> None:
    assert url_truth(plan(), "http://secure.example/").outcome == "tls/reset"


def test_first_stage_wins() -> None:
    assert url_truth(plan(), "https://dns.example/").outcome == "dns/nxdomain"
    assert url_truth(plan(), "https://both.example/").outcome == "tcp/timeout"


def test_keyword_applies_to_plain_http_only() -> None:
    p = plan()
    assert url_truth(p, "http://search.example/q?w=protest").outcome == "http/reset"
    assert url_truth(p, "http://search.example/").outcome == "ok"


def test_honest_cases_are_not_blocked() -> None:
    rows = {r.url: r for r in ground_truth(plan())}
    assert rows["https://edge.example/"].outcome == "ok"
    assert not rows["https://edge.example/"].blocked
    assert rows["https://plain.example/"].outcome == "ok"


def test_clean_profile_has_no_blocked_url() -> None:
    rows = ground_truth(make_plan(load_profile("clean")))
    assert rows and not any(r.blocked for r in rows)
    assert {r.outcome for r in rows} <= {"ok", "down"}


def test_every_shipped_profile_has_a_truth() -> None:
    for name in builtin_profiles():
        rows = ground_truth(make_plan(load_profile(name)))
        assert rows, name


def test_kz_2019_intercepts_exactly_the_37_trigger_domains() -> None:
    rows = ground_truth(make_plan(load_profile("kz-2019-interception")))
    intercepted = {r.domain for r in rows if r.outcome == "tls/interception"}
    assert len(intercepted) == 37
    assert {"www.google.com", "facebook.com", "twitter.com", "vk.com", "mail.ru"} <= intercepted


def test_kz_2024_times_out_or_intercepts_the_reported_domains() -> None:
    rows = ground_truth(make_plan(load_profile("kz-2024")))
    by_outcome: dict[str, set[str]] = {}
    for r in rows:
        by_outcome.setdefault(r.outcome, set()).add(r.domain)
    assert len(by_outcome["tls/interception"]) == 14
    assert len(by_outcome["tls/timeout"] | by_outcome["tls/interception"]) >= 100


def test_truth_json_cli_prints_one_object_per_url() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "netvigil.cli",
            "testbed",
            "truth",
            "--profile",
            "all-techniques",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all({"url", "outcome"} <= row.keys() for row in rows)
    assert len(rows) == len(ground_truth(make_plan(load_profile("all-techniques"))))
