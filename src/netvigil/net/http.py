"""Traced HTTP/1.1 over an established stream (h11), and ``fetch`` with redirects.

Every read is bounded: the response head by ``MAX_HEAD`` (64 KiB), the (decoded) body by
``max_body``, the whole exchange by ``timeout``. ``Content-Encoding: gzip``/``deflate`` is
decoded with ``zlib.decompressobj(...).decompress(data, max_length)``, so a decompression bomb
stops at ``max_body``; other encodings (``br``, ``zstd``) are kept as received. A body that
stops half-way because of the timeout is kept together with how it arrived: ``body_rate``
(mean bytes/s on the wire) and ``transfer`` (a ``BodyTransfer``: time to the response head, a
bounded series of (seconds, bytes) samples, the sustained rate and how long the body had been
silent when the exchange ended). A throttled transfer still receives bytes when the budget cuts
it; a stalled one does not: the verdict tells them apart with these (docs/verdict.md).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import h11

from . import tcp, tls
from .failures import (
    EOF_ERROR,
    GENERIC_TIMEOUT,
    TOO_MANY_REDIRECTS,
    failure_string,
    unknown_failure,
)
from .trace import Clock, Trace

__all__ = [
    "DEFAULT_HEADERS",
    "MAX_HEAD",
    "MAX_RATE_SAMPLES",
    "BodyTransfer",
    "HTTPResult",
    "extract_title",
    "fetch",
    "post",
    "round_trip",
]

MAX_HEAD = 64 * 1024
DEFAULT_MAX_BODY = 512 * 1024
_READ_SIZE = 64 * 1024
_TITLE_SCAN = 64 * 1024
# Bounded quantifiers only: linear on hostile HTML.
_TITLE_RE = re.compile(rb"<title\b[^>]{0,256}>([^<]{1,1024})", re.IGNORECASE)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The body's arrival is sampled every _FIRST_SLICE seconds at first; when MAX_RATE_SAMPLES are
# kept, every other one is dropped and the slice doubles: bounded memory for any duration, and
# always a series that spans the whole transfer.
MAX_RATE_SAMPLES = 64
_FIRST_SLICE = 0.1

Headers = Sequence[tuple[str, str]]

DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Accept-Encoding", "gzip, deflate"),
    (
        "User-Agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/124.0.0.0 Safari/537.36",
    ),
)


def extract_title(body: bytes) -> str:
    """The page ``<title>`` (first 64 KiB only, bounded regex), or "" when there is none."""
    match = _TITLE_RE.search(body, 0, _TITLE_SCAN)
    if match is None:
        return ""
    return " ".join(match.group(1).decode("utf-8", "replace").split())


def _first_values(items: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in items:
        out.setdefault(key, value)
    return out


def _maybe_binary(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode("ascii"), "format": "base64"}


@dataclass(frozen=True, slots=True)
class BodyTransfer:
    """How the response body arrived (times in seconds, bytes as received on the wire).

    ``head_after``: from the request sent to the response head; ``duration``: from the head to
    the end of the exchange (the last byte, or the moment a timeout or failure cut it);
    ``idle_at_end``: seconds without a body byte before that end (0 for a complete body);
    ``samples``: (seconds since the head, cumulative bytes), at most ``MAX_RATE_SAMPLES``, the
    last one at the end; ``sustained_rate``: bytes/s over the second half of the transfer,
    where a start-up burst (TCP's first window, a shaper's bucket) no longer counts.
    ``bytes`` counts body bytes; ``wire_bytes`` TCP bytes received after the head (TLS records
    included), known when the kernel tells (Linux TCP_INFO): then the samples, the rates and
    ``idle_at_end`` are the TCP connection's, else the body's.
    """

    bytes: int
    wire_bytes: int | None
    head_after: float
    duration: float
    idle_at_end: float
    complete: bool
    mean_rate: float | None
    sustained_rate: float | None
    slice_seconds: float
    samples: tuple[tuple[float, int], ...]

    def to_ooni(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "wire_bytes": self.wire_bytes,
            "head_after": round(self.head_after, 6),
            "duration": round(self.duration, 6),
            "idle_at_end": round(self.idle_at_end, 6),
            "complete": self.complete,
            "mean_rate": _round_rate(self.mean_rate),
            "sustained_rate": _round_rate(self.sustained_rate),
            "slice": self.slice_seconds,
            "samples": [[round(t, 3), n] for t, n in self.samples],
        }


def _round_rate(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 1)


@dataclass(frozen=True, slots=True)
class HTTPResult:
    """One HTTP round trip (or the failure that prevented it: then ``status_code`` is None).

    ``body`` is the decoded body, at most ``max_body`` bytes; ``body_rate`` the body's
    transfer rate in bytes/s on the wire (None when no body bytes came); ``transfer`` how the
    body arrived (None when no response head came).
    """

    url: str
    address: str
    failure: str | None
    status_code: int | None
    headers_list: tuple[tuple[str, str], ...]
    body: bytes
    body_is_truncated: bool
    body_rate: float | None
    t0: float
    t: float
    transaction_id: int = 0
    method: str = "GET"
    request_headers: tuple[tuple[str, str], ...] = ()
    transfer: BodyTransfer | None = None

    @property
    def headers(self) -> dict[str, str]:
        """First value of each header name."""
        return _first_values(self.headers_list)

    @property
    def title(self) -> str:
        return extract_title(self.body)

    @property
    def location(self) -> str | None:
        for key, value in self.headers_list:
            if key.lower() == "location":
                return value
        return None

    def to_ooni(self) -> dict[str, Any]:
        request_headers = [[k, v] for k, v in self.request_headers]
        response: dict[str, Any] = {
            "body": _maybe_binary(self.body),
            "body_is_truncated": self.body_is_truncated,
            "code": self.status_code if self.status_code is not None else 0,
            "headers_list": [[k, v] for k, v in self.headers_list],
            "headers": self.headers,
        }
        return {
            "failure": self.failure,
            "request": {
                "body": "",
                "body_is_truncated": False,
                "headers_list": request_headers,
                "headers": _first_values(self.request_headers),
                "method": self.method,
                "tor": {"exit_ip": None, "exit_name": None, "is_tor": False},
                "x_transport": "tcp",
                "url": self.url,
            },
            "response": response,
            "t0": self.t0,
            "t": self.t,
            "transaction_id": self.transaction_id,
            "x_address": self.address,
            "x_body_rate": self.body_rate,
            "x_body_transfer": self.transfer.to_ooni() if self.transfer is not None else None,
        }


class _Decoder:
    """Bounded Content-Encoding decoder (gzip, deflate with or without zlib header)."""

    __slots__ = ("_obj", "_raw_deflate")

    def __init__(self, encoding: str) -> None:
        self._obj: Any = None
        self._raw_deflate = encoding == "deflate"
        if not self._raw_deflate:
            self._obj = zlib.decompressobj(wbits=47)  # gzip or zlib, auto-detected

    def decode(self, data: bytes, limit: int) -> tuple[bytes, bool]:
        """(output of at most ``limit`` bytes, whether input remains undecoded)."""
        if self._obj is None:
            # "deflate" is zlib-wrapped by the RFC but raw in the wild: look at the header.
            zlib_header = (
                len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            )
            self._obj = zlib.decompressobj(wbits=15 if zlib_header else -15)
        obj = self._obj
        if obj.eof:
            return b"", False
        out: bytes = obj.decompress(obj.unconsumed_tail + data, max(limit, 1))
        if len(out) > limit:  # max_length is at least 1
            return out[:limit], True
        return out, bool(obj.unconsumed_tail)


@dataclass(slots=True)
class _Exchange:
    status_code: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    complete: bool = False
    raw_bytes: int = 0
    t_sent: float = 0.0
    t_head: float = 0.0
    t_last: float = 0.0
    t_end: float = 0.0
    failure: str | None = None
    # The series: TCP bytes received since the head (TCP_INFO, sampled each slice) when the
    # kernel tells, else body bytes as they are read. Over TLS the body comes a whole record
    # (16 KiB) at a time: on a 4 kB/s link that is a step every 4 s, which would look like a
    # stall; the TCP counter rises with every segment.
    samples: list[tuple[float, int]] = field(default_factory=list)
    slice_seconds: float = _FIRST_SLICE
    wire_base: int | None = None  # TCP bytes received when the head was read
    wire_end: tuple[int, float] | None = None  # (TCP bytes since the head, s since last data)
    sampler: asyncio.Task[None] | None = None

    def rate(self) -> float | None:
        if self.raw_bytes == 0:
            return None
        duration = self.t_last - self.t_head
        return self.raw_bytes / duration if duration > 0 else None

    def _sample(self, at: float, count: int) -> None:
        samples = self.samples
        # Exact points only: the first of each slice; the end adds the last count.
        if samples and at - samples[-1][0] < self.slice_seconds:
            return
        samples.append((at, count))
        if len(samples) >= MAX_RATE_SAMPLES:
            del samples[1::2]
            self.slice_seconds *= 2

    def on_body(self, size: int, now: float) -> None:
        """Count ``size`` body bytes arrived at ``now``."""
        self.raw_bytes += size
        self.t_last = now
        if self.wire_base is None:
            self._sample(now - self.t_head, self.raw_bytes)

    def on_head(self, writer: asyncio.StreamWriter) -> asyncio.Task[None] | None:
        """Start sampling the TCP counter (None when the kernel does not tell)."""
        self.t_head = self.t_last = time.monotonic()
        counters = _tcp_counters(writer)
        if counters is None:
            return None
        self.wire_base = counters[0]
        self.samples.append((0.0, 0))
        return asyncio.create_task(self._sample_wire(writer))

    async def _sample_wire(self, writer: asyncio.StreamWriter) -> None:
        base = self.wire_base or 0
        while True:
            await asyncio.sleep(self.slice_seconds)
            counters = _tcp_counters(writer)
            if counters is None:
                return
            self._sample(time.monotonic() - self.t_head, max(0, counters[0] - base))

    def finish(self, writer: asyncio.StreamWriter) -> None:
        """The end of the exchange: read the TCP counter one last time (before any abort)."""
        self.t_end = time.monotonic()
        if self.wire_base is not None and self.status_code is not None:
            counters = _tcp_counters(writer)
            if counters is not None:
                self.wire_end = (max(0, counters[0] - self.wire_base), counters[1])

    def transfer(self) -> BodyTransfer | None:
        """How the body arrived, as of the end of the exchange."""
        if self.status_code is None:
            return None
        end = self.t_last if self.complete else max(self.t_end or time.monotonic(), self.t_last)
        duration = max(0.0, end - self.t_head)
        samples = [*self.samples]
        if self.wire_end is not None:
            count, since_data = self.wire_end
            idle = min(since_data, duration)
        elif self.wire_base is not None and samples:
            # The kernel stopped answering at the end: the last TCP sample, the body's silence.
            count, idle = samples[-1][1], max(0.0, end - self.t_last)
        else:
            count, idle = self.raw_bytes, max(0.0, end - self.t_last)
        if self.complete:
            idle = 0.0
        samples = [(t, n) for t, n in samples if t <= duration and n <= count]
        if not samples or samples[-1] != (duration, count):
            samples.append((duration, count))
        if len(samples) > MAX_RATE_SAMPLES:
            del samples[1:-1:2]
        return BodyTransfer(
            bytes=self.raw_bytes,
            wire_bytes=self.wire_end[0] if self.wire_end is not None else None,
            head_after=max(0.0, self.t_head - self.t_sent) if self.t_sent else 0.0,
            duration=duration,
            idle_at_end=idle,
            complete=self.complete,
            mean_rate=count / duration if count and duration > 0 else None,
            sustained_rate=_sustained_rate(samples, duration),
            slice_seconds=self.slice_seconds,
            samples=tuple(samples),
        )


# struct tcp_info (linux/tcp.h): tcpi_last_data_recv (u32, ms) at 52, tcpi_bytes_received
# (u64, Linux 4.1+) at 128.
_TCP_INFO_SIZE = 232
_TCP_INFO_MIN = 136


def _tcp_counters(writer: asyncio.StreamWriter) -> tuple[int, float] | None:
    """(bytes received on the connection, seconds since its last data), or None."""
    option = getattr(socket, "TCP_INFO", None)
    sock = writer.get_extra_info("socket")
    if option is None or sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_SIZE)
    except (OSError, ValueError):
        return None
    if not isinstance(raw, bytes) or len(raw) < _TCP_INFO_MIN:
        return None
    (since_data_ms,) = struct.unpack_from("=I", raw, 52)
    (received,) = struct.unpack_from("=Q", raw, 128)
    return received, since_data_ms / 1000


def _sustained_rate(samples: Sequence[tuple[float, int]], duration: float) -> float | None:
    """Bytes/s from the sample nearest the transfer's middle to its end (None under 1 s)."""
    if duration < 1.0 or not samples:
        return None
    middle = duration / 2
    start_t, start_n = min(samples, key=lambda s: abs(s[0] - middle))
    end_t, end_n = samples[-1]
    if end_t - start_t < 0.5:
        return None
    return (end_n - start_n) / (end_t - start_t)


