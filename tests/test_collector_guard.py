"""The collector under attack on loopback: slow and idle connections, caps, hang-ups, start-up.

A real uvicorn server (with the connection guard) runs in a thread on 127.0.0.1; the "other
client" connects from 127.0.0.2, which is loopback too. Every loop is bounded in count and time.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from netvigil.collector.app import CollectorConfig, create_app
from netvigil.collector.guard import ConnectionLimits, listen_socket, uvicorn_server

HEADER_TIMEOUT = 1.0
PER_CLIENT = 50


class Running:
    def __init__(self, server: Any, thread: threading.Thread, port: int) -> None:
        self.server = server
        self.thread = thread
        self.port = port
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    app = create_app(CollectorConfig(data_dir=tmp_path / "data", rate=0, body_timeout=1.0))
    limits = ConnectionLimits(
        max_connections=400,
        max_per_client=PER_CLIENT,
        header_timeout=HEADER_TIMEOUT,
        body_timeout=3.0,
        keep_alive=5.0,
    )
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn_server(app, sock, limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield Running(server, thread, port)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return s


def _read_until_closed(s: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes (or the deadline passes: then b"<open>")."""
    data = b""
    while time.monotonic() < deadline:
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data + b"<open>"


def test_slow_connections_capped_and_closed_while_others_are_served(running: Running) -> None:
    slow: list[socket.socket] = []
    try:
        opened = time.monotonic()
        for _ in range(200):
            s = _connect(running.port)
            s.sendall(b"POST /api/v1/measurements HTTP/1.1\r\nHost: x\r\n")  # never finished
            slow.append(s)
        # another client is served at once, and promptly
        with httpx.Client(
            transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5
        ) as other:
            for _ in range(5):
                started = time.monotonic()
                r = other.get(f"{running.base}/api/v1/log/tree-head")
                assert r.status_code == 200
                assert time.monotonic() - started < 2.0  # generous: CI machines are slow
        # over the per-client cap: refused at once with 503; the others: 408 at the deadline
        answers = [_read_until_closed(s, opened + HEADER_TIMEOUT + 5.0) for s in slow]
        assert time.monotonic() - opened < HEADER_TIMEOUT + 5.0
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        timed_out = [a for a in answers if a.startswith(b"HTTP/1.1 408")]
        assert len(refused) == 200 - PER_CLIENT
        assert len(timed_out) == PER_CLIENT
        assert not [a for a in answers if a.endswith(b"<open>")]
    finally:
        for s in slow:
            s.close()


def test_header_trickle_is_closed_at_the_deadline(running: Running) -> None:
    trickle = _connect(running.port)
    try:
        started = time.monotonic()
        trickle.sendall(b"GET /api/v1/log/tree-head HTTP/1.1\r\n")
        for _ in range(6):  # one header byte every 0.3 s: slowloris
            time.sleep(0.3)
            try:
                trickle.sendall(b"X")
            except OSError:
                break
        answer = _read_until_closed(trickle, started + HEADER_TIMEOUT + 3)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert time.monotonic() - started < HEADER_TIMEOUT + 3
    finally:
        trickle.close()


def test_idle_connection_closed_within_header_timeout(running: Running) -> None:
    s = _connect(running.port)
    try:
        started = time.monotonic()
        answer = _read_until_closed(s, started + HEADER_TIMEOUT + 3)
        assert not answer.endswith(b"<open>")
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started >= HEADER_TIMEOUT * 0.9
    finally:
        s.close()


def test_keep_alive_connection_outlives_the_header_deadline(running: Running) -> None:
    # the header deadline is per request, not per connection: a client that keeps sending whole
    # requests on one connection is not cut off after HEADER_TIMEOUT
    s = _connect(running.port)
    try:
        for _ in range(4):
            s.sendall(b"GET /api/v1/log/tree-head HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
            time.sleep(HEADER_TIMEOUT * 0.6)
    finally:
        s.close()


def test_hang_up_mid_body_is_one_log_line(running: Running, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="netvigil.collector")
    s = _connect(running.port)
    s.sendall(
        b"POST /api/v1/measurements HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b"{" * 10
    )
    time.sleep(0.2)
    s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("hung up" in r.message for r in caplog.records):
        time.sleep(0.05)
    ours = [r for r in caplog.records if r.name.startswith("netvigil")]
    assert [r.getMessage() for r in ours if "hung up" in r.getMessage()]
    assert not [r for r in ours if r.exc_info or "unhandled" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_slow_body_gets_408(running: Running) -> None:
    s = _connect(running.port)
    try:
        started = time.monotonic()
        s.sendall(b"POST /api/v1/measurements HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        answer = _read_until_closed(s, started + 6)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    finally:
        s.close()


def test_oversized_headers_are_refused(running: Running) -> None:
    s = _connect(running.port)
    try:
        s.sendall(b"GET / HTTP/1.1\r\n")
        for _ in range(20):  # 20 x 8 KiB of header lines, never ending
            try:
                s.sendall(b"X-Pad: " + b"a" * 8192 + b"\r\n")
            except OSError:
                break
        answer = _read_until_closed(s, time.monotonic() + 5)
        assert answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), answer[:80]
    finally:
        s.close()


# -- HTTP semantics (in-process) ---------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(
        create_app(CollectorConfig(data_dir=tmp_path / "d", rate=0)), raise_server_exceptions=False
    ) as c:
        yield c


@pytest.mark.parametrize("cursor", ["9223372036854775808", "9999999999999999999"])
def test_overflowing_cursor_is_400(client: TestClient, cursor: str) -> None:
    r = client.get("/api/v1/measurements", params={"cursor": cursor})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_request"


def test_largest_cursor_is_fine(client: TestClient) -> None:
    r = client.get("/api/v1/measurements", params={"cursor": "9223372036854775807"})
    assert r.status_code == 200, r.text


def test_options_and_allow_name_every_method(client: TestClient) -> None:
    r = client.options("/api/v1/measurements")
    assert r.status_code == 204
    allow = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "POST", "HEAD", "OPTIONS"} <= allow
    r = client.put("/api/v1/measurements")
    assert r.status_code == 405
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["allow"].split(",")}
    r = client.delete("/api/v1/log/tree-head")
    assert r.status_code == 405
    assert "DELETE" not in r.headers["allow"] and "GET" in r.headers["allow"]
    assert client.options("/api/v1/nothing-here").status_code == 404


