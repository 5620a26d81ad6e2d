"""Shared fixtures: testbeds brought up once per session and entered from a thread; a
throwaway PostgreSQL cluster for the session (the collector's and the explorer's tests)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
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


@pytest.fixture(autouse=True, scope="session")
def _no_real_network_check() -> Iterator[None]:
    """`netvigil measure` outside the testbed checks the network against real reference
    targets (Apple's, Microsoft's, 1.1.1.1) and the system resolver by default: a test that
    measures a loopback server must not contact them. NETVIGIL_NETWORK_CHECK=0 turns that
    default off, for the commands the tests start too; a test that gives --reference, or runs
    in the testbed (its own references), still checks."""
    saved = os.environ.get("NETVIGIL_NETWORK_CHECK")
    os.environ["NETVIGIL_NETWORK_CHECK"] = "0"
    yield
    if saved is None:
        os.environ.pop("NETVIGIL_NETWORK_CHECK", None)
    else:
        os.environ["NETVIGIL_NETWORK_CHECK"] = saved


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


# -- PostgreSQL: a throwaway cluster for the session ------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
PG_SCRIPT = ROOT / "scripts" / "pg-test-cluster.sh"
REQUIRE_POSTGRES = os.environ.get("NETVIGIL_REQUIRE_POSTGRES") == "1"


def _postgres_missing() -> str | None:
    if shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return None
    return "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)"


class PgCluster:
    def __init__(self, dsn: str, data_dir: Path) -> None:
        self.dsn = dsn
        self.data_dir = data_dir
        self._n = itertools.count()

    def new_database(self) -> str:
        name = f"netvigil_test_{os.getpid()}_{next(self._n)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster (scripts/pg-test-cluster.sh) for the whole session."""
    missing = _postgres_missing()
    if missing:
        if REQUIRE_POSTGRES:
            pytest.fail(f"NETVIGIL_REQUIRE_POSTGRES=1 but {missing}: run scripts/setup.sh")
        pytest.skip(f"{missing}; scripts/setup.sh installs it (CI requires it)")
    # Under /tmp, not pytest's tmp_path: as root the cluster runs as the postgres user, who
    # cannot enter pytest's private (0700) base directory.
    base = Path(tempfile.mkdtemp(prefix="netvigil-pg-"))
    try:
        started = subprocess.run(
            [str(PG_SCRIPT), "start", str(base)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if started.returncode != 0:
            pytest.fail(f"pg-test-cluster.sh start failed:\n{started.stderr}")
        yield PgCluster(started.stdout.strip().splitlines()[-1], base / "data")
    finally:
        subprocess.run([str(PG_SCRIPT), "stop", str(base)], timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)
