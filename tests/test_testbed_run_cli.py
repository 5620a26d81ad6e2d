"""`netvigil testbed run` as a new user meets it: the command's output, errors and status, as is.

Each test starts the CLI the way a user does after `sudo make demo`: the virtualenv is *not* on
PATH (sudo and fresh shells drop it), and the command inside the testbed is spelt `netvigil`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_testbed

VENV_BIN = Path(sys.executable).parent


def user_environment() -> dict[str, str]:
    """The user's environment without this virtualenv on PATH (as under sudo)."""
    env = dict(os.environ)
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and Path(p) != VENV_BIN]
    env["PATH"] = os.pathsep.join(path or ["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    env.pop("VIRTUAL_ENV", None)
    return env


def run_in_testbed(
    *command: str, profile: str = "clean", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "netvigil"), "testbed", "run", "-p", profile, "--", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_environment(),
    )


def test_the_command_environment_puts_this_installation_first() -> None:
    from netvigil.testbed.plan import command_environment

    env = command_environment({"PATH": f"/usr/bin:{VENV_BIN}:/bin"}, {"NETVIGIL_TESTBED": "1"})
    assert env["PATH"].split(os.pathsep) == [str(VENV_BIN), "/usr/bin", "/bin"]
    assert env["NETVIGIL_TESTBED"] == "1"


@needs_testbed
@pytest.mark.testbed
def test_stdout_stderr_and_exit_status_pass_through_unchanged() -> None:
    result = run_in_testbed("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7")
    assert result.returncode == 7
    assert result.stdout == "to-stdout\n"
    assert "to-stderr\n" in result.stderr


@needs_testbed
@pytest.mark.testbed
def test_a_missing_command_says_command_not_found_with_status_127() -> None:
    result = run_in_testbed("nosuchcommand-netvigil")
    assert result.returncode == 127
    assert "command not found: nosuchcommand-netvigil" in result.stderr


@needs_testbed
@pytest.mark.testbed
def test_netvigil_is_found_inside_without_the_users_path_and_its_errors_are_shown() -> None:
    result = run_in_testbed("netvigil", "measure", "not a url")
    assert result.returncode == 2
    assert "'not a url'" in result.stderr and "not an http" in result.stderr, result.stderr
    result = run_in_testbed("netvigil", "measure", "--list", "zz")
    assert result.returncode == 2
    assert "no test list 'zz'" in result.stderr, result.stderr


@needs_testbed
@pytest.mark.testbed
def test_skipped_inputs_have_their_reasons_above_the_count() -> None:
    result = run_in_testbed(
        "netvigil", "measure", "--no-progress", "not a url", "ftp://x.example/", "http://a.example/"
    )
    assert result.returncode == 0, result.stderr
    assert "2 input(s) skipped (see above)" in result.stdout
    assert "'not a url'" in result.stderr and "'ftp://x.example/'" in result.stderr


def test_exec_also_puts_this_installation_first_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from netvigil.testbed import control

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    info = control.TestbedInfo(
        name="t",
        profile="clean",
        pid=1,
        host_pid=1,
        netns={"client": "/proc/1/ns/net"},
        public_dir=tmp_path,
        up_seconds=0.0,
        rootless=False,
    )
    argv = control.exec_argv(info, "client", ["netvigil", "--version"])
    assert f"PATH={VENV_BIN}:/usr/bin:/bin" in argv
    assert argv[-2:] == ["netvigil", "--version"]


@needs_testbed
@pytest.mark.testbed
def test_a_command_killed_by_a_signal_ends_run_with_128_plus_the_signal() -> None:
    result = run_in_testbed("sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + 15, result.stderr
