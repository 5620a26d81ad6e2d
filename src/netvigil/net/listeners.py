"""The listening side shared by netvigil's own servers (the control helper, the testbed's sites).

``Listeners`` owns the listening sockets and the task serving each accepted connection, so that
``stop`` can end them all; each server keeps its own admission policy and protocol loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Listeners", "close_writer"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# Bounded buffers and a deep accept queue: a flood of clients waits in the kernel, and one
# client cannot make us buffer more than a request head.
_BACKLOG = 1024
_LIMIT = 64 * 1024


class Listeners:
    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    async def listen(self, handler: Handler, host: str, port: int) -> int:
        """Start serving ``handler`` on host:port (0: a free port); returns the port bound."""
        server = await asyncio.start_server(
            handler, host, port, reuse_address=True, backlog=_BACKLOG, limit=_LIMIT
        )
        self.servers.append(server)
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        """Stop listening, cancel every connection's task and wait (bounded) for the sockets."""
        for server in self.servers:
            server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self.servers.clear()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a connection and wait (at most a second) for it to be gone."""
    if not writer.is_closing():
        writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
