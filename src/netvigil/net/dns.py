"""Traced DNS: UDP (with late-reply capture), TCP, DNS over HTTPS, and the system resolver.

Messages are built and parsed with dnspython; the sockets are our own (asyncio), so timing is
ours and every reply is seen. Over UDP the first valid reply (matching id and question) is the
answer; the socket then stays open for ``late_window`` seconds and every further valid reply is
kept in ``late_replies``: on-path injection shows as a forged first reply and the real one later.

Bounds: replies over 64 KiB are ignored (UDP) or impossible (TCP framing); at most
``MAX_ANSWERS`` answers and ``MAX_LATE_REPLIES`` late replies are kept; at most
``MAX_DATAGRAMS`` datagrams are looked at per query; garbage is ignored.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from . import http
from .failures import (
    DNS_NO_ANSWER,
    DNS_NXDOMAIN,
    DNS_REFUSED,
    DNS_SERVER_FAILURE,
    failure_string,
    unknown_failure,
)
from .tcp import format_address
from .trace import Clock, Trace

__all__ = [
    "MAX_ANSWERS",
    "MAX_LATE_REPLIES",
    "SYSTEM_ENGINE",
    "DNSAnswer",
    "DNSReply",
    "DNSResult",
    "parse_reply",
    "question_key",
    "resolve",
    "resolve_doh",
    "resolve_system",
]

MAX_MESSAGE = 65535
MAX_ANSWERS = 100
MAX_LATE_REPLIES = 16
MAX_DATAGRAMS = 256
EDNS_PAYLOAD = 1232
# OONI's engine name for the system resolver (netxlite's getaddrinfo transport); its analysis
# takes DNS only from lookups recorded under this name (or the older "system").
SYSTEM_ENGINE = "getaddrinfo"

_RCODE_FAILURES = {
    dns.rcode.NXDOMAIN: DNS_NXDOMAIN,
    dns.rcode.REFUSED: DNS_REFUSED,
    dns.rcode.SERVFAIL: DNS_SERVER_FAILURE,
}
_HEADER = struct.Struct("!HHHH")
_TYPE_CLASS = struct.Struct("!HH")
_RECORD = struct.Struct("!HHIH")
_FULL_HEADER = struct.Struct("!HHHHHH")
_OPT_RECORD = b"\x00" + struct.pack("!HHIH", 41, EDNS_PAYLOAD, 0, 0)  # root, OPT, payload size


@functools.lru_cache(maxsize=4096)
def _name_wire(hostname: str) -> bytes:
    """The name as lowercase wire labels (IDNA); raises like dnspython on a bad name."""
    wire = dns.name.from_text(hostname).to_wire()
    assert wire is not None
    return wire.lower()


@dataclass(slots=True)
class _Query:
    """A query built straight to wire: dnspython's builder costs ~0.3 ms a query, and the
    probe asks two resolvers for every URL."""

    id: int
    name_wire: bytes
    rdtype: int
    edns: bool = True

    def to_wire(self) -> bytes:
        header = _FULL_HEADER.pack(self.id, 0x0100, 1, 0, 0, 1 if self.edns else 0)  # RD set
        question = self.name_wire + _TYPE_CLASS.pack(self.rdtype, dns.rdataclass.IN)
        return header + question + (_OPT_RECORD if self.edns else b"")


AnyQuery = dns.message.Message | _Query
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_CNAME = dns.rdatatype.CNAME


@dataclass(frozen=True, slots=True)
class DNSAnswer:
    answer_type: str
    value: str
    ttl: int | None

    def to_ooni(self) -> dict[str, Any]:
        key = {"A": "ipv4", "AAAA": "ipv6"}.get(self.answer_type, "hostname")
        return {"answer_type": self.answer_type, key: self.value, "ttl": self.ttl}


def _answers_ooni(answers: tuple[DNSAnswer, ...]) -> list[dict[str, Any]] | None:
    return [a.to_ooni() for a in answers] if answers else None


@dataclass(frozen=True, slots=True)
class DNSReply:
    """One reply message. ``retransmission``: it answers the retried query (UDP)."""

    rcode: str
    failure: str | None
    answers: tuple[DNSAnswer, ...]
    addresses: tuple[str, ...]
    t: float
    retransmission: bool = False

    def to_ooni(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "answers": _answers_ooni(self.answers),
            "failure": self.failure,
            "t": self.t,
            "rcode": self.rcode,
        }
        if self.retransmission:
            out["x_retransmission"] = True
        return out


@dataclass(frozen=True, slots=True)
class DNSResult:
    hostname: str
    resolver_address: str
    engine: str
    qtype: str
    failure: str | None
    addresses: tuple[str, ...]
    answers: tuple[DNSAnswer, ...]
    rcode: str | None
    late_replies: tuple[DNSReply, ...]
    t0: float
    t: float
    transaction_id: int = 0
    resolver_port: str | None = None
    queries_sent: int | None = None  # UDP: the query and its retransmissions
    # The user's own resolver, asked directly: recorded as OONI records the system resolver
    # (engine "getaddrinfo", resolver_address ""), with how we really asked it in x_ keys.
    as_system: bool = False

    def to_ooni(self) -> dict[str, Any]:
        # OONI's probes write resolver_port null for every engine (the port is in the address).
        out = {
            "answers": _answers_ooni(self.answers),
            "engine": SYSTEM_ENGINE if self.as_system else self.engine,
            "failure": self.failure,
            "hostname": self.hostname,
            "query_type": self.qtype,
            "resolver_address": "" if self.as_system else self.resolver_address,
            "resolver_hostname": None,
            "resolver_port": None,
            "t0": self.t0,
            "t": self.t,
            "transaction_id": self.transaction_id,
            "x_late_replies": [r.to_ooni() for r in self.late_replies],
            "x_rcode": self.rcode,
        }
        if self.as_system:
            out["x_engine"] = self.engine
            out["x_resolver_address"] = self.resolver_address
        if self.queries_sent is not None:
            # A timeout says how many queries went unanswered (a censor dropping DNS drops all).
            out["x_queries_sent"] = self.queries_sent
        return out


class _Malformed(Exception):
    pass


def _skip_name(wire: bytes, offset: int) -> int:
    """The offset just after the (possibly compressed) name at ``offset``."""
    size = len(wire)
    while offset < size:
        length = wire[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            if offset + 2 > size:
                break
            return offset + 2
        if length & 0xC0:
            raise _Malformed("bad label type")
        offset += 1 + length
    raise _Malformed("truncated name")


def _read_name(wire: bytes, offset: int) -> str:
    """The name at ``offset`` as text, following at most 32 compression pointers."""
    labels: list[str] = []
    size = len(wire)
    hops = total = 0
    while True:
        if offset >= size:
            raise _Malformed("truncated name")
        length = wire[offset]
        if length == 0:
            return ".".join(labels)
        if length & 0xC0 == 0xC0:
            hops += 1
            if hops > 32 or offset + 2 > size:
                raise _Malformed("bad compression pointer")
            offset = (length & 0x3F) << 8 | wire[offset + 1]
            continue
        if length & 0xC0:
            raise _Malformed("bad label type")
        label = wire[offset + 1 : offset + 1 + length]
        total += length + 1
        if len(label) != length or total > 255:
            raise _Malformed("bad name")
        labels.append(label.decode("ascii", "backslashreplace"))
        offset += 1 + length


def question_key(query: AnyQuery) -> bytes:
    """The query's question as lowercase wire bytes (name, type, class)."""
    if isinstance(query, _Query):
        return query.name_wire + _TYPE_CLASS.pack(query.rdtype, dns.rdataclass.IN)
    question = query.question[0]
    name = question.name.to_wire()
    assert name is not None
    return name.lower() + _TYPE_CLASS.pack(question.rdtype, question.rdclass)


