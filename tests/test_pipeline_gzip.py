"""netvigil.pipeline.sources' gzip reading: the whole-file libdeflate path gives exactly what the
zlib stream gives (same records, same FileReport) or declines and leaves the file to it; the
stream gives what it gave before it stopped being quadratic in a file of many small members."""

from __future__ import annotations

import gzip
import os
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import deflate
import pytest

from netvigil.pipeline import sources
from netvigil.pipeline.sources import FileReport, SourceFile

DATA = Path(__file__).parent / "data"
SAMPLES = (DATA / "ooni_samples.jsonl").read_bytes().splitlines()
BODY = b"".join(line + b"\n" for line in SAMPLES[:40])

Result = tuple[list[tuple[int, bytes]], dict[str, Any]]


def _gunzip_before(handle: Any, state: Any) -> Iterator[bytes]:
    """``sources._gunzip`` as it was before (the reference: quadratic in many small members)."""
    d = zlib.decompressobj(wbits=31)
    fed = False
    while True:
        data = handle.read(sources.CHUNK)
        if not data:
            break
        while data:
            fed = True
            try:
                out = d.decompress(data, sources.CHUNK)
            except zlib.error as exc:
                state.truncated, state.detail = True, f"corrupt gzip data ({exc})"
                return
            if out:
                yield out
            if d.eof:
                data = d.unused_data
                d = zlib.decompressobj(wbits=31)
                fed = False
                if not data.strip(b"\x00"):
                    data = b""
            else:
                data = d.unconsumed_tail
    if fed and not d.eof:
        state.truncated, state.detail = True, "gzip stream ends before its end marker"


def _read(path: Path) -> Result:
    report = FileReport(source=path.name)
    src = SourceFile(name=path.name, path=str(path), kind="jsonl", size=path.stat().st_size)
    records = list(sources.read_records(src, report))
    assert all(type(r.raw) is bytes and r.uid is None for r in records)
    return [(r.line, r.raw) for r in records], report.to_dict()


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Result, Result, bool]:
    """(as read, as streamed only, whether the whole-file path was taken)."""
    taken: list[bool] = []
    inflate = sources._inflate_whole

    def spy(handle: Any) -> bytearray | None:
        out = inflate(handle)
        taken.append(out is not None)
        return out

    with monkeypatch.context() as m:
        m.setattr(sources, "_inflate_whole", spy)
        got = _read(path)
    with monkeypatch.context() as m:
        m.setattr(sources, "FAST_MAX_INPUT", 0)
        streamed = _read(path)
    return got, streamed, any(taken)


def _equal(path: Path, monkeypatch: pytest.MonkeyPatch, *, fast: bool) -> Result:
    got, streamed, taken = _both(path, monkeypatch)
    assert got == streamed
    assert taken is fast
    return got


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_single_member_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "one.jsonl.gz", gzip.compress(BODY))
    records, report = _equal(path, monkeypatch, fast=True)
    assert [raw for _, raw in records] == SAMPLES[:40]
    assert report["corrupt"] == {}
    # CRLF, blank and whitespace lines, no final newline; a header with a name and comment.
    text = b"\r\n".join([SAMPLES[0], b"", b" \t", SAMPLES[1], b"\r", SAMPLES[2]])
    path = _write(tmp_path, "crlf.jsonl.gz", gzip.compress(text))
    records, _ = _equal(path, monkeypatch, fast=True)
    assert [line for line, _ in records] == [1, 4, 6]
    assert records[0][1] == SAMPLES[0] + b"\r" and records[2][1] == SAMPLES[2]
    named = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = named.compress(text) + named.flush()
    flagged = b"\x1f\x8b\x08\x18" + b"\0" * 6 + b"name.jsonl\0comment\0" + raw
    flagged += struct.pack("<II", zlib.crc32(text), len(text))
    named_records, report = _equal(_write(tmp_path, "n.jsonl.gz", flagged), monkeypatch, fast=True)
    assert named_records == records and report["corrupt"] == {}


