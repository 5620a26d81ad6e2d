"""Every feature of a TLS ClientHello that tells one TLS stack from another, from hostile bytes.

The testbed's parser (``netvigil.testbed.clienthello``) reads the few fields a censor's DPI
looks at; this one reads everything a site needs to tell a browser from the TLS library of an
interception product. It reuses that module's bounds-checked reader and size limits, and adds
what a site sees and a middlebox does not care about: SSLv2-compatible hellos, GREASE, key
shares, PSK modes, padding, compression, and extension bodies that are malformed on purpose.

``parse_client_hello`` never raises: any input gives either a ``ClientHello`` or a
``ParseFailure`` whose ``reason`` is a short plain-text string. Work is linear in the input,
which is capped at ``MAX_INPUT`` bytes; nothing is allocated beyond a few copies of it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from netvigil.testbed.clienthello import (
    CONTENT_HANDSHAKE,
    HANDSHAKE_CLIENT_HELLO,
    MAX_CLIENT_HELLO_LEN,
    MAX_RECORD_LEN,
    MIN_CLIENT_HELLO_LEN,
    _Malformed,
    _Reader,
)

# A ClientHello is at most MAX_CLIENT_HELLO_LEN bytes of handshake, split over records of at
# most MAX_RECORD_LEN; the 5-byte headers of that many records bound the whole input.
MAX_INPUT = MAX_CLIENT_HELLO_LEN + 5 * (MAX_CLIENT_HELLO_LEN // 256 + 2)
# More list entries than any real stack sends; counts beyond are kept short, never expanded.
MAX_LIST_ITEMS = 4096

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_PADDING = 0x0015
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_PSK_KEY_EXCHANGE_MODES = 0x002D
EXT_KEY_SHARE = 0x0033
# draft-23 key_share code point, used by TLS 1.3 drafts in 2017-2018 browsers.
EXT_KEY_SHARE_DRAFT = 0x0028

_TYPE_AND_LENGTH = struct.Struct(">HH")

SSL2_VERSION = 0x0002
SSL2_CLIENT_HELLO = 0x01


# RFC 8701 GREASE code points: 0x?a?a with both bytes equal (0x0a0a, 0x1a1a, ... 0xfafa).
GREASE_VALUES = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def is_grease(value: int) -> bool:
    return value in GREASE_VALUES


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """Why the input holds no ClientHello; ``need_more`` if a longer input might."""

    reason: str
    need_more: bool = False


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The ClientHello's features. Lists keep the wire order and GREASE values as sent."""

    record_version: int  # first record's version, e.g. 0x0301; 0x0002 for an SSLv2 header
    handshake_version: int  # ClientHello.legacy_version (client_version)
    sslv2: bool  # sent in an SSLv2-compatible CLIENT-HELLO (RFC 6101 appendix E.2)
    session_id_length: int
    cipher_suites: tuple[int, ...]
    compression_methods: tuple[int, ...]
    extensions: tuple[int, ...]  # types in the order sent, duplicates included
    sni: str | None
    supported_versions: tuple[int, ...]
    supported_groups: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    alpn: tuple[bytes, ...]
    key_share_groups: tuple[int, ...]
    psk_key_exchange_modes: tuple[int, ...]
    padding_length: int | None  # bytes of the padding extension, None without one
    # Extensions whose body did not parse: their type is kept in ``extensions``, their
    # content is ignored. A real stack never sends one; an attacker or a fuzzer does.
    malformed_extensions: tuple[int, ...] = field(default=())
    length: int = 0  # bytes of input the ClientHello took, headers included

    @property
    def grease(self) -> bool:
        """GREASE anywhere a Chromium-family stack puts it."""
        return not GREASE_VALUES.isdisjoint(
            (
                *self.cipher_suites,
                *self.extensions,
                *self.supported_groups,
                *self.supported_versions,
                *self.key_share_groups,
                *self.signature_algorithms,
            )
        )

    @property
    def max_version(self) -> int:
        """The highest version offered: supported_versions if sent, else legacy_version."""
        offered = [v for v in self.supported_versions if not is_grease(v)]
        return max(offered) if offered else self.handshake_version


def parse_client_hello(data: bytes) -> ClientHello | ParseFailure:
    """The ClientHello at the start of ``data`` (TLS records or an SSLv2 header), or why not."""
    if len(data) > MAX_INPUT:
        data = data[:MAX_INPUT]
    data = bytes(data)
    if not data:
        return ParseFailure("empty input", need_more=True)
    try:
        if data[0] & 0x80:
            return _parse_sslv2(data)
        return _parse_records(data)
    except _Malformed:
        return ParseFailure("malformed ClientHello")


