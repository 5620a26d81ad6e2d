"""End to end: a testbed whose censor changes while it runs (phases of a few seconds).

One testbed with a four-phase profile: open → filtered (a DNS, an IP, a TLS and an HTTP rule)
→ shutdown → open again. In each phase, from `client`, the plain-socket self-check sees the
truth of that phase, and the real probe's measurements, scored by the time they were made,
agree with the truth in force then. In the shutdown nothing answers: not the ISP's resolver,
the control helper, the collector, a site or the ISP's blockpage server.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import needs_testbed
from netvigil.testbed import control
from netvigil.testbed.observe import dns_lookup, observe_all, tcp_connect
from netvigil.testbed.plan import (
    COLLECTOR,
    CONTROL_HELPER,
    ISP_BLOCKPAGE,
    ISP_RESOLVER,
    PUBLIC_RESOLVER,
    REFERENCE_URLS,
    SERVICE_PORT,
    Plan,
)
from netvigil.testbed.score import compare_by_time
from netvigil.testbed.truth import ground_truth

pytestmark = [needs_testbed, pytest.mark.testbed]

# Each phase is long enough for one self-check and one probe run (ip-drop costs the probe's
# timeout); the whole test takes about 100 s (the probe waits out its network checks in the shutdown).
PROFILE = """
name = "phases-e2e"
domains = ["dns.example", "ip.example", "tls.example", "http.example", "calm.example"]

[[phase]]
name = "open"
start = "0s"

[[phase]]
name = "filtered"
start = "20s"

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

[[phase]]
name = "off"
start = "40s"
shutdown = true

