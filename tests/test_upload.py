"""Probe-side upload: outbox, privacy scrub, uploader against a fake collector on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest

from netvigil.upload import (
    CollectorURLError,
    Outbox,
    OutboxFull,
    ScrubOptions,
    UploadConfig,
    canonical_json,
    parse_collector_url,
    queue_measurements,
    scrub,
    upload_outbox,
)
from netvigil.upload import cli as upload_cli
from netvigil.upload.scrub import ANNOTATION_ALLOW, SCRUBBED, is_kept_resolver

DATA = Path(__file__).parent / "data" / "ooni_web_connectivity.jsonl"


def samples() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


# -- fake collector --------------------------------------------------------------------------

Reply = tuple[int, dict[str, str], bytes] | str  # or "hang"


def accept(n: int, measurement: dict[str, Any]) -> Reply:
    uid = hashlib.sha256(canonical_json(measurement)).hexdigest()[:20]
    answer = {"measurement_uid": uid, "leaf_index": n, "leaf_hash": "ab" * 32, "duplicate": False}
    return 201, {}, json.dumps(answer).encode()


class FakeCollector:
    """A tiny h11 server on 127.0.0.1 in its own thread; ``reply(n, measurement)`` decides."""

    def __init__(
        self, reply: Callable[[int, dict[str, Any]], Reply] = accept, keep_alive: int = 1
    ) -> None:
        self.reply = reply
        self.keep_alive = keep_alive
        self.connections = 0
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __enter__(self) -> FakeCollector:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _main(self) -> None:
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await self._stop.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            # Up to ``keep_alive`` requests on one connection, then close without warning
            # (as a server dropping an idle connection does).
            for _ in range(self.keep_alive):
                if not await self._one(conn, reader, writer):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        finally:
            writer.close()

    async def _one(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        headers: dict[str, str] = {}
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await asyncio.wait_for(reader.read(65536), 5))
            elif isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                headers[":target"] = event.target.decode()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.ConnectionClosed):
                return False
            elif isinstance(event, h11.EndOfMessage):
                break
        raw = bytes(body)
        if headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        measurement = json.loads(raw)
        self.requests.append((headers, measurement))
        reply = self.reply(len(self.requests), measurement)
        if reply == "hang":
            await asyncio.sleep(3)
            return False
        assert not isinstance(reply, str)
        status, extra, payload = reply
        response = h11.Response(
            status_code=status,
            headers=[
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                *extra.items(),
            ],
        )
        writer.write(conn.send(response) or b"")
        writer.write(conn.send(h11.Data(data=payload)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return True


def fast(url: str, **kw: Any) -> UploadConfig:
    base: dict[str, Any] = {
        "collector": url,
        "timeout": 2.0,
        "max_attempts": 3,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "retry_after_max": 2.0,
    }
    base.update(kw)
    return UploadConfig(**base)


def run_upload(outbox: Outbox, config: UploadConfig) -> Any:
    return asyncio.run(asyncio.wait_for(upload_outbox(outbox, config), 20))


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))
    monkeypatch.delenv("NETVIGIL_COLLECTOR_URL", raising=False)
    yield tmp_path / "home"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- outbox ----------------------------------------------------------------------------------


def test_outbox_stores_scrubbed_canonical_and_dedups(outbox: Outbox) -> None:
    m = samples()[0]
    ident, new = outbox.add(m)
    assert new
    again, new2 = outbox.add(json.loads(json.dumps(m)))  # same content, new object
    assert (again, new2) == (ident, False)
    files = list(outbox.pending_dir.iterdir())
    assert [f.name for f in files] == [f"{ident}.json"]
    data = files[0].read_bytes()
    assert hashlib.sha256(data).hexdigest() == ident
    assert json.loads(data) == scrub(m)
    assert data == canonical_json(scrub(m))
    assert list(outbox.tmp_dir.iterdir()) == []
    assert oct(files[0].stat().st_mode & 0o777) == oct(0o600)


def test_outbox_atomic_write_leaves_nothing_on_failure(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        outbox.add(samples()[0])
    monkeypatch.undo()
    assert outbox.pending() == []
    assert list(outbox.tmp_dir.iterdir()) == []
    # Once the disk is fine the same measurement is stored normally.
    assert outbox.add(samples()[0])[1]


def test_outbox_survives_restart_and_state_dedup(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "ob")
    ids = [first.add(m)[0] for m in samples()[:5]]
    del first
    second = Outbox(tmp_path / "ob")
    assert sorted(e.id for e in second.pending()) == sorted(ids)
    second.mark_sent(ids[0], {"measurement_uid": "u", "leaf_index": 0, "leaf_hash": "h"})
    second.mark_rejected(ids[1], {"status": 422, "reason": "bad"})
    third = Outbox(tmp_path / "ob")
    assert third.state(ids[0]) == "sent"
    assert third.answer(ids[0]) == {"measurement_uid": "u", "leaf_index": 0, "leaf_hash": "h"}
    assert third.state(ids[1]) == "rejected"
    assert third.answer(ids[1]) == {"status": 422, "reason": "bad"}
    assert len(third.pending()) == 3
    # Already sent or rejected: not queued again.
    assert third.add(samples()[0]) == (ids[0], False)
    assert third.add(samples()[1]) == (ids[1], False)


def test_outbox_bounded_with_clear_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "ob", max_files=3)
    for m in samples()[:3]:
        outbox.add(m)
    with pytest.raises(OutboxFull) as info:
        outbox.add(samples()[3])
    message = str(info.value)
    assert "\n" not in message and "full" in message and "nothing was dropped" in message
    assert len(outbox.pending()) == 3
    with pytest.raises(OutboxFull):
        Outbox(tmp_path / "small", max_bytes=100).add(samples()[0])
    # queue_measurements reports how many made it before the outbox filled.
    with pytest.raises(OutboxFull) as info2:
        queue_measurements(samples()[:5], tmp_path / "q", max_files=2)
    assert info2.value.queued == 2


def test_queue_measurements_counts_new_and_default_dir(home: Path) -> None:
    assert queue_measurements(samples()) == len(samples())
    assert queue_measurements(samples()[:3]) == 0
    default = home / ".local" / "share" / "netvigil" / "outbox" / "pending"
    assert len(list(default.iterdir())) == len(samples())


def test_stale_tmp_files_cleaned(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "ob")
    stale = outbox.tmp_dir / "x.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = outbox.tmp_dir / "y.tmp"
    fresh.write_bytes(b"being written")
    Outbox(tmp_path / "ob")
    assert not stale.exists() and fresh.exists()


# -- scrub -----------------------------------------------------------------------------------


def test_scrub_real_samples() -> None:
    seen_dropped_resolver = False
    for m in samples():
        original = json.dumps(m, sort_keys=True)
        out = scrub(m)
        assert json.dumps(m, sort_keys=True) == original  # input untouched
        assert out["probe_ip"] == "127.0.0.1"
        assert "probe_network_name" not in out
        assert out.get("probe_cc") == m.get("probe_cc")
        assert out.get("probe_asn") == m.get("probe_asn")
        assert set(out.get("annotations") or {}) <= ANNOTATION_ALLOW
        for key in ANNOTATION_ALLOW & set(m.get("annotations") or {}):
            assert out["annotations"][key] == m["annotations"][key]
        if "resolver_ip" in m:
            assert out["resolver_ip"] in ("", m["resolver_ip"])
            assert is_kept_resolver(out["resolver_ip"])
            if out["resolver_ip"] != m["resolver_ip"]:
                seen_dropped_resolver = True
                assert m["resolver_ip"] not in json.dumps(out)
                assert "resolver_network_name" not in out
        tk = out.get("test_keys")
        if isinstance(tk, dict) and "client_resolver" in tk:
            assert is_kept_resolver(tk["client_resolver"] or "")
        assert scrub(out) == out  # idempotent
    assert seen_dropped_resolver


def test_scrub_first_sample_details() -> None:
    m = samples()[0]
    assert m["resolver_ip"] == "66.185.119.247" and m["annotations"]["network_type"] == "mobile"
    out = scrub(m)
    assert out["resolver_ip"] == ""
    assert out["test_keys"]["client_resolver"] == ""
    assert "66.185.119.247" not in json.dumps(out)
    assert set(out["annotations"]) == {"architecture", "engine_name", "engine_version", "platform"}
    kept = scrub(m, ScrubOptions(keep_network_name=True))
    assert kept["probe_network_name"] == "PT. Telekomunikasi Selular"


def test_scrub_keeps_testbed_public_and_loopback_resolvers() -> None:
    base = samples()[0]
    for ip in ("198.18.10.53", "198.19.255.1", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        m = dict(base, resolver_ip=ip)
        m["test_keys"] = dict(base["test_keys"], client_resolver=ip)
        out = scrub(m)
        assert out["resolver_ip"] == ip and out["test_keys"]["client_resolver"] == ip
    for ip in ("192.168.1.1", "10.0.0.1", "203.0.113.9", "198.20.0.1"):
        m = dict(base, resolver_ip=ip)
        m["test_keys"] = dict(base["test_keys"], client_resolver=ip)
        out = scrub(m)
        assert out["resolver_ip"] == "" and out["test_keys"]["client_resolver"] == ""
    assert scrub(dict(base, resolver_ip="127.0.0.53"))["resolver_ip"] == "127.0.0.53"


def find_sample_with_body_ip() -> tuple[dict[str, Any], str]:
    """A real sample and an address that occurs inside it besides dedicated fields."""
    for m in samples():
        tk = m.get("test_keys") or {}
        for event in tk.get("network_events") or []:
            address = (event or {}).get("address") or ""
            if address.count(":") == 1:
                return m, address.split(":")[0]
    raise AssertionError("no sample with a network event")


def test_scrub_ip_everywhere_in_real_sample() -> None:
    m, ip = find_sample_with_body_ip()
    assert ip in json.dumps(m)
    out = scrub(m, ScrubOptions(scrub_ips=(ip,)))
    assert ip not in json.dumps(out)
    assert SCRUBBED in json.dumps(out)


def test_scrub_ip_in_headers_bodies_base64_and_keys() -> None:
    user = "203.0.113.77"
    m = samples()[0]
    m = json.loads(json.dumps(m))
    tk = m["test_keys"]
    blob = f"<html>Your IP is {user}; not 203.0.113.7 nor 203.0.113.777</html>".encode()
    tk["requests"] = [
        {
            "request": {
                "headers": {"X-Forwarded-For": user},
                "headers_list": [["X-Real-IP", user]],
            },
            "response": {
                "body": f"<p>client {user}</p>",
                "headers": {f"X-Seen-{user}": "yes"},
            },
        },
        {"response": {"body": {"format": "base64", "data": base64.b64encode(blob).decode()}}},
    ]
    out = scrub(m, ScrubOptions(scrub_ips=(user,)))
    text = json.dumps(out)
    assert f'{user}"' not in text and f"{user}<" not in text and f"X-Seen-{user}" not in text
    decoded = base64.b64decode(out["test_keys"]["requests"][1]["response"]["body"]["data"])
    assert b"Your IP is [scrubbed];" in decoded
    assert b"203.0.113.7 nor 203.0.113.777" in decoded  # only exact address matches
    assert out["test_keys"]["requests"][0]["request"]["headers"]["X-Forwarded-For"] == SCRUBBED
    v6 = "2001:db8::1234"
    m6 = dict(m, input=f"http://[{v6}]/ and 2001:0db8:0000:0000:0000:0000:0000:1234")
    assert "1234" not in scrub(m6, ScrubOptions(scrub_ips=(v6,)))["input"]
    with pytest.raises(ValueError, match="not an IP"):
        scrub(m, ScrubOptions(scrub_ips=("example.org",)))


def test_outbox_and_queue_apply_scrub_ip(tmp_path: Path) -> None:
    m, ip = find_sample_with_body_ip()
    queue_measurements([m], tmp_path / "ob", scrub_ip=[ip])
    (stored,) = (tmp_path / "ob" / "pending").iterdir()
    assert ip.encode() not in stored.read_bytes()


# -- collector URL policy --------------------------------------------------------------------


def test_collector_url_policy() -> None:
    for ok in (
        "http://127.0.0.1:8080",
        "http://localhost:9/x",
        "http://[::1]:8000/",
        "http://198.18.0.5",
        "https://collector.example.org",
        "https://203.0.113.5:8443/base/",
    ):
        parse_collector_url(ok)
    c = parse_collector_url("https://203.0.113.5:8443/base/")
    assert c.target == "/base/api/v1/measurements" and c.port == 8443
    assert parse_collector_url("http://127.0.0.1:1/api/v1/measurements").target == (
        "/api/v1/measurements"
    )
    for bad in (
        "http://203.0.113.5/",
        "http://collector.example.org",
        "http://10.0.0.1:80",
        "http://198.20.0.1",
        "ftp://127.0.0.1",
        "https://user:pw@example.org",
        "127.0.0.1:8000",
    ):
        with pytest.raises(CollectorURLError) as info:
            parse_collector_url(bad)
        assert "\n" not in str(info.value)


def test_plain_http_refused_without_connecting(outbox: Outbox) -> None:
    outbox.add(samples()[0])
    with pytest.raises(CollectorURLError, match="refusing plain http"):
        run_upload(outbox, fast("http://203.0.113.5:8080"))
    assert len(outbox.pending()) == 1  # netguard would fail this test had we connected


# -- uploader against the fake collector -----------------------------------------------------


def test_upload_success(outbox: Outbox) -> None:
    ids = [outbox.add(m)[0] for m in samples()[:10]]
    with FakeCollector() as fake:
        summary = run_upload(outbox, fast(fake.url))
    assert (summary.sent, summary.duplicates, summary.rejected, summary.pending) == (10, 0, 0, 0)
    assert len(fake.requests) == 10
    headers, body = fake.requests[0]
    assert headers[":target"] == "/api/v1/measurements"
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/json"
    assert body["probe_ip"] == "127.0.0.1"
    assert outbox.pending() == []
    for ident in ids:
        assert outbox.state(ident) == "sent"
        answer = outbox.answer(ident)
        assert answer is not None and answer["leaf_hash"] == "ab" * 32
        assert answer["measurement_uid"] and isinstance(answer["leaf_index"], int)


def test_upload_reuses_connections_and_survives_idle_close(outbox: Outbox) -> None:
    # The server keeps a connection for 3 requests, then drops it unannounced: the uploader
    # reuses each connection and, when a reused one turns out closed, resends on a new one.
    for m in samples()[:10]:
        outbox.add(m)
    with FakeCollector(keep_alive=3) as fake:
        summary = run_upload(outbox, fast(fake.url, concurrency=1))
    assert (summary.sent, summary.rejected, summary.pending) == (10, 0, 0)
    assert len(fake.requests) == 10
    assert fake.connections == 4
    assert summary.attempts == 10


def test_upload_duplicate(outbox: Outbox) -> None:
    outbox.add(samples()[0])

    def dup(n: int, m: dict[str, Any]) -> Reply:
        answer = {"measurement_uid": "u1", "leaf_index": 3, "leaf_hash": "cd", "duplicate": True}
        return 202, {}, json.dumps(answer).encode()

    with FakeCollector(dup) as fake:
        summary = run_upload(outbox, fast(fake.url))
    assert (summary.sent, summary.duplicates, summary.pending) == (1, 1, 0)


def test_upload_422_rejected_not_retried(outbox: Outbox) -> None:
    ident, _ = outbox.add(samples()[0])
    with FakeCollector(lambda n, m: (422, {}, b'{"detail": "probe_cc: missing"}')) as fake:
        summary = run_upload(outbox, fast(fake.url, max_attempts=5))
    assert (summary.sent, summary.rejected, summary.pending) == (0, 1, 0)
    assert len(fake.requests) == 1
    assert outbox.state(ident) == "rejected"
    assert outbox.answer(ident) == {"status": 422, "reason": "probe_cc: missing"}


def test_upload_429_retry_after_honoured(outbox: Outbox) -> None:
    outbox.add(samples()[0])
    times: list[float] = []

    def limited(n: int, m: dict[str, Any]) -> Reply:
        times.append(time.monotonic())
        if n == 1:
            return 429, {"Retry-After": "1"}, b'{"detail": "slow down"}'
        return accept(n, m)

    with FakeCollector(limited) as fake:
        summary = run_upload(outbox, fast(fake.url))
    assert (summary.sent, summary.pending) == (1, 0)
    assert len(fake.requests) == 2
    assert times[1] - times[0] >= 0.9  # waited Retry-After, not the tiny backoff


def test_upload_retry_after_too_long_stays_pending(outbox: Outbox) -> None:
    outbox.add(samples()[0])
    with FakeCollector(lambda n, m: (429, {"Retry-After": "3600"}, b"")) as fake:
        summary = run_upload(outbox, fast(fake.url))
    assert (summary.sent, summary.pending) == (0, 1)
    assert len(fake.requests) == 1


def test_upload_500_then_success(outbox: Outbox) -> None:
    outbox.add(samples()[0])
    outbox.add(samples()[1])

    def flaky(n: int, m: dict[str, Any]) -> Reply:
        return (500, {}, b"oops") if n <= 2 else accept(n, m)

    with FakeCollector(flaky) as fake:
        summary = run_upload(outbox, fast(fake.url, concurrency=1))
    assert (summary.sent, summary.rejected, summary.pending) == (2, 0, 0)
    assert len(fake.requests) == 4


def test_upload_500_forever_stays_pending(outbox: Outbox) -> None:
    outbox.add(samples()[0])
    with FakeCollector(lambda n, m: (503, {}, b"")) as fake:
        summary = run_upload(outbox, fast(fake.url, max_attempts=3))
    assert (summary.sent, summary.pending) == (0, 1)
    assert len(fake.requests) == 3
    assert len(outbox.pending()) == 1


def test_upload_connection_refused_stays_pending(outbox: Outbox) -> None:
    for m in samples()[:20]:
        outbox.add(m)
    started = time.monotonic()
    summary = run_upload(outbox, fast(f"http://127.0.0.1:{free_port()}", max_attempts=2))
    assert (summary.sent, summary.rejected, summary.pending) == (0, 0, 20)
    assert summary.stopped  # unreachable: the run stops rather than hammering
    assert summary.attempts <= 8 * 2
    assert time.monotonic() - started < 10
    assert len(outbox.pending()) == 20


def test_upload_timeout_stays_pending(outbox: Outbox) -> None:
    outbox.add(samples()[0])
    with FakeCollector(lambda n, m: "hang") as fake:
        started = time.monotonic()
        summary = run_upload(outbox, fast(fake.url, timeout=0.3, max_attempts=2))
    assert (summary.sent, summary.pending) == (0, 1)
    assert time.monotonic() - started < 5
    assert any("no answer" in e for e in summary.errors)


def test_upload_resends_after_restart_and_dedups(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob")
    for m in samples()[:4]:
        ob.add(m)
    summary = run_upload(ob, fast(f"http://127.0.0.1:{free_port()}", max_attempts=1))
    assert summary.pending == 4
    with FakeCollector() as fake:
        summary = run_upload(Outbox(tmp_path / "ob"), fast(fake.url))
        assert summary.sent == 4
        again = run_upload(Outbox(tmp_path / "ob"), fast(fake.url))
    assert (again.sent, again.pending) == (0, 0)
    assert len(fake.requests) == 4


def test_stop_event_ends_run_cleanly(outbox: Outbox) -> None:
    for m in samples()[:5]:
        outbox.add(m)

    async def go() -> Any:
        stop = asyncio.Event()
        stop.set()
        return await upload_outbox(outbox, fast("http://127.0.0.1:9"), stop=stop)

    summary = asyncio.run(asyncio.wait_for(go(), 10))
    assert (summary.sent, summary.pending, summary.attempts) == (0, 5, 0)
    assert summary.stopped


# -- CLI and consent -------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    upload_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["upload", *argv])


def test_nothing_uploaded_without_explicit_collector(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_measurements(samples()[:3], tmp_path / "ob")
    with FakeCollector() as fake:
        monkeypatch.setenv("NETVIGIL_COLLECTOR_URL", fake.url)
        assert upload_cli.run(parse("--outbox", str(tmp_path / "ob"))) == 2
        assert "nothing uploaded" in capsys.readouterr().err
        assert fake.requests == []
        # --collector without URL takes the testbed's variable: an explicit choice.
        assert upload_cli.run(parse("--outbox", str(tmp_path / "ob"), "--collector")) == 0
        assert len(fake.requests) == 3


def test_remember_and_forget(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ob = str(tmp_path / "ob")
    queue_measurements(samples()[:2], ob)
    with FakeCollector() as fake:
        assert upload_cli.run(parse("--outbox", ob, "--collector", fake.url, "--remember")) == 0
        saved = json.loads((home / ".config" / "netvigil" / "upload.json").read_text())
        assert saved["collector"] == fake.url
        queue_measurements(samples()[2:4], ob)
        assert upload_cli.run(parse("--outbox", ob, "--json")) == 0
        out = capsys.readouterr().out.strip().splitlines()[-1]
        assert json.loads(out)["sent"] == 2
        assert len(fake.requests) == 4
        assert upload_cli.run(parse("--forget")) == 0
        queue_measurements(samples()[4:5], ob)
        assert upload_cli.run(parse("--outbox", ob)) == 2
        assert len(fake.requests) == 4


def test_cli_refuses_plain_http_and_dry_run_sends_nothing(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ob = str(tmp_path / "ob")
    queue_measurements(samples()[:3], ob)
    assert upload_cli.run(parse("--outbox", ob, "--collector", "http://203.0.113.5")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing plain http" in err
    with FakeCollector() as fake:
        assert (
            upload_cli.run(parse("--outbox", ob, "--collector", fake.url, "--dry-run", "--json"))
            == 0
        )
        listed = json.loads(capsys.readouterr().out)
        assert len(listed["would_send"]) == 3 and listed["collector"] == fake.url
        assert fake.requests == []
    assert upload_cli.run(parse("--outbox", ob, "--dry-run")) == 0
    assert "3 measurement(s) pending" in capsys.readouterr().out


def test_cli_scrub_ip_at_upload(home: Path, tmp_path: Path) -> None:
    m, ip = find_sample_with_body_ip()
    ob = str(tmp_path / "ob")
    queue_measurements([m], ob)
    with FakeCollector() as fake:
        rc = upload_cli.run(parse("--outbox", ob, "--collector", fake.url, "--scrub-ip", ip))
        assert rc == 0
    assert ip not in json.dumps(fake.requests[0][1])
    assert upload_cli.run(parse("--outbox", ob, "--collector", fake.url, "--scrub-ip", "nope")) == 2
