"""The probe ends a slow transfer with its own HTTP timeout, before the URL's budget, and keeps
the bytes and the rate it had reached (loopback only: a server trickling 4 kB/s)."""

from __future__ import annotations

import asyncio
from typing import Any

from netvigil.experiments.web_connectivity import ProbeConfig, WebConnectivity
from netvigil.net.tls import TrustStore
from test_net_support import LOOPBACK, pki, read_head, start_tcp


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n")
    for _ in range(750):  # 300 kB at 4 kB/s: 75 s if the client waited
        writer.write(b"z" * 400)
        await writer.drain()
        await asyncio.sleep(0.1)


def test_budget_shorter_than_the_http_timeout_still_records_the_transfer() -> None:
    async def main() -> dict[str, Any]:
        server, port = await start_tcp(_trickle)
        config = ProbeConfig(
            trust=TrustStore.from_pem_bytes(pki().root.pem),
            connect_timeout=2,
            tls_timeout=2,
            http_timeout=30,  # longer than the URL's budget: the budget must win, gracefully
            url_budget=4,
        )
        try:
            with WebConnectivity(config) as probe:
                return await probe.measure(f"http://{LOOPBACK}:{port}/")
        finally:
            server.close()

    measurement = asyncio.run(main())
    tk = measurement["test_keys"]
    (request,) = tk["requests"]
    assert request["failure"] == "generic_timeout_error"
    assert "x_measurement_failure" not in tk  # the HTTP step ended first, by its own timeout
    transfer = request["x_body_transfer"]
    assert 6_000 < transfer["bytes"] < 20_000
    assert transfer["idle_at_end"] < 1.0 and transfer["duration"] > 2.0
    assert 2 <= len(transfer["samples"]) <= 64
    verdict = tk["x_netvigil_verdict"]
    assert verdict["outcome"] == "unknown"  # no control: slow or throttled cannot be told
    assert verdict["evidence"]["http"]["transfer"]["flowing"] is True
    assert 2_000 < verdict["evidence"]["http"]["transfer"]["rate"] < 8_000
