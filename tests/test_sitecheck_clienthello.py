"""The site-side ClientHello parser and its fingerprints, on real and hostile hellos."""

from __future__ import annotations

import hashlib
import random
import struct
import time
import tracemalloc
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netvigil.sitecheck.clienthello import (
    MAX_INPUT,
    ClientHello,
    ParseFailure,
    is_grease,
    parse_client_hello,
)
from netvigil.sitecheck.fingerprint import (
    family_fingerprint,
    ja3_hash,
    ja3_string,
    ja4,
    ja4_from_raw,
    ja4_r,
)
from netvigil.sitecheck.reference import labelled_records

RECORDS = {str(r["label"]): r for r in labelled_records()}


def _real(label: str) -> bytes:
    return bytes.fromhex(str(RECORDS[label]["client_hello_record_hex"]))


def _hello(label: str) -> ClientHello:
    parsed = parse_client_hello(_real(label))
    assert isinstance(parsed, ClientHello), parsed
    return parsed


def _vec(length_size: int, body: bytes) -> bytes:
    return len(body).to_bytes(length_size, "big") + body


def _u16s(values: list[int]) -> bytes:
    return b"".join(struct.pack(">H", v) for v in values)


def build_hello(
    ciphers: list[int],
    extensions: list[tuple[int, bytes]],
    compression: bytes = b"\x00",
    version: int = 0x0303,
) -> bytes:
    """A TLS record holding a ClientHello made of these parts."""
    body = (
        struct.pack(">H", version)
        + bytes(32)
        + _vec(1, bytes(32))
        + _vec(2, _u16s(ciphers))
        + _vec(1, compression)
        + _vec(2, b"".join(struct.pack(">H", t) + _vec(2, b) for t, b in extensions))
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + _vec(2, handshake)


SPEC_CIPHERS = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8]
SPEC_CIPHERS += [0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
SPEC_SIGALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def _spec_extensions() -> list[tuple[int, bytes]]:
    """The extensions of the JA4 spec's example, in its order, with plausible bodies."""
    bodies = {
        0x0000: _vec(2, b"\x00" + _vec(2, b"example.com")),
        0x0010: _vec(2, _vec(1, b"h2") + _vec(1, b"http/1.1")),
        0x000D: _vec(2, _u16s(SPEC_SIGALGS)),
        0x002B: _vec(1, _u16s([0x0A0A, 0x0304, 0x0303])),
        0x000A: _vec(2, _u16s([0x0A0A, 0x001D, 0x0017, 0x0018])),
        0x000B: _vec(1, b"\x00"),
        0x0033: _vec(2, _u16s([0x0A0A]) + _vec(2, b"\x00") + _u16s([0x001D]) + _vec(2, bytes(32))),
        0x002D: _vec(1, b"\x01"),
        0x0015: bytes(20),
    }
    order = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D]
    order += [0x0005, 0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
    return [(0x0A0A, b"")] + [(t, bodies.get(t, b"")) for t in order] + [(0xFAFA, b"\x00")]


def test_ja4_spec_example_from_raw_and_from_bytes() -> None:
    # The two hashes of FoxIO's JA4 spec (technical_details/JA4.md), from its raw strings ...
    raw_ciphers = "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
    raw_ext = (
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
        "_0403,0804,0401,0503,0805,0501,0806,0601"
    )
    assert (
        ja4_from_raw("t13d1516h2", raw_ciphers, raw_ext) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    )
    no_sigalgs = "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
    assert ja4_from_raw("t13d1516h2", raw_ciphers, no_sigalgs).endswith("_6d807ffa2a79")
    # ... and from a hello carrying the example's lists, with GREASE to ignore everywhere.
    hello = parse_client_hello(build_hello([0x2A2A, *SPEC_CIPHERS], _spec_extensions()))
    assert isinstance(hello, ClientHello)
    assert ja4(hello) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert ja4_r(hello) == f"t13d1516h2_{raw_ciphers}_{raw_ext}"
    assert hello.grease


def test_ja4_and_ja3_match_a_published_chrome_record() -> None:
    # A browserleaks record of Chrome 143 (ja4_r, ja4, ja3_text, ja3_hash as published).
    raw = (
        "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9",
        "0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,fe0d,ff01"
        "_0403,0804,0401,0503,0805,0501,0806,0601",
    )
    assert ja4_from_raw("t13d1516h2", *raw) == "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    ja3_text = (
        "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,"
        "45-51-16-65037-23-17613-0-11-10-43-65281-35-18-5-13-27,4588-29-23-24,0"
    )
    assert hashlib.md5(ja3_text.encode()).hexdigest() == "98487aa16281980e7d1120d399efb6a4"