def _answer(wire: bytes, rdtype: int, start: int, size: int, ttl: int) -> DNSAnswer | None:
    if rdtype == _A and size == 4:
        return DNSAnswer("A", socket.inet_ntop(socket.AF_INET, wire[start : start + 4]), ttl)
    if rdtype == _AAAA and size == 16:
        return DNSAnswer("AAAA", socket.inet_ntop(socket.AF_INET6, wire[start : start + 16]), ttl)
    if rdtype == _CNAME:
        return DNSAnswer("CNAME", _read_name(wire, start), ttl)
    if rdtype in (_A, _AAAA):
        raise _Malformed("bad address length")
    try:
        rdata = dns.rdata.from_wire(
            dns.rdataclass.IN, dns.rdatatype.RdataType(rdtype), wire, start, size
        )
        text = rdata.to_text()
    except Exception:
        text = wire[start : start + size].hex()
    return DNSAnswer(dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype)), text[:512], ttl)


def parse_reply(
    wire: bytes,
    query: AnyQuery,
    t: float,
    *,
    retransmission: bool = False,
    expected: bytes | None = None,
) -> DNSReply | None:
    """The reply in ``wire`` if it answers ``query`` (id, QR, question), else None.

    A bounded wire walk rather than dnspython's full parse (which is quadratic in the records
    of one RRset, and slow): the header and question are checked, then at most
    ``MAX_ANSWERS`` answer records are read; the rest of the message is not looked at.
    ``expected`` is ``question_key(query)``, precomputed by callers that parse many replies.
    """
    if len(wire) < 12 or len(wire) > MAX_MESSAGE:
        return None
    ident, flags, qdcount, ancount = _HEADER.unpack_from(wire)
    if ident != query.id or not flags & dns.flags.QR or (flags >> 11) & 0xF != 0 or qdcount != 1:
        return None
    key = expected if expected is not None else question_key(query)
    qtype = query.rdtype if isinstance(query, _Query) else query.question[0].rdtype
    end = 12 + len(key)
    # The question must come back as sent (case aside: DNS 0x20), uncompressed.
    if wire[12 : end - 4].lower() != key[:-4] or wire[end - 4 : end] != key[-4:]:
        return None
    offset = end
    try:
        answers: list[DNSAnswer] = []
        addresses: list[str] = []
        for _ in range(min(ancount, MAX_ANSWERS)):
            offset = _skip_name(wire, offset)
            if offset + 10 > len(wire):
                raise _Malformed("truncated record")
            rdtype, _rdclass, ttl, size = _RECORD.unpack_from(wire, offset)
            offset += 10
            if offset + size > len(wire):
                raise _Malformed("truncated rdata")
            answer = _answer(wire, rdtype, offset, size, ttl)
            offset += size
            if answer is None:
                continue
            answers.append(answer)
            if rdtype == qtype and rdtype in (_A, _AAAA):
                addresses.append(answer.value)
    except _Malformed:
        return None
    rcode = flags & 0xF
    failure = _RCODE_FAILURES.get(rcode)
    if failure is None and rcode != dns.rcode.NOERROR:
        failure = unknown_failure(f"dns rcode {dns.rcode.to_text(rcode)}")
    if failure is None:
        has = addresses if qtype in (_A, _AAAA) else answers
        if not has:
            failure = DNS_NO_ANSWER
    return DNSReply(
        rcode=dns.rcode.to_text(rcode),
        failure=failure,
        answers=tuple(answers),
        addresses=tuple(addresses),
        t=t,
        retransmission=retransmission,
    )


