"""Isolation and clean-up: the testbed never reaches out, and never leaves anything behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningTestbed, needs_testbed
from netvigil.testbed import control

pytestmark = [needs_testbed, pytest.mark.testbed]


def _net_namespaces() -> set[str]:
    """Every network namespace the host can see: held by a process or by an open descriptor."""
    found: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            found.add(os.readlink(proc / "ns" / "net"))
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("net:["):
                    found.add(target)
        except OSError:
            continue
    return found


def _veths() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, timeout=10
    )
    return {line.split(":")[1].strip() for line in out.stdout.splitlines() if ":" in line}


def _testbed_processes() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"netvigil.testbed" in args:
            pids.add(int(proc.name))
    return pids


def _snapshot() -> tuple[set[str], set[str], set[int]]:
    return _net_namespaces(), _veths(), _testbed_processes()


def _wait_until_back(before: tuple[set[str], set[str], set[int]], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _snapshot() == before:
            return
        time.sleep(0.1)
    after = _snapshot()
    assert after[0] == before[0], f"network namespaces left: {after[0] - before[0]}"
    assert after[1] == before[1], f"veths left on the host: {after[1] - before[1]}"
    assert after[2] == before[2], f"processes left: {after[2] - before[2]}"


def _copy_profile(tmp_path: Path, name: str = "clean") -> str:
    from netvigil.testbed.profile import resolve_profile_path

    target = tmp_path / f"{name}-copy.toml"
    target.write_text(resolve_profile_path(name).read_text())
    return str(target)


def test_client_has_no_route_outside_the_testbed(testbed: Callable[[str], RunningTestbed]) -> None:
    bed = testbed("clean")
    routes = control.exec_command(
        bed.info, "client", ["ip", "-4", "route"], capture_output=True, text=True, timeout=10
    )
    assert routes.returncode == 0
    for line in routes.stdout.splitlines():
        assert line.startswith("198.18."), f"client has a route outside 198.18.0.0/15: {line}"
    host_addrs = re.findall(
        r"inet (\d+\.\d+\.\d+\.\d+)",
        subprocess.run(
            ["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10
        ).stdout,
    )
    # `ip route get` asks the kernel which way a packet would go; it sends nothing.
    host_addrs = [a for a in host_addrs if not a.startswith("127.")]  # client has its own lo
    for target in [*host_addrs, "8.8.8.8", "10.0.0.1", "192.168.1.1", "172.16.0.1", "198.20.0.1"]:
        probe = control.exec_command(
            bed.info,
            "client",
            ["ip", "route", "get", target],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert probe.returncode != 0 and "unreachable" in probe.stderr.lower(), (
            target,
            probe.stdout,
        )
    for host in ("access", "censor", "transit", "internet"):
        routes = control.exec_command(
            bed.info,
            host,
            ["ip", "-4", "route", "show", "default"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert routes.stdout.strip() == "", f"{host} has a default route: {routes.stdout}"


def test_down_removes_everything(tmp_path: Path) -> None:
    before = _snapshot()
    info = control.up(_copy_profile(tmp_path), name="pytest-down")
    assert info.alive()
    assert _net_namespaces() != before[0]
    assert control.down("pytest-down")
    _wait_until_back(before)
    assert not (control.registry_root() / "pytest-down").exists()


def test_kill_9_of_the_supervisor_leaves_nothing(tmp_path: Path) -> None:
    before = _snapshot()
    info = control.up(_copy_profile(tmp_path), name="pytest-kill-supervisor")
    os.kill(info.host_pid, signal.SIGKILL)
    _wait_until_back(before)
    assert control.status("pytest-kill-supervisor") is None  # a stale entry is noticed and cleared


def test_kill_9_of_the_orchestrator_leaves_nothing(tmp_path: Path) -> None:
    before = _snapshot()
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netvigil.cli",
            "testbed",
            "run",
            "--profile",
            _copy_profile(tmp_path),
            "--",
            "sleep",
            "60",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    registry = control.registry_root() / f"run-{cli.pid}" / "registry.json"
    deadline = time.monotonic() + 60
    while not registry.exists() and time.monotonic() < deadline and cli.poll() is None:
        time.sleep(0.05)
    assert registry.exists(), "the testbed did not come up"
    cli.kill()
    cli.wait(timeout=10)
    _wait_until_back(before)
    assert control.status(f"run-{cli.pid}") is None


def test_run_returns_the_commands_exit_status_and_cleans_up(tmp_path: Path) -> None:
    before = _snapshot()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "netvigil.cli",
            "testbed",
            "run",
            "--profile",
            _copy_profile(tmp_path),
            "--",
            "sh",
            "-c",
            "ip -4 -o addr show eth0 | grep -q 198.18.1.2 && exit 7",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 7, result.stderr
    _wait_until_back(before)


def test_up_reports_a_bad_profile_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "bad"\ndomains = ["a.example"]\n\n[[rule]]\naction = "tls-rest"\nsni = "a.example"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "netvigil.cli", "testbed", "up", "--profile", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert (
        f"{bad}:5" in lines[0]
        and "unknown action 'tls-rest'" in lines[0]
        and "tls-reset" in lines[0]
    )


def test_the_user_namespace_path_works(tmp_path: Path) -> None:
    """The rootless path (unshare --user --map-root-user), forced while root so CI runs it."""
    before = _snapshot()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "netvigil.cli",
            "testbed",
            "run",
            "--profile",
            _copy_profile(tmp_path),
            "--",
            "sh",
            "-c",
            "cat /proc/self/uid_map; ip -4 -o addr show eth0",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "NETVIGIL_TESTBED_ROOTLESS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "198.18.1.2" in result.stdout
    _wait_until_back(before)
