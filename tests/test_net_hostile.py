"""netvigil.net against hostile peers on 127.0.0.1: every test is bounded in time and memory."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import zlib
from pathlib import Path

import dns.message
import dns.rdata
import dns.renderer
import dns.rrset

from netvigil import net
from netvigil.net import dns as ndns
from netvigil.net import tls as ntls
from test_net_support import (
    LOOPBACK,
    Handler,
    a_reply,
    dns_tcp_handler,
    issue,
    pki,
    read_head,
    server_context,
    simple_http,
    start_dns_udp,
    start_tcp,
)

MiB = 1024 * 1024


async def _get(
    port: int, path: str = "/", *, max_body: int = 512 * 1024, timeout: float = 5.0
) -> net.HTTPResult:
    tcp, sock = await net.connect(LOOPBACK, port)
    assert sock is not None
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        return await net.round_trip(
            reader,
            writer,
            f"http://{LOOPBACK}:{port}{path}",
            address=tcp.address,
            max_body=max_body,
            timeout=timeout,
        )
    finally:
        writer.transport.abort()


def test_one_gigabyte_body_stops_at_max_body() -> None:
    sent = [0]

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
        chunk = b"A" * 65536
        while sent[0] < 1024 * MiB:  # lazily: only as fast as the client reads
            writer.write(chunk)
            await writer.drain()
            sent[0] += len(chunk)

    async def main() -> None:
        server, port = await start_tcp(huge)
        try:
            started = time.monotonic()
            result = await _get(port, max_body=512 * 1024)
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.1)
        finally:
            server.close()
        assert result.failure is None
        assert result.body_is_truncated is True
        assert len(result.body) == 512 * 1024
        assert elapsed < 3
        assert sent[0] < 64 * MiB  # the client closed; the server did not push the gigabyte
        assert result.body_rate is not None and result.body_rate > 0

    asyncio.run(main())


def test_slowloris_head_hits_total_timeout() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: yes\r\n\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)

    async def main() -> None:
        server, port = await start_tcp(slow)
        try:
            started = time.monotonic()
            result = await _get(port, timeout=1.5)
            elapsed = time.monotonic() - started
        finally:
            server.close()
        assert result.failure == "generic_timeout_error"
        assert result.status_code is None
        assert 1.4 < elapsed < 2.5

    asyncio.run(main())


def test_slow_body_timeout_keeps_partial_body_and_rate() -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100):
            writer.write(b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(0.1)

    async def main() -> None:
        server, port = await start_tcp(trickle)
        try:
            result = await _get(port, timeout=1.0)
        finally:
            server.close()
        assert result.failure == "generic_timeout_error"
        assert result.status_code == 200
        assert 5000 <= len(result.body) <= 12000
        assert result.body_rate is not None and 3000 < result.body_rate < 30000
        assert result.to_ooni()["x_body_rate"] == result.body_rate

    asyncio.run(main())


def _trickle_then(stall_after: int | None) -> Handler:
    """A server sending 1,000 body bytes every 0.1 s; silent after ``stall_after`` chunks."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n")
        for number in range(300):
            if stall_after is not None and number >= stall_after:
                await asyncio.sleep(10)
                return
            writer.write(b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(0.1)

    return serve


def test_timed_out_transfer_keeps_a_bounded_rate_series_while_bytes_flow() -> None:
    async def main() -> None:
        server, port = await start_tcp(_trickle_then(None))
        try:
            result = await _get(port, timeout=2.5)
        finally:
            server.close()
        assert result.failure == "generic_timeout_error"
        transfer = result.transfer
        assert transfer is not None and not transfer.complete
        assert transfer.bytes >= len(result.body) > 10_000
        assert transfer.idle_at_end < 0.5  # still receiving when the budget ended it
        assert 2.0 < transfer.duration < 3.0
        assert transfer.sustained_rate is not None and 4_000 < transfer.sustained_rate < 20_000
        assert 1 < len(transfer.samples) <= net.http.MAX_RATE_SAMPLES
        times = [t for t, _ in transfer.samples]
        counts = [n for _, n in transfer.samples]
        assert times == sorted(times) and counts == sorted(counts)
        # On Linux the series is the TCP connection's (TCP_INFO): bytes after the head.
        assert transfer.wire_bytes is not None or sys.platform != "linux"
        wire = transfer.wire_bytes if transfer.wire_bytes is not None else transfer.bytes
        assert counts[-1] == wire and transfer.bytes - 2000 <= wire <= transfer.bytes
        recorded = result.to_ooni()["x_body_transfer"]
        assert recorded["bytes"] == transfer.bytes
        assert len(recorded["samples"]) == len(transfer.samples)

    asyncio.run(main())


def test_stalled_transfer_shows_how_long_the_body_was_silent() -> None:
    async def main() -> None:
        server, port = await start_tcp(_trickle_then(5))
        try:
            result = await _get(port, timeout=2.0)
        finally:
            server.close()
        assert result.failure == "generic_timeout_error"
        transfer = result.transfer
        assert transfer is not None
        assert transfer.bytes == 5000
        assert transfer.idle_at_end > 1.0  # nothing came for the last second and more

    asyncio.run(main())


def test_long_transfer_keeps_at_most_max_rate_samples() -> None:
    async def fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        for _ in range(2000):
            writer.write(b"y" * 4096)
            await writer.drain()
            await asyncio.sleep(0.002)

    async def main() -> None:
        server, port = await start_tcp(fast)
        try:
            result = await _get(port, timeout=2.0, max_body=64 * MiB)
        finally:
            server.close()
        transfer = result.transfer
        assert transfer is not None
        assert 2 <= len(transfer.samples) <= net.http.MAX_RATE_SAMPLES
        assert transfer.slice_seconds >= 0.1

    asyncio.run(main())


def test_transfer_cancelled_by_an_outer_budget_is_still_recorded() -> None:
    async def main() -> None:
        server, port = await start_tcp(_trickle_then(None))
        trace = net.Trace()
        try:
            tcp, sock = await net.connect(LOOPBACK, port)
            assert sock is not None
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                async with asyncio.timeout(1.5):
                    await net.round_trip(
                        reader,
                        writer,
                        f"http://{LOOPBACK}:{port}/",
                        address=tcp.address,
                        timeout=30.0,
                        trace=trace,
                    )
            except TimeoutError:
                pass
            finally:
                writer.transport.abort()
        finally:
            server.close()
        (record,) = trace.test_keys_fragment()["requests"]
        assert record["failure"] == "generic_timeout_error"
        assert record["response"]["code"] == 200
        assert record["x_body_transfer"]["bytes"] > 5000
        assert record["x_body_transfer"]["idle_at_end"] < 0.5

    asyncio.run(main())


def test_oversized_head_is_refused() -> None:
    async def fat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(200):
            writer.write(b"X-Pad: " + b"p" * 1000 + b"\r\n")
        writer.write(b"\r\n")
        await writer.drain()

    async def main() -> None:
        server, port = await start_tcp(fat)
        try:
            result = await _get(port, timeout=3)
        finally:
            server.close()
        assert result.failure is not None and result.failure.startswith("unknown_failure: http")
        assert result.status_code is None

    asyncio.run(main())


def test_decompression_bomb_stops_at_max_body() -> None:
    produced = [0]

    async def bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n")
        gz = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(MiB)
        for _ in range(1024):  # gzip of 1 GiB of zeros (about 1 MiB on the wire), made lazily
            writer.write(gz.compress(zeros) + gz.flush(zlib.Z_SYNC_FLUSH))
            produced[0] += len(zeros)
            await writer.drain()
            await asyncio.sleep(0)  # the client shares this event loop
        writer.write(gz.flush())
        await writer.drain()

    async def main() -> None:
        server, port = await start_tcp(bomb)
        try:
            started = time.monotonic()
            result = await _get(port, max_body=256 * 1024, timeout=10)
            elapsed = time.monotonic() - started
        finally:
            server.close()
        assert result.failure is None
        assert result.body_is_truncated is True
        assert len(result.body) == 256 * 1024
        assert result.body == bytes(256 * 1024)
        assert elapsed < 3
        assert produced[0] < 256 * MiB  # the client hung up long before the gigabyte

    asyncio.run(main())


def test_gzip_body_is_decoded() -> None:
    page = b"<title>compressed</title>" + b"hello " * 1000
    routes = {"/": (200, [("Content-Encoding", "gzip")], zlib.compress(page, wbits=31))}
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = raw_deflate.compress(page) + raw_deflate.flush()
    routes["/d"] = (200, [("Content-Encoding", "deflate")], deflated)

    async def main() -> None:
        server, port = await start_tcp(simple_http(routes))
        try:
            gz = await _get(port, "/")
            de = await _get(port, "/d")
        finally:
            server.close()
        assert gz.body == page and gz.title == "compressed" and not gz.body_is_truncated
        assert de.body == page

    asyncio.run(main())


def test_redirect_loop_stops() -> None:
    routes = {"/loop": (302, [("Location", "/loop")], b"")}

    async def main() -> None:
        server, port = await start_tcp(simple_http(routes))

        async def resolve(host: str) -> list[str]:
            raise AssertionError("IP literals are not resolved")

        trace = net.Trace()
        try:
            results = await net.fetch(
                f"http://{LOOPBACK}:{port}/loop",
                resolve=resolve,
                trust=pki().trust,
                max_redirects=5,
                timeout=3,
                trace=trace,
            )
        finally:
            server.close()
        assert len(results) == 7
        assert all(r.status_code == 302 for r in results[:6])
        assert results[-1].failure == "x_too_many_redirects"
        assert trace.test_keys_fragment()["requests"][0]["failure"] == "x_too_many_redirects"

    asyncio.run(main())


def test_hostile_title_regex_is_linear() -> None:
    hostile = b"<title" * 20000 + b"<title>" + b"a" * 100000
    started = time.perf_counter()
    assert net.extract_title(hostile) == ""  # the real title lies past the 64 KiB scanned
    assert net.extract_title(b"<TITLE lang=en>  x  y </TITLE>") == "x y"
    assert time.perf_counter() - started < 0.5


# -- TLS ------------------------------------------------------------------------------------------


def test_garbage_instead_of_tls() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(os.urandom(4096))
        await writer.drain()
        await asyncio.sleep(0.2)

    async def http_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        await writer.drain()

    async def silent_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    async def main() -> None:
        for handler in (garbage, http_answer, silent_close):
            server, port = await start_tcp(handler)
            try:
                _tcp, sock = await net.connect(LOOPBACK, port)
                assert sock is not None
                started = time.monotonic()
                result, stream = await net.handshake(
                    sock, "site.test", trust=pki().trust, timeout=3
                )
            finally:
                server.close()
            assert stream is None
            assert result.failure in {"ssl_failed_handshake", "connection_reset", "eof_error"}, (
                result.failure
            )
            assert time.monotonic() - started < 3
            assert sock.fileno() == -1  # closed

    asyncio.run(main())


def test_tls_server_that_never_answers_times_out() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        server, port = await start_tcp(mute)
        try:
            _tcp, sock = await net.connect(LOOPBACK, port)
            assert sock is not None
            result, stream = await net.handshake(sock, "site.test", trust=pki().trust, timeout=0.5)
        finally:
            server.close()
        assert stream is None and result.failure == "generic_timeout_error"

    asyncio.run(main())


def test_chain_of_ten_thousand_certificates_is_bounded() -> None:
    p = pki()
    filler = [p.rogue_intermediate.der, p.rogue_root.der, p.intermediate.der, p.root.der]
    chain = [p.rogue_leaf.der] + [filler[i % 4] for i in range(9999)]
    assert len(chain) == 10_000
    started = time.perf_counter()
    failure, message = net.verify_chain(chain, "site.test", p.trust)
    assert time.perf_counter() - started < 1
    assert failure == "ssl_unknown_authority" and message
    # The genuine chain padded with 10,000 junk-but-valid certificates still verifies.
    good = [p.leaf.der, p.intermediate.der] + [filler[i % 2] for i in range(9998)]
    assert net.verify_chain(good, "site.test", p.trust) == (None, None)
    # What the handshake keeps of a presented chain is capped.
    assert ntls.MAX_CHAIN == 32

    class FakeSSLObject:
        def get_unverified_chain(self) -> list[bytes]:
            return chain

    kept = ntls._der_chain(FakeSSLObject())
    assert len(kept) == ntls.MAX_CHAIN + 2 and kept[-1] == b""  # truncation marker


def test_malformed_certificate() -> None:
    p = pki()
    garbage = b"\x30\x82\x01\x00" + os.urandom(256)
    failure, message = net.verify_chain([garbage], "site.test", p.trust)
    assert failure == "ssl_invalid_certificate" and message and "malformed" in message
    failure, message = net.verify_chain([p.leaf.der, garbage], "site.test", p.trust)
    assert failure == "ssl_invalid_certificate" and message and "position 1" in message
    assert net.verify_chain([], "site.test", p.trust)[0] == "ssl_invalid_certificate"
    result = ntls.TLSResult(
        address="127.0.0.1:443",
        server_name="site.test",
        failure=failure,
        tls_version="TLSv1.3",
        cipher_suite="TLS_AES_128_GCM_SHA256",
        negotiated_protocol="http/1.1",
        peer_chain=(garbage,),
        verify_failure=message,
        t0=0.0,
        t=0.1,
    )
    assert result.to_ooni()["peer_certificates"][0]["format"] == "base64"  # raw DER kept


def test_chain_loop() -> None:
    p = pki()
    from cryptography.hazmat.primitives.asymmetric import ec

    key_a = ec.generate_private_key(ec.SECP256R1())
    key_b = ec.generate_private_key(ec.SECP256R1())
    # A is signed by B, B is signed by A: a loop with no way out to a trusted root.
    cert_a = issue("Loop A", issuer_cn="Loop B", signing_key=key_b, key=key_a, ca=True)
    cert_b = issue("Loop B", issuer_cn="Loop A", signing_key=key_a, key=key_b, ca=True)
    leaf = issue("site.test", issuer=cert_a, names=["site.test"])
    started = time.perf_counter()
    failure, _ = net.verify_chain(
        [leaf.der] + [cert_a.der, cert_b.der] * 5000, "site.test", p.trust
    )
    assert failure == "ssl_unknown_authority"
    failure, _ = net.verify_chain([leaf.der, cert_a.der, cert_b.der], "site.test", p.trust)
    assert failure == "ssl_unknown_authority"
    assert time.perf_counter() - started < 1


# -- DNS ------------------------------------------------------------------------------------------


def _many_answers(query: dns.message.Message, count: int) -> bytes:
    """A reply with ``count`` A records, rendered without dnspython's 64 KiB limit."""
    reply = dns.message.make_response(query)
    rrset = dns.rrset.RRset(query.question[0].name, 1, 1)
    rrset.update_ttl(60)
    for i in range(count):
        rrset.add(dns.rdata.from_text(1, 1, f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"))
    renderer = dns.renderer.Renderer(id=reply.id, flags=reply.flags, max_size=10 * MiB)
    renderer.add_question(query.question[0].name, 1, 1)
    renderer.add_rrset(dns.renderer.ANSWER, rrset)
    renderer.write_header()
    return renderer.get_wire()


def test_dns_tcp_ten_thousand_answers() -> None:
    async def main() -> None:
        async def flood(q: dns.message.Message, writer: asyncio.StreamWriter) -> None:
            wire = _many_answers(q, 10_000)
            assert len(wire) > 65535
            # DNS over TCP cannot frame more than 65535 bytes: claim the maximum, send it all.
            writer.write(b"\xff\xff" + wire)
            await writer.drain()

        async def fits(q: dns.message.Message, writer: asyncio.StreamWriter) -> None:
            wire = _many_answers(q, 4000)
            assert len(wire) <= 65535
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()

        s1, p1 = await start_tcp(dns_tcp_handler(flood))
        s2, p2 = await start_tcp(dns_tcp_handler(fits))
        try:
            started = time.monotonic()
            over = await net.resolve("big.test", LOOPBACK, port=p1, engine="tcp", timeout=3)
            full = await net.resolve("big.test", LOOPBACK, port=p2, engine="tcp", timeout=3)
            elapsed = time.monotonic() - started
        finally:
            s1.close()
            s2.close()
        # Only the first 65535 bytes are read, and of those only the first 100 answers.
        assert over.failure is None
        assert len(over.addresses) == ndns.MAX_ANSWERS
        assert full.failure is None
        assert len(full.addresses) == ndns.MAX_ANSWERS
        assert len(full.to_ooni()["answers"]) == ndns.MAX_ANSWERS
        assert elapsed < 2

    asyncio.run(main())


def test_dns_udp_sixty_kilobyte_reply_and_late_flood() -> None:
    async def main() -> None:
        def handler(q: dns.message.Message) -> list[tuple[float, bytes]]:
            big = _many_answers(q, 3700)
            assert 55_000 < len(big) < 65_000
            return [(0, big)] + [(0.01, a_reply(q, "198.18.9.9")) for _ in range(50)]

        server = await start_dns_udp(handler)
        try:
            started = time.monotonic()
            result = await net.resolve(
                "big.test", LOOPBACK, port=server.port, timeout=2, late_window=2
            )
            elapsed = time.monotonic() - started
        finally:
            server.close()
        assert result.failure is None
        assert len(result.addresses) == ndns.MAX_ANSWERS
        assert len(result.late_replies) == ndns.MAX_LATE_REPLIES
        assert elapsed < 1.5  # the late window ends early once the late-reply cap is reached

    asyncio.run(main())


def test_dns_udp_garbage_flood_then_timeout() -> None:
    async def main() -> None:
        def handler(q: dns.message.Message) -> list[tuple[float, bytes]]:
            return [(0, os.urandom(512)) for _ in range(300)] + [
                (0, q.id.to_bytes(2, "big") + os.urandom(200))
            ]

        server = await start_dns_udp(handler)
        try:
            result = await net.resolve("junk.test", LOOPBACK, port=server.port, timeout=0.5)
        finally:
            server.close()
        assert result.failure == "generic_timeout_error"

    asyncio.run(main())


def test_tls_ok_server_still_fine_after_hostile(tmp_path: Path) -> None:
    # A sanity check that the cached client context is not poisoned by the hostile tests.
    p = pki()
    ctx = server_context(tmp_path, [p.leaf, p.intermediate])

    async def main() -> None:
        server, port = await start_tcp(simple_http({"/": (200, [], b"ok")}), ssl_ctx=ctx)
        try:
            _tcp, sock = await net.connect(LOOPBACK, port)
            assert sock is not None
            result, stream = await net.handshake(sock, "site.test", trust=p.trust)
            assert stream is not None
            stream.close()
        finally:
            server.close()
        assert result.failure is None

    asyncio.run(main())


def test_dns_reply_with_compression_loop_is_ignored() -> None:
    query = dns.message.make_query("loop.test", "A")
    good = a_reply(query, "198.18.0.1")
    header = bytearray(good[:12])
    header[7] = 1  # one answer
    question_end = 12 + len(b"\x04loop\x04test\x00") + 4
    # CNAME whose target is a pointer to itself: a name that never ends.
    record_at = question_end
    rdata_at = record_at + 2 + 10
    pointer = (0xC000 | rdata_at).to_bytes(2, "big")
    record = (
        b"\xc0\x0c"
        + (5).to_bytes(2, "big")
        + b"\x00\x01"
        + (60).to_bytes(4, "big")
        + b"\x00\x02"
        + pointer
    )
    wire = bytes(header) + good[12:question_end] + record
    assert ndns.parse_reply(wire, query, 0.0) is None
    # A record that claims more answers than it carries is ignored too.
    truncated = bytes(header) + good[12:question_end] + record[:8]
    assert ndns.parse_reply(truncated, query, 0.0) is None
    # The well-formed reply parses.
    reply = ndns.parse_reply(good, query, 0.0)
    assert reply is not None and reply.addresses == ("198.18.0.1",)