# -- the command line -------------------------------------------------------------------------


def _collector(*args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "netvigil.cli", "collector", *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )


def test_data_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    proc = _collector("--data", str(f), "--listen", "127.0.0.1:0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "not a directory" in err


def test_start_up_says_where_and_which_key(tmp_path: Path) -> None:
    proc = _collector("--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0")
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("API schema" in x for x in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        assert "listening on http://127.0.0.1:" in text
        base = text.split("listening on ", 1)[1].split()[0].rstrip("/")
        assert str((tmp_path / "d").resolve()) in text
        assert f"{base}/api/v1/log/public-key" in text
        head = httpx.get(f"{base}/api/v1/log/tree-head", timeout=10).json()
        assert f"fingerprint (log_id, SHA-256 of the public key): {head['log_id']}" in text
        assert "BEGIN PUBLIC KEY" in httpx.get(f"{base}/api/v1/log/public-key", timeout=10).text
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_listen_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    busy = listen_socket("127.0.0.1", 0)
    try:
        port = busy.getsockname()[1]
        proc = _collector("--data", str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2
        assert "Traceback" not in err and "cannot listen" in err
    finally:
        busy.close()


# -- the schema says exactly what the server accepts --------------------------------------------


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"probe_cc": ""}, 400),  # present but empty: the schema's pattern refuses it
        ({"limit": ""}, 400),
        ({"probe_asn": "as12"}, 400),  # the schema says (AS)?digits, upper case
        ({"probe_asn": "AS12"}, 200),
        ({"since": "2026-13-01"}, 400),
        ({"since": "2026-02-31"}, 200),  # well-formed: compared as text, as documented
        ({"until": "2026-12-01T00:00:00Z"}, 200),
        ({"cursor": "-1"}, 400),
    ],
)
def test_search_parameters_as_the_schema_says(
    client: TestClient, params: dict[str, str], status: int
) -> None:
    assert client.get("/api/v1/measurements", params=params).status_code == status


def test_proofs_beyond_the_log_are_404(client: TestClient) -> None:
    for path, params in [
        ("inclusion", {"leaf_index": "1", "tree_size": "1"}),
        ("inclusion", {"leaf_index": "0"}),  # the log is empty
        ("consistency", {"first": "1", "second": "0"}),
        ("consistency", {"first": "0", "second": "5"}),
    ]:
        r = client.get(f"/api/v1/log/{path}", params=params)
        assert r.status_code == 404, (path, params, r.text)
    r = client.get("/api/v1/log/inclusion", params={"leaf_index": str(2**63)})
    assert r.status_code == 400


def test_start_time_pattern_is_the_servers_calendar() -> None:
    import random
    import re
    from datetime import datetime

    from netvigil.collector.openapi import START_TIME_PATTERN

    pattern = re.compile(START_TIME_PATTERN)
    rng = random.Random(12)
    samples = ["2000-02-29 00:00:00", "2100-02-29 00:00:00", "0000-01-01 00:00:00"]
    samples += ["2024-02-29 23:59:59", "2023-02-29 00:00:00", "2026-04-31 00:00:00"]
    for _ in range(20_000):
        y, mo, d = rng.randint(0, 9999), rng.randint(0, 13), rng.randint(0, 32)
        h, mi, se = rng.randint(0, 24), rng.randint(0, 60), rng.randint(0, 60)
        samples.append(f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{se:02d}")
    for text in samples:
        try:
            datetime.fromisoformat(text)
            valid = True
        except ValueError:
            valid = False
        assert (pattern.fullmatch(text) is not None) == valid, text


def test_admin_without_credentials_is_401_even_when_disabled(client: TestClient) -> None:
    r = client.post("/api/v1/admin/rotate-key")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_schemathesis_finds_no_failure(running: Running, tmp_path: Path) -> None:
    """schemathesis --checks all against a real collector on 127.0.0.1 (bounded examples)."""
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.skip("schemathesis is not installed (uv sync --dev)")
    cmd = [str(st), "run", f"{running.base}/openapi.json", "--checks", "all"]
    cmd += ["--max-examples", "15", "--seed", "20261206", "--request-timeout", "10"]
    cmd += ["--workers", "1", "--no-color"]
    # cwd: schemathesis keeps a .schemathesis/ cache in the working directory
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_one_client_is_an_ipv4_address_or_an_ipv6_slash_64() -> None:
    from netvigil.collector.guard import client_key

    assert client_key("127.0.0.2") == "127.0.0.2"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("not an address") == "not an address"
