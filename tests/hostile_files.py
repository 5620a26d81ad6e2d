"""Hostile input files for ``netvigil analyze``, written at run time (never stored).

Each file has a good measurement before and after the hostile part, so a test (or
``benchmarks/bench_analyze_hostile.py``) can check that the reader reports the bad part and
still analyses the rest. Every generator streams what it writes: none holds its file in memory.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).parent / "data" / "ooni_web_connectivity.jsonl"
MiB = 1024 * 1024
GiB = 1024 * MiB


def good_lines() -> tuple[bytes, bytes]:
    """Two real web_connectivity measurements, one JSON line each (without the newline)."""
    lines = DATA.read_bytes().splitlines()
    return lines[0], lines[1]


def long_line(path: Path, size: int = 200 * MiB) -> Path:
    """A line of ``size`` bytes: a valid JSON object with one huge string, between two good lines."""
    first, last = good_lines()
    head = b'{"test_name": "web_connectivity", "x_padding": "'
    tail = b'"}'
    block = b"a" * MiB
    with open(path, "wb") as out:
        out.write(first + b"\n" + head)
        left = size - len(head) - len(tail)
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
        out.write(tail + b"\n" + last + b"\n")
    return path


def gzip_bomb(path: Path, zeros: int = GiB) -> Path:
    """One gzip member that inflates to a good line, ``zeros`` NUL bytes (one line with no
    newline), then a good line: ~1 MB on disk for 1 GiB. The DEFLATE data for 1 MiB of zeros is
    computed once and repeated: after a full flush the compressor starts afresh, so every MiB
    compresses to the same bytes (and the CRC is computed over the same MiB, repeated)."""
    first, last = good_lines()
    start, end = first + b"\n", b"\n" + last + b"\n"
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero_block = b"\0" * MiB
    if zeros % MiB:
        raise ValueError("zeros must be a multiple of 1 MiB")
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip header, no name, no mtime
        out.write(c.compress(start) + c.flush(zlib.Z_FULL_FLUSH))
        crc = zlib.crc32(start)
        deflated = c.compress(zero_block) + c.flush(zlib.Z_FULL_FLUSH)
        block_crc_input = zero_block
        for _ in range(zeros // MiB):
            out.write(deflated)
            crc = zlib.crc32(block_crc_input, crc)
        out.write(c.compress(end) + c.flush())
        crc = zlib.crc32(end, crc)
        size = len(start) + zeros + len(end)
        out.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return path


def deep_nesting(path: Path, depth: int = 50_000) -> Path:
    """A measurement whose test_keys nests ``depth`` objects deep, between two good lines."""
    first, last = good_lines()
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    deep = b'{"test_name": "web_connectivity", "test_keys": ' + nested + b"}"
    path.write_bytes(first + b"\n" + deep + b"\n" + last + b"\n")
    return path


def many_keys(path: Path, keys: int = 1_000_000) -> Path:
    """A measurement whose test_keys is one object of ``keys`` distinct keys."""
    first, last = good_lines()
    with open(path, "wb") as out:
        out.write(first + b"\n" + b'{"test_name": "web_connectivity", "test_keys": {')
        batch = 10_000
        for start in range(0, keys, batch):
            out.write(
                b",".join(b'"k%d":%d' % (i, i) for i in range(start, min(start + batch, keys)))
            )
            if start + batch < keys:
                out.write(b",")
        out.write(b"}}\n" + last + b"\n")
    return path


def bad_numbers(path: Path) -> tuple[Path, list[str]]:
    """Lines whose integer fields hold NaN, Infinity, -Infinity, 1e999999 and a 400-digit
    integer (what Python's json module accepts or turns into inf), between good lines. Returns
    the path and the tokens, one per bad line (lines 2 to len(tokens) + 1)."""
    first, last = good_lines()
    tokens = ["NaN", "Infinity", "-Infinity", "1e999999", "9" * 400]
    rows = [first]
    for token in tokens:
        m = json.loads(first)
        m["test_keys"]["requests"][0]["response"]["code"] = 0  # placeholder, replaced below
        text = json.dumps(m).replace('"code": 0', f'"code": {token}', 1)
        rows.append(text.encode())
    rows.append(last)
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path, tokens


HOSTILE: dict[str, Callable[[Path], Path]] = {
    "200 MB line": long_line,
    "1 GiB gzip bomb": gzip_bomb,
    "50,000-deep nesting": deep_nesting,
    "1,000,000 keys": many_keys,
}
