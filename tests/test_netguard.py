"""The network guard refuses traffic outside loopback and 198.18.0.0/15 before it leaves.

Every refusal here is expected, so each test points the guard at its own report file (the
``private_report`` fixture) and puts the session's file back afterwards: the session's plugin
would otherwise (rightly) fail the test for the refused traffic.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netvigil import netguard


@pytest.fixture
def private_report(tmp_path: Path) -> Iterator[Path]:
    previous = netguard.report_path()
    path = tmp_path / "refusals.log"
    netguard.install(str(path))
    try:
        yield path
    finally:
        netguard.install(previous)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_the_session_runs_under_the_guard() -> None:
    assert netguard.installed()
    assert os.environ.get(netguard.ENV_REPORT) == netguard.report_path()


def test_connect_outside_is_refused_before_the_syscall(private_report: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(
            PermissionError, match=r"netguard: 198\.51\.100\.1:80 is outside loopback"
        ):
            sock.connect(("198.51.100.1", 80))  # TEST-NET-2
        # The hook raised before connect(2): the socket never got a peer (nor a local port).
        with pytest.raises(OSError):
            sock.getpeername()
        assert sock.getsockname() == ("0.0.0.0", 0)
    [line] = _lines(private_report)
    assert f"pid={os.getpid()}" in line
    assert "event=socket.connect" in line and "198.51.100.1:80" in line
    assert "test_netguard.py" in line  # the stack summary names the caller


def test_connect_to_loopback_is_allowed(private_report: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"ping")
                assert peer.recv(4) == b"ping"
    assert _lines(private_report) == []


def test_sendto_outside_is_refused(private_report: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(PermissionError, match="netguard"):
            sock.sendto(b"x", ("203.0.113.7", 53))  # TEST-NET-3
        with pytest.raises(PermissionError, match="netguard"):
            sock.sendmsg([b"x"], [], 0, ("203.0.113.7", 53))
        assert sock.getsockname() == ("0.0.0.0", 0)  # nothing was sent: never even bound
    lines = _lines(private_report)
    assert len(lines) == 2
    assert "event=socket.sendto" in lines[0] and "event=socket.sendmsg" in lines[1]


def test_udp_to_testbed_range_is_allowed(private_report: Path) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.1", 0))
        sender.sendto(b"hello", receiver.getsockname())
        assert receiver.recv(5) == b"hello"
    assert _lines(private_report) == []


def test_system_resolver_lookups_are_refused(
    private_report: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(netguard.ENV_TESTBED_RESOLV, raising=False)
    with pytest.raises(PermissionError, match="system resolver"):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(PermissionError, match="system resolver"):
        socket.gethostbyname("example.com")
    with socket.socket() as sock, pytest.raises(PermissionError, match="system resolver"):
        sock.connect(("example.com", 80))  # connect() would resolve the name itself
    assert len(_lines(private_report)) == 3
    # IP literals and localhost need no resolver.
    assert socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    assert socket.getaddrinfo("198.18.1.2", 80, type=socket.SOCK_STREAM)
    assert socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert len(_lines(private_report)) == 3


def test_unix_sockets_are_allowed(private_report: Path) -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"
    assert _lines(private_report) == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("198.18.0.1", True),
        ("198.19.255.254", True),
        (("198.19.0.5", 443), True),
        ("::ffff:198.18.1.2", True),
        ("::ffff:127.0.0.1", True),
        ("198.17.255.255", False),
        ("198.20.0.0", False),
        ("192.0.2.1", False),
        ("10.0.0.1", False),
        ("8.8.8.8", False),
        ("2001:db8::1", False),
        ("::ffff:8.8.8.8", False),
        ("example.com", False),
        (("203.0.113.1", 80, 0, 0), False),
        (b"198.18.3.1", True),
        (None, False),
    ],
)
def test_is_allowed(address: object, allowed: bool) -> None:
    assert netguard.is_allowed(address) is allowed


def test_child_python_processes_install_the_guard(tmp_path: Path) -> None:
    child_report = tmp_path / "child.log"
    env = dict(os.environ)
    env[netguard.ENV_REPORT] = str(child_report)  # its own file: this test's refusal is expected
    env.pop(netguard.ENV_TESTBED_RESOLV, None)
    code = "import netvigil, socket; socket.create_connection(('192.0.2.1', 80), timeout=1)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "PermissionError" in result.stderr and "netguard" in result.stderr
    [line] = _lines(child_report)
    assert "event=socket.connect" in line and "192.0.2.1:80" in line
    assert f"pid={os.getpid()}" not in line
