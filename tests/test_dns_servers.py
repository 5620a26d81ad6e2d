"""The resolvers run for real on 127.0.0.1 (UDP and TCP); the injector's pure parts as functions."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from netvigil.testbed.dns_servers import (
    IP_ORIGDSTADDR,
    SOL_IP,
    Answer,
    AnswerFn,
    DnsServer,
    forge_response,
    injection_for,
    isp_answers,
    original_destination,
    public_answers,
    start_resolver,
)
from netvigil.testbed.plan import (
    BOGON_DEFAULT,
    BOGUS_DEFAULT,
    INJECT_DEFAULT,
    ISP_BLOCKPAGE,
    Plan,
    SitePlan,
    make_plan,
)
from netvigil.testbed.profile import parse_profile

PROFILE = """
name = "dns-test"
domains = ["plain.example", "nx.example", "bogon.example", "bogon2.example", "bogus.example",
           "bp.example", "slowdns.example", "inj.example", "inj2.example", "a.wild.example"]

[[site]]
domain = "cdn.example"
kind = "cdn"

[[site]]
domain = "dead.example"
kind = "down"

[[rule]]
action = "dns-nxdomain"
domain = ["nx.example", "*.wild.example"]

[[rule]]
action = "dns-bogon"
domain = "bogon.example"

[[rule]]
action = "dns-bogon"
domain = "bogon2.example"
answer = "127.0.0.2"

[[rule]]
action = "dns-bogus"
domain = "bogus.example"

[[rule]]
action = "dns-blockpage"
domain = "bp.example"

[[rule]]
action = "dns-timeout"
domain = "slowdns.example"

[[rule]]
action = "dns-inject"
domain = "inj.example"

[[rule]]
action = "dns-inject"
domain = "inj2.example"
answer = "198.18.99.9"

