"""Starting, finding, entering and stopping testbeds from the host (the CLI and the tests use this).

A testbed runs as ``unshare … python -m netvigil.testbed.supervisor`` (see supervisor.py). The
host keeps only a small registry folder per testbed (``/run/netvigil/<name>/``: the supervisor's
pids, the trust anchor and the plan); the namespaces themselves are private to the supervisor
and die with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from netvigil.testbed.plan import STATE_DIR, command_environment, testbed_environment
from netvigil.testbed.profile import load_profile

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1


class TestbedError(RuntimeError):
    """One line that says what went wrong and what to do."""

    __test__ = False  # not a pytest test class


def registry_root() -> Path:
    if os.geteuid() == 0:
        return Path("/run/netvigil")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/netvigil-{os.geteuid()}"
    return Path(runtime) / "netvigil"


def rootless_mode() -> bool:
    """Not root, or asked to behave as if not (NETVIGIL_TESTBED_ROOTLESS=1, to test that path)."""
    return os.geteuid() != 0 or os.environ.get("NETVIGIL_TESTBED_ROOTLESS") == "1"


def unshare_command() -> list[str]:
    """Root gets new pid/mount/net namespaces; anyone else also a user namespace, if allowed."""
    if shutil.which("unshare") is None:
        raise TestbedError("the 'unshare' program is missing — install util-linux")
    cmd = ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child"]
    if rootless_mode():
        if not Path("/proc/self/ns/user").exists():
            raise TestbedError("not root and this kernel has no user namespaces — run as root")
        cmd[1:1] = ["--user", "--map-root-user"]
    return cmd


def _die_with_parent() -> None:
    """In the child before exec: if the orchestrating process dies (even kill -9), so do we."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class TestbedInfo:
    name: str
    profile: str
    pid: int  # the unshare process
    host_pid: int  # the supervisor (PID 1 of the testbed's pid namespace)
    netns: dict[str, str]
    public_dir: Path
    up_seconds: float
    rootless: bool
    started_at: float = 0.0  # the testbed's clock: Unix time it became ready (phases count from it)

    __test__ = False

    @property
    def trust_anchor(self) -> Path:
        return self.public_dir / "webpki-root.pem"

    def alive(self) -> bool:
        return _process_alive(self.host_pid)


