"""The ClientHello parser on real ClientHellos (from Python's ssl), re-fragmented, truncated and
mutated, and on garbage: it must never raise and must tell "wait" apart from "not TLS"."""

from __future__ import annotations

import random
import ssl
import time

import pytest

from netvigil.testbed.clienthello import ClientHello, Verdict, parse_client_hello


def real_client_hello(
    server_hostname: str | None = "www.example.com", alpn: tuple[str, ...] = ("h2", "http/1.1")
) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server_hostname is None:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def refragment(record: bytes, size: int) -> bytes:
    """The same handshake bytes, carried in records of at most `size` bytes each."""
    length = int.from_bytes(record[3:5], "big")
    body = record[5 : 5 + length]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(record[:3] + len(c).to_bytes(2, "big") + c for c in chunks)


def parsed(data: bytes) -> ClientHello:
    result = parse_client_hello(data)
    assert isinstance(result, ClientHello), result
    return result


def test_a_real_client_hello() -> None:
    data = real_client_hello()
    hello = parsed(data)
    assert hello.sni == "www.example.com"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.legacy_version == 0x0303
    assert 0x0304 in hello.supported_versions
    assert hello.record_version in (0x0301, 0x0303)
    assert hello.length == len(data)
    assert 0 in hello.extensions and 16 in hello.extensions
    assert hello.cipher_suites


def test_no_sni_and_no_alpn() -> None:
    hello = parsed(real_client_hello(server_hostname=None, alpn=()))
    assert hello.sni is None
    assert hello.alpn == ()


def test_sni_is_reported_as_sent() -> None:
    assert parsed(real_client_hello("Blocked.Example")).sni in (
        "Blocked.Example",
        "blocked.example",
    )


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 200])
def test_split_over_records(size: int) -> None:
    data = refragment(real_client_hello("split.example"), size)
    hello = parsed(data)
    assert hello.sni == "split.example"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.length == len(data)


def test_every_prefix_asks_for_more() -> None:
    for data in (real_client_hello(), refragment(real_client_hello(), 7)):
        for cut in range(len(data)):
            assert parse_client_hello(data[:cut]) is Verdict.NEED_MORE, cut


def test_bytes_after_the_client_hello_are_ignored() -> None:
    data = real_client_hello()
    hello = parsed(data + b"\x14\x03\x03\x00\x01\x01" + b"junk" * 100)
    assert hello.length == len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x80\x2e\x01\x00\x02",  # SSLv2-compatible hello
        b"\x15\x03\x03\x00\x02\x02\x28",  # an alert
        b"\x16\x02\x00",  # record version 2.0
        b"\x16\x03\x05",  # record version 3.5
        b"\x16\x03\x01\x00\x00",  # empty record
        b"\x16\x03\x01\x48\x01",  # longer than any TLS record
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x26",  # a ServerHello
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",  # announces a 16 MB ClientHello
        b"\x16\x03\x01\x00\x04\x01\x00\x00\x05",  # shorter than any ClientHello
    ],
)
def test_not_tls_is_said_at_once(data: bytes) -> None:
    assert parse_client_hello(data) is Verdict.NOT_TLS


def test_empty_and_short_prefixes_wait() -> None:
    for data in (b"", b"\x16", b"\x16\x03", b"\x16\x03\x01", b"\x16\x03\x01\x02"):
        assert parse_client_hello(data) is Verdict.NEED_MORE


def test_a_record_length_beyond_the_data_waits() -> None:
    data = real_client_hello()
    claimed = bytearray(data)
    claimed[3:5] = (0x4000).to_bytes(2, "big")  # the record claims 16 KiB, we have ~500 bytes
    # The handshake message inside is complete, so it is parsed all the same.
    assert parsed(bytes(claimed)).sni == "www.example.com"
    claimed[6:9] = (0x3FFC).to_bytes(3, "big")  # now the ClientHello claims it too
    assert parse_client_hello(bytes(claimed)) is Verdict.NEED_MORE


def test_an_inner_length_beyond_its_vector_is_not_tls() -> None:
    data = bytearray(real_client_hello())
    # Offset of the session id length: record(5) + handshake header(4) + version(2) + random(32).
    data[43] = 0xFF
    assert parse_client_hello(bytes(data)) is Verdict.NOT_TLS


def test_a_change_of_content_type_mid_hello_is_not_tls() -> None:
    data = bytearray(refragment(real_client_hello(), 50))
    data[5 + 50] = 0x17  # the second record claims to be application data
    assert parse_client_hello(bytes(data)) is Verdict.NOT_TLS


def test_random_garbage_never_raises() -> None:
    rng = random.Random(20240601)
    prefixes = [
        b"",
        b"\x16",
        b"\x16\x03\x01",
        b"\x16\x03\x01\x02\x00\x01",
        b"\x16\x03\x03\x00\x30\x01\x00\x00\x2c",
    ]
    started = time.monotonic()
    for _ in range(3000):
        blob = rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 700))
        result = parse_client_hello(blob)
        assert isinstance(result, ClientHello | Verdict)
    assert time.monotonic() - started < 20


def test_mutated_client_hellos_never_raise() -> None:
    rng = random.Random(7)
    original = real_client_hello()
    started = time.monotonic()
    for _ in range(3000):
        data = bytearray(original)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randrange(len(data) + 1)] if rng.random() < 0.3 else data
        result = parse_client_hello(bytes(data))
        assert isinstance(result, ClientHello | Verdict)
    assert time.monotonic() - started < 20


def test_a_megabyte_of_garbage_is_quick() -> None:
    rng = random.Random(1)
    blob = rng.randbytes(1 << 20)
    started = time.monotonic()
    assert parse_client_hello(blob) is Verdict.NOT_TLS
    assert parse_client_hello(b"\x16\x03\x01" + blob) in (Verdict.NOT_TLS, Verdict.NEED_MORE)
    # A megabyte of tiny well-formed records that never complete a ClientHello.
    tiny = b"\x16\x03\x01\x00\x01\x01" + b"\x16\x03\x01\x00\x01\x00" * ((1 << 20) // 6)
    assert parse_client_hello(tiny) is Verdict.NOT_TLS
    assert time.monotonic() - started < 5


def test_a_megabyte_of_one_byte_records_carrying_a_hello() -> None:
    data = refragment(real_client_hello("tiny.example"), 1)
    started = time.monotonic()
    assert parsed(data + b"\x00" * (1 << 20)).sni == "tiny.example"
    assert time.monotonic() - started < 5