def _parse_records(data: bytes) -> ClientHello | ParseFailure:
    pos = 0
    record_version = -1
    handshake = bytearray()
    needed = -1
    # Each pass consumes a 5-byte header and at least one byte of body, or returns.
    while True:
        if len(data) - pos < 5:
            if data[pos : pos + 1] not in (b"", bytes([CONTENT_HANDSHAKE])):
                return ParseFailure("not a TLS handshake record")
            return ParseFailure("truncated record header", need_more=True)
        content_type, major, minor = data[pos], data[pos + 1], data[pos + 2]
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if content_type != CONTENT_HANDSHAKE:
            return ParseFailure("not a TLS handshake record")
        if major != 3 or minor > 4:
            return ParseFailure("record version is not TLS")
        if length == 0 or length > MAX_RECORD_LEN:
            return ParseFailure("record length out of range")
        if record_version < 0:
            record_version = (major << 8) | minor
        body = data[pos + 5 : pos + 5 + length]
        handshake += body
        pos += 5 + len(body)
        if needed < 0 and len(handshake) >= 4:
            if handshake[0] != HANDSHAKE_CLIENT_HELLO:
                return ParseFailure("handshake message is not a ClientHello")
            message_length = int.from_bytes(handshake[1:4], "big")
            if not MIN_CLIENT_HELLO_LEN <= message_length <= MAX_CLIENT_HELLO_LEN:
                return ParseFailure("ClientHello length out of range")
            needed = 4 + message_length
        elif needed < 0 and handshake and handshake[0] != HANDSHAKE_CLIENT_HELLO:
            return ParseFailure("handshake message is not a ClientHello")
        if needed >= 0 and len(handshake) >= needed:
            return _parse_body(bytes(handshake[4:needed]), record_version, pos)
        if len(body) < length:
            return ParseFailure("truncated ClientHello", need_more=True)


def _parse_sslv2(data: bytes) -> ClientHello | ParseFailure:
    """An SSLv2-compatible CLIENT-HELLO: 2-byte header, 3-byte cipher specs, no extensions."""
    if len(data) < 2:
        return ParseFailure("truncated SSLv2 header", need_more=True)
    length = ((data[0] & 0x7F) << 8) | data[1]
    if length < 9:
        return ParseFailure("SSLv2 record too short")
    if len(data) < 2 + length:
        return ParseFailure("truncated SSLv2 ClientHello", need_more=True)
    reader = _Reader(data, 2, 2 + length)
    if reader.uint(1) != SSL2_CLIENT_HELLO:
        return ParseFailure("SSLv2 message is not a CLIENT-HELLO")
    version = reader.uint(2)
    if version != SSL2_VERSION and version >> 8 != 3:
        return ParseFailure("SSLv2 ClientHello version is not SSL/TLS")
    specs_length = reader.uint(2)
    session_id_length = reader.uint(2)
    challenge_length = reader.uint(2)
    if specs_length % 3 or session_id_length > 32 or not 16 <= challenge_length <= 32:
        raise _Malformed
    specs = reader.take(specs_length)
    reader.take(session_id_length)
    reader.take(challenge_length)
    # A 3-byte spec with a zero first byte is a TLS cipher suite (RFC 6101 E.2); the others
    # are SSLv2-only ciphers, kept as 0x01xxxx-style values above 0xffff so no suite collides.
    suites = tuple(
        int.from_bytes(specs[i : i + 3], "big")
        for i in range(0, min(len(specs), 3 * MAX_LIST_ITEMS), 3)
    )
    return ClientHello(
        record_version=SSL2_VERSION,
        handshake_version=version,
        sslv2=True,
        session_id_length=session_id_length,
        cipher_suites=suites,
        compression_methods=(0,),
        extensions=(),
        sni=None,
        supported_versions=(),
        supported_groups=(),
        ec_point_formats=(),
        signature_algorithms=(),
        alpn=(),
        key_share_groups=(),
        psk_key_exchange_modes=(),
        padding_length=None,
        length=2 + length,
    )