def test_several_members_are_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = gzip.compress(BODY[: len(BODY) // 2 + 7])  # cuts a line in two across the members
    b = gzip.compress(BODY[len(BODY) // 2 + 7 :])
    tiny = gzip.compress(SAMPLES[40] + b"\n")
    cases = {
        "ab": a + b,
        "aa": a + a,  # the same member twice: its trailer is the file's last 8 bytes
        "big-then-tiny": a + tiny,  # ISIZE too small: libdeflate fails
        "tiny-then-big": tiny + a,  # ISIZE big enough: libdeflate decodes `tiny` and stops
        "three": tiny + a + tiny,
        # Same size, other content: the last member's ISIZE fits the first exactly.
        "same-size": gzip.compress(BODY[:60000]) + gzip.compress(BODY[60000:120000]),
    }
    for name, data in cases.items():
        records, report = _equal(
            _write(tmp_path, f"{name}.jsonl.gz", data), monkeypatch, fast=False
        )
        assert report["corrupt"] == {}, name
        lines = [line for line in gzip.decompress(data).split(b"\n") if line.strip()]
        assert [raw for _, raw in records] == lines and len(lines) > 5, name


def test_truncated_corrupt_and_trailing_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = gzip.compress(BODY)
    n = len(whole)
    for cut in (2, 10, 11, 100, n // 3, n // 2, n - 9, n - 8, n - 4, n - 1):
        path = _write(tmp_path, f"cut{cut}.jsonl.gz", whole[:cut])
        records, report = _equal(path, monkeypatch, fast=False)
        assert report["corrupt"].get("truncated-gzip") == 1, cut
    for at in (n // 4, n // 2, n - 6):  # in the DEFLATE data, in the CRC, in ISIZE
        damaged = bytearray(whole)
        damaged[at] ^= 0x55
        path = _write(tmp_path, f"bad{at}.jsonl.gz", bytes(damaged))
        _, report = _equal(path, monkeypatch, fast=False)
        assert report["corrupt"].get("truncated-gzip") == 1, at
    for pad in (1, 3, 4, 8, 100):
        path = _write(tmp_path, f"pad{pad}.jsonl.gz", whole + b"\0" * pad)
        records, report = _equal(path, monkeypatch, fast=False)
        assert len(records) == 40 and report["corrupt"] == {}, pad
    # Garbage after the member, even garbage that ends with the member's own trailer.
    for tail in (b"junk", b"xy" + whole[-8:], whole[-8:]):
        path = _write(tmp_path, "tail.jsonl.gz", whole + tail)
        records, report = _equal(path, monkeypatch, fast=False)
        assert len(records) == 40 and report["corrupt"] == {"truncated-gzip": 1}


def test_empty_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _equal(_write(tmp_path, "e.jsonl.gz", b""), monkeypatch, fast=False)[0] == []
    empty = gzip.compress(b"")  # ISIZE 0: the stream (the wrapper would not even decode it)
    assert _equal(_write(tmp_path, "z.jsonl.gz", empty), monkeypatch, fast=False)[0] == []
    blank = gzip.compress(b"\n\n  \n")
    assert _equal(_write(tmp_path, "b.jsonl.gz", blank), monkeypatch, fast=True)[0] == []


def test_too_long_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "CHUNK", 7)
    monkeypatch.setattr(sources, "MAX_LINE", 20)
    lines = [b"a" * 5, b"b" * 20, b"c" * 21, b"", b"d" * 100, b"e" * 3, b" " * 30, b"f" * 19]
    for text in (b"\n".join(lines), b"\n".join(lines) + b"\n", b"\n".join([*lines, b"g" * 21])):
        path = _write(tmp_path, "long.jsonl.gz", gzip.compress(text))
        records, report = _equal(path, monkeypatch, fast=True)
        assert records[:4] == [(1, lines[0]), (2, lines[1]), (6, lines[5]), (8, lines[7])]
        assert [e.split(":")[0] for e in report["examples"]][:3] == ["line 3", "line 5", "line 7"]


def test_forged_or_out_of_bounds_isize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = gzip.compress(BODY)
    calls: list[int] = []
    real = deflate.gzip_decompress

    def counted(data: Any, originalsize: int = 0) -> bytearray:
        calls.append(originalsize)
        return real(data, originalsize)

    monkeypatch.setattr(sources.deflate, "gzip_decompress", counted)
    for isize in (1, len(BODY) - 1, len(BODY) + 1, 4 * len(BODY)):  # a lie: both say corrupt
        forged = whole[:-4] + struct.pack("<I", isize)
        path = _write(tmp_path, "forged.jsonl.gz", forged)
        _, report = _equal(path, monkeypatch, fast=False)
        assert report["corrupt"] == {"truncated-gzip": 1}
    assert calls == [1, len(BODY) - 1, len(BODY) + 1, 4 * len(BODY)]
    calls.clear()
    # Beyond the output bound, or beyond what DEFLATE can encode in this many bytes: not tried.
    for isize in (0xFFFFFFFF, sources.FAST_MAX_OUTPUT + 1, len(whole) * 1033):
        forged = whole[:-4] + struct.pack("<I", isize)
        _equal(_write(tmp_path, "huge.jsonl.gz", forged), monkeypatch, fast=False)
    assert calls == []
    # A real file over either bound is streamed, with the same result.
    path = _write(tmp_path, "ok.jsonl.gz", whole)
    fast = _equal(path, monkeypatch, fast=True)
    for bound, value in (("FAST_MAX_OUTPUT", len(BODY) - 1), ("FAST_MAX_INPUT", len(whole) - 1)):
        with monkeypatch.context() as m:
            m.setattr(sources, bound, value)
            assert _equal(path, monkeypatch, fast=False) == fast
    # The file grew after its size was taken: streamed.
    real_fstat = sources.os.fstat
    with monkeypatch.context() as m:
        m.setattr(
            sources.os, "fstat", lambda fd: os.stat_result((0,) * 6 + (len(whole) - 1,) + (0,) * 3)
        )
        assert _equal(path, monkeypatch, fast=False) == fast
    assert sources.os.fstat is real_fstat
    # No memory for the output: streamed.
    with monkeypatch.context() as m:
        m.setattr(sources.deflate, "gzip_decompress", lambda *a: (_ for _ in ()).throw(MemoryError))
        assert _equal(path, monkeypatch, fast=False) == fast


def test_header_crc_flag_is_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zlib checks FHCRC's header CRC and libdeflate skips it: such a header goes to zlib."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = c.compress(BODY) + c.flush()
    head = b"\x1f\x8b\x08\x02" + b"\0" * 6
    trailer = struct.pack("<II", zlib.crc32(BODY), len(BODY))
    good = head + struct.pack("<H", zlib.crc32(head) & 0xFFFF) + raw + trailer
    records, report = _equal(_write(tmp_path, "h.jsonl.gz", good), monkeypatch, fast=False)
    assert len(records) == 40 and report["corrupt"] == {}
    bad = head + b"\0\0" + raw + trailer
    _, report = _equal(_write(tmp_path, "hbad.jsonl.gz", bad), monkeypatch, fast=False)
    assert report["corrupt"] == {"truncated-gzip": 1}


def _stream(path: Path, gunzip: Any, monkeypatch: pytest.MonkeyPatch) -> Result:
    with monkeypatch.context() as m:
        m.setattr(sources, "FAST_MAX_INPUT", 0)
        m.setattr(sources, "_gunzip", gunzip)
        return _read(path)


def test_stream_gives_what_it_gave_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small reads and steps, so that members, reads, output steps and pieces are cut
    everywhere: the new stream yields the very chunks the old one did, so a failure loses the
    same output and a truncation is counted at the same line."""
    monkeypatch.setattr(sources, "CHUNK", 512)
    monkeypatch.setattr(sources, "_STEP_MIN", 16)
    rng = random.Random(7)
    members = [gzip.compress(BODY[i : i + n]) for i, n in ((0, 3000), (3000, 40), (3040, 9000))]
    members.append(gzip.compress(b"x" * 5000))  # ratio ~100: output steps end on CHUNK
    files = [b"".join(members), members[0], members[1] * 30 + b"\0" * 5]
    chunks: list[list[bytes]] = []

    def spy(gunzip: Any) -> Any:
        def wrapped(handle: Any, state: Any) -> Iterator[bytes]:
            out = list(gunzip(handle, state))
            chunks.append(out)
            yield from out

        return wrapped

    for k, whole in enumerate(files):
        variants = [whole] + [whole[: rng.randrange(1, len(whole))] for _ in range(6)]
        for _ in range(6):
            damaged = bytearray(whole)
            damaged[rng.randrange(len(whole))] ^= 1 << rng.randrange(8)
            variants.append(bytes(damaged))
        for i, data in enumerate(variants):
            path = _write(tmp_path, f"v{k}-{i}.jsonl.gz", data)
            chunks.clear()
            before = _stream(path, spy(_gunzip_before), monkeypatch)
            after = _stream(path, spy(sources._gunzip), monkeypatch)
            assert after == before, (k, i)
            assert chunks[0] == chunks[1], (k, i)


def test_many_small_members_not_quadratic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 tiny members in one read: the old stream fed zlib the rest of the read for each
    (and zlib copied it back as ``unused_data``), ~6.5 GB in all; now each member's pieces."""
    lines = [b'{"n": %d}' % i for i in range(20000)]
    data = b"".join(gzip.compress(line + b"\n") for line in lines)
    assert len(data) < sources.CHUNK
    path = _write(tmp_path, "tiny.jsonl.gz", data)
    fed: list[int] = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, **kw: Any) -> None:
            self._d = real(**kw)

        def decompress(self, data: Any, max_length: int = 0) -> bytes:
            fed.append(len(data))
            return self._d.decompress(data, max_length)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._d, name)

    records, report = _equal(path, monkeypatch, fast=False)
    assert [raw for _, raw in records] == lines and report["corrupt"] == {}
    with monkeypatch.context() as m:
        m.setattr(sources.zlib, "decompressobj", Counting)
        assert _stream(path, sources._gunzip, monkeypatch) == (records, report)
    assert sum(fed) <= 2 * len(data) + len(lines) * sources._STEP_MIN  # ~80 MB, was ~6.5 GB


def test_split_buffer_is_split_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole-buffer splitter against the chunked one, on random text cut at random."""
    monkeypatch.setattr(sources, "MAX_LINE", 12)
    rng = random.Random(11)
    alphabet = [b"a", b"{", b" ", b"\t", b"\r", b"\n", b"\n", b"\n"]
    for _ in range(300):
        text = b"".join(rng.choice(alphabet) * rng.choice((1, 1, 2, 7)) for _ in range(40))
        report = FileReport(source="s")
        whole = [(r.line, r.raw) for r in sources._split_buffer(bytearray(text), report)]
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randrange(9))))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        chunked = FileReport(source="s")
        state = sources._Stream()
        split = [(r.line, r.raw) for r in sources._split_lines(iter(pieces), chunked, state)]
        assert whole == split, (text, cuts)
        assert report.to_dict() == chunked.to_dict()
