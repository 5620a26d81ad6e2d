"""End to end: from `client`, with plain sockets, every action of the censor is seen as intended.

Each profile is brought up once; the self-check (netvigil.testbed.observe) looks at every URL
concurrently from a thread inside the client namespace, and each URL is one test case, so a
failure names the URL and the technique.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from conftest import RunningTestbed, needs_testbed
from netvigil.testbed.observe import Observation, observe_all
from netvigil.testbed.plan import Plan, make_plan
from netvigil.testbed.profile import load_profile
from netvigil.testbed.truth import ground_truth

pytestmark = [needs_testbed, pytest.mark.testbed]

_cache: dict[str, dict[str, Observation]] = {}


def observations(bed: RunningTestbed) -> dict[str, Observation]:
    profile = bed.info.profile
    if profile not in _cache:
        plan = Plan.load(bed.info.public_dir)
        anchor = str(bed.info.trust_anchor)
        found = bed.in_client(lambda: asyncio.run(observe_all(plan, anchor)), timeout=120)
        assert isinstance(found, list)
        _cache[profile] = {o.url: o for o in found}
    return _cache[profile]


def _urls(profile: str) -> list[str]:
    return [row.url for row in ground_truth(make_plan(load_profile(profile)))]


@pytest.mark.parametrize("url", _urls("all-techniques"))
def test_all_techniques_each_url_behaves_as_profile_says(
    testbed: Callable[[str], RunningTestbed], url: str
) -> None:
    obs = observations(testbed("all-techniques"))[url]
    assert obs.agrees, (
        f"{url}: censor should do {obs.expected}, client saw {obs.observed} ({obs.detail})"
    )


def test_all_techniques_covers_every_action(testbed: Callable[[str], RunningTestbed]) -> None:
    plan = make_plan(load_profile("all-techniques"))
    actions = {rule.action for rule in plan.rules}
    from netvigil.testbed.profile import ACTIONS

    assert actions == set(ACTIONS), f"missing: {set(ACTIONS) - actions}"
    seen = Counter(o.observed for o in observations(testbed("all-techniques")).values())
    for outcome in (
        "dns/nxdomain",
        "dns/bogon",
        "dns/bogus",
        "dns/blockpage",
        "dns/timeout",
        "dns/injected",
        "tcp/timeout",
        "tcp/refused",
        "tcp/unreachable",
        "tls/reset",
        "tls/timeout",
        "tls/interception",
        "http/blockpage",
        "http/reset",
        "http/throttled",
        "ok",
    ):
        assert seen[outcome] > 0, f"no URL showed {outcome}: {seen}"


def test_clean_profile_shows_no_censorship(testbed: Callable[[str], RunningTestbed]) -> None:
    found = observations(testbed("clean"))
    assert found
    for obs in found.values():
        assert obs.agrees, f"{obs.url}: expected {obs.expected}, saw {obs.observed} ({obs.detail})"
        assert obs.observed in ("ok", "tcp/refused"), obs
    truth = ground_truth(make_plan(load_profile("clean")))
    assert {row.outcome for row in truth} <= {"ok", "down"}
