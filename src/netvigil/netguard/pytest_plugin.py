"""pytest plugin: the whole test session runs under netguard.

Loaded by pyproject's ``addopts = "-p netvigil.netguard.pytest_plugin"``. At session start it
creates a report file in a fresh temporary folder, exports ``NETVIGIL_NETGUARD=<that file>`` (so
every netvigil child process installs the guard too) and installs the guard in pytest's own
process. After each phase of each test it reads the lines added to the report since the last
look; if there are any, that phase fails with them — even when the code under test caught the
``PermissionError`` and carried on, and even when the offender was a child process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

from netvigil import netguard

_session: dict[str, object] = {}


def _new_lines() -> list[str]:
    path = _session.get("report")
    if not isinstance(path, Path):
        return []
    offset = _session.get("offset", 0)
    assert isinstance(offset, int)
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return []
    # Only whole lines: a child may be half-way through writing one.
    end = data.rfind(b"\n") + 1
    _session["offset"] = offset + end
    return [line for line in data[:end].decode("utf-8", "replace").splitlines() if line]


def pytest_configure(config: pytest.Config) -> None:
    folder = Path(tempfile.mkdtemp(prefix="netvigil-netguard-"))
    report = folder / "report.log"
    report.touch()
    _session.update(
        report=report,
        folder=folder,
        offset=0,
        previous_env=os.environ.get(netguard.ENV_REPORT),
        previous_report=netguard.report_path(),
    )
    os.environ[netguard.ENV_REPORT] = str(report)
    netguard.install(str(report))


def pytest_report_header(config: pytest.Config) -> str:
    report = _session.get("report")
    return f"netguard: traffic outside loopback and 198.18.0.0/15 fails the test (report {report})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    lines = _new_lines()
    if lines:
        report.outcome = "failed"
        text = "\n".join(lines)
        report.longrepr = (
            "netguard refused traffic outside loopback and 198.18.0.0/15"
            f" during {call.when}:\n{text}"
        )
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    lines = _new_lines()
    if lines:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "netguard refused traffic outside any test:\n" + "\n".join(lines)
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    previous_env = _session.get("previous_env")
    if isinstance(previous_env, str):
        os.environ[netguard.ENV_REPORT] = previous_env
    else:
        os.environ.pop(netguard.ENV_REPORT, None)
    previous = _session.get("previous_report")
    # The hook stays (it cannot be removed); keep refusing, but stop writing to our file.
    netguard.install(previous if isinstance(previous, str) else None)
    folder = _session.get("folder")
    if isinstance(folder, Path):
        shutil.rmtree(folder, ignore_errors=True)
    _session.clear()
