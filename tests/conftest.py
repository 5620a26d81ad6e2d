"""Shared fixtures: testbeds brought up once per session and entered from a thread."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from netvigil.testbed import control


def _can_run_testbed() -> str | None:
    if os.geteuid() != 0:
        return "the testbed tests need root (CI runs as root)"
    for tool in ("ip", "nft", "tc", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"'{tool}' is missing: run ./scripts/setup.sh"
    return None


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The fingerprint cache (and anything else under $XDG_CACHE_HOME) goes to a directory of
    this session, inherited by the commands the tests start, never the user's own cache."""
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


SKIP_REASON = _can_run_testbed()
needs_testbed = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


class RunningTestbed:
    """A testbed that is up, with a thread inside `client` to measure from."""

    def __init__(self, info: control.TestbedInfo) -> None:
        self.info = info
        self.client = control.NamespaceThread(info.netns["client"])

    def in_client(self, fn: Callable[[], object], timeout: float = 90) -> object:
        return self.client.call(fn, timeout=timeout)

    def close(self) -> None:
        self.client.close()
        control.down(self.info.name)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Callable[[str], RunningTestbed]]:
    """testbed(profile) → a RunningTestbed, shared by every test of the session."""
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    running: dict[str, RunningTestbed] = {}

    def get(profile: str) -> RunningTestbed:
        if profile not in running:
            info = control.up(profile, name=f"pytest-{os.getpid()}-{profile}")
            running[profile] = RunningTestbed(info)
        return running[profile]

    yield get
    for bed in running.values():
        bed.close()
