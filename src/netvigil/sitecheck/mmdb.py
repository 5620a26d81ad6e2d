"""A small, bounded reader of MaxMind DB files (the format of GeoLite2-ASN and its peers).

Written from the public MaxMind DB format specification (version 2): a binary search tree over
address bits, then a data section of typed values. Only what the site-side aggregates need is
supported: looking an address up and decoding the record (maps, arrays, strings, integers,
floats, booleans, pointers). The file is the operator's, so it is still read defensively:
every offset is checked, nesting depth and container sizes are bounded, and any inconsistency
raises ``MMDBError`` instead of reading out of bounds or looping.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
MAX_METADATA_SEARCH = 128 * 1024
MAX_DEPTH = 32
MAX_CONTAINER = 1 << 16
MAX_FILE = 1 << 31


class MMDBError(Exception):
    """The file is not a usable MaxMind DB."""


class _Decoder:
    def __init__(self, buffer: bytes, base: int) -> None:
        self.buffer = buffer
        self.base = base  # offset of the data section: pointers are relative to it

    def _take(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self.buffer):
            raise MMDBError("value runs past the end of the file")
        return self.buffer[offset : offset + size]

    def decode(self, offset: int, depth: int = 0) -> tuple[Any, int]:
        """The value at ``offset`` and the offset after it."""
        if depth > MAX_DEPTH:
            raise MMDBError("values nested too deeply")
        (control,) = self._take(offset, 1)
        offset += 1
        kind = control >> 5
        if kind == 1:  # pointer: its size bits are part of the pointer value
            size_bits = (control >> 3) & 0x3
            value_bits = control & 0x7
            raw = self._take(offset, size_bits + 1)
            offset += size_bits + 1
            if size_bits == 0:
                pointer = (value_bits << 8) | raw[0]
            elif size_bits == 1:
                pointer = ((value_bits << 16) | int.from_bytes(raw, "big")) + 2048
            elif size_bits == 2:
                pointer = ((value_bits << 24) | int.from_bytes(raw, "big")) + 526336
            else:
                pointer = int.from_bytes(raw, "big")
            value, _ = self.decode(self.base + pointer, depth + 1)
            return value, offset
        if kind == 0:  # extended type in the next byte
            (extended,) = self._take(offset, 1)
            offset += 1
            kind = 7 + extended
        size = control & 0x1F
        if size >= 29:
            extra = size - 28
            raw = self._take(offset, extra)
            offset += extra
            size = {29: 29, 30: 285, 31: 65821}[control & 0x1F] + int.from_bytes(raw, "big")
        if kind == 2:
            return self._take(offset, size).decode("utf-8", "replace"), offset + size
        if kind == 4:
            return self._take(offset, size), offset + size
        if kind == 3:
            if size != 8:
                raise MMDBError("double of wrong size")
            return struct.unpack(">d", self._take(offset, 8))[0], offset + 8
        if kind == 15:
            if size != 4:
                raise MMDBError("float of wrong size")
            return struct.unpack(">f", self._take(offset, 4))[0], offset + 4
        if kind in (5, 6, 9, 10):
            if size > {5: 2, 6: 4, 9: 8, 10: 16}[kind]:
                raise MMDBError("unsigned integer too long")
            return int.from_bytes(self._take(offset, size), "big"), offset + size
        if kind == 8:
            if size > 4:
                raise MMDBError("int32 too long")
            raw = self._take(offset, size)
            return int.from_bytes(raw.rjust(4, b"\x00"), "big", signed=True), offset + size
        if kind == 14:
            return bool(size), offset
        if kind in (7, 11):
            if size > MAX_CONTAINER:
                raise MMDBError("container too large")
            if kind == 11:
                items = []
                for _ in range(size):
                    item, offset = self.decode(offset, depth + 1)
                    items.append(item)
                return items, offset
            mapping: dict[str, Any] = {}
            for _ in range(size):
                key, offset = self.decode(offset, depth + 1)
                value, offset = self.decode(offset, depth + 1)
                mapping[str(key)] = value
            return mapping, offset
        raise MMDBError(f"unsupported data type {kind}")


class MMDBReader:
    """``MMDBReader(path).get("198.51.100.7")`` → the record (a dict) or None."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        if path.stat().st_size > MAX_FILE:
            raise MMDBError("file too large")
        self.buffer = path.read_bytes()
        marker = self.buffer.rfind(METADATA_MARKER, max(0, len(self.buffer) - MAX_METADATA_SEARCH))
        if marker < 0:
            raise MMDBError("no MaxMind DB metadata")
        metadata, _ = _Decoder(self.buffer, 0).decode(marker + len(METADATA_MARKER))
        if not isinstance(metadata, dict):
            raise MMDBError("metadata is not a map")
        try:
            self.node_count = int(metadata["node_count"])
            self.record_size = int(metadata["record_size"])
            self.ip_version = int(metadata["ip_version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MMDBError("metadata lacks node_count, record_size or ip_version") from exc
        self.database_type = str(metadata.get("database_type", ""))
        if self.record_size not in (24, 28, 32) or self.ip_version not in (4, 6):
            raise MMDBError("unsupported record size or IP version")
        self.node_bytes = self.record_size * 2 // 8
        self.tree_size = self.node_bytes * self.node_count
        if self.tree_size + 16 > marker:
            raise MMDBError("search tree larger than the file")
        self.decoder = _Decoder(self.buffer, self.tree_size + 16)
        self._ipv4_start = self._walk_zeros(96) if self.ip_version == 6 else 0

    def _record(self, node: int, bit: int) -> int:
        offset = node * self.node_bytes
        raw = self.buffer[offset : offset + self.node_bytes]
        if len(raw) != self.node_bytes:
            raise MMDBError("node outside the search tree")
        if self.record_size == 24:
            return int.from_bytes(raw[3:6] if bit else raw[0:3], "big")
        if self.record_size == 32:
            return int.from_bytes(raw[4:8] if bit else raw[0:4], "big")
        if bit:
            return ((raw[3] & 0x0F) << 24) | int.from_bytes(raw[4:7], "big")
        return ((raw[3] & 0xF0) << 20) | int.from_bytes(raw[0:3], "big")

    def _walk_zeros(self, bits: int) -> int:
        node = 0
        for _ in range(bits):
            if node >= self.node_count:
                break
            node = self._record(node, 0)
        return node

    def get(self, address: str) -> dict[str, Any] | None:
        """The record for ``address``, or None if the database has none (or it is no address)."""
        try:
            parsed = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return None
        if parsed.version == 6 and self.ip_version == 4:
            return None
        packed = parsed.packed
        node = self._ipv4_start if parsed.version == 4 else 0
        for index in range(len(packed) * 8):
            if node >= self.node_count:
                break
            bit = (packed[index >> 3] >> (7 - (index & 7))) & 1
            node = self._record(node, bit)
        if node == self.node_count or node < self.node_count:
            return None  # no data (or the tree is deeper than the address: malformed)
        offset = self.decoder.base + (node - self.node_count - 16)
        value, _ = self.decoder.decode(offset)
        return value if isinstance(value, dict) else None


def asn_label(record: dict[str, Any] | None) -> str | None:
    """``AS64500 Example Net`` from a GeoLite2-ASN-style record."""
    if not record or "autonomous_system_number" not in record:
        return None
    number = record["autonomous_system_number"]
    organization = str(record.get("autonomous_system_organization", "")).strip()
    name = "".join(c if c.isprintable() else "?" for c in organization)[:80]
    return f"AS{number} {name}".strip()
