"""The probe's event loop stays responsive while verdicts are computed.

The verdict engine is pure CPU; run on the loop, a slow verdict delays the reading of every other
URL's replies, and a reply that arrived in time is then recorded as ``generic_timeout_error``:
wrong evidence. Here the verdict is made artificially slow (a 300 ms CPU-busy stand-in) while a
DNS exchange with a short timeout runs next to the measurements; every exchange must succeed and
the loop must never lag by more than a fraction of a verdict. Everything runs on 127.0.0.1; the
servers run on an event loop of their own, in a thread, as they would on another machine.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from netvigil.experiments import web_connectivity as wc
from netvigil.experiments.web_connectivity import ProbeConfig, WebConnectivity
from netvigil.measure import run_measurements
from netvigil.net import dns as ndns
from netvigil.net.tls import TrustStore
from test_net_support import LOOPBACK, a_reply, pki, simple_http, start_dns_udp, start_tcp

T = TypeVar("T")
SLOW_VERDICT = 0.3  # seconds of CPU per verdict, as a large page's fingerprint scan might cost
DNS_TIMEOUT = 0.25  # shorter than one slow verdict: a loop blocked by a verdict misses it


class ServerThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def servers() -> Any:
    """(HTTP port, DNS port) on 127.0.0.1, served from another thread."""
    elsewhere = ServerThread()
    pages = {f"/{n}": (200, [], f"<title>page {n}</title>hello".encode()) for n in range(4)}
    http_server, http_port = elsewhere.run(start_tcp(simple_http(pages)))
    dns_server = elsewhere.run(
        start_dns_udp(lambda query: [(0.0, a_reply(query, LOOPBACK))])  # at once, every time
    )
    yield http_port, dns_server.port
    elsewhere.loop.call_soon_threadsafe(http_server.close)
    elsewhere.loop.call_soon_threadsafe(dns_server.close)
    elsewhere.close()


def _config(dns_port: int) -> ProbeConfig:
    return ProbeConfig(
        trust=TrustStore.from_pem_bytes(pki().root.pem),
        resolver=LOOPBACK,
        resolver_port=dns_port,
        dns_timeout=2,
        late_window=0.1,
        connect_timeout=2,
        tls_timeout=2,
        http_timeout=3,
        url_budget=10,
    )


def _slow_analyze(seconds: float, calls: list[str]) -> Any:
    real = wc.analyze

    def slow(measurement: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(threading.current_thread().name)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:  # CPU, not sleep: it holds the GIL as real work does
            pass
        return real(measurement, *args, **kwargs)

    return slow


def _verdict_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("netvigil-verdict")}


def test_slow_verdicts_do_not_turn_replies_into_timeouts(
    servers: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    http_port, dns_port = servers
    calls: list[str] = []
    monkeypatch.setattr(wc, "analyze", _slow_analyze(SLOW_VERDICT, calls))
    urls = [f"http://{LOOPBACK}:{http_port}/{n}" for n in range(4)]

    async def main() -> tuple[list[dict[str, Any]], list[float], list[str | None]]:
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        failures: list[str | None] = []
        done = asyncio.Event()

        async def monitor() -> None:
            while not done.is_set():
                before = loop.time()
                await asyncio.sleep(0.005)
                lags.append(loop.time() - before - 0.005)

        async def exchanges() -> None:
            # Another URL's DNS exchange, again and again while the verdicts are computed.
            while not done.is_set():
                result = await ndns.resolve(
                    "other.test", LOOPBACK, port=dns_port, timeout=DNS_TIMEOUT, late_window=0
                )
                failures.append(result.failure)
                await asyncio.sleep(0.01)

        background = [asyncio.create_task(monitor()), asyncio.create_task(exchanges())]
        sink = io.StringIO()
        await run_measurements(experiment, urls, concurrency=4, per_host=4, output=sink)
        done.set()
        await asyncio.gather(*background)
        return [json.loads(line) for line in sink.getvalue().splitlines()], lags, failures

    threads_before = _verdict_threads()
    experiment = WebConnectivity(_config(dns_port))
    started = time.monotonic()
    # What is measured is the verdict's hold on the loop. Late in a full run pytest's own heap
    # holds hundreds of MB of objects from earlier tests, and one full garbage collection of it
    # on the loop took 0.2 s (seen in CI): that heap is the test runner's, not the probe's, so it
    # is set aside (frozen, and no collection runs) while the loop is timed: a few seconds of
    # the test's own small allocations need none.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        measurements, lags, failures = asyncio.run(main())
    finally:
        gc.enable()
        gc.unfreeze()
    assert time.monotonic() - started < 15
    assert len(calls) == len(urls)  # every verdict was the slow one
    assert failures and all(f is None for f in failures), failures
    assert max(lags) < SLOW_VERDICT / 2, f"the loop lagged {max(lags):.3f} s behind a verdict"
    experiment.close()

    assert len(measurements) == len(urls)
    for m in measurements:
        assert m["test_keys"]["requests"][0]["response"]["code"] == 200
        assert m["test_keys"]["x_netvigil_verdict"]["input"] == m["input"]
        assert "blocking" in m["test_keys"]  # OONI's keys are still filled in
    assert all(name.startswith("netvigil-verdict") for name in calls), calls  # one thread
    assert len(set(calls)) == 1, calls
    assert _verdict_threads() <= threads_before  # closed with the experiment


def test_verdict_equals_analyze_on_the_loop(servers: tuple[int, int]) -> None:
    """The measurement is the same as when ``analyze`` ran inline: same keys, same verdict."""
    http_port, dns_port = servers
    threads_before = _verdict_threads()

    async def main() -> dict[str, Any]:
        with WebConnectivity(_config(dns_port)) as experiment:
            return await experiment.measure(f"http://{LOOPBACK}:{http_port}/1")

    m = asyncio.run(main())
    keys = list(m["test_keys"])
    verdict = m["test_keys"]["x_netvigil_verdict"]
    assert keys[-1] == "x_netvigil_verdict"
    bare = json.loads(json.dumps(m))
    for key in (*wc.WebConnectivity.ANALYSIS_KEYS, "x_netvigil_verdict"):
        bare["test_keys"].pop(key, None)
    assert wc.analyze(bare).to_dict() == verdict
    assert _verdict_threads() <= threads_before


def test_cancelling_does_not_wait_for_queued_verdicts(
    servers: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (the run cancelled) stops promptly: queued verdicts are dropped, and closing waits
    for the one verdict already running at most."""
    http_port, dns_port = servers
    calls: list[str] = []
    monkeypatch.setattr(wc, "analyze", _slow_analyze(1.0, calls))
    urls = [f"http://{LOOPBACK}:{http_port}/{n}" for n in range(4)]  # 4 s of verdicts queued
    threads_before = _verdict_threads()
    experiment = WebConnectivity(_config(dns_port))

    async def main() -> float:
        run = asyncio.create_task(run_measurements(experiment, urls, concurrency=4, per_host=4))
        while not calls:
            await asyncio.sleep(0.01)
        cancelled_at = time.monotonic()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        return time.monotonic() - cancelled_at

    try:
        assert asyncio.run(main()) < 0.5
        closing = time.monotonic()
        experiment.close()
        assert time.monotonic() - closing < 1.5
    finally:
        experiment.close()
    assert len(calls) == 1, calls
    assert _verdict_threads() <= threads_before