[[rule]]
action = "dns-bogus"
domain = "nx.example"
"""

WAIT = 2.0


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan(parse_profile(PROFILE))


def site(plan: Plan, domain: str) -> SitePlan:
    found = plan.site(domain)
    assert found is not None
    return found


def run_resolver(answer: AnswerFn, check: Callable[[DnsServer], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await start_resolver(answer, "127.0.0.1", 0)
        try:
            await asyncio.wait_for(check(server), 10)
        finally:
            await server.stop()

    asyncio.run(main())


async def ask(
    server: DnsServer, name: str, rdtype: str = "A", tcp: bool = False
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", timeout=WAIT, port=server.tcp_port)
    return await dns.asyncquery.udp(query, "127.0.0.1", timeout=WAIT, port=server.udp_port)


def addresses(reply: dns.message.Message) -> list[str]:
    return [rd.address for rrset in reply.answer for rd in rrset]


# --------------------------------------------------------------------------------------------
# Public resolver


def test_public_resolver_answers_a_nodata_nxdomain(plan: Plan) -> None:
    plain, cdn = site(plan, "plain.example"), site(plan, "cdn.example")

    async def check(server: DnsServer) -> None:
        reply = await ask(server, "plain.example")
        assert reply.rcode() == dns.rcode.NOERROR
        assert addresses(reply) == list(plain.public_answer)
        assert reply.answer[0].ttl == 300
        assert reply.flags & dns.flags.RA and reply.flags & dns.flags.QR
        # Case-insensitive; the question keeps the client's spelling.
        mixed = await ask(server, "PlAiN.ExAmPlE.")
        assert addresses(mixed) == list(plain.public_answer)
        assert mixed.question[0].name.to_text() == "PlAiN.ExAmPlE."
        # A CDN's public answer is its second edge.
        assert addresses(await ask(server, "cdn.example")) == [cdn.addresses[1]]
        aaaa = await ask(server, "plain.example", "AAAA")
        assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer
        mx = await ask(server, "plain.example", "MX")
        assert mx.rcode() == dns.rcode.NOERROR and not mx.answer
        nx = await ask(server, "no-such-site.example")
        assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
        # A down site still has DNS; the public resolver ignores the censor's rules.
        assert addresses(await ask(server, "dead.example")) == list(
            site(plan, "dead.example").public_answer
        )
        assert addresses(await ask(server, "nx.example")) == list(
            site(plan, "nx.example").public_answer
        )

    run_resolver(public_answers(plan), check)


def test_tcp_queries_and_tcp_garbage(plan: Plan) -> None:
    plain = site(plan, "plain.example")

    async def check(server: DnsServer) -> None:
        reply = await ask(server, "plain.example", tcp=True)
        assert addresses(reply) == list(plain.public_answer)
        # Two queries pipelined on one connection, then garbage: answered, answered, closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
        for qid, name in ((1, "plain.example"), (2, "nope.example")):
            query = dns.message.make_query(name, "A", id=qid)
            wire = query.to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
        writer.write(struct.pack("!H", 5) + b"\x00\x01zzz")
        await writer.drain()
        for qid, rcode in ((1, dns.rcode.NOERROR), (2, dns.rcode.NXDOMAIN)):
            length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), WAIT))[0]
            answer = dns.message.from_wire(await asyncio.wait_for(reader.readexactly(length), WAIT))
            assert answer.id == qid and answer.rcode() == rcode
        assert await asyncio.wait_for(reader.read(10), WAIT) == b""
        writer.close()
        # The server is still there.
        assert addresses(await ask(server, "plain.example", tcp=True)) == list(plain.public_answer)

    run_resolver(public_answers(plan), check)


def test_udp_garbage_responses_and_oversized_are_ignored(plan: Plan) -> None:
    plain = site(plan, "plain.example")

    async def check(server: DnsServer) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", server.udp_port))
            response = dns.message.make_response(dns.message.make_query("plain.example", "A"))
            big = dns.message.make_query("plain.example", "A", id=7).to_wire() + b"\x00" * 5000
            for junk in (b"", b"\x00", b"garbage, not DNS at all", response.to_wire(), big):
                await loop.sock_sendall(sock, junk)
            query = dns.message.make_query("plain.example", "A", id=4242)
            await loop.sock_sendall(sock, query.to_wire())
            # The first (and only) datagram back answers the real query.
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), WAIT)
            reply = dns.message.from_wire(data)
            assert reply.id == 4242 and addresses(reply) == list(plain.public_answer)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.2)
        finally:
            sock.close()

    run_resolver(public_answers(plan), check)


def test_udp_answers_fit_512_bytes_or_are_truncated() -> None:
    many = tuple(f"198.18.40.{i}" for i in range(1, 101))

    def answer(name: str, rdtype: dns.rdatatype.RdataType) -> Answer:
        return Answer(addresses=many)

    async def check(server: DnsServer) -> None:
        query = dns.message.make_query("big.example", "A", use_edns=False)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", server.udp_port))
            await loop.sock_sendall(sock, query.to_wire())
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), WAIT)
        finally:
            sock.close()
        assert len(data) <= 512
        assert dns.message.from_wire(data, ignore_trailing=True).flags & dns.flags.TC
        full = await dns.asyncquery.tcp(query, "127.0.0.1", timeout=WAIT, port=server.tcp_port)
        assert sorted(addresses(full)) == sorted(many)

    run_resolver(answer, check)


# --------------------------------------------------------------------------------------------
# ISP resolver


def test_isp_resolver_applies_every_dns_action(plan: Plan) -> None:
    async def check(server: DnsServer) -> None:
        plain, cdn = site(plan, "plain.example"), site(plan, "cdn.example")
        assert addresses(await ask(server, "plain.example")) == list(plain.isp_answer)
        assert addresses(await ask(server, "cdn.example")) == [cdn.addresses[0]]
        for name in ("nx.example", "a.wild.example", "NX.EXAMPLE."):
            for rdtype in ("A", "AAAA"):
                reply = await ask(server, name, rdtype)
                assert reply.rcode() == dns.rcode.NXDOMAIN, (name, rdtype)
        # The first matching rule wins: nx.example's later dns-bogus rule is never reached.
        assert addresses(await ask(server, "bogon.example")) == [BOGON_DEFAULT]
        assert addresses(await ask(server, "bogon2.example")) == ["127.0.0.2"]
        assert addresses(await ask(server, "bogus.example")) == [BOGUS_DEFAULT]
        bp = await ask(server, "bp.example")
        assert addresses(bp) == [ISP_BLOCKPAGE] and bp.rcode() == dns.rcode.NOERROR
        assert not (await ask(server, "bogus.example", "AAAA")).answer
        # dns-inject is the injector's job, not the resolver's.
        assert addresses(await ask(server, "inj.example")) == list(
            site(plan, "inj.example").isp_answer
        )
        assert (await ask(server, "unknown.example")).rcode() == dns.rcode.NXDOMAIN
        for tcp in (False, True):
            query = dns.message.make_query("slowdns.example", "A")
            with pytest.raises(dns.exception.Timeout):
                if tcp:
                    await dns.asyncquery.tcp(query, "127.0.0.1", timeout=0.3, port=server.tcp_port)
                else:
                    await dns.asyncquery.udp(query, "127.0.0.1", timeout=0.3, port=server.udp_port)
        assert addresses(await ask(server, "bogus.example", tcp=True)) == [BOGUS_DEFAULT]

    run_resolver(isp_answers(plan), check)


def test_respond_is_pure_and_rejects_odd_queries(plan: Plan) -> None:
    server = DnsServer(isp_answers(plan))
    assert server.respond(b"\xff" * 3) is None
    chaos = dns.message.make_query("version.bind", "TXT", "CH")
    refused = server.respond(chaos.to_wire())
    assert refused is not None and dns.message.from_wire(refused).rcode() == dns.rcode.REFUSED
    notify = dns.message.make_query("plain.example", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    notimp = server.respond(notify.to_wire())
    assert notimp is not None and dns.message.from_wire(notimp).rcode() == dns.rcode.NOTIMP
    assert server.respond(dns.message.make_query("slowdns.example", "A").to_wire()) is None


# --------------------------------------------------------------------------------------------
# Injector: its decisions and its packets


def test_injection_decision(plan: Plan) -> None:
    query = dns.message.make_query("Inj.Example.", "A")
    found = injection_for(plan, query.to_wire())
    assert found is not None and found[1] == INJECT_DEFAULT and found[0].id == query.id
    custom = injection_for(plan, dns.message.make_query("inj2.example", "A").to_wire())
    assert custom is not None and custom[1] == "198.18.99.9"
    # Like the GFW, any query type of a covered name draws an injected A answer.
    assert injection_for(plan, dns.message.make_query("inj.example", "AAAA").to_wire()) is not None
    assert injection_for(plan, dns.message.make_query("plain.example", "A").to_wire()) is None
    assert injection_for(plan, dns.message.make_query("nx.example", "A").to_wire()) is None
    assert injection_for(plan, b"garbage that is not dns") is None
    answered = dns.message.make_response(query).to_wire()
    assert injection_for(plan, answered) is None  # never inject on a response


def test_forged_response(plan: Plan) -> None:
    query = dns.message.make_query("InJ.example", "A", id=31337)
    wire = forge_response(query, INJECT_DEFAULT)
    forged = dns.message.from_wire(wire)
    assert forged.id == 31337
    assert forged.flags == dns.flags.QR | dns.flags.RD | dns.flags.RA
    assert forged.question == query.question
    assert forged.question[0].name.to_text() == "InJ.example."
    assert addresses(forged) == [INJECT_DEFAULT] and forged.answer[0].ttl == 60
    assert forged.rcode() == dns.rcode.NOERROR and forged.edns < 0
    assert query.is_response(forged)  # a stub resolver would accept it


def test_original_destination_from_ancillary_data() -> None:
    sockaddr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 53)
    sockaddr += socket.inet_aton("198.18.20.53") + b"\x00" * 8
    assert original_destination([(SOL_IP, IP_ORIGDSTADDR, sockaddr)]) == ("198.18.20.53", 53)
    assert original_destination([]) is None
    assert original_destination([(SOL_IP, 8, sockaddr)]) is None  # IP_PKTINFO, not ours
    assert original_destination([(SOL_IP, IP_ORIGDSTADDR, sockaddr[:4])]) is None