def test_ja4_alpn_rules() -> None:
    def alpn_of(value: bytes) -> str:
        ext = [(0x0010, _vec(2, _vec(1, value)))]
        hello = parse_client_hello(build_hello([0x002F], ext))
        assert isinstance(hello, ClientHello)
        return ja4(hello).split("_")[0][-2:]

    assert alpn_of(b"http/1.1") == "h1"
    assert alpn_of(b"h") == "hh"
    assert alpn_of(b"\xab") == "ab"
    assert alpn_of(b"\xab\xcd") == "ad"
    assert alpn_of(b"0\xab") == "3b"
    assert alpn_of(b"0\xab\xcd1") == "01"
    hello = parse_client_hello(build_hello([0x002F], []))
    assert isinstance(hello, ClientHello)
    # One cipher, no extensions: the cipher hash is of "002f", the extension hash all zeros.
    only_cipher = hashlib.sha256(b"002f").hexdigest()[:12]
    assert ja4(hello) == f"t12i010000_{only_cipher}_000000000000"


def test_every_shipped_capture_parses_with_its_features() -> None:
    for label, record in RECORDS.items():
        parsed = parse_client_hello(bytes.fromhex(str(record["client_hello_record_hex"])))
        assert isinstance(parsed, ClientHello), label
    chromium = _hello("live/chromium")
    assert chromium.grease and chromium.max_version == 0x0304
    assert chromium.alpn[0] == b"h2" and chromium.sni == "site.test"
    assert 0x11EC in chromium.key_share_groups and chromium.psk_key_exchange_modes == (1,)
    assert chromium.ec_point_formats == (0,) and chromium.compression_methods == (0,)
    python = _hello("live/python-ssl")
    assert not python.grease and python.ec_point_formats == (0, 1, 2)
    assert python.padding_length is not None and 0x0016 in python.extensions


def test_chrome_extension_shuffle_changes_ja3_not_ja4_or_family() -> None:
    hello = _hello("live/chromium")
    shuffled = list(hello.extensions)
    random.Random(7).shuffle(shuffled)
    other = replace(hello, extensions=tuple(shuffled))
    assert ja3_hash(other) != ja3_hash(hello)
    assert ja4(other) == ja4(hello)
    assert family_fingerprint(other) == family_fingerprint(hello)
    # Per-connection differences (no SNI, padding) keep the family too.
    no_sni = replace(hello, extensions=tuple(e for e in hello.extensions if e != 0))
    assert family_fingerprint(no_sni) == family_fingerprint(hello)
    assert family_fingerprint(_hello("live/curl")) != family_fingerprint(hello)


def test_ja3_string_drops_grease() -> None:
    text = ja3_string(_hello("live/chromium"))
    assert text.startswith("771,4865-4866-4867-")
    assert "2570" not in text.split(",")[1].split("-")  # 0x0a0a


def test_truncations_wait_and_garbage_fails() -> None:
    data = _real("live/chromium")
    for cut in range(len(data)):
        parsed = parse_client_hello(data[:cut])
        assert isinstance(parsed, ParseFailure) and parsed.need_more, cut
    assert isinstance(parse_client_hello(data + b"junk"), ClientHello)
    for garbage in (b"GET / HTTP/1.1\r\n", b"\x17\x03\x03\x00\x10", b"\x16\x03\x01\xff\xff"):
        parsed = parse_client_hello(garbage)
        assert isinstance(parsed, ParseFailure) and not parsed.need_more