def _target(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    if parts.port is not None and parts.port != default:
        host = f"{host}:{parts.port}"
    return target, host


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    state: _Exchange,
    *,
    method: str,
    target: str,
    request_headers: list[tuple[str, str]],
    body: bytes,
    max_body: int,
) -> None:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    data = conn.send(h11.Request(method=method, target=target, headers=request_headers))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    writer.write(data)
    await writer.drain()
    state.t_sent = time.monotonic()
    decoder: _Decoder | None = None
    max_raw = 4 * max_body + _READ_SIZE
    saw_eof = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            state.failure = EOF_ERROR if saw_eof else unknown_failure(f"http: {exc}")
            return
        if event is h11.NEED_DATA:
            chunk = await reader.read(_READ_SIZE)
            saw_eof = not chunk
            conn.receive_data(chunk)
            continue
        if isinstance(event, h11.Response):
            state.sampler = state.on_head(writer)
            state.status_code = event.status_code
            state.headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()
            ]
            encoding = b""
            for name, value in event.headers:
                if name == b"content-encoding":
                    encoding = value.strip().lower()
            if encoding in (b"gzip", b"x-gzip", b"deflate"):
                decoder = _Decoder(encoding.decode())
        elif isinstance(event, h11.Data):
            chunk = bytes(event.data)
            state.on_body(len(chunk), time.monotonic())
            room = max_body - len(state.body)
            if decoder is None:
                state.body += chunk[:room]
                more = len(chunk) > room
            else:
                out, more = decoder.decode(chunk, room)
                state.body += out
                # Input that decodes to (almost) nothing is bounded too.
                more = more or state.raw_bytes > max_raw
            if more:
                state.truncated = True
                return
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if state.status_code is None:
                state.failure = EOF_ERROR
            else:
                state.complete = True
            return
        # InformationalResponse (1xx): keep reading.