def _uint_list(reader: _Reader, size: int) -> tuple[int, ...]:
    if reader.remaining % size:
        raise _Malformed
    count = min(reader.remaining // size, MAX_LIST_ITEMS)
    # One unpack of the whole vector: lists are read per connection, so this is hot.
    return struct.unpack(f">{count}{'H' if size == 2 else 'B'}", reader.take(count * size))


def _parse_body(body: bytes, record_version: int, consumed: int) -> ClientHello:
    reader = _Reader(body)
    handshake_version = reader.uint(2)
    reader.take(32)  # random
    session_id = reader.sub(1)
    if session_id.remaining > 32:
        raise _Malformed
    suites_reader = reader.sub(2)
    if suites_reader.remaining < 2:
        raise _Malformed
    suites = _uint_list(suites_reader, 2)
    compression_reader = reader.sub(1)
    if compression_reader.remaining < 1:
        raise _Malformed
    compression = _uint_list(compression_reader, 1)
    parsed = _Extensions()
    # No extensions at all is legal (SSLv3/TLS 1.0-era clients); bytes after the extensions
    # block are not ours to judge, so they are ignored rather than rejected.
    if reader.remaining:
        extensions = reader.sub(2)
        # Index arithmetic rather than reader calls: this loop runs for every connection.
        pos, end = extensions.pos, extensions.end
        while pos < end:
            if end - pos < 4:
                raise _Malformed
            ext_type, length = _TYPE_AND_LENGTH.unpack_from(body, pos)
            pos += 4
            if length > end - pos:
                raise _Malformed
            parsed.add(ext_type, _Reader(body, pos, pos + length))
            pos += length
    return ClientHello(
        record_version=record_version,
        handshake_version=handshake_version,
        sslv2=False,
        session_id_length=session_id.remaining,
        cipher_suites=suites,
        compression_methods=compression,
        extensions=tuple(parsed.types),
        sni=parsed.sni,
        supported_versions=parsed.supported_versions,
        supported_groups=parsed.supported_groups,
        ec_point_formats=parsed.ec_point_formats,
        signature_algorithms=parsed.signature_algorithms,
        alpn=parsed.alpn,
        key_share_groups=parsed.key_share_groups,
        psk_key_exchange_modes=parsed.psk_modes,
        padding_length=parsed.padding_length,
        malformed_extensions=tuple(parsed.malformed),
        length=consumed,
    )


class _Extensions:
    """Collects extension contents; a malformed body is recorded, never fatal."""

    def __init__(self) -> None:
        self.types: list[int] = []
        self.seen: set[int] = set()
        self.malformed: list[int] = []
        self.sni: str | None = None
        self.supported_versions: tuple[int, ...] = ()
        self.supported_groups: tuple[int, ...] = ()
        self.ec_point_formats: tuple[int, ...] = ()
        self.signature_algorithms: tuple[int, ...] = ()
        self.alpn: tuple[bytes, ...] = ()
        self.key_share_groups: tuple[int, ...] = ()
        self.psk_modes: tuple[int, ...] = ()
        self.padding_length: int | None = None

    def add(self, ext_type: int, body: _Reader) -> None:
        if len(self.types) >= MAX_LIST_ITEMS:
            raise _Malformed
        self.types.append(ext_type)
        # Duplicates are illegal (RFC 8446 §4.2); the first one is the one a server reads.
        if ext_type in self.seen:
            return
        self.seen.add(ext_type)
        try:
            self._read(ext_type, body)
        except _Malformed:
            self.malformed.append(ext_type)

    def _read(self, ext_type: int, body: _Reader) -> None:
        if ext_type == EXT_SERVER_NAME:
            self.sni = _server_name(body)
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            self.supported_versions = _uint_list(_whole(body, 1), 2)
        elif ext_type == EXT_SUPPORTED_GROUPS:
            self.supported_groups = _uint_list(_whole(body, 2), 2)
        elif ext_type == EXT_EC_POINT_FORMATS:
            self.ec_point_formats = _uint_list(_whole(body, 1), 1)
        elif ext_type == EXT_SIGNATURE_ALGORITHMS:
            self.signature_algorithms = _uint_list(_whole(body, 2), 2)
        elif ext_type == EXT_ALPN:
            self.alpn = _alpn(_whole(body, 2))
        elif ext_type in (EXT_KEY_SHARE, EXT_KEY_SHARE_DRAFT):
            if not self.key_share_groups:
                self.key_share_groups = _key_shares(_whole(body, 2))
        elif ext_type == EXT_PSK_KEY_EXCHANGE_MODES:
            self.psk_modes = _uint_list(_whole(body, 1), 1)
        elif ext_type == EXT_PADDING:
            self.padding_length = body.remaining


def _whole(body: _Reader, length_size: int) -> _Reader:
    """The single length-prefixed vector that must fill ``body`` exactly."""
    inner = body.sub(length_size)
    if body.remaining:
        raise _Malformed
    return inner


def _server_name(body: _Reader) -> str | None:
    if not body.remaining:  # a server's empty echo; harmless here
        return None
    names = _whole(body, 2)
    while names.remaining:
        name_type = names.uint(1)
        name = names.sub(2)
        if name_type == 0 and name.remaining:
            # latin-1 never fails; a non-ASCII name stays visibly odd rather than crashing.
            return name.take(name.remaining).decode("latin-1")
    return None


def _alpn(protocols: _Reader) -> tuple[bytes, ...]:
    found: list[bytes] = []
    while protocols.remaining:
        proto = protocols.sub(1)
        if not proto.remaining:
            raise _Malformed
        if len(found) < MAX_LIST_ITEMS:
            found.append(proto.take(proto.remaining))
    return tuple(found)


def _key_shares(shares: _Reader) -> tuple[int, ...]:
    groups: list[int] = []
    while shares.remaining:
        group = shares.uint(2)
        shares.sub(2)  # key_exchange bytes: random per connection, never a feature
        if len(groups) < MAX_LIST_ITEMS:
            groups.append(group)
    return tuple(groups)
