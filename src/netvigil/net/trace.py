"""``Trace``: the per-measurement recorder the primitives append their results to."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["NetworkEvent", "OONIRecord", "Trace"]


class OONIRecord(Protocol):
    """Anything that renders itself as one OONI test_keys list entry."""

    def to_ooni(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class NetworkEvent:
    """One low-level event (OONI ``network_events`` entry)."""

    operation: str
    address: str | None
    failure: str | None
    t: float
    proto: str = "tcp"
    num_bytes: int | None = None
    transaction_id: int = 0
    t0: float | None = None

    def to_ooni(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": self.address,
            "failure": self.failure,
            "operation": self.operation,
            "proto": self.proto,
            "t": self.t,
            "tags": [],
            "transaction_id": self.transaction_id,
        }
        if self.t0 is not None:
            out["t0"] = self.t0
        if self.num_bytes is not None:
            out["num_bytes"] = self.num_bytes
        return out


class Trace:
    """Records every traced primitive of one measurement.

    ``t0`` is ``time.monotonic()`` at creation; every ``t0``/``t`` in the results is seconds
    since then. Transaction ids start at 1 and are unique within the trace. Lists hold the
    typed results (``DNSResult``, ``TCPResult``, ``TLSResult``, ``HTTPResult``, ``NetworkEvent``)
    in the order they finished; ``test_keys_fragment()`` renders them.
    """

    __slots__ = (
        "_connects",
        "_next_id",
        "network_events",
        "queries",
        "requests",
        "t0",
        "tcp_connect",
        "tls_handshakes",
    )

    def __init__(self, t0: float | None = None) -> None:
        self.t0: float = time.monotonic() if t0 is None else t0
        self._next_id = 0
        self._connects: dict[str, int] = {}  # "ip:port" -> id of the latest connect to it
        self.queries: list[OONIRecord] = []
        self.tcp_connect: list[OONIRecord] = []
        self.tls_handshakes: list[OONIRecord] = []
        self.requests: list[OONIRecord] = []
        self.network_events: list[OONIRecord] = []

    def elapsed(self) -> float:
        """Seconds since ``t0``."""
        return time.monotonic() - self.t0

    def next_transaction_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def note_connect(self, address: str, transaction_id: int) -> None:
        """A TCP connect to ``address`` succeeded: what runs over it shares its id (as OONI)."""
        self._connects[address] = transaction_id

    def connect_id(self, address: str) -> int | None:
        """The transaction id of the latest successful connect to ``address``, if any."""
        return self._connects.get(address)

    def test_keys_fragment(self) -> dict[str, list[dict[str, Any]]]:
        """The five OONI lists; ``requests`` newest first, as OONI orders them."""
        return {
            "queries": [r.to_ooni() for r in self.queries],
            "tcp_connect": [r.to_ooni() for r in self.tcp_connect],
            "tls_handshakes": [r.to_ooni() for r in self.tls_handshakes],
            "requests": [r.to_ooni() for r in reversed(self.requests)],
            "network_events": [r.to_ooni() for r in self.network_events],
        }


class Clock:
    """Times one primitive: relative to the trace if any, else to the primitive's own start."""

    __slots__ = ("base", "t0", "transaction_id")

    def __init__(self, trace: Trace | None, transaction_id: int | None = None) -> None:
        """``transaction_id``: the id to use (a connection's), else a new one."""
        now = time.monotonic()
        if trace is None:
            self.base = now
            self.transaction_id = 0
        else:
            self.base = trace.t0
            self.transaction_id = (
                transaction_id if transaction_id is not None else trace.next_transaction_id()
            )
        self.t0 = now - self.base

    def now(self) -> float:
        return time.monotonic() - self.base