async def _run_exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    state: _Exchange,
    *,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    max_body: int,
    timeout: float,
) -> list[tuple[str, str]]:
    """Fill ``state`` (also when cancelled from outside: the caller may still record it)."""
    target, host = _target(url)
    request_headers = [("Host", host), *headers]
    try:
        async with asyncio.timeout(timeout):
            await _exchange(
                reader,
                writer,
                state,
                method=method,
                target=target,
                request_headers=request_headers,
                body=body,
                max_body=max_body,
            )
    except (OSError, ssl.SSLError, TimeoutError, h11.ProtocolError, zlib.error, ValueError) as exc:
        state.failure = failure_string(exc)
    finally:
        if state.sampler is not None:
            state.sampler.cancel()
    state.finish(writer)
    if state.failure is not None or state.truncated:
        _abort(writer)
    return request_headers


async def round_trip(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    url: str,
    *,
    address: str,
    headers: Headers = DEFAULT_HEADERS,
    max_body: int = DEFAULT_MAX_BODY,
    timeout: float = 10.0,
    trace: Trace | None = None,
    method: str = "GET",
) -> HTTPResult:
    """GET (or ``method``, without a body) ``url`` over an established stream (plain TCP or
    TLS); ``address`` is "ip:port".

    The writer is aborted when the exchange failed or the body was truncated (the connection
    is then unusable); otherwise the caller closes it. Cancelled from outside (a caller's
    budget ran out first), the exchange is still recorded in ``trace``, as a
    ``generic_timeout_error`` with the body and transfer received so far, before the
    cancellation goes on.
    """
    clock = Clock(trace)
    state = _Exchange()
    target, host = _target(url)
    del target
    request_headers = [("Host", host), *headers]
    try:
        request_headers = await _run_exchange(
            reader,
            writer,
            state,
            method=method,
            url=url,
            headers=headers,
            body=b"",
            max_body=max_body,
            timeout=timeout,
        )
    except asyncio.CancelledError:
        state.finish(writer)
        _abort(writer)
        state.failure = state.failure or GENERIC_TIMEOUT
        _record(state, url, address, clock, request_headers, trace, method)
        raise
    return _record(state, url, address, clock, request_headers, trace, method)


