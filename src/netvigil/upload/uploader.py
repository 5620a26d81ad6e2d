"""Send the outbox's pending measurements to a collector (asyncio + h11).

``POST {collector}/api/v1/measurements`` with the scrubbed canonical JSON, gzip-compressed.
Bounded concurrency, a timeout per request (connect + send + answer), retries with exponential
backoff and jitter (``Retry-After`` honoured), at most ``max_attempts`` tries per measurement
per run. Outcomes:

* 2xx: moved to ``sent/`` with the answer (uid, leaf_index, leaf_hash, duplicate);
* 4xx other than 408/429: moved to ``rejected/`` with the status and reason, never retried;
* 408, 429, 5xx, connection failures, timeouts: retried; after the last attempt the measurement
  stays pending for the next run. When a measurement used all its attempts on connection
  failures or timeouts, the collector is taken as unreachable and the run stops (the rest
  stay pending) instead of hammering it.

Plain ``http://`` is allowed only for collectors on loopback or in the testbed range
198.18.0.0/15; ``https://`` verifies the certificate against certifi's bundle.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import ipaddress
import json
import random
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import certifi
import h11

from netvigil import __version__

from .outbox import Outbox, PendingEntry, canonical_json
from .scrub import ScrubOptions, scrub

__all__ = [
    "SUBMIT_PATH",
    "Collector",
    "CollectorURLError",
    "UploadConfig",
    "UploadSummary",
    "parse_collector_url",
    "upload_outbox",
]

SUBMIT_PATH = "/api/v1/measurements"
_TESTBED = ipaddress.ip_network("198.18.0.0/15")
_MAX_ANSWER = 64 * 1024
_MAX_REASON = 2000
_MAX_ERRORS = 20
_READ = 16 * 1024
_INLINE_FILE = 64 * 1024  # outbox files up to this size are read on the event loop


class CollectorURLError(ValueError):
    """A collector URL we refuse (message is one line)."""


@dataclass(frozen=True)
class Collector:
    url: str
    scheme: str
    host: str
    port: int
    target: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_collector_url(url: str) -> Collector:
    """Check a collector URL; plain http only to loopback or 198.18.0.0/15 (IP literals)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise CollectorURLError(f"invalid collector URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise CollectorURLError(f"invalid collector URL {url!r}: need http(s)://HOST[:PORT]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise CollectorURLError(f"invalid collector URL {url!r}: no credentials, query or fragment")
    if scheme == "http":
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is None or not (ip.is_loopback or (ip.version == 4 and ip in _TESTBED)):
            raise CollectorURLError(
                f"refusing plain http to {host}: use https, http is only for loopback or "
                "testbed (198.18.0.0/15) collectors"
            )
    path = parts.path.rstrip("/")
    target = path if path.endswith(SUBMIT_PATH) else path + SUBMIT_PATH
    return Collector(
        url=url.strip(),
        scheme=scheme,
        host=host,
        port=port if port is not None else (443 if scheme == "https" else 80),
        target=target,
    )


@dataclass(frozen=True)
class UploadConfig:
    collector: str
    concurrency: int = 8
    timeout: float = 30.0
    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    # A Retry-After longer than this ends the measurement's attempts for this run.
    retry_after_max: float = 600.0
    scrub_options: ScrubOptions = field(default_factory=ScrubOptions)
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_attempts < 1 or self.timeout <= 0:
            raise ValueError("concurrency, max_attempts and timeout must be positive")


@dataclass
class UploadSummary:
    sent: int = 0
    duplicates: int = 0
    rejected: int = 0
    pending: int = 0
    attempts: int = 0
    stopped: bool = False
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def note(self, message: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(message)


class _Transient(Exception):
    """A failure worth retrying; ``retry_after`` from the collector, ``unreachable`` for
    connection failures and timeouts."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        unreachable: bool = False,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable
        self.timed_out = timed_out


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _ssl_context(config: UploadConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file or certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Connection:
    """One worker's keep-alive connection to the collector (opened on first use).

    Reusing the connection saves a TCP handshake (and a TLS one) per measurement, which was
    the uploader's largest cost. A request that fails on a reused connection is sent once more
    on a fresh one: the collector may have closed the idle connection just as we wrote, and a
    resend is harmless because submission is idempotent (by content hash).
    """

    def __init__(
        self, collector: Collector, config: UploadConfig, context: ssl.SSLContext | None
    ) -> None:
        self.collector = collector
        self.config = config
        self.context = context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11: h11.Connection | None = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = self._h11 = None

    async def post(self, body: bytes) -> _Answer:
        """One POST, bounded by ``config.timeout`` overall (each try)."""
        if self._writer is not None:
            try:
                return await self._post_once(body)
            except _Transient as exc:
                # A timeout is the collector's state, not a stale connection: no second try.
                if exc.timed_out:
                    raise
        return await self._post_once(body)

    async def _post_once(self, body: bytes) -> _Answer:
        timeout = self.config.timeout
        try:
            async with asyncio.timeout(timeout):
                if self._writer is None:
                    try:
                        self._reader, self._writer = await asyncio.open_connection(
                            self.collector.host,
                            self.collector.port,
                            ssl=self.context,
                            server_hostname=self.collector.host if self.context else None,
                        )
                    except OSError as exc:
                        raise _Transient(f"cannot connect: {exc}", unreachable=True) from None
                    self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_ANSWER)
                assert self._reader is not None and self._h11 is not None
                answer = await _exchange(
                    self._reader, self._writer, self._h11, self.collector, body
                )
        except TimeoutError:
            self.close()
            raise _Transient(
                f"no answer within {timeout:g}s", unreachable=True, timed_out=True
            ) from None
        except _Transient:
            self.close()
            raise
        # Keep the connection only when both sides finished the exchange cleanly.
        conn = self._h11
        if conn is not None and conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()
        return answer


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    conn: h11.Connection,
    collector: Collector,
    body: bytes,
) -> _Answer:
    request = h11.Request(
        method="POST",
        target=collector.target,
        headers=[
            ("Host", collector.host_header),
            ("User-Agent", f"netvigil/{__version__}"),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("Accept", "application/json"),
            ("Content-Length", str(len(body))),
        ],
    )
    try:
        writer.write(conn.send(request) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        status = 0
        headers: dict[str, str] = {}
        answer = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(_READ)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers
                }
            elif isinstance(event, h11.Data):
                answer += event.data
                if len(answer) > _MAX_ANSWER:
                    break
            elif isinstance(event, h11.ConnectionClosed):
                if status == 0:
                    raise _Transient("collector closed the connection without an answer")
                break
            elif isinstance(event, h11.EndOfMessage):
                break
        return _Answer(status, headers, bytes(answer[:_MAX_ANSWER]))
    except h11.ProtocolError as exc:
        raise _Transient(f"bad HTTP from collector: {exc}") from None
    except OSError as exc:
        raise _Transient(f"connection failed: {exc}", unreachable=True) from None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _reason(answer: _Answer) -> str:
    detail = _json_object(answer.body)
    for key in ("detail", "error", "message"):
        if key in detail:
            value = detail[key]
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            return text[:_MAX_REASON]
    return answer.body.decode("utf-8", "replace")[:_MAX_REASON]


class _Run:
    def __init__(
        self,
        outbox: Outbox,
        config: UploadConfig,
        collector: Collector,
        stop: asyncio.Event,
        sleep: Callable[[float], float],
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.collector = collector
        self.stop = stop
        self.jitter = sleep
        self.summary = UploadSummary()
        self.context = _ssl_context(config) if collector.scheme == "https" else None

    async def worker(self, entries: Iterator[PendingEntry]) -> None:
        connection = _Connection(self.collector, self.config, self.context)
        try:
            for entry in entries:
                if self.stop.is_set():
                    self.summary.pending += 1
                    continue
                await self.one(entry, connection)
        finally:
            connection.close()

    def _body(self, entry: PendingEntry) -> tuple[bytes | None, bool]:
        """(gzip body, rejected): file work, run in a worker thread."""
        raw = self.outbox.read(entry.id)
        if raw is None:  # moved by someone else meanwhile
            return None, False
        try:
            measurement = json.loads(raw)
            if not isinstance(measurement, dict):
                raise ValueError("not a JSON object")
            # Scrub again: defence in depth, and --scrub-ip given only at upload time.
            data = canonical_json(scrub(measurement, self.config.scrub_options))
        except ValueError as exc:
            self.outbox.mark_rejected(
                entry.id, {"status": None, "reason": f"unreadable in outbox: {exc}"[:200]}
            )
            return None, True
        return gzip.compress(data, compresslevel=6, mtime=0), False

    async def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` unless told to stop; True when stopped."""
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True

    async def one(self, entry: PendingEntry, connection: _Connection) -> None:
        # Reading and scrubbing one small file is CPU work under the GIL: a worker thread would
        # only add a hand-off. Large files (a measurement can reach megabytes) go to a thread
        # so that they do not stall the other uploads.
        if entry.size <= _INLINE_FILE:
            body, rejected = self._body(entry)
        else:
            body, rejected = await asyncio.to_thread(self._body, entry)
        if rejected:
            self.summary.rejected += 1
        if body is None:
            return
        cfg = self.config
        failure: _Transient | None = None
        for attempt in range(1, cfg.max_attempts + 1):
            self.summary.attempts += 1
            try:
                answer = await connection.post(body)
            except _Transient as exc:
                failure = exc
            else:
                if 200 <= answer.status < 300:
                    await self._accepted(entry, answer)
                    return
                if 400 <= answer.status < 500 and answer.status not in (408, 429):
                    reason = _reason(answer)
                    await asyncio.to_thread(
                        self.outbox.mark_rejected,
                        entry.id,
                        {"status": answer.status, "reason": reason},
                    )
                    self.summary.rejected += 1
                    return
                failure = _Transient(
                    f"HTTP {answer.status}",
                    retry_after=_retry_after(answer.headers.get("retry-after")),
                )
            if attempt == cfg.max_attempts or self.stop.is_set():
                break
            if failure.retry_after is not None:
                if failure.retry_after > cfg.retry_after_max:
                    break
                delay = failure.retry_after
            else:
                ceiling = min(cfg.backoff_max, cfg.backoff_base * 2 ** (attempt - 1))
                delay = self.jitter(ceiling)
            if await self._wait(delay):
                break
        self.summary.pending += 1
        self.summary.note(f"{entry.id[:12]}: {failure}")
        if failure is not None and failure.unreachable and not self.stop.is_set():
            self.summary.note(f"collector {self.collector.url} unreachable: stopping this run")
            self.summary.stopped = True
            self.stop.set()

    async def _accepted(self, entry: PendingEntry, answer: _Answer) -> None:
        data = _json_object(answer.body)
        record: dict[str, Any] = {
            "status": answer.status,
            "collector": self.collector.url,
            "measurement_uid": data.get("measurement_uid"),
            "leaf_index": data.get("leaf_index"),
            "leaf_hash": data.get("leaf_hash"),
            "duplicate": data.get("duplicate") is True,
        }
        # Two renames and a small write without fsync (see Outbox.mark_sent): cheaper inline
        # than the hand-off to a thread.
        self.outbox.mark_sent(entry.id, record)
        self.summary.sent += 1
        if record["duplicate"]:
            self.summary.duplicates += 1


def _equal_jitter(ceiling: float) -> float:
    return random.uniform(ceiling / 2, ceiling)


async def upload_outbox(
    outbox: Outbox,
    config: UploadConfig,
    *,
    stop: asyncio.Event | None = None,
    jitter: Callable[[float], float] = _equal_jitter,
) -> UploadSummary:
    """Send every pending measurement once (with retries); never raises for network errors.

    Raises ``CollectorURLError`` (before any connection) for a refused URL and ``OutboxBusy``
    when another uploader holds the outbox. Set ``stop`` to end the run cleanly: measurements
    not yet accepted stay pending.
    """
    collector = parse_collector_url(config.collector)
    with outbox.upload_lock():
        run = _Run(outbox, config, collector, stop or asyncio.Event(), jitter)
        entries = iter(outbox.pending())
        workers = [asyncio.create_task(run.worker(entries)) for _ in range(config.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        run.summary.stopped = run.summary.stopped or run.stop.is_set()
        return run.summary
