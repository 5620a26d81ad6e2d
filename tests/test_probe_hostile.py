"""The probe (not just its primitives) against hostile servers: each URL ends as a recorded
failure or a capped result, memory and time stay bounded, and the rest of the list is measured.

All servers run on 127.0.0.1 inside the test; URLs are IP literals (no DNS) except one name,
resolved by a local DNS server that answers with thousands of records.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
import threading
import time
import zlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import dns.message

from netvigil.experiments.web_connectivity import ProbeConfig, WebConnectivity
from netvigil.measure import gather_inputs, run_measurements
from netvigil.net.tls import TrustStore
from test_net_support import (
    LOOPBACK,
    a_reply,
    pki,
    read_head,
    simple_http,
    start_dns_udp,
    start_tcp,
)

T = TypeVar("T")


async def _huge_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
    chunk = b"A" * 65536
    for _ in range(16384):  # 1 GiB if the client kept reading; it stops at its cap
        writer.write(chunk)
        await writer.drain()


async def _slowloris(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.5)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)
    writer.write(b"\x15\x03\x03\x00\x02\x02\x28" + b"this is not TLS at all" * 50)
    await writer.drain()
    await asyncio.sleep(0.2)


def _bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    out = [compressor.compress(b"\0" * (1 << 20)) for _ in range(1024)]  # 1 GiB of zeros
    return b"".join(out) + compressor.flush()


class ServerThread:
    """The hostile servers run on an event loop of their own, in a thread, as they would on
    another machine: a server busy writing 1 GiB must not slow the probe's own loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        async def cancel_all() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def test_probe_survives_hostile_servers_and_finishes_the_list(tmp_path: Path) -> None:
    issued = pki()
    bomb = _bomb()
    elsewhere = ServerThread()

    async def main() -> tuple[
        list[dict[str, object]], list[dict[str, object]], float, int, dict[str, str]
    ]:
        huge, p_huge = await start_tcp(_huge_body)
        slow, p_slow = await start_tcp(_slowloris)
        garbage, p_garbage = await start_tcp(_garbage)
        bombs, p_bomb = await start_tcp(
            simple_http({"/": (200, [("Content-Encoding", "gzip")], bomb)})
        )
        loop_server, p_loop = await start_tcp(simple_http({"/": (302, [("Location", "/")], b"")}))
        good, p_good = await start_tcp(simple_http({"/": (200, [], b"<title>fine</title>hello")}))
        servers = [huge, slow, garbage, bombs, loop_server, good]

        # As many A records as a UDP datagram holds (~4,000), all on loopback. Built once:
        # the server shares the GIL with the probe, and dnspython takes a while over 4,000.
        addresses = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(4000)]
        template = a_reply(dns.message.make_query("many-answers.test", "A"), *addresses)[:65000]

        def many(query: dns.message.Message) -> list[tuple[float, bytes]]:
            return [(0.0, query.id.to_bytes(2, "big") + template[2:])]

        dns_server = elsewhere.run(start_dns_udp(many))
        urls = {
            "huge": f"http://{LOOPBACK}:{p_huge}/",
            "slowloris": f"http://{LOOPBACK}:{p_slow}/",
            "garbage-tls": f"https://{LOOPBACK}:{p_garbage}/",
            "bomb": f"http://{LOOPBACK}:{p_bomb}/",
            "loop": f"http://{LOOPBACK}:{p_loop}/",
            "many-answers": f"http://many-answers.test:{p_good}/",
            "good": f"http://{LOOPBACK}:{p_good}/",
        }
        lines = [
            *list(urls.values())[:5],
            "not a url at all",
            "ftp://example.invalid/file",
            *list(urls.values())[5:],
        ]
        list_file = tmp_path / "list.txt"
        list_file.write_text("\n".join(lines))
        inputs = gather_inputs([], [str(list_file)], [])
        assert len(inputs.skipped) == 2 and "list.txt:6" in inputs.skipped[0], inputs.skipped
        config = ProbeConfig(
            trust=TrustStore.from_pem_bytes(issued.root.pem),
            resolver=LOOPBACK,
            resolver_port=dns_server.port,
            connect_timeout=2,
            tls_timeout=2,
            http_timeout=3,
            dns_timeout=2,
            late_window=0.2,
            url_budget=15,
        )
        sink = io.StringIO()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        result = await run_measurements(
            WebConnectivity(config), inputs.urls, concurrency=16, output=sink
        )
        elapsed = time.monotonic() - started
        # Peak RSS growth (KiB): reading the 1 GiB body or inflating the bomb would show here.
        # (tracemalloc would be finer, but it slows allocation enough to distort the timeouts.)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        for server in servers:
            elsewhere.loop.call_soon_threadsafe(server.close)
        elsewhere.loop.call_soon_threadsafe(dns_server.close)
        measurements = [json.loads(line) for line in sink.getvalue().splitlines()]
        return result.verdicts, measurements, elapsed, peak, urls

    try:
        verdicts, measurements, elapsed, peak, urls = asyncio.run(main())
    finally:
        elsewhere.close()
    assert len(verdicts) == len(measurements) == len(urls)  # every valid input measured, none lost
    assert elapsed < 20, elapsed
    assert peak < 150 * 1024, f"peak RSS grew by {peak / 1024:.0f} MiB"
    by_url: dict[str, Any] = {str(m["input"]): m for m in measurements}

    def last_request(case: str) -> Any:
        requests = by_url[urls[case]]["test_keys"]["requests"]
        assert requests, case
        return requests[0]

    huge = last_request("huge")
    assert huge["response"]["body_is_truncated"] is True
    assert len(str(huge["response"]["body"])) <= 512 * 1024 + 1024
    assert last_request("slowloris")["failure"] == "generic_timeout_error"
    assert str(last_request("garbage-tls")["failure"]).startswith(
        ("ssl_", "connection_reset", "eof_error", "unknown")
    )
    assert last_request("bomb")["response"]["body_is_truncated"] is True
    assert len(by_url[urls["loop"]]["test_keys"]["requests"]) <= 12
    assert last_request("loop")["failure"] == "x_too_many_redirects"
    many = by_url[urls["many-answers"]]["test_keys"]
    assert len(many["queries"][0]["answers"]) <= 100
    assert len(many["tcp_connect"]) <= 4
    assert last_request("good")["response"]["code"] == 200