def _record(
    state: _Exchange,
    url: str,
    address: str,
    clock: Clock,
    request_headers: list[tuple[str, str]],
    trace: Trace | None,
    method: str = "GET",
) -> HTTPResult:
    result = HTTPResult(
        url=url,
        address=address,
        failure=state.failure,
        status_code=state.status_code,
        headers_list=tuple(state.headers),
        body=bytes(state.body),
        body_is_truncated=state.truncated,
        body_rate=state.rate(),
        t0=clock.t0,
        t=clock.now(),
        transaction_id=clock.transaction_id,
        request_headers=tuple(request_headers),
        transfer=state.transfer(),
        method=method,
    )
    if trace is not None:
        trace.requests.append(result)
    return result


async def post(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    url: str,
    body: bytes,
    *,
    headers: Headers,
    max_body: int,
    timeout: float,
) -> tuple[int | None, bytes, str | None]:
    """Untraced POST (for DoH): (status, body, failure)."""
    state = _Exchange()
    await _run_exchange(
        reader,
        writer,
        state,
        method="POST",
        url=url,
        headers=[*headers, ("Content-Length", str(len(body)))],
        body=body,
        max_body=max_body,
        timeout=timeout,
    )
    return state.status_code, bytes(state.body), state.failure


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def failed_request(
    url: str,
    address: str,
    failure: str,
    clock: Clock,
    headers: Headers,
    trace: Trace | None,
    method: str = "GET",
) -> HTTPResult:
    """The record of an HTTP exchange that could not start (OONI's request with a failure)."""
    target, host = _target(url)
    del target
    result = HTTPResult(
        url=url,
        address=address,
        failure=failure,
        status_code=None,
        headers_list=(),
        body=b"",
        body_is_truncated=False,
        body_rate=None,
        t0=clock.t0,
        t=clock.now(),
        transaction_id=clock.transaction_id,
        request_headers=(("Host", host), *headers),
        method=method,
    )
    if trace is not None:
        trace.requests.append(result)
    return result