def _make_query(hostname: str, qtype: str, *, edns: bool = True) -> _Query:
    rdtype = int(dns.rdatatype.from_text(qtype))
    return _Query(random.getrandbits(16), _name_wire(hostname), rdtype, edns)


def _result(
    hostname: str,
    resolver_address: str,
    resolver_port: str | None,
    engine: str,
    qtype: str,
    clock: Clock,
    t: float,
    reply: DNSReply | None,
    failure: str | None,
    late: tuple[DNSReply, ...],
    trace: Trace | None,
    queries_sent: int | None = None,
    as_system: bool = False,
) -> DNSResult:
    if reply is not None and failure is None:
        failure = reply.failure
    result = DNSResult(
        hostname=hostname,
        resolver_address=resolver_address,
        engine=engine,
        qtype=qtype,
        failure=failure,
        addresses=reply.addresses if reply is not None else (),
        answers=reply.answers if reply is not None else (),
        rcode=reply.rcode if reply is not None else None,
        late_replies=late,
        t0=clock.t0,
        t=t,
        transaction_id=clock.transaction_id,
        resolver_port=resolver_port,
        queries_sent=queries_sent,
        as_system=as_system,
    )
    if trace is not None:
        trace.queries.append(result)
    return result


class _UDPCollector(asyncio.DatagramProtocol):
    def __init__(self, queries: list[_Query], clock: Clock) -> None:
        self.queries = queries
        self.key = question_key(queries[0])  # a retry asks the same question
        self.clock = clock
        loop = asyncio.get_running_loop()
        self.first: asyncio.Future[DNSReply] = loop.create_future()
        self.full: asyncio.Future[None] = loop.create_future()
        self.late: list[DNSReply] = []
        self.seen = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen += 1
        if self.seen > MAX_DATAGRAMS or self.full.done():
            return
        t = self.clock.now()
        for index, query in enumerate(self.queries):
            reply = parse_reply(data, query, t, retransmission=index > 0, expected=self.key)
            if reply is not None:
                break
        else:
            return
        if not self.first.done():
            self.first.set_result(reply)
            return
        self.late.append(reply)
        if len(self.late) >= MAX_LATE_REPLIES:
            self.full.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on the connected socket (port unreachable → connection_refused).
        if not self.first.done():
            self.first.set_exception(exc)


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