[[phase]]
name = "back"
start = "80s"
"""
PROBE_TIMEOUT = 4.0


class Phased:
    def __init__(self, info: control.TestbedInfo) -> None:
        self.info = info
        self.plan = Plan.load(info.public_dir)
        self.client = control.NamespaceThread(info.netns["client"])

    def wait_for(self, phase: str, settle: float = 0.4) -> None:
        start = next(p.start_seconds for p in self.plan.phases if p.name == phase)
        delay = self.info.started_at + start + settle - time.time()
        assert delay > -2, f"phase {phase} began {-delay:.1f} s ago: the test ran late"
        if delay > 0:
            time.sleep(delay)

    def offset(self) -> float:
        return time.time() - self.info.started_at


@pytest.fixture(scope="module")
def phased(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phased]:
    path = Path(tmp_path_factory.mktemp("phases")) / "phases-e2e.toml"
    path.write_text(PROFILE)
    info = control.up(str(path), name=f"pytest-phases-{id(path)}")
    bed = Phased(info)
    try:
        yield bed
    finally:
        bed.client.close()
        control.down(info.name)


def _self_check(bed: Phased) -> dict[str, tuple[str, str]]:
    """{url: (truth of the phase in force, what the client saw)}, asserting the check stayed
    inside one phase."""
    before = bed.offset()
    rows = ground_truth(bed.plan, at=before)
    anchor = str(bed.info.trust_anchor)
    found = bed.client.call(lambda: asyncio.run(observe_all(bed.plan, anchor, rows)), timeout=60)
    after = bed.offset()
    assert isinstance(found, list)
    assert bed.plan.phase_index_at(before) == bed.plan.phase_index_at(after), (before, after)
    return {o.url: (o.expected, o.observed) for o in found}


def _probe(bed: Phased, measurements: list[dict[str, Any]]) -> None:
    from netvigil.experiments.web_connectivity import WebConnectivity
    from netvigil.measure import probe_config, run_measurements

    config = probe_config(
        ca_bundle=str(bed.info.trust_anchor),
        resolver=ISP_RESOLVER,
        second_resolver=PUBLIC_RESOLVER,
        helper=f"http://{CONTROL_HELPER}:{SERVICE_PORT}/",
        no_doh=True,
        timeout=PROBE_TIMEOUT,
        # the network checked around the run, against the testbed's own reference targets
        network_check=True,
        references=list(REFERENCE_URLS),
    )
    urls = [r.url for r in ground_truth(bed.plan)]
    sink = io.StringIO()
    bed.client.call(
        lambda: asyncio.run(run_measurements(WebConnectivity(config), urls, output=sink)),
        timeout=60,
    )
    measurements += [json.loads(line) for line in sink.getvalue().splitlines()]


async def _nothing_answers() -> dict[str, str]:
    checks = {
        "isp resolver": dns_lookup(ISP_RESOLVER, "calm.example"),
        "public resolver": dns_lookup(PUBLIC_RESOLVER, "calm.example"),
        "control helper": tcp_connect(CONTROL_HELPER, SERVICE_PORT),
        "collector": tcp_connect(COLLECTOR, SERVICE_PORT),
        "isp blockpage": tcp_connect(ISP_BLOCKPAGE, 80),
    }
    results = await asyncio.gather(*checks.values())
    return {
        name: str(result[0] if isinstance(result, tuple) else result)
        for name, result in zip(checks, results, strict=True)
    }


def test_the_censor_changes_at_each_phase_and_the_probe_is_scored_by_time(
    phased: Phased,
) -> None:
    bed = phased
    measurements: list[dict[str, Any]] = []
    seen: dict[str, dict[str, tuple[str, str]]] = {}

    bed.wait_for("open", settle=0.0)
    seen["open"] = _self_check(bed)
    _probe(bed, measurements)

    bed.wait_for("filtered")
    seen["filtered"] = _self_check(bed)
    _probe(bed, measurements)
    # What the kernel holds now: the filtered phase's nftables, swapped in by the supervisor.
    listing = control.exec_command(
        bed.info, "censor", ["nft", "list", "table", "inet", "netvigil_censor"], capture_output=True
    )
    assert 'comment "filtered/rule2:ip-drop"' in listing.stdout.decode()
    status = control.phase_status(bed.info)
    assert status is not None and status["phase"] == "filtered" and status["next"] == "off"
    assert control.phase_line(status).startswith("phase filtered since +20 s")

    bed.wait_for("off")
    services = bed.client.call(lambda: asyncio.run(_nothing_answers()), timeout=30)
    listing = control.exec_command(
        bed.info, "censor", ["nft", "list", "table", "inet", "netvigil_censor"], capture_output=True
    )
    assert listing.stdout.decode().count('drop comment "shutdown"') == 2
    seen["off"] = _self_check(bed)
    _probe(bed, measurements)

    bed.wait_for("back")
    seen["back"] = _self_check(bed)
    _probe(bed, measurements)

    # The plain-socket view, phase by phase.
    assert seen["open"]["https://dns.example/"] == ("ok", "ok")
    assert seen["filtered"]["https://dns.example/"] == ("dns/nxdomain", "dns/nxdomain")
    assert seen["filtered"]["http://ip.example/"] == ("tcp/timeout", "tcp/timeout")
    assert seen["filtered"]["https://tls.example/"] == ("tls/reset", "tls/reset")
    assert seen["filtered"]["http://tls.example/"] == ("ok", "ok")
    assert seen["filtered"]["http://http.example/"] == ("http/reset", "http/reset")
    assert seen["back"]["https://tls.example/"] == ("ok", "ok")
    for phase in ("open", "filtered", "back"):
        wrong = {u: v for u, v in seen[phase].items() if v[0] != v[1]}
        assert not wrong, f"{phase}: {wrong}"
    # The shutdown: every URL fails at its first step, and no service of the testbed answers.
    assert {truth for truth, _ in seen["off"].values()} == {"network/offline"}
    assert {observed for _, observed in seen["off"].values()} == {"dns/timeout"}
    assert isinstance(services, dict)
    assert services == {
        "isp resolver": "timeout",
        "public resolver": "timeout",
        "control helper": "timeout",
        "collector": "timeout",
        "isp blockpage": "timeout",
    }, services

    # The probe, scored against the censor in force when each measurement was made.
    scores, straddles = compare_by_time(bed.plan, measurements, bed.info.started_at)
    assert straddles <= len(measurements) // 4, (straddles, len(measurements))
    by_phase: dict[str, list[str]] = {}
    for score in scores:
        if not score.agrees:
            by_phase.setdefault(score.phase, []).append(
                f"{score.url}: {score.truth}≠{score.verdict}"
            )
    assert not by_phase, by_phase
    phases_scored = {s.phase for s in scores}
    assert {"open", "filtered", "back"} <= phases_scored, phases_scored
    filtered = {s.url: s.verdict for s in scores if s.phase == "filtered"}
    opened = {s.url: s.verdict for s in scores if s.phase in ("open", "back")}
    assert filtered.get("https://dns.example/", "").startswith("dns/")
    assert opened.get("https://dns.example/") == "ok"
    # The shutdown: the probe finds its network off and blames no site.
    off = [s for s in scores if s.phase == "off"]
    assert off and all(s.truth == "network/offline" for s in off)
    assert all(s.verdict == "network/offline" and not s.blocking for s in off), [
        (s.url, s.verdict, s.blocking) for s in off
    ]
