"""The collector as a testbed role: in `internet`, at COLLECTOR:SERVICE_PORT, data in the state.

The testbed's collector keeps its database and signing key in the testbed's private state
folder, so it lives and dies with the testbed; rate limiting is off (one client: the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from netvigil.collector.app import CollectorConfig, create_app
from netvigil.testbed.agent import Stop
from netvigil.testbed.plan import COLLECTOR, SERVICE_PORT, Plan

START_TIMEOUT = 15.0


async def start_collector(plan: Plan) -> Stop:
    import uvicorn

    data = Path(plan.state_dir) / "collector"
    data.mkdir(parents=True, exist_ok=True)
    app = create_app(CollectorConfig(data_dir=data, rate=0))
    config = uvicorn.Config(
        app,
        host=COLLECTOR,
        port=SERVICE_PORT,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # The agent owns the process's signals (it stops every role); uvicorn must not take them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the collector stopped while starting")
        if loop.time() > deadline:
            raise RuntimeError(f"the collector did not start within {START_TIMEOUT:.0f} s")
        await asyncio.sleep(0.02)

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)

    return stop
