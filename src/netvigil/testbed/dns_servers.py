"""DNS of the emulated network: the public resolver, the ISP's censoring resolver, the injector.

- ``DnsServer`` is the one resolver core (UDP + TCP on one address, bounded), parameterised by
  an answer function ``(qname, qtype) -> Answer``. ``public_answers`` and ``isp_answers`` are
  the two answer functions; the ISP's applies the ``dns-*`` rules.
- ``Injector`` is an on-path injector like the Great Firewall's: the supervisor diverts the
  subscribers' UDP/53 datagrams to it with TPROXY; it races a forged answer ahead of the real
  one for names of ``dns-inject`` rules, and relays every query and its real reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from netvigil.testbed.agent import Stop
from netvigil.testbed.plan import (
    BOGON_DEFAULT,
    BOGUS_DEFAULT,
    CENSOR_CLIENT_IF,
    INJECT_DEFAULT,
    ISP_BLOCKPAGE,
    ISP_RESOLVER,
    PUBLIC_RESOLVER,
    Plan,
)
from netvigil.testbed.topology import INJECTOR_UDP_PORT

log = logging.getLogger(__name__)

# The supervisor's nftables TPROXY rule diverts subscribers' UDP/53 here.
# Linux <linux/in.h>, level SOL_IP; not every Python build exports them.
IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
IP_ORIGDSTADDR = IP_RECVORIGDSTADDR  # the cmsg type carrying it
SOL_IP = 0
# Linux <asm-generic/socket.h>: set a socket buffer past net.core.[rw]mem_max (CAP_NET_ADMIN).
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

ISP_DNS_ACTIONS = ("dns-nxdomain", "dns-bogon", "dns-bogus", "dns-blockpage", "dns-timeout")
PUBLIC_TTL = 300
INJECT_TTL = 60


@dataclass(frozen=True)
class Answer:
    """What a resolver says about one question; `silent`: say nothing (the client times out)."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    addresses: tuple[str, ...] = ()
    ttl: int = PUBLIC_TTL
    silent: bool = False


NODATA = Answer()
NXDOMAIN = Answer(rcode=dns.rcode.NXDOMAIN)
SILENT = Answer(silent=True)

AnswerFn = Callable[[str, dns.rdatatype.RdataType], Answer]


def normalise(name: dns.name.Name) -> str:
    """Lower case, no trailing dot: the form the plan's look-ups use."""
    return name.to_text(omit_final_dot=True).lower()


def public_answers(plan: Plan) -> AnswerFn:
    """The uncensored resolver: each site's public answer; A only (the testbed has no IPv6)."""

    def answer(name: str, rdtype: dns.rdatatype.RdataType) -> Answer:
        site = plan.site(name)
        if site is None:
            return NXDOMAIN
        if rdtype != dns.rdatatype.A:
            return NODATA
        return Answer(addresses=site.public_answer)

    return answer


def isp_answers(profile_plan: Plan) -> AnswerFn:
    """The ISP's resolver: the first matching dns-* rule wins, else each site's ISP answer.

    With phases, each question meets the censor in force when it arrives (``Plan.now``); in a
    shutdown phase the resolver says nothing (the censor's nftables drop the query anyway)."""

    def answer(name: str, rdtype: dns.rdatatype.RdataType) -> Answer:
        plan = profile_plan.now()
        if plan.shutdown:
            return SILENT
        rule = plan.first_rule(ISP_DNS_ACTIONS, name)
        if rule is not None:
            if rule.action == "dns-nxdomain":
                return NXDOMAIN
            if rule.action == "dns-timeout":
                return SILENT
            if rdtype != dns.rdatatype.A:
                # Forged addresses are IPv4; other types get an empty answer, as such ISPs do.
                return NODATA
            forged = {
                "dns-bogon": str(rule.params.get("answer", BOGON_DEFAULT)),
                "dns-bogus": str(rule.params.get("answer", BOGUS_DEFAULT)),
                "dns-blockpage": ISP_BLOCKPAGE,
            }[rule.action]
            return Answer(addresses=(forged,))
        site = plan.site(name)
        if site is None:
            return NXDOMAIN
        if rdtype != dns.rdatatype.A:
            return NODATA
        return Answer(addresses=site.isp_answer)

    return answer


def _parse_query(wire: bytes) -> dns.message.Message | None:
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # dnspython raises many types on garbage; all mean "not DNS"
        return None
    if query.flags & dns.flags.QR:
        return None  # a response: never answer one (no loops, no reflection)
    return query


