"""Shutdown awareness: a run checks its network and blames no site when the network is off.

Loopback worlds only (127.0.0.1): a resolver, sites and reference targets that answer, or
ports where nothing listens. The verdict rule is also held on a real OONI measurement.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import io
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from netvigil.experiments.web_connectivity import ProbeConfig, WebConnectivity
from netvigil.measure import RunResult, network_lines, run_measurements
from netvigil.net.tls import TrustStore
from netvigil.netstatus import Check, NetworkStatus, judge, parse_references, worse
from netvigil.verdict import analyze
from netvigil.verdict.model import NOT_BLOCKED
from test_net_support import LOOPBACK, a_reply, pki, simple_http, start_dns_udp, start_tcp

DATA = Path(__file__).parent / "data"


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
    return port


def config(resolver_port: int, references: tuple[str, ...], helper: str | None) -> ProbeConfig:
    return ProbeConfig(
        trust=TrustStore.from_pem_bytes(pki().root.pem),
        resolver=LOOPBACK,
        resolver_port=resolver_port,
        helper_url=helper,
        dns_timeout=0.5,
        late_window=0.05,
        connect_timeout=1,
        tls_timeout=1,
        http_timeout=1.5,
        control_timeout=1,
        url_budget=5,
        network_check=True,
        reference_urls=references,
    )


def run(cfg: ProbeConfig, urls: list[str], experiment: Any = None) -> tuple[RunResult, list[Any]]:
    sink = io.StringIO()

    async def main() -> RunResult:
        with experiment or WebConnectivity(cfg) as probe:
            return await asyncio.wait_for(
                run_measurements(probe, urls, concurrency=4, output=sink), 60
            )

    result = asyncio.run(main())
    return result, [json.loads(line) for line in sink.getvalue().splitlines()]


def test_nothing_answers_every_measurement_is_offline() -> None:
    dead = closed_port()
    cfg = config(
        dead,  # the resolver: nothing listens
        (f"http://{LOOPBACK}:{dead}/", f"http://reference.test:{dead}/"),
        helper=f"http://{LOOPBACK}:{dead}/",
    )
    urls = [f"http://site{n}.test/" for n in range(5)] + [f"http://{LOOPBACK}:{dead}/x"]
    result, measurements = run(cfg, urls)
    assert len(measurements) == len(urls)
    for m in measurements:
        status = m["test_keys"]["x_network_status"]
        assert status["status"] == "offline"
        failed = {c["check"] for c in status["evidence"] if c["failure"]}
        assert failed == {"resolver", "control", "reference"}
        assert all(not c["ok"] and c["t"] for c in status["evidence"])
        verdict = m["test_keys"]["x_netvigil_verdict"]
        assert verdict["outcome"] == "network/offline"
        assert verdict["blocked"] is False and verdict["blocking"] is None
        assert m["test_keys"]["blocking"] is None  # OONI's key: no judgement either
        assert m["probe_ip"] == "127.0.0.1"  # never the user's address
    assert network_lines(result)[0] == "the network was offline: no site is blamed"
    # analyze on the stored file gives the same verdict
    assert all(analyze(m).outcome == "network/offline" for m in measurements)


@pytest.fixture
def world() -> Any:
    """A loopback resolver (every name → 127.0.0.1) and an HTTP server for the sites."""

    class World:
        cut = False

    async def start() -> tuple[Any, Any, int]:
        def answer(query: Any) -> list[tuple[float, bytes]]:
            return [] if World.cut else [(0.0, a_reply(query, LOOPBACK))]

        pages = {f"/{n}": (200, [], f"<title>page {n}</title>hello".encode()) for n in range(9)}
        dns_server = await start_dns_udp(answer)
        http_server, http_port = await start_tcp(simple_http(pages))
        return dns_server, http_server, http_port

    World.start = start  # type: ignore[attr-defined]
    return World


def test_some_checks_fail_the_run_is_degraded_with_evidence(world: Any) -> None:
    dead = closed_port()

    async def main() -> list[dict[str, Any]]:
        dns_server, http_server, port = await world.start()
        cfg = config(
            dns_server.port,
            (f"http://reference.test:{port}/", f"http://{LOOPBACK}:{dead}/"),
            helper=None,
        )
        urls = [f"http://site.test:{port}/{n}" for n in range(3)] + [f"http://down.test:{dead}/"]
        sink = io.StringIO()
        try:
            with WebConnectivity(cfg) as probe:
                await run_measurements(probe, urls, concurrency=4, output=sink)
        finally:
            http_server.close()
            dns_server.close()
        return [json.loads(line) for line in sink.getvalue().splitlines()]

    measurements = asyncio.run(asyncio.wait_for(main(), 60))
    assert len(measurements) == 4
    for m in measurements:
        status = m["test_keys"]["x_network_status"]
        assert status["status"] == "degraded"
        # a held failure carries the checks of the rounds before and after it (maybe two)
        failed = [c for c in status["evidence"] if c["failure"]]
        assert {(c["check"], c["target"], c["stage"], c["failure"]) for c in failed} == {
            ("reference", f"http://{LOOPBACK}:{dead}/", "tcp", "connection_refused")
        }
    # The names resolve to 127.0.0.1 (a bogon for the engine): a DNS verdict, which no failing
    # check matches (the reference failed at TCP), so the sites' own verdicts stand.
    for m in measurements:
        verdict = m["test_keys"]["x_netvigil_verdict"]
        assert not verdict["outcome"].startswith("network/"), verdict["outcome"]
        assert verdict["evidence"]["network_status"]["status"] == "degraded" or (
            verdict["outcome"] == "ok"
        )


def test_a_cut_in_the_middle_of_a_run_blames_no_site(world: Any) -> None:
    async def main() -> list[dict[str, Any]]:
        dns_server, http_server, port = await world.start()
        cfg = config(dns_server.port, (f"http://reference.test:{port}/",), helper=None)

        class CutAfterThree(WebConnectivity):
            done = 0

            async def measure(self, url: str) -> dict[str, Any]:
                result = await super().measure(url)
                CutAfterThree.done += 1
                if CutAfterThree.done == 3:  # the shutdown starts: DNS silent, sites gone
                    world.cut = True
                    http_server.close()
                    await http_server.wait_closed()
                return result

        urls = [f"http://{LOOPBACK}:{port}/{n}" for n in range(7)]
        sink = io.StringIO()
        try:
            with CutAfterThree(cfg) as probe:
                await run_measurements(probe, urls, concurrency=1, output=sink)
        finally:
            http_server.close()
            dns_server.close()
        return [json.loads(line) for line in sink.getvalue().splitlines()]

    measurements = asyncio.run(asyncio.wait_for(main(), 60))
    by_input = {m["input"]: m for m in measurements}
    assert len(by_input) == 7
    before = [by_input[u] for u in sorted(by_input)][:3]
    after = [by_input[u] for u in sorted(by_input)][3:]
    for m in before:
        assert m["test_keys"]["x_network_status"]["status"] == "online"
        # page fetched, no control to compare: the probe's own verdict, not the network's
        assert m["test_keys"]["x_netvigil_verdict"]["outcome"] == "unknown"
    for m in after:
        assert m["test_keys"]["x_network_status"]["status"] == "offline"
        verdict = m["test_keys"]["x_netvigil_verdict"]
        assert verdict["outcome"] == "network/offline" and not verdict["blocked"]
        # without the status the same measurement would blame the site's DNS
        bare = copy.deepcopy(m)
        del bare["test_keys"]["x_network_status"]
        assert analyze(bare).outcome != "network/offline"


# -- the verdict rule on a real OONI measurement -------------------------------------------------


def _real(outcome_prefix: str) -> dict[str, Any]:
    """The first measurement of the real samples (then probe-cli's QA corpus) with this outcome."""
    lines = (DATA / "ooni_web_connectivity.jsonl").read_text().splitlines()
    with gzip.open(DATA / "conformance" / "probe-cli-qa.jsonl.gz", "rt") as qa:
        lines += qa.read().splitlines()
    for line in lines:
        m = json.loads(line)
        if analyze(m).outcome.startswith(outcome_prefix):
            return m
    raise AssertionError(f"no {outcome_prefix} measurement in the test data")


def _with_status(m: dict[str, Any], status: NetworkStatus) -> dict[str, Any]:
    out = copy.deepcopy(m)
    out["test_keys"]["x_network_status"] = status.to_dict()
    return out


T = "2026-12-07 00:00:00"


@pytest.mark.parametrize("prefix", ["dns/", "tcp/", "http/", "ok"])
def test_offline_overrides_every_verdict(prefix: str) -> None:
    m = _real(prefix)
    offline = NetworkStatus.of([Check("resolver", "10.0.0.1", "dns", "generic_timeout_error", T)])
    v = analyze(_with_status(m, offline))
    assert v.outcome == "network/offline" and not v.blocked and v.blocking is None
    assert v.evidence["network_status"]["status"] == "offline"
    assert v.outcome in NOT_BLOCKED


def test_degraded_excuses_only_a_failure_that_matches_a_failing_check() -> None:
    m = _real("tcp/")
    site = analyze(m).outcome
    assert site in ("tcp/timeout", "tcp/reset", "tcp/unreachable")
    failure = {
        "tcp/timeout": "generic_timeout_error",
        "tcp/reset": "connection_reset",
        "tcp/unreachable": "host_unreachable",
    }[site]
    ok = Check("resolver", "10.0.0.1", None, None, T)
    same = NetworkStatus.of([ok, Check("reference", "http://r.example/", "tcp", failure, T)])
    v = analyze(_with_status(m, same))
    assert v.outcome == "network/degraded" and not v.blocked and v.blocking is None
    assert v.evidence["test_outcome"] == site
    assert v.evidence["matched_checks"][0]["target"] == "http://r.example/"
    # another stage, or only our control failing: the site's own verdict stands
    for other in (
        Check("reference", "http://r.example/", "tls", "connection_reset", T),
        Check("control", "http://helper/", "tcp", failure, T),
    ):
        v = analyze(_with_status(m, NetworkStatus.of([ok, other])))
        assert v.outcome == site and v.blocked
        assert v.evidence["network_status"]["status"] == "degraded"


def test_online_or_unreadable_status_changes_nothing() -> None:
    m = _real("tcp/")
    plain = analyze(m).to_dict()
    online = NetworkStatus.of([Check("resolver", "10.0.0.1", None, None, T)])
    assert analyze(_with_status(m, online)).to_dict() == plain
    for junk in ("offline", {"status": "down"}, {"status": ["offline"]}, None):
        hostile = copy.deepcopy(m)
        hostile["test_keys"]["x_network_status"] = junk
        assert analyze(hostile).to_dict() == plain


def test_status_rule() -> None:
    ok = Check("resolver", "r", None, None, T)
    bad = Check("reference", "x", "tcp", "generic_timeout_error", T)
    assert judge([]) == "online" and judge([ok]) == "online"
    assert judge([ok, bad]) == "degraded" and judge([bad]) == "offline"
    assert worse(NetworkStatus.of([ok]), NetworkStatus.of([bad])).status == "offline"
    assert parse_references(["http://a/,dns://10.0.0.1", "http://a/"]) == (
        "http://a/",
        "dns://10.0.0.1",
    )
    for bad_ref in ("ftp://a/", "dns://name.example", "nothing"):
        with pytest.raises(ValueError):
            parse_references([bad_ref])


# -- in the testbed: a profile whose rules cut the subscriber off ---------------------------------

CUT_OFF_PROFILE = """
name = "cut-off-by-rules"
description = "Every address of the Internet dropped and every name left unanswered"
country = "ZZ"
domains = ["tengrinews.kz", "www.wikipedia.org", "www.bbc.com", "example.com"]

[[rule]]
action = "ip-drop"
ip = ["198.18.20.0/24", "198.19.0.0/16"]

[[rule]]
action = "dns-timeout"
domain = ["tengrinews.kz", "www.wikipedia.org", "www.bbc.com", "example.com"]
"""


def _testbed_run(bed: Any, urls: list[str] | None = None) -> list[dict[str, Any]]:
    from netvigil.measure import probe_config
    from netvigil.testbed.plan import (
        CONTROL_HELPER,
        ISP_RESOLVER,
        REFERENCE_URLS,
        SERVICE_PORT,
        Plan,
    )
    from netvigil.testbed.truth import ground_truth

    urls = urls or [row.url for row in ground_truth(Plan.load(bed.info.public_dir))]
    cfg = probe_config(
        ca_bundle=str(bed.info.trust_anchor),
        resolver=ISP_RESOLVER,
        helper=f"http://{CONTROL_HELPER}:{SERVICE_PORT}/",
        no_doh=True,
        timeout=2.0,
        network_check=True,
        references=list(REFERENCE_URLS),  # what `testbed run` puts in NETVIGIL_REFERENCE_URLS
    )
    sink = io.StringIO()

    def job() -> int:
        async def main() -> RunResult:
            with WebConnectivity(cfg) as probe:
                return await run_measurements(probe, urls, concurrency=20, output=sink)

        return len(asyncio.run(main()).verdicts)

    assert bed.in_client(job, timeout=120) == len(urls)
    measurements = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert len(measurements) == len(urls)
    return measurements


def test_testbed_profile_that_drops_everything_yields_no_site_verdict(
    testbed: Any, tmp_path: Path
) -> None:
    profile = tmp_path / "cut-off.toml"
    profile.write_text(CUT_OFF_PROFILE)
    measurements = _testbed_run(testbed(str(profile)))
    assert len(measurements) >= 8
    for m in measurements:
        assert m["test_keys"]["x_network_status"]["status"] == "offline"
        verdict = m["test_keys"]["x_netvigil_verdict"]
        assert verdict["outcome"] == "network/offline" and verdict["blocked"] is False


def test_testbed_references_answer_on_an_open_network(testbed: Any) -> None:
    from netvigil.testbed.plan import REFERENCE_URLS, testbed_environment

    assert testbed_environment()["NETVIGIL_REFERENCE_URLS"] == ",".join(REFERENCE_URLS)
    bed = testbed("clean")
    measurements = _testbed_run(bed, ["https://www.wikipedia.org/", "http://forum.vesti.kz/"])
    for m in measurements:
        status = m["test_keys"]["x_network_status"]
        assert status["status"] == "online", status
        assert {c["check"] for c in status["evidence"]} == {"resolver", "control", "reference"}
        assert not m["test_keys"]["x_netvigil_verdict"]["outcome"].startswith("network/")


def test_cli_summary_and_json_say_the_network_was_offline(tmp_path: Path) -> None:
    """`netvigil measure` where nothing answers: the summary blames no site, --json and the
    output file carry the status."""
    import os
    import subprocess
    import sys

    dead = closed_port()
    common = [
        "measure",
        "http://news.test/",
        "https://video.test/",
        *("--resolver", "127.0.0.9", "--no-doh", "--consent", "--no-progress"),
        *("--helper", f"http://{LOOPBACK}:{dead}/", "--reference", f"http://{LOOPBACK}:{dead}/"),
        *("--timeout", "1"),
    ]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def cli(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "netvigil.cli", *common, *extra],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    table = cli("-o", str(tmp_path / "m.jsonl"))
    assert table.returncode == 0, table.stderr
    assert "the network was offline: no site is blamed" in table.stdout
    assert "dns/" not in table.stdout and "tcp/" not in table.stdout
    stored = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [m["test_keys"]["x_network_status"]["status"] for m in stored] == ["offline"] * 2
    as_json = cli("--json")
    assert as_json.returncode == 0, as_json.stderr
    verdicts = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(verdicts) == 2
    for verdict in verdicts:
        assert verdict["outcome"] == "network/offline" and verdict["blocked"] is False
        assert verdict["network_status"]["status"] == "offline"
        assert {c["check"] for c in verdict["network_status"]["evidence"]} == {
            "resolver",
            "control",
            "reference",
        }


def test_an_interrupted_check_loses_no_measurement() -> None:
    """Measurements taken by a check that is cancelled (Ctrl-C during a run) are still written,
    with the latest status, when the run flushes."""
    from netvigil.netstatus import NetworkChecker, NetworkWatch

    class Stuck(NetworkChecker):
        rounds = 0

        async def check(self) -> NetworkStatus:
            Stuck.rounds += 1
            if Stuck.rounds > 1:
                await asyncio.sleep(3600)  # the second round never ends
            return NetworkStatus.of([Check("resolver", "r", None, None, T)])

    released: list[tuple[str, str]] = []

    async def release(m: dict[str, Any], status: NetworkStatus) -> None:
        released.append((m["input"], status.status))

    async def main() -> None:
        checker = Stuck(resolve=None, resolver_name="r", trust=None)  # type: ignore[arg-type]
        watch = NetworkWatch(checker, release=release)
        await watch.start()
        before = watch.begin()
        await watch.done({"input": "ok"}, before, True)
        await watch.done({"input": "failed"}, before, False)
        check = asyncio.create_task(watch.recheck())
        await asyncio.sleep(0.05)
        check.cancel()
        with pytest.raises(asyncio.CancelledError):
            await check
        await watch.flush()

    asyncio.run(asyncio.wait_for(main(), 10))
    assert released == [("ok", "online"), ("failed", "online")]


OONIDATA = Path(__file__).resolve().parent.parent / ".venv-oonidata" / "bin" / "python"


@pytest.mark.skipif(not OONIDATA.exists(), reason="run ./scripts/setup.sh to create .venv-oonidata")
def test_offline_measurements_load_with_oonidata(tmp_path: Path) -> None:
    import subprocess

    dead = closed_port()
    cfg = config(dead, (f"http://{LOOPBACK}:{dead}/",), helper=f"http://{LOOPBACK}:{dead}/")
    _, measurements = run(cfg, ["http://site.test/", "https://other.test/"])
    assert all(m["test_keys"]["x_network_status"]["status"] == "offline" for m in measurements)
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in measurements))
    script = (
        "import json, sys\n"
        "from oonidata.dataclient import load_measurement\n"
        "n = 0\n"
        "for line in open(sys.argv[1]):\n"
        "    m = load_measurement(msmt=json.loads(line))\n"
        "    assert type(m).__name__ == 'WebConnectivity', type(m)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    out = subprocess.run(
        [str(OONIDATA), "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) == 2


def test_a_shutdown_blames_no_messaging_app(tmp_path: Path) -> None:
    """`measure --suite im` goes through the same network watch: with nothing answering, every
    app is network/offline (never telegram or whatsapp "blocked"), and each verdict has its
    status beside it, as `--json` prints them."""
    from netvigil.experiments.im_endpoints import APPS, load_app, load_overrides
    from netvigil.measure_im import run_im

    dead = closed_port()
    lines = ["[addresses]"]
    for app in APPS:
        for endpoint in load_app(app).endpoints:
            if endpoint.is_ip_literal:  # the real address is never dialled: a dead loopback port
                lines.append(f'"{endpoint.host}:{endpoint.port}" = "{LOOPBACK}:{dead}"')
    override = tmp_path / "im-endpoints.toml"
    override.write_text("\n".join(dict.fromkeys(lines)) + "\n")
    cfg = config(dead, (f"http://{LOOPBACK}:{dead}/",), helper=f"http://{LOOPBACK}:{dead}/")
    sink = io.StringIO()
    verdicts: list[dict[str, Any]] = []
    statuses: list[dict[str, Any] | None] = []

    async def main() -> None:
        await asyncio.wait_for(
            run_im(
                cfg,
                load_overrides(str(override)),
                output=sink,
                verdicts=verdicts,
                network=statuses,
            ),
            120,
        )

    asyncio.run(main())
    measurements = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert sorted(m["test_name"] for m in measurements) == sorted(APPS)
    assert len(verdicts) == len(statuses) == len(APPS)
    for m in measurements:
        assert m["test_keys"]["x_network_status"]["status"] == "offline"
        verdict = m["test_keys"]["x_netvigil_verdict"]
        assert verdict["outcome"] == "network/offline", (m["test_name"], verdict["outcome"])
        assert verdict["blocked"] is False
        assert analyze(m).outcome == "network/offline"
    assert all(s is not None and s["status"] == "offline" for s in statuses)
