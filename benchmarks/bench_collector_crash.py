"""Crash-safety load test: the real outbox and uploader against a collector killed with SIGKILL.

Run:  .venv/bin/python benchmarks/bench_collector_crash.py [--count 10000] [--clients 50]
          [--kill-at 3000 --kill-at 6500] [--max-seconds 120]

Loopback only, bounded in count and time. Queues ``--count`` distinct measurements into a fresh
outbox (``netvigil.upload.queue_measurements``), starts ``python -m netvigil.cli collector``
(SQLite in a temporary directory, rate limit off) and runs ``upload_outbox`` with
``--clients`` concurrent requests, again and again, until the outbox is empty or
``--max-seconds`` pass. The tree head is polled every 50 ms and every distinct head is saved;
when it reaches each ``--kill-at`` size the collector is killed with SIGKILL and restarted on
the same data directory. Afterwards it checks:

* every measurement the outbox holds as acknowledged (a 2xx answer, saved in ``sent/``) is
  listed by the collector under the uid and leaf index it answered, and its leaf hash is the
  one computed locally; a sample is fetched by uid and its inclusion proof verified offline;
* nothing is pending or rejected, and there are no duplicates: the answered leaf indexes are
  exactly 0..count-1 with ``count`` distinct leaf hashes, and the Merkle root over them equals
  the final signed root (so the log holds these leaves and nothing else);
* every saved tree head is signed by a key the collector serves, and each is consistent with
  the one before (RFC 9162 consistency proofs fetched from the restarted collector), from the
  first head seen to the last.

Prints the figures as JSON (throughput = acknowledged measurements / wall time of the upload
phase, downtime included) and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx

from netvigil.evidence.log import (
    TreeHead,
    load_public_key,
    measurement_leaf_hash,
    verify_measurement,
    verify_tree_head,
)
from netvigil.evidence.merkle import MerkleTree, verify_consistency
from netvigil.upload import Outbox, UploadConfig, queue_measurements, upload_outbox

sys.path.insert(0, str(Path(__file__).resolve().parent))  # imported from tests too
from bench_collector import free_port
from bench_collector import measurement as load_measurement

POLL = 0.05
SAMPLE_PROOFS = 100


def measurement(n: int, run_tag: str) -> dict[str, Any]:
    # The collector benchmark's measurements, with a smaller page (the outbox scrubs probe_ip
    # to 127.0.0.1 either way).
    return load_measurement(n, tag=run_tag, body=1000)


class CollectorProcess:
    """``netvigil collector`` in a child process, killed with SIGKILL on demand."""

    def __init__(self, data: Path, port: int, log: IO[bytes]) -> None:
        self.data = data
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        cmd = [sys.executable, "-m", "netvigil.cli", "collector", "--data", str(self.data)]
        cmd += ["--listen", f"127.0.0.1:{self.port}", "--rate", "0"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, close_fds=True
        )
        self.starts += 1

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def wait_up(http: httpx.AsyncClient, base: str, deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        try:
            r = await http.get(f"{base}/api/v1/log/tree-head")
            if r.status_code == 200:
                head: dict[str, Any] = r.json()
                return head
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("the collector did not answer in time")


def _b64d(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


async def _list_all(http: httpx.AsyncClient, base: str, limit: int) -> dict[str, int]:
    """uid -> leaf_index for every listed measurement (bounded: limit/1000 + 2 pages)."""
    listed: dict[str, int] = {}
    cursor: str | None = None
    for _ in range(limit // 1000 + 2):
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"{base}/api/v1/measurements", params=params)).json()
        for row in page["results"]:
            listed[row["measurement_uid"]] = row["leaf_index"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return listed


async def check_heads(
    http: httpx.AsyncClient, base: str, heads: list[dict[str, Any]], failures: list[str]
) -> int:
    """Signatures of every head, consistency of each with the one before; proofs checked."""
    keys = (await http.get(f"{base}/api/v1/log/public-keys")).json()["keys"]
    by_log_id = {k["log_id"]: load_public_key(k["public_key_pem"].encode()) for k in keys}
    checked = 0
    for head in heads:
        key = by_log_id.get(head["log_id"])
        if key is None or not verify_tree_head(key, TreeHead.from_json(head)):
            failures.append(f"tree head of size {head['tree_size']}: bad signature")
    pairs = list(itertools.pairwise(heads))
    if len(heads) > 1:
        pairs.append((heads[0], heads[-1]))  # first to last, directly too
    for older, newer in pairs:
        m, n = older["tree_size"], newer["tree_size"]
        root_m, root_n = _b64d(older["root_hash"]), _b64d(newer["root_hash"])
        if m > n:
            failures.append(f"tree shrank from {m} to {n}")
            continue
        if m == n:
            if root_m != root_n:
                failures.append(f"two heads of size {m} with different roots")
            continue
        r = await http.get(
            f"{base}/api/v1/log/consistency", params={"first": str(m), "second": str(n)}
        )
        proof = [_b64d(p) for p in r.json()["proof"]]
        if not verify_consistency(m, n, root_m, root_n, proof):
            failures.append(f"heads {m} -> {n} are not consistent")
        checked += 1
    return checked


async def crash_run(
    workdir: Path,
    *,
    count: int = 10_000,
    clients: int = 50,
    kill_at: tuple[int, ...] = (3000, 6500),
    max_seconds: float = 120.0,
    say: Any = None,
) -> dict[str, Any]:
    """Run the load test in ``workdir``; the result has ``failures`` (empty when all held)."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    failures: list[str] = []
    tag = f"{random.getrandbits(32):08x}"
    outbox_dir = workdir / "outbox"
    t_queue = time.perf_counter()
    queued = queue_measurements((measurement(n, tag) for n in range(count)), outbox_dir)
    queue_s = time.perf_counter() - t_queue
    if queued != count:
        failures.append(f"queued {queued} of {count}")
    outbox = Outbox(outbox_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = UploadConfig(
        collector=base,
        concurrency=clients,
        timeout=10.0,
        max_attempts=4,
        # A collector on loopback that was just restarted: retry soon (0.1 s doubling to
        # 0.5 s), as a probe next to its own collector would be configured.
        backoff_base=0.1,
        backoff_max=0.5,
    )
    heads: list[dict[str, Any]] = []
    kills: list[dict[str, Any]] = []
    totals = {"runs": 0, "attempts": 0, "sent": 0, "duplicates": 0, "rejected": 0}
    with open(workdir / "collector.log", "wb") as log:
        collector = CollectorProcess(workdir / "data", port, log)
        collector.start()
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                heads.append(await wait_up(http, base, time.monotonic() + 30))
                done = asyncio.Event()
                started = time.monotonic()
                deadline = started + max_seconds

                async def watch() -> None:
                    todo = list(kill_at)
                    down_since: float | None = None
                    while not done.is_set() and time.monotonic() < deadline:
                        try:
                            r = await http.get(f"{base}/api/v1/log/tree-head", timeout=2.0)
                            if r.status_code == 200:
                                head = r.json()
                                if down_since is not None:
                                    kills[-1]["down_s"] = round(time.monotonic() - down_since, 2)
                                    down_since = None
                                last = heads[-1]
                                if (head["tree_size"], head["root_hash"]) != (
                                    last["tree_size"],
                                    last["root_hash"],
                                ):
                                    heads.append(head)
                        except httpx.HTTPError:
                            pass
                        if todo and down_since is None and heads[-1]["tree_size"] >= todo[0]:
                            todo.pop(0)
                            collector.kill9()
                            down_since = time.monotonic()
                            kills.append(
                                {
                                    "at_tree_size": heads[-1]["tree_size"],
                                    "after_s": round(down_since - started, 2),
                                }
                            )
                            say(f"kill -9 at tree size {heads[-1]['tree_size']}; restarting")
                            collector.start()
                        await asyncio.sleep(POLL)

                watcher = asyncio.create_task(watch())
                try:
                    while outbox.pending() and time.monotonic() < deadline:
                        remaining = deadline - time.monotonic()
                        stop = asyncio.Event()
                        timer = asyncio.get_running_loop().call_later(remaining, stop.set)
                        summary = await upload_outbox(outbox, config, stop=stop)
                        timer.cancel()
                        totals["runs"] += 1
                        totals["attempts"] += summary.attempts
                        totals["sent"] += summary.sent
                        totals["duplicates"] += summary.duplicates
                        totals["rejected"] += summary.rejected
                        if summary.pending:
                            await asyncio.sleep(0.2)
                    elapsed = time.monotonic() - started
                finally:
                    done.set()
                    await watcher
                final = await wait_up(http, base, time.monotonic() + 30)
                if (final["tree_size"], final["root_hash"]) != (
                    heads[-1]["tree_size"],
                    heads[-1]["root_hash"],
                ):
                    heads.append(final)
                say(f"upload phase done in {elapsed:.1f} s; verifying")
                verify = await verify_all(http, base, outbox, count, heads, failures)
        finally:
            collector.stop()
    if len(kills) != len(kill_at):
        failures.append(f"killed {len(kills)} times, wanted {len(kill_at)}")
    acknowledged = outbox.count("sent")
    return {
        "count": count,
        "clients": clients,
        "queue_s": round(queue_s, 2),
        "upload_s": round(elapsed, 2),
        "submissions_per_s": round(acknowledged / elapsed, 1) if elapsed else 0.0,
        "acknowledged": acknowledged,
        "pending": len(outbox.pending()),
        "rejected": outbox.count("rejected"),
        "kills": kills,
        "collector_starts": collector.starts,
        "upload_runs": totals["runs"],
        "upload_attempts": totals["attempts"],
        "answers_duplicate": totals["duplicates"],
        "final_tree_size": heads[-1]["tree_size"],
        "heads_saved": len(heads),
        **verify,
        "failures": failures,
    }


async def verify_all(
    http: httpx.AsyncClient,
    base: str,
    outbox: Outbox,
    count: int,
    heads: list[dict[str, Any]],
    failures: list[str],
) -> dict[str, Any]:
    final = heads[-1]
    if outbox.pending():
        failures.append(f"{len(outbox.pending())} still pending")
    if outbox.count("rejected"):
        failures.append(f"{outbox.count('rejected')} rejected")
    # Every 2xx the uploader received is saved in sent/ (the answer in sent/answers.jsonl).
    by_index: dict[int, bytes] = {}
    answers: dict[str, tuple[str, int, dict[str, Any]]] = {}
    saved = outbox.answers()
    for name in os.listdir(outbox.sent_dir):
        if not (len(name) == 69 and name.endswith(".json")):
            continue  # the measurements only (64 hex digits + ".json"), not answers.jsonl
        ident = name[: -len(".json")]
        answer = saved.get(ident) or {}
        body = json.loads((outbox.sent_dir / f"{ident}.json").read_bytes())
        local = measurement_leaf_hash(body)
        uid, index = answer.get("measurement_uid"), answer.get("leaf_index")
        if not (isinstance(uid, str) and isinstance(index, int)):
            failures.append(f"{ident[:12]}: answer without uid or leaf index")
            continue
        if _b64d(str(answer.get("leaf_hash"))) != local:
            failures.append(f"{ident[:12]}: answered leaf hash differs from the local one")
        if index in by_index:
            failures.append(f"leaf index {index} answered for two measurements")
        by_index[index] = local
        answers[ident] = (uid, index, body)
    distinct = len(set(by_index.values()))
    if sorted(by_index) != list(range(count)) or distinct != count:
        failures.append(
            f"answers cover {len(by_index)} leaf indexes with {distinct} distinct leaf hashes"
        )
    if final["tree_size"] != count:
        failures.append(f"final tree size {final['tree_size']}, expected {count}")
    # The root over the answered leaves (in index order) is the signed root: the log holds
    # exactly these leaves, each once.
    tree = MerkleTree(by_index[i] for i in sorted(by_index))
    if tree.size != final["tree_size"] or tree.root() != _b64d(final["root_hash"]):
        failures.append("the final signed root is not the root over the answered leaves")
    listed = await _list_all(http, base, count)
    missing = [uid for uid, index, _ in answers.values() if listed.get(uid) != index]
    if missing:
        failures.append(f"{len(missing)} acknowledged measurements not listed, e.g. {missing[0]}")
    if len(listed) != count or len(set(listed.values())) != count:
        failures.append(f"the collector lists {len(listed)} measurements, expected {count}")
    # A sample fetched by uid, its inclusion proof verified offline against the final head.
    pem = (await http.get(f"{base}/api/v1/log/public-key")).content
    sample = random.sample(sorted(answers.values()), min(SAMPLE_PROOFS, len(answers)))
    for uid, _, body in sample:
        r = await http.get(f"{base}/api/v1/measurements/{uid}")
        got = r.json() if r.status_code == 200 else {}
        evidence = got.pop("x_evidence", None)
        if got != body or not isinstance(evidence, dict):
            failures.append(f"GET {uid}: HTTP {r.status_code}, not the measurement sent")
            continue
        result = verify_measurement(got, evidence, final, pem)
        if not result.ok:
            failures.append(f"GET {uid}: proof does not verify ({result.reason})")
    consistency_checked = await check_heads(http, base, heads, failures)
    return {
        "answers": len(answers),
        "distinct_leaf_hashes": distinct,
        "listed": len(listed),
        "proofs_verified": len(sample),
        "consistency_proofs_verified": consistency_checked,
        "first_head_size": heads[0]["tree_size"],
        "last_head_size": final["tree_size"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--kill-at", type=int, action="append", default=None, metavar="TREE_SIZE")
    ap.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args()
    count = max(1, min(args.count, 100_000))
    kill_at = tuple(args.kill_at) if args.kill_at else (count * 3 // 10, count * 65 // 100)
    with tempfile.TemporaryDirectory(prefix="netvigil-crash-") as tmp:
        result = asyncio.run(
            crash_run(
                Path(tmp),
                count=count,
                clients=args.clients,
                kill_at=kill_at,
                max_seconds=min(args.max_seconds, 600.0),
            )
        )
    print(json.dumps(result, indent=2))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
