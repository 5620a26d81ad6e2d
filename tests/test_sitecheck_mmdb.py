"""The MaxMind DB reader, on small databases written here to the format specification."""

from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from netvigil.sitecheck.logs import Report, analyse, client_network
from netvigil.sitecheck.mmdb import METADATA_MARKER, MMDBError, MMDBReader, asn_label
from netvigil.sitecheck.reference import labelled_records


def _control(kind: int, size: int) -> bytes:
    assert size < 285
    code, extra = (size, b"") if size < 29 else (29, bytes([size - 29]))
    if kind < 8:
        return bytes([(kind << 5) | code]) + extra
    return bytes([code, kind - 7]) + extra  # extended type


def encode(value: Any) -> bytes:
    if isinstance(value, bool):
        return _control(14, int(value))
    if isinstance(value, str):
        raw = value.encode()
        return _control(2, len(raw)) + raw
    if isinstance(value, int):
        raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
        return _control(6, len(raw)) + raw
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(encode(v) for v in value)
    assert isinstance(value, dict)
    return _control(7, len(value)) + b"".join(encode(k) + encode(v) for k, v in value.items())


def write_mmdb(
    path: Path, networks: dict[str, dict[str, Any]], ip_version: int = 6, record_size: int = 28
) -> None:
    """A MaxMind DB (format 2.0) holding ``networks``; IPv4 ones under ::/96 in an IPv6 tree."""
    width = 128 if ip_version == 6 else 32
    nodes: list[list[Any]] = [[None, None]]
    for network, _ in networks.items():
        parsed = ipaddress.ip_network(network)
        value = int(parsed.network_address)
        bits = parsed.prefixlen + (96 if parsed.version == 4 and ip_version == 6 else 0)
        node = 0
        for index in range(bits):
            bit = (value >> (width - 1 - index)) & 1
            if index == bits - 1:
                nodes[node][bit] = ("data", network)
            else:
                child = nodes[node][bit]
                if not isinstance(child, int):
                    nodes.append([None, None])
                    child = len(nodes) - 1
                    nodes[node][bit] = child
                node = child
    data = b""
    offsets: dict[str, int] = {}
    for network, record in networks.items():
        offsets[network] = len(data)
        data += encode(record)
    count = len(nodes)

    def number(entry: Any) -> int:
        if entry is None:
            return count
        if isinstance(entry, int):
            return entry
        return count + 16 + offsets[entry[1]]

    tree = b""
    for left, right in nodes:
        a, b = number(left), number(right)
        if record_size == 24:
            tree += a.to_bytes(3, "big") + b.to_bytes(3, "big")
        elif record_size == 32:
            tree += a.to_bytes(4, "big") + b.to_bytes(4, "big")
        else:
            middle = ((a >> 24) << 4) | (b >> 24)
            tree += (a & 0xFFFFFF).to_bytes(3, "big") + bytes([middle])
            tree += (b & 0xFFFFFF).to_bytes(3, "big")
    metadata = {
        "node_count": count,
        "record_size": record_size,
        "ip_version": ip_version,
        "database_type": "Test-ASN",
        "binary_format_major_version": 2,
        "binary_format_minor_version": 0,
    }
    path.write_bytes(tree + bytes(16) + data + METADATA_MARKER + encode(metadata))


ASNS = {
    "198.51.100.0/24": {
        "autonomous_system_number": 64500,
        "autonomous_system_organization": "Kaz Net",
    },
    "203.0.113.0/25": {
        "autonomous_system_number": 64501,
        "autonomous_system_organization": "Other",
    },
    "2001:db8:1::/48": {
        "autonomous_system_number": 64502,
        "autonomous_system_organization": "V6 Net",
    },
}


@pytest.mark.parametrize("record_size", [24, 28, 32])
def test_lookups_in_every_record_size(tmp_path: Path, record_size: int) -> None:
    path = tmp_path / "asn.mmdb"
    write_mmdb(path, ASNS, record_size=record_size)
    reader = MMDBReader(path)
    assert reader.database_type == "Test-ASN"
    assert asn_label(reader.get("198.51.100.77")) == "AS64500 Kaz Net"
    assert asn_label(reader.get("203.0.113.1")) == "AS64501 Other"
    assert reader.get("203.0.113.200") is None  # outside the /25
    assert asn_label(reader.get("2001:db8:1:ffff::1")) == "AS64502 V6 Net"
    assert reader.get("192.0.2.1") is None and reader.get("not an address") is None


def test_ipv4_only_database(tmp_path: Path) -> None:
    path = tmp_path / "v4.mmdb"
    write_mmdb(path, {k: v for k, v in ASNS.items() if ":" not in k}, ip_version=4, record_size=24)
    reader = MMDBReader(path)
    assert asn_label(reader.get("198.51.100.1")) == "AS64500 Kaz Net"
    assert reader.get("2001:db8:1::1") is None


def test_hostile_files_fail_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "bad.mmdb"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(MMDBError):
        MMDBReader(path)
    good = tmp_path / "good.mmdb"
    write_mmdb(good, ASNS)
    data = good.read_bytes()
    # A metadata node_count far beyond the file, and a data pointer loop, must not read out of
    # bounds or recurse forever.
    marker = data.rfind(METADATA_MARKER)
    huge = dict(node_count=10**9, record_size=28, ip_version=6)
    path.write_bytes(data[:marker] + METADATA_MARKER + encode(huge))
    with pytest.raises(MMDBError):
        MMDBReader(path)
    loop = bytes([0x20, 0x00])  # a pointer to offset 0 of the data section: itself
    tree_end = data.index(bytes(16))  # the 16-byte separator after the tree
    path.write_bytes(data[: tree_end + 16] + loop + data[marker:])
    reader = MMDBReader(path)
    with pytest.raises(MMDBError):
        reader.get("198.51.100.1")
    assert client_network("198.51.100.1", reader) == "198.51.100.0/24"


def test_logs_aggregate_per_asn(tmp_path: Path) -> None:
    path = tmp_path / "asn.mmdb"
    write_mmdb(path, ASNS)
    reader = MMDBReader(path)
    records = {str(r["label"]): r for r in labelled_records()}
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/156.0.0.0 Safari/537.36"
    )
    lines = [
        {
            "client_ip": ip,
            "user_agent": chrome,
            "time": "2019-07-19T14:00:00Z",
            "client_hello": records[label]["client_hello_record_hex"],
        }
        for ip, label in [
            ("198.51.100.5", "live/python-ssl"),
            ("198.51.100.6", "live/chromium"),
            ("192.0.2.9", "live/chromium"),
        ]
    ]
    report = Report()
    for row in analyse(io.StringIO("".join(json.dumps(x) + "\n" for x in lines)), asn_db=reader):
        report.add(row)
    networks = {n["prefix"]: n for n in report.to_json()["networks"]}
    assert networks["AS64500 Kaz Net"]["intercepted"] == 1
    assert networks["AS64500 Kaz Net"]["visits"] == 2
    assert networks["192.0.2.0/24"]["intercepted"] == 0