async def _hop(
    url: str,
    *,
    resolve: Callable[[str], Awaitable[list[str]]],
    trust: tls.TrustStore,
    headers: Headers,
    timeout: float,
    max_body: int,
    max_addresses: int,
    trace: Trace | None,
) -> HTTPResult:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        return failed_request(
            url, "", unknown_failure(f"bad URL: {exc}"), Clock(trace), headers, trace
        )
    if scheme not in ("http", "https") or not host:
        return failed_request(
            url, "", unknown_failure(f"unsupported URL: {url[:100]}"), Clock(trace), headers, trace
        )
    if _is_ip(host):
        addresses = [host]
    else:
        try:
            addresses = list(await resolve(host))
        except Exception as exc:
            return failed_request(url, "", failure_string(exc), Clock(trace), headers, trace)
        if not addresses:
            return failed_request(url, "", "dns_no_answer", Clock(trace), headers, trace)
    last_failure = "dns_no_answer"
    last_address = ""
    for ip in addresses[:max_addresses]:
        address = tcp.format_address(ip, port)
        last_address = address
        connected, sock = await tcp.connect(ip, port, timeout=timeout, trace=trace)
        if sock is None:
            last_failure = connected.failure or "connection_refused"
            continue
        if scheme == "https":
            shake, stream = await tls.handshake(
                sock, host, trust=trust, timeout=timeout, trace=trace, address=address
            )
            if stream is None:
                sock.close()
                return failed_request(
                    url,
                    address,
                    shake.failure or "ssl_failed_handshake",
                    Clock(trace),
                    headers,
                    trace,
                )
            reader, writer = stream.reader, stream.writer
        else:
            try:
                reader, writer = await asyncio.open_connection(sock=sock, limit=_READ_SIZE)
            except OSError as exc:
                sock.close()
                return failed_request(
                    url, address, failure_string(exc), Clock(trace), headers, trace
                )
        try:
            return await round_trip(
                reader,
                writer,
                url,
                address=address,
                headers=headers,
                max_body=max_body,
                timeout=timeout,
                trace=trace,
            )
        finally:
            _abort(writer)
    return failed_request(url, last_address, last_failure, Clock(trace), headers, trace)