async def _udp(
    query: _Query,
    hostname: str,
    qtype: str,
    resolver_ip: str,
    port: int,
    timeout: float,
    late_window: float,
    clock: Clock,
    queries: list[_Query],
) -> tuple[DNSReply | None, str | None, float, tuple[DNSReply, ...]]:
    """``queries`` receives every query sent (the first one and its retransmission)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(resolver_ip), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((resolver_ip, port))
    except OSError:
        sock.close()
        raise
    queries.append(query)
    collector = _UDPCollector(queries, clock)
    transport, _ = await loop.create_datagram_endpoint(lambda: collector, sock=sock)

    def retransmit() -> None:
        if collector.first.done() or transport.is_closing():
            return
        retry = _make_query(hostname, qtype)
        queries.append(retry)
        transport.sendto(retry.to_wire())

    retry_handle = loop.call_later(timeout / 2, retransmit)
    try:
        transport.sendto(query.to_wire())
        try:
            async with asyncio.timeout(timeout):
                reply = await collector.first
        except (OSError, TimeoutError) as exc:
            # On a timeout the wait cancels `first`, unless a reply was read in the very loop
            # iteration whose timers expired the deadline (a busy loop reads late what came in
            # time): that reply is an answer, not a timeout.
            first = collector.first
            answered = first.done() and not first.cancelled() and first.exception() is None
            if not (isinstance(exc, TimeoutError) and answered):
                return None, failure_string(exc), clock.now(), ()
            reply = first.result()
        t = clock.now()
        if late_window > 0:
            try:
                async with asyncio.timeout(late_window):
                    await collector.full
            except TimeoutError:
                pass
        return reply, None, t, tuple(collector.late[:MAX_LATE_REPLIES])
    finally:
        retry_handle.cancel()
        transport.abort()


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buf), n)
        buf += chunk
    return bytes(buf)


async def _tcp(
    query: _Query, resolver_ip: str, port: int, timeout: float, clock: Clock
) -> tuple[DNSReply | None, str | None, float]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(resolver_ip), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        wire = query.to_wire()
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (resolver_ip, port))
            await loop.sock_sendall(sock, len(wire).to_bytes(2, "big") + wire)
            size = int.from_bytes(await _recv_exactly(loop, sock, 2), "big")
            data = await _recv_exactly(loop, sock, size)  # at most 65535 by construction
    except (OSError, TimeoutError, EOFError) as exc:
        return None, failure_string(exc), clock.now()
    finally:
        sock.close()
    t = clock.now()
    reply = parse_reply(data, query, t)
    if reply is None:
        return None, unknown_failure("malformed or unrelated DNS reply"), t
    return reply, None, t


async def resolve(
    hostname: str,
    resolver_ip: str,
    *,
    port: int = 53,
    engine: str = "udp",
    qtype: str = "A",
    timeout: float = 5.0,
    late_window: float = 0.5,
    trace: Trace | None = None,
    as_system: bool = False,
) -> DNSResult:
    """Ask ``resolver_ip`` (an IP literal) over ``engine`` "udp" or "tcp".

    ``as_system``: this is the user's own resolver (what the OS would ask); the result renders
    as OONI renders a system-resolver lookup (see ``DNSResult.as_system``).

    UDP sends once and, with no reply after ``timeout / 2``, once more with a fresh id (replies
    to that retry carry ``retransmission=True``). ``t`` is the time of the first reply; the call
    itself returns ``late_window`` seconds later (UDP only).
    """
    if engine not in ("udp", "tcp"):
        raise ValueError(f"unknown DNS engine {engine!r} (udp or tcp)")
    clock = Clock(trace)
    address = format_address(resolver_ip, port)
    late: tuple[DNSReply, ...] = ()
    reply: DNSReply | None = None
    sent: list[_Query] = []
    try:
        query = _make_query(hostname, qtype)
        if engine == "udp":
            reply, failure, t, late = await _udp(
                query, hostname, qtype, resolver_ip, port, timeout, late_window, clock, sent
            )
        else:
            reply, failure, t = await _tcp(query, resolver_ip, port, timeout, clock)
    except Exception as exc:  # OSError; dnspython on bad names (too long, empty label)
        failure, t = failure_string(exc), clock.now()
    queries_sent = len(sent) if engine == "udp" else None
    return _result(
        hostname,
        address,
        str(port),
        engine,
        qtype,
        clock,
        t,
        reply,
        failure,
        late,
        trace,
        queries_sent,
        as_system,
    )


_DOH_HEADERS = (
    ("Accept", "application/dns-message"),
    ("Content-Type", "application/dns-message"),
)


async def resolve_doh(
    hostname: str,
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float = 5.0,
    trace: Trace | None = None,
    qtype: str = "A",
    address: str | None = None,
) -> DNSResult:
    """RFC 8484 POST to ``url``. ``ssl_context`` verifies the DoH server (caller's choice).

    The server is reached at ``address`` (an IP literal) if given, else at the URL's host if
    that is an IP literal, else at the system resolver's first answer for it.
    """
    clock = Clock(trace)
    deadline = time.monotonic() + timeout
    reply: DNSReply | None = None
    failure: str | None = None
    parts = urlsplit(url)
    port = parts.port or 443
    writer: asyncio.StreamWriter | None = None
    try:
        host = parts.hostname or ""
        query = _make_query(hostname, qtype, edns=False)
        query.id = 0  # RFC 8484 §4.1: cache friendly
        ip = address
        if ip is None:
            try:
                ipaddress.ip_address(host)
                ip = host
            except ValueError:
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                    timeout,
                )
                ip = str(infos[0][4][0])
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            reader, writer = await asyncio.open_connection(
                ip, port, ssl=ssl_context, server_hostname=host, ssl_handshake_timeout=timeout + 1
            )
        status, body, failure = await http.post(
            reader,
            writer,
            url,
            query.to_wire(),
            headers=_DOH_HEADERS,
            max_body=MAX_MESSAGE,
            timeout=max(deadline - time.monotonic(), 0.001),
        )
        if failure is None:
            if status != 200:
                failure = unknown_failure(f"DoH HTTP status {status}")
            else:
                reply = parse_reply(body, query, clock.now())
                if reply is None:
                    failure = unknown_failure("malformed or unrelated DNS reply")
    except Exception as exc:
        failure = failure_string(exc)
    finally:
        if writer is not None:
            writer.transport.abort()
    return _result(
        hostname, url, str(port), "doh", qtype, clock, clock.now(), reply, failure, (), trace
    )


async def resolve_system(
    hostname: str, *, timeout: float = 5.0, trace: Trace | None = None, qtype: str = "A"
) -> DNSResult:
    """getaddrinfo in the loop's default executor (engine "getaddrinfo", as OONI records it);
    A or AAAA only."""
    clock = Clock(trace)
    family = socket.AF_INET6 if qtype == "AAAA" else socket.AF_INET
    reply: DNSReply | None = None
    failure: str | None = None
    try:
        async with asyncio.timeout(timeout):
            infos = await asyncio.get_running_loop().getaddrinfo(
                hostname, None, family=family, type=socket.SOCK_STREAM
            )
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))[:MAX_ANSWERS]
        answers = tuple(DNSAnswer(qtype, a, None) for a in addresses)
        reply = DNSReply(
            rcode="NOERROR",
            failure=None if addresses else DNS_NO_ANSWER,
            answers=answers,
            addresses=addresses,
            t=clock.now(),
        )
    except Exception as exc:
        failure = failure_string(exc)
    return _result(
        hostname, "", None, SYSTEM_ENGINE, qtype, clock, clock.now(), reply, failure, (), trace
    )
