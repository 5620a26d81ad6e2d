"""A TLS ClientHello parser for the middlebox: the fields a censor's DPI looks at, nothing more.

The input is whatever a subscriber sent first, so it is hostile: ``parse_client_hello`` never
raises on any input, runs in time linear in its length, and tells "not TLS" apart from "not
yet complete" so the caller knows whether to wait for more bytes. A ClientHello may be split
over several TLS records (and any record over several TCP segments); both are reassembled.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
# RFC 8446 §5.2 allows 2^14 + 256 bytes of TLSPlaintext; records longer than the ciphertext
# bound (2^14 + 2048) cannot be TLS, so they are rejected rather than waited for.
MAX_RECORD_LEN = (1 << 14) + 2048
# Every vector in a ClientHello has a 1- or 2-byte length, so no real one comes near this;
# a bigger announced length is garbage, not a reason to wait.
MAX_CLIENT_HELLO_LEN = 1 << 17
# version(2) + random(32) + session_id(1) + cipher_suites(2 + 2) + compression(1 + 1)
MIN_CLIENT_HELLO_LEN = 41


class Verdict(enum.Enum):
    """Why ``parse_client_hello`` returned no ClientHello."""

    NEED_MORE = "need-more"  # a plausible prefix of a ClientHello: wait for more bytes
    NOT_TLS = "not-tls"  # cannot be the start of a TLS ClientHello, whatever follows


@dataclass(frozen=True, slots=True)
class ClientHello:
    record_version: int  # of the first record, e.g. 0x0301
    legacy_version: int  # ClientHello.legacy_version, e.g. 0x0303
    sni: str | None  # the first host_name of server_name, as sent (not lowercased)
    alpn: tuple[str, ...]
    supported_versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]  # extension types in the order sent
    length: int  # bytes of input up to the end of the record that completed the ClientHello


class _Malformed(Exception):
    """Raised inside the body parser; never escapes this module."""


class _Reader:
    """Bounds-checked big-endian reads over a bytes object."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, count: int) -> bytes:
        if count < 0 or count > self.remaining:
            raise _Malformed
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def sub(self, length_size: int) -> _Reader:
        """A reader over the next length-prefixed vector, skipping it in this reader."""
        length = self.uint(length_size)
        if length > self.remaining:
            raise _Malformed
        inner = _Reader(self.data, self.pos, self.pos + length)
        self.pos += length
        return inner


def _header_prefix_verdict(prefix: bytes) -> Verdict:
    """Judge fewer than 5 bytes of a record header: reject garbage without waiting for more."""
    if len(prefix) >= 1 and prefix[0] != CONTENT_HANDSHAKE:
        return Verdict.NOT_TLS
    if len(prefix) >= 2 and prefix[1] != 3:
        return Verdict.NOT_TLS
    if len(prefix) >= 3 and prefix[2] > 4:
        return Verdict.NOT_TLS
    return Verdict.NEED_MORE


def parse_client_hello(data: bytes) -> ClientHello | Verdict:
    """The ClientHello at the start of `data`, or why there is none (yet)."""
    try:
        return _parse(bytes(data))
    except _Malformed:
        return Verdict.NOT_TLS


def _parse(data: bytes) -> ClientHello | Verdict:
    pos = 0
    record_version = -1
    handshake = bytearray()
    needed = -1  # length of the handshake message with its 4-byte header, once known
    # Each pass consumes a 5-byte header and at least one byte of body, or returns: the loop
    # is bounded by len(data).
    while True:
        if len(data) - pos < 5:
            return _header_prefix_verdict(data[pos:])
        content_type, major, minor = data[pos], data[pos + 1], data[pos + 2]
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if content_type != CONTENT_HANDSHAKE or major != 3 or minor > 4:
            return Verdict.NOT_TLS
        if length == 0 or length > MAX_RECORD_LEN:
            return Verdict.NOT_TLS
        if record_version < 0:
            record_version = (major << 8) | minor
        body = data[pos + 5 : pos + 5 + length]
        handshake += body
        pos += 5 + len(body)
        if needed < 0 and len(handshake) >= 4:
            if handshake[0] != HANDSHAKE_CLIENT_HELLO:
                return Verdict.NOT_TLS
            message_length = int.from_bytes(handshake[1:4], "big")
            if not MIN_CLIENT_HELLO_LEN <= message_length <= MAX_CLIENT_HELLO_LEN:
                return Verdict.NOT_TLS
            needed = 4 + message_length
        elif needed < 0 and handshake and handshake[0] != HANDSHAKE_CLIENT_HELLO:
            return Verdict.NOT_TLS
        if needed >= 0 and len(handshake) >= needed:
            return _parse_body(bytes(handshake[4:needed]), record_version, pos)
        if len(body) < length:
            return Verdict.NEED_MORE


def _parse_body(body: bytes, record_version: int, consumed: int) -> ClientHello:
    reader = _Reader(body)
    legacy_version = reader.uint(2)
    reader.take(32)  # random
    session_id = reader.sub(1)
    if session_id.remaining > 32:
        raise _Malformed
    suites_reader = reader.sub(2)
    if suites_reader.remaining < 2 or suites_reader.remaining % 2:
        raise _Malformed
    suites = tuple(suites_reader.uint(2) for _ in range(suites_reader.remaining // 2))
    if reader.sub(1).remaining < 1:  # compression methods: at least "null"
        raise _Malformed
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    types: list[int] = []
    seen: set[int] = set()
    # No extensions at all is legal (TLS 1.0-era clients); trailing bytes after them are not
    # ours to judge, so they are ignored rather than rejected.
    if reader.remaining:
        extensions = reader.sub(2)
        while extensions.remaining:
            ext_type = extensions.uint(2)
            ext = extensions.sub(2)
            types.append(ext_type)
            # Duplicates are illegal; a middlebox looks at the first one, so do we.
            if ext_type in seen:
                continue
            seen.add(ext_type)
            if ext_type == EXT_SERVER_NAME:
                sni = _server_name(ext)
            elif ext_type == EXT_ALPN:
                alpn = _alpn(ext)
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                versions = _supported_versions(ext)
    return ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        sni=sni,
        alpn=alpn,
        supported_versions=versions,
        cipher_suites=suites,
        extensions=tuple(types),
        length=consumed,
    )


def _server_name(ext: _Reader) -> str | None:
    if not ext.remaining:  # a server's empty echo; harmless in a ClientHello
        return None
    names = ext.sub(2)
    while names.remaining:
        name_type = names.uint(1)
        name = names.sub(2)
        if name_type == 0 and name.remaining:
            # latin-1 never fails; a non-ASCII name can then never match a (validated) rule.
            return name.take(name.remaining).decode("latin-1")
    return None


def _alpn(ext: _Reader) -> tuple[str, ...]:
    protocols = ext.sub(2)
    found: list[str] = []
    while protocols.remaining:
        proto = protocols.sub(1)
        if not proto.remaining:
            raise _Malformed
        found.append(proto.take(proto.remaining).decode("latin-1"))
    return tuple(found)


def _supported_versions(ext: _Reader) -> tuple[int, ...]:
    versions = ext.sub(1)
    if versions.remaining % 2:
        raise _Malformed
    return tuple(versions.uint(2) for _ in range(versions.remaining // 2))
