"""Traced TCP connect."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from .failures import failure_string
from .trace import Clock, NetworkEvent, Trace

__all__ = ["TCPResult", "connect", "format_address"]


def format_address(ip: str, port: int) -> str:
    """``1.2.3.4:443`` / ``[::1]:443``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True, slots=True)
class TCPResult:
    ip: str
    port: int
    failure: str | None
    t0: float
    t: float
    transaction_id: int = 0

    @property
    def address(self) -> str:
        return format_address(self.ip, self.port)

    def to_ooni(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "port": self.port,
            "status": {
                "blocked": False,
                "failure": self.failure,
                "success": self.failure is None,
            },
            "t0": self.t0,
            "t": self.t,
            "transaction_id": self.transaction_id,
        }


async def connect(
    ip: str, port: int, *, timeout: float = 10.0, trace: Trace | None = None
) -> tuple[TCPResult, socket.socket | None]:
    """Connect to ``ip:port`` (an IP literal); the caller owns (and closes) the socket."""
    clock = Clock(trace)
    failure: str | None = None
    sock: socket.socket | None = None
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except (OSError, TimeoutError, ValueError) as exc:
        failure = failure_string(exc)
        if sock is not None:
            sock.close()
            sock = None
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    result = TCPResult(ip, port, failure, clock.t0, clock.now(), clock.transaction_id)
    if trace is not None:
        trace.tcp_connect.append(result)
        if failure is None:
            trace.note_connect(format_address(ip, port), result.transaction_id)
        trace.network_events.append(
            NetworkEvent(
                "connect",
                format_address(ip, port),
                failure,
                result.t,
                transaction_id=result.transaction_id,
                t0=result.t0,
            )
        )
    return result, sock
