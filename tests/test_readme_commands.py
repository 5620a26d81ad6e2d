"""The README's commands, run verbatim: a new user copies them, so they must work as written.

Every `netvigil …` line of the README's shell blocks is either run here or skipped with the
reason written down below (a real network, a server that runs until stopped, a template with
optional parts). A new command in the README fails `test_every_readme_command_is_accounted_for`
until it is given one of the two. The host's `netvigil` is this virtualenv's (what
`source .venv/bin/activate` gives); inside the testbed, `netvigil` is spelt as the README spells
it, with the virtualenv *off* PATH, as under `sudo`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_testbed

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
DATA = Path(__file__).resolve().parent / "data"

# Why a README command is not run here: one reason per kind, matched on the command's text.
SKIP_REASONS: tuple[tuple[str, str], ...] = (
    ("helper.example", "needs a control helper on a real network"),
    ("collector.example", "uploads to a collector on a real network"),
    ("--only www.example.org", "measures real sites through the system resolver"),
    ("--cluster", "needs a Dask cluster on other machines"),
    ("netvigil collector ", "a server that runs until stopped (tests/test_collector*.py start it)"),
    ("--collector-data", "a server that runs until stopped (tests/test_explorer*.py start it)"),
    ("explorer kz --inputs", "a server that runs until stopped (tests/test_explorer*.py start it)"),
    ("[", "a template with optional parts, not a command to paste"),
)


def readme_commands() -> list[str]:
    """Every line of a ```sh block that runs netvigil, comments removed."""
    commands: list[str] = []
    in_block = False
    for raw in README.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_block = line in ("```sh", "```bash", "```shell") if not in_block else False
            continue
        if in_block and re.match(r"(\.venv/bin/)?netvigil\s", line):
            commands.append(shlex.join(shlex.split(line, comments=True)))
    return commands


def skip_reason(command: str) -> str | None:
    return next((why for text, why in SKIP_REASONS if text in command), None)


def user_environment() -> dict[str, str]:
    env = dict(os.environ)
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and Path(p) != VENV_BIN]
    env["PATH"] = os.pathsep.join(path or ["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    env.pop("VIRTUAL_ENV", None)
    return env


def host_argv(command: str) -> list[str]:
    """The command as typed, with the first word this installation's netvigil."""
    argv = shlex.split(command)
    return [str(VENV_BIN / "netvigil"), *argv[1:]]


def run_command(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        host_argv(command),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_environment(),
        stdin=subprocess.DEVNULL,
    )


COMMANDS = readme_commands()
TESTBED_COMMANDS = [
    c
    for c in COMMANDS
    if (" testbed run " in c or " testbed browse " in c) and skip_reason(c) is None
]
PIPELINE_COMMANDS = [
    c
    for c in COMMANDS
    if re.match(r"(\.venv/bin/)?netvigil (pipeline run|query|report|explorer) ", c)
    and not skip_reason(c)
]


def test_every_readme_command_is_accounted_for() -> None:
    assert len(COMMANDS) >= 10, "the README's shell blocks were not found"
    unaccounted = [
        c
        for c in COMMANDS
        if skip_reason(c) is None and c not in TESTBED_COMMANDS and c not in PIPELINE_COMMANDS
    ]
    assert not unaccounted, f"README commands neither run nor skipped with a reason: {unaccounted}"
    assert TESTBED_COMMANDS and PIPELINE_COMMANDS


@needs_testbed
@pytest.mark.testbed
@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", TESTBED_COMMANDS)
def test_readme_testbed_command_works_verbatim(command: str, tmp_path: Path) -> None:
    result = run_command(command, tmp_path, timeout=240)
    # 0 nothing found, 1 findings: both are answers; 2 (usage) or a traceback are failures.
    assert result.returncode in (0, 1), f"{command}: exit {result.returncode}\n{result.stderr}"
    assert result.stdout.strip(), f"{command}: printed nothing\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.timeout(300)
def test_readme_pipeline_commands_work_verbatim(tmp_path: Path) -> None:
    """The pipeline block in order, on the inputs its placeholders name (generated and real)."""
    generated = subprocess.run(
        [
            *(str(VENV_BIN / "netvigil"), "pipeline", "generate", "--out", "ooni-data"),
            *("--count", "300", "--days", "5", "--start", "2024-01-01", "--seed", "12"),
            *("--country", "KZ:AS9198", "--domains", "10"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "ooni-data" / "raw").is_dir()
    shutil.copy(DATA / "ooni_web_connectivity.jsonl", tmp_path / "my-measurements.jsonl")
    for command in PIPELINE_COMMANDS:
        result = run_command(command, tmp_path, timeout=120)
        assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stderr}"
        assert result.stdout.strip(), f"{command}: printed nothing"
        assert "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "kz.html").stat().st_size > 1000
    assert (tmp_path / "kz-site" / "index.html").is_file()