def _process_alive(pid: int) -> bool:
    """True if `pid` runs; a zombie (killed, not yet reaped by its parent) does not count."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X", "")


def _spawn(
    profile: str, name: str, command: Sequence[str] | None, detach: bool
) -> tuple[subprocess.Popen[bytes], int, Path]:
    # Validate first: a bad profile must fail with its one-line message, before anything starts.
    load_profile(profile)
    public = registry_root() / name
    if (public / "pid").exists():
        old = _read_info(name)
        if old is not None and old.alive():
            raise TestbedError(
                f"a testbed named '{name}' is already up — run 'netvigil testbed down --name {name}' first"
            )
    shutil.rmtree(public, ignore_errors=True)
    public.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    argv = [
        *unshare_command(),
        sys.executable,
        "-m",
        "netvigil.testbed.supervisor",
        "--profile",
        profile,
        "--public-dir",
        str(public),
        "--ready-fd",
        str(write_fd),
    ]
    # The supervisor's own chatter goes to its log; the user's command writes to the user's
    # stderr, handed over as its own descriptor (the log is deleted when `run` ends, and a
    # command's error messages must not vanish with it).
    command_stderr = os.dup(sys.stderr.fileno()) if command else None
    pass_fds: tuple[int, ...] = (write_fd,)
    if command_stderr is not None:
        argv += ["--command-stderr-fd", str(command_stderr)]
        pass_fds += (command_stderr,)
    if command:
        argv += ["--", *command]
    log = open(public / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            argv,
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL if detach else None,
            stdout=log if detach else None,
            stderr=log,
            start_new_session=detach,
            preexec_fn=None if detach else _die_with_parent,
        )
    finally:
        log.close()
        os.close(write_fd)
        if command_stderr is not None:
            os.close(command_stderr)
    (public / "pid").write_text(str(proc.pid))
    return proc, read_fd, public


def _wait_ready(
    proc: subprocess.Popen[bytes], read_fd: int, name: str, public: Path, timeout: float = 90
) -> TestbedInfo:
    import select

    buffer = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buffer and time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], 0.2)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            buffer += chunk
        elif proc.poll() is not None:
            break
    os.close(read_fd)
    line = buffer.decode(errors="replace").strip()
    if not line.startswith("READY "):
        proc.kill()
        proc.wait(timeout=10)
        reason = (
            line.removeprefix("ERROR ")
            if line
            else _log_tail(public) or "the supervisor exited without a word"
        )
        shutil.rmtree(public, ignore_errors=True)
        raise TestbedError(f"testbed did not come up: {reason}")
    data = json.loads(line[6:])
    info = TestbedInfo(
        name=name,
        profile=data["profile"],
        pid=proc.pid,
        host_pid=int(data["host_pid"]),
        netns=dict(data["netns"]),
        public_dir=public,
        up_seconds=float(data["up_seconds"]),
        rootless=rootless_mode(),
        started_at=float(data.get("started_at", 0.0)),
    )
    (public / "registry.json").write_text(
        json.dumps({**data, "pid": proc.pid, "name": name, "rootless": info.rootless})
    )
    return info


def _log_tail(public: Path) -> str:
    try:
        lines = (public / "supervisor.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _read_info(name: str) -> TestbedInfo | None:
    public = registry_root() / name
    try:
        data = json.loads((public / "registry.json").read_text())
    except (OSError, ValueError):
        return None
    return TestbedInfo(
        name=name,
        profile=data["profile"],
        pid=int(data["pid"]),
        host_pid=int(data["host_pid"]),
        netns=dict(data["netns"]),
        public_dir=public,
        up_seconds=float(data.get("up_seconds", 0)),
        rootless=bool(data.get("rootless", False)),
        started_at=float(data.get("started_at", 0.0)),
    )


def up(profile: str, name: str = "netvigil") -> TestbedInfo:
    """Bring a testbed up in the background; it runs until `down`."""
    proc, read_fd, public = _spawn(profile, name, None, detach=True)
    return _wait_ready(proc, read_fd, name, public)


def status(name: str = "netvigil") -> TestbedInfo | None:
    info = _read_info(name)
    if info is None:
        return None
    if not info.alive():
        shutil.rmtree(info.public_dir, ignore_errors=True)
        return None
    return info


def phase_status(info: TestbedInfo, now: float | None = None) -> dict[str, Any] | None:
    """The phase in force in a running testbed and the next one, by the testbed's clock
    (None for a profile without phases)."""
    from netvigil.testbed.plan import Plan

    try:
        plan = Plan.load(info.public_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    started = info.started_at
    if not plan.phases:
        return None
    offset = max(0.0, (time.time() if now is None else now) - started)
    current = plan.phase_at(offset)
    upcoming = plan.next_phase(offset)
    assert current is not None
    return {
        "started_at": started,
        "offset": round(offset, 3),
        "phase": current.name,
        "description": current.description,
        "shutdown": current.shutdown,
        "since": current.start_seconds,
        "next": None if upcoming is None else upcoming.name,
        "next_in": None if upcoming is None else round(upcoming.start_seconds - offset, 3),
    }


def phase_line(state: dict[str, Any]) -> str:
    """One line: the phase in force and the next."""
    line = (
        f"phase {state['phase']}"
        + (" (shutdown)" if state["shutdown"] else "")
        + f" since +{state['since']:g} s (now +{state['offset']:.0f} s)"
    )
    if state["description"]:
        line += f": {state['description']}"
    if state["next"] is None:
        return line + "; the last phase."
    return line + f"; next: {state['next']} in {state['next_in']:.0f} s."


def list_names() -> list[str]:
    root = registry_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def down(name: str = "netvigil", timeout: float = 15) -> bool:
    """Stop a testbed; True if one was running."""
    info = _read_info(name)
    public = registry_root() / name
    if info is None:
        pid_file = public / "pid"
        if pid_file.exists():
            _kill_quietly(int(pid_file.read_text() or 0), signal.SIGKILL)
        shutil.rmtree(public, ignore_errors=True)
        return False
    was_alive = info.alive()
    _kill_quietly(info.host_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while info.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if info.alive():
        _kill_quietly(info.host_pid, signal.SIGKILL)
    _kill_quietly(info.pid, signal.SIGKILL)
    # Reap the unshare process if it is our child (same process that called up()).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(info.pid, os.WNOHANG)
    shutil.rmtree(public, ignore_errors=True)
    return was_alive


def _kill_quietly(pid: int, sig: int) -> None:
    if pid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def run(profile: str, command: Sequence[str], name: str = "netvigil-run") -> int:
    """Bring a testbed up, run `command` in `client`, tear down, return the command's status."""
    if not command:
        raise TestbedError("no command given — write: netvigil testbed run --profile P -- CMD ...")
    proc, read_fd, public = _spawn(profile, name, command, detach=False)
    try:
        _wait_ready(proc, read_fd, name, public)
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(public, ignore_errors=True)


def exec_command(
    info: TestbedInfo, host: str, command: Sequence[str], **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    """Run a command inside a host of a running testbed (its mount namespace too, for resolv.conf)."""
    return subprocess.run(exec_argv(info, host, command), **kwargs)


def exec_argv(info: TestbedInfo, host: str, command: Sequence[str]) -> list[str]:
    if host not in info.netns:
        raise TestbedError(f"unknown host '{host}' — use one of: {', '.join(info.netns)}")
    argv = ["nsenter", "-t", str(info.host_pid), "--mount"]
    if info.rootless:
        argv += ["--user", "--preserve-credentials"]
    inside = command_environment(dict(os.environ), testbed_environment(STATE_DIR, info.profile))
    env = [f"{k}={v}" for k, v in inside.items() if k.startswith("NETVIGIL_") or k == "PATH"]
    return [*argv, "--", "ip", "netns", "exec", host, "env", *env, *command]


class NamespaceThread:
    """A worker thread living in one host's network namespace: sockets it opens are in there.

    setns(2) moves only the calling thread, so the rest of the process (pytest, the CLI) stays
    on the host while this thread measures from inside the testbed. Needs root.
    """

    def __init__(self, netns_path: str) -> None:
        self._path = netns_path
        self._jobs: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._cv = threading.Condition()
        self._closed = False
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name="netns", daemon=True)
        self._thread.start()
        self._ready.result(timeout=10)

    def _main(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {self._path} failed: {os.strerror(err)}")
            finally:
                os.close(fd)
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if not self._jobs and self._closed:
                    return
                fn, future = self._jobs.pop(0)
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def call(self, fn: Callable[[], T], timeout: float = 60) -> T:
        future: Future[T] = Future()
        with self._cv:
            self._jobs.append((fn, future))
            self._cv.notify()
        return future.result(timeout=timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)