def test_split_records_are_reassembled() -> None:
    data = _real("live/firefox-esr")
    handshake = data[5:]
    split = b"".join(
        b"\x16\x03\x01" + _vec(2, handshake[i : i + 100]) for i in range(0, len(handshake), 100)
    )
    parsed = parse_client_hello(split)
    assert isinstance(parsed, ClientHello)
    assert ja4(parsed) == ja4(_hello("live/firefox-esr")) and parsed.length == len(split)


def test_malformed_extension_is_recorded_not_fatal() -> None:
    extensions = [
        (0x000A, _vec(2, b"\x00\x1d\x00")),  # odd-length group list
        (0x0010, _vec(2, _vec(1, b""))),  # empty protocol name
        (0x002B, _vec(1, _u16s([0x0304]))),
        (0x0000, b"\x00\x05\x00\x00\x09x"),  # name longer than its vector
    ]
    parsed = parse_client_hello(build_hello([0x1301], extensions))
    assert isinstance(parsed, ClientHello)
    assert parsed.malformed_extensions == (0x000A, 0x0010, 0x0000)
    assert parsed.supported_versions == (0x0304,) and parsed.supported_groups == ()
    assert ja4(parsed).startswith("t13d0104")


def test_grease_values() -> None:
    assert [v for v in range(0x10000) if is_grease(v)] == [0x0A0A + 0x1010 * i for i in range(16)]


def test_sslv2_compatible_hello() -> None:
    specs = bytes.fromhex("010080") + bytes.fromhex("00002f") + bytes.fromhex("000035")
    challenge = bytes(range(16))
    body = b"\x01\x03\x01" + struct.pack(">HHH", len(specs), 0, len(challenge)) + specs + challenge
    data = bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body
    parsed = parse_client_hello(data)
    assert isinstance(parsed, ClientHello)
    assert parsed.sslv2 and parsed.handshake_version == 0x0301
    assert parsed.cipher_suites == (0x010080, 0x002F, 0x0035)
    assert ja4(parsed).startswith("t10i0300")
    assert isinstance(parse_client_hello(data[:-1]), ParseFailure)


def test_oversized_announcements_fail_fast() -> None:
    huge = b"\x16\x03\x01\x48\x00\x01\xff\xff\xff"
    parsed = parse_client_hello(huge)
    assert isinstance(parsed, ParseFailure)
    # Input beyond MAX_INPUT is cut, never parsed whole.
    started = time.perf_counter()
    parse_client_hello(b"\x16\x03\x01\x40\x00\x01" + b"\x00" * (10 * MAX_INPUT))
    assert time.perf_counter() - started < 5


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [_real(label) for label in sorted(RECORDS)[::40]] + [_real("live/chromium")]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):
            kind = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
            if not data:
                break
            pos = draw(st.integers(0, len(data) - 1))
            if kind == "flip":
                data[pos] = draw(st.integers(0, 255))
            elif kind == "cut":
                del data[pos : pos + draw(st.integers(1, 64))]
            elif kind == "insert":
                data[pos:pos] = draw(st.binary(max_size=64))
            else:  # a length field set to an extreme value
                data[pos : pos + 2] = draw(st.sampled_from([b"\xff\xff", b"\x00\x00", b"\x80\x00"]))
        return bytes(data)

    return mutate()


@settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_fuzz_mutated_real_hellos_never_crash(data: bytes) -> None:
    tracemalloc.start()
    try:
        parsed = parse_client_hello(data)
        if isinstance(parsed, ClientHello):
            ja3_hash(parsed), ja4(parsed), family_fingerprint(parsed)
            assert parsed.length <= len(data)
        else:
            assert isinstance(parsed.reason, str) and parsed.reason
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * len(data) + (1 << 20)