async def fetch(
    url: str,
    *,
    resolve: Callable[[str], Awaitable[list[str]]],
    trust: tls.TrustStore,
    max_redirects: int = 10,
    timeout: float = 10.0,
    max_body: int = DEFAULT_MAX_BODY,
    trace: Trace | None = None,
    headers: Headers = DEFAULT_HEADERS,
    max_addresses: int = 4,
) -> list[HTTPResult]:
    """GET ``url`` following redirects; one result per hop, oldest first.

    Each hop resolves its host with ``resolve`` (IP literals skip it), connects to the
    addresses in order until one accepts (at most ``max_addresses``), does TLS for https
    (verified against ``trust``) and the round trip, each step bounded by ``timeout``. It stops
    on the first failure (a failed connect or handshake shows as a result without a response,
    carrying that step's failure). After ``max_redirects`` redirects the next URL is not
    fetched: a result for it carries ``x_too_many_redirects``.
    """
    results: list[HTTPResult] = []
    current = url
    while True:
        result = await _hop(
            current,
            resolve=resolve,
            trust=trust,
            headers=headers,
            timeout=timeout,
            max_body=max_body,
            max_addresses=max_addresses,
            trace=trace,
        )
        results.append(result)
        if result.failure is not None or result.status_code not in _REDIRECTS:
            return results
        location = result.location
        if not location:
            return results
        current = urljoin(current, location.strip())
        if len(results) > max_redirects:
            results.append(
                failed_request(current, "", TOO_MANY_REDIRECTS, Clock(trace), headers, trace)
            )
            return results
