"""A reduced crash-safety load test (see benchmarks/bench_collector_crash.py): 1,000
measurements from 20 concurrent uploads through the real outbox, the collector killed with
SIGKILL once and restarted on the same data. Loopback only, bounded to about 30 s."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_collector_crash import crash_run


@pytest.mark.timeout(90)
def test_collector_survives_kill_9_under_load(tmp_path: Path) -> None:
    result = asyncio.run(
        crash_run(
            tmp_path, count=1000, clients=20, kill_at=(400,), max_seconds=30.0, say=lambda _: None
        )
    )
    assert result["failures"] == []
    assert len(result["kills"]) == 1 and result["collector_starts"] == 2
    # every 2xx is present, nothing pending or rejected, no duplicates in the log
    assert result["acknowledged"] == result["answers"] == result["listed"] == 1000
    assert result["pending"] == 0 and result["rejected"] == 0
    assert result["distinct_leaf_hashes"] == result["final_tree_size"] == 1000
    # the log verifies from the first saved head to the last
    assert result["first_head_size"] == 0 and result["last_head_size"] == 1000
    assert result["heads_saved"] >= 3 and result["consistency_proofs_verified"] >= 2
    assert result["proofs_verified"] == 100