@dataclass(frozen=True)
class DnsLimits:
    max_udp_query: int = 4096
    max_udp_reply: int = 1232  # with EDNS; 512 without
    idle_timeout: float = 10.0
    max_tcp_connections: int = 1024
    # Queries answered per wake-up. asyncio's datagram transport reads one datagram per loop
    # iteration: when other work makes iterations long, a burst of queries then waits seconds
    # and the probe records dns/timeout for names the censor never touched.
    udp_batch: int = 256
    # Socket buffers (bytes; capped by net.core.[rw]mem_max unless root): a burst of a few
    # thousand queries queues instead of overflowing the default ~200 KiB and being dropped.
    udp_buffer: int = 4 * 1024 * 1024


@dataclass
class DnsServer:
    """One resolver: UDP and TCP on one address, answering from `answer`."""

    answer: AnswerFn
    limits: DnsLimits = field(default_factory=DnsLimits)
    udp_port: int = 0
    tcp_port: int = 0
    _udp: socket.socket | None = None
    _tcp: asyncio.Server | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    # -- the pure part -------------------------------------------------------------------------
    def respond(self, wire: bytes, *, tcp: bool = False) -> bytes | None:
        """The reply to one query message; None when nothing should be sent."""
        query = _parse_query(wire)
        return None if query is None else self._reply(query, tcp)

    def _reply(self, query: dns.message.Message, tcp: bool) -> bytes | None:
        response = dns.message.make_response(
            query, recursion_available=True, our_payload=self.limits.max_udp_reply
        )
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        elif query.question[0].rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
        else:
            question = query.question[0]
            answer = self.answer(normalise(question.name), question.rdtype)
            if answer.silent:
                return None
            response.set_rcode(answer.rcode)
            if answer.addresses:
                # The owner keeps the client's spelling (0x20 case randomisation must match).
                response.answer.append(
                    dns.rrset.from_text_list(
                        question.name,
                        answer.ttl,
                        dns.rdataclass.IN,
                        dns.rdatatype.A,
                        list(answer.addresses),
                    )
                )
        if tcp:
            return response.to_wire(max_size=65535)
        size = 512 if query.edns < 0 else max(512, min(query.payload, self.limits.max_udp_reply))
        return response.to_wire(max_size=size, prefer_truncation=True)

    # -- serving -------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        """Listen on UDP and TCP. With port 0 each gets a free port (see udp_port, tcp_port)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # SO_REUSEADDR lets the injector bind a sending socket to this address and port,
            # to answer clients "from" this resolver.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _grow_buffers(sock, self.limits.udp_buffer)
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self._udp, self._loop = sock, loop
        self.udp_port = sock.getsockname()[1]
        loop.add_reader(sock.fileno(), self._on_udp)
        try:
            self._tcp = await asyncio.start_server(
                self._tcp_connection, host, port, reuse_address=True, backlog=256
            )
        except OSError:
            self._close_udp()
            raise
        self.tcp_port = self._tcp.sockets[0].getsockname()[1]

    def _close_udp(self) -> None:
        if self._udp is not None and self._loop is not None:
            self._loop.remove_reader(self._udp.fileno())
            self._udp.close()
        self._udp = None

    def _on_udp(self) -> None:
        """Answer every query waiting on the socket (up to ``udp_batch``), not just one."""
        sock = self._udp
        if sock is None:
            return
        for _ in range(self.limits.udp_batch):
            try:
                data, addr = sock.recvfrom(self.limits.max_udp_query + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("udp receive: %r", exc)
                continue
            if len(data) > self.limits.max_udp_query:
                continue
            try:
                reply = self.respond(data)
            except dns.exception.DNSException:
                log.debug("cannot answer a query from %s", addr, exc_info=True)
                continue
            if reply is None:
                continue
            try:
                sock.sendto(reply, addr)
            except OSError as exc:  # a full buffer or no route: UDP is lossy anyway
                log.debug("udp reply to %s failed: %r", addr, exc)

    async def stop(self) -> None:
        self._close_udp()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()

    async def _tcp_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is None or len(self._tasks) >= self.limits.max_tcp_connections:
            writer.transport.abort()
            return
        self._tasks.add(task)
        try:
            while True:
                # The 2-byte framing bounds a message to 64 KiB; each read has the idle bound.
                head = await asyncio.wait_for(reader.readexactly(2), self.limits.idle_timeout)
                length = struct.unpack("!H", head)[0]
                if length == 0:
                    return
                wire = await asyncio.wait_for(reader.readexactly(length), self.limits.idle_timeout)
                query = _parse_query(wire)
                if query is None:
                    return  # garbage: a resolver drops such a connection
                reply = self._reply(query, tcp=True)
                if reply is not None:  # None: dns-timeout, the client waits in vain
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await asyncio.wait_for(writer.drain(), self.limits.idle_timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, dns.exception.DNSException):
            pass  # a vanished or idle client: routine
        finally:
            self._tasks.discard(task)
            writer.close()


def _grow_buffers(sock: socket.socket, size: int) -> None:
    """Ask for ``size``-byte receive and send buffers; as root past the sysctl caps."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:  # not root: the kernel caps the plain option at net.core.*mem_max
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)


async def start_resolver(
    answer: AnswerFn, host: str, port: int = 53, limits: DnsLimits | None = None
) -> DnsServer:
    server = DnsServer(answer, limits or DnsLimits())
    await server.start(host, port)
    return server


async def start_public_resolver(plan: Plan) -> Stop:
    server = await start_resolver(public_answers(plan), PUBLIC_RESOLVER)
    return server.stop


async def start_isp_resolver(plan: Plan) -> Stop:
    server = await start_resolver(isp_answers(plan), ISP_RESOLVER)
    return server.stop


# --------------------------------------------------------------------------------------------
# On-path injection


def injection_for(plan: Plan, wire: bytes) -> tuple[dns.message.Message, str] | None:
    """(the query, the forged address) when a dns-inject rule covers its name, else None.

    Like the Great Firewall, every query type of a covered name draws an A answer. Unparsable
    datagrams are never injected: a censor that cannot parse does not inject.
    """
    query = _parse_query(wire)
    if query is None or query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        return None
    rule = plan.first_rule(("dns-inject",), normalise(query.question[0].name))
    if rule is None:
        return None
    return query, str(rule.params.get("answer", INJECT_DEFAULT))


def forge_response(query: dns.message.Message, address: str, ttl: int = INJECT_TTL) -> bytes:
    """A bare forged answer: same id and question, QR+RD+RA, one A record, no EDNS."""
    response = dns.message.Message(id=query.id)
    response.flags = dns.flags.QR | dns.flags.RD | dns.flags.RA
    response.question = list(query.question)
    question = query.question[0]
    response.answer.append(
        dns.rrset.from_text_list(question.name, ttl, dns.rdataclass.IN, dns.rdatatype.A, [address])
    )
    return response.to_wire()


def original_destination(ancdata: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    """The (address, port) a TPROXY-diverted datagram was sent to, from IP_ORIGDSTADDR."""
    for level, kind, data in ancdata:
        if level == SOL_IP and kind == IP_ORIGDSTADDR and len(data) >= 8:
            # struct sockaddr_in: family (host order), port (network order), address.
            family = struct.unpack_from("=H", data)[0]
            if family != socket.AF_INET:
                continue
            port = struct.unpack_from("!H", data, 2)[0]
            return socket.inet_ntoa(data[4:8]), port
    return None


@dataclass(frozen=True)
class InjectorLimits:
    max_pending: int = 10_000
    query_timeout: float = 5.0
    max_datagram: int = 4096
    max_forwarders: int = 64  # sockets relaying queries; a new one only on a (ip, port, id) clash
    batch: int = 256  # datagrams read per wake-up, so one busy socket cannot starve the loop


@dataclass
class _Pending:
    client: tuple[str, int]
    timer: asyncio.TimerHandle


@dataclass
class _Forwarder:
    sock: socket.socket
    pending: dict[tuple[str, int, bytes], _Pending] = field(default_factory=dict)


class Injector:
    """Listen for diverted queries, inject where a rule says so, relay everything."""

    def __init__(
        self,
        plan: Plan,
        host: str = "0.0.0.0",
        port: int = INJECTOR_UDP_PORT,
        client_if: str = CENSOR_CLIENT_IF,
        limits: InjectorLimits | None = None,
    ) -> None:
        self.plan = plan
        self.host, self.port, self.client_if = host, port, client_if
        self.limits = limits or InjectorLimits()
        self._listener: socket.socket | None = None
        self._spoofers: dict[tuple[str, int], socket.socket] = {}
        self._forwarders: list[_Forwarder] = []
        self._pending_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)  # TPROXY delivers only to such sockets
            sock.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
            sock.setblocking(False)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self._loop.add_reader(sock.fileno(), self._on_listener)

    async def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._listener is not None:
            loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for forwarder in self._forwarders:
            for pending in forwarder.pending.values():
                pending.timer.cancel()
            loop.remove_reader(forwarder.sock.fileno())
            forwarder.sock.close()
        self._forwarders.clear()
        self._pending_count = 0
        for sock in self._spoofers.values():
            sock.close()
        self._spoofers.clear()

    # -- receiving -----------------------------------------------------------------------------
    def _on_listener(self) -> None:
        sock = self._listener
        if sock is None:
            return
        for _ in range(self.limits.batch):
            try:
                data, ancdata, flags, client = sock.recvmsg(
                    self.limits.max_datagram + 1, socket.CMSG_SPACE(16)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("injector recvmsg: %r", exc)
                return
            if len(data) > self.limits.max_datagram or flags & socket.MSG_TRUNC:
                continue
            orig = original_destination(ancdata)
            if orig is None:
                continue  # not diverted by TPROXY: nobody to impersonate
            try:
                self._on_query(data, client, orig)
            except Exception:  # one bad datagram must not stop the injector
                log.exception("injector failed on a query from %s", client)

    def _on_query(self, data: bytes, client: tuple[str, int], orig: tuple[str, int]) -> None:
        injection = injection_for(self.plan.now(), data)
        if injection is not None:
            query, address = injection
            self._send_as(orig, forge_response(query, address), client)
        self._forward(data, client, orig)

    # -- relaying ------------------------------------------------------------------------------
    def _forward(self, data: bytes, client: tuple[str, int], orig: tuple[str, int]) -> None:
        if self._pending_count >= self.limits.max_pending or self._loop is None:
            return  # overloaded: the query is lost, as on a congested path
        key = (orig[0], orig[1], data[:2])  # the resolver's reply carries the same id
        forwarder = next((f for f in self._forwarders if key not in f.pending), None)
        if forwarder is None:
            if len(self._forwarders) >= self.limits.max_forwarders:
                return
            forwarder = self._new_forwarder()
        try:
            forwarder.sock.sendto(data, orig)
        except OSError as exc:
            log.debug("forwarding to %s failed: %r", orig, exc)
            return
        timer = self._loop.call_later(self.limits.query_timeout, self._expire, forwarder, key)
        forwarder.pending[key] = _Pending(client, timer)
        self._pending_count += 1

    def _new_forwarder(self) -> _Forwarder:
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("0.0.0.0", 0))
        forwarder = _Forwarder(sock)
        self._forwarders.append(forwarder)
        self._loop.add_reader(sock.fileno(), self._on_reply, forwarder)
        return forwarder

    def _expire(self, forwarder: _Forwarder, key: tuple[str, int, bytes]) -> None:
        if forwarder.pending.pop(key, None) is not None:
            self._pending_count -= 1

    def _on_reply(self, forwarder: _Forwarder) -> None:
        for _ in range(self.limits.batch):
            try:
                data, source = forwarder.sock.recvfrom(self.limits.max_datagram + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("injector forwarder: %r", exc)  # e.g. ICMP port unreachable
                continue
            if len(data) > self.limits.max_datagram:
                continue
            pending = forwarder.pending.pop((source[0], source[1], data[:2]), None)
            if pending is None:
                continue  # late, unsolicited or spoofed: drop
            pending.timer.cancel()
            self._pending_count -= 1
            self._send_as((source[0], source[1]), data, pending.client)

    # -- sending as the resolver ---------------------------------------------------------------
    def _send_as(self, source: tuple[str, int], data: bytes, client: tuple[str, int]) -> None:
        sock = self._spoofers.get(source)
        if sock is None:
            try:
                sock = self._spoofer(source)
            except OSError as exc:
                log.warning("cannot send as %s:%d: %r", source[0], source[1], exc)
                return
            self._spoofers[source] = sock
        try:
            sock.sendto(data, client)
        except OSError as exc:  # full buffer or no route: UDP is lossy anyway
            log.debug("sending as %s to %s failed: %r", source, client, exc)

    def _spoofer(self, source: tuple[str, int]) -> socket.socket:
        """A socket that sends from (resolver address, 53), which may not be ours."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)  # bind to a non-local address
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.client_if:
                # The ISP resolver's address is local here and its server holds the port (with
                # SO_REUSEADDR). Tied to the subscriber interface, this socket never wins the
                # datagrams the resolver must receive (our relayed queries arrive on lo).
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.client_if.encode()
                    )
            sock.setblocking(False)
            sock.bind(source)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                log.warning("%s:%d is held without SO_REUSEADDR", *source)
            raise
        return sock


async def start_injector(plan: Plan) -> Stop:
    injector = Injector(plan)
    await injector.start()
    return injector.stop
