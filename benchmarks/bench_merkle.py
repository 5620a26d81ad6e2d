"""Benchmark: the evidence log's Merkle tree at 1,000,000 leaves.

Run:  .venv/bin/python benchmarks/bench_merkle.py [--leaves 1000000]

Appends N leaf hashes to a MerkleTree, then times the root, one inclusion proof and one
consistency proof (and their verification). Memory is the tree's own storage and the process's
peak RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import time

from netvigil.evidence.merkle import MerkleTree, verify_consistency, verify_inclusion


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaves", type=int, default=1_000_000)
    n = ap.parse_args().leaves
    leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]
    tree = MerkleTree()
    t0 = time.perf_counter()
    for h in leaves:
        tree.append(h)
    t_append = time.perf_counter() - t0

    t0 = time.perf_counter()
    root = tree.root()
    t_root = time.perf_counter() - t0

    i, m = n // 3 + 7, n // 2 + 3
    t0 = time.perf_counter()
    proof = tree.inclusion_proof(i)
    t_incl = time.perf_counter() - t0
    t0 = time.perf_counter()
    cproof = tree.consistency_proof(m)
    t_cons = time.perf_counter() - t0
    t0 = time.perf_counter()
    ok = verify_inclusion(leaves[i], i, n, proof, root) and verify_consistency(
        m, n, tree.root(m), root, cproof
    )
    t_verify = time.perf_counter() - t0
    assert ok

    stored = sum(len(level) for level in tree._levels)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"leaves               {n:,}")
    print(f"append all           {t_append:.2f} s ({n / t_append:,.0f} leaves/s)")
    print(f"root                 {t_root * 1e6:.0f} µs")
    print(f"inclusion proof      {t_incl * 1e6:.0f} µs ({len(proof)} hashes)")
    print(f"consistency proof    {t_cons * 1e6:.0f} µs ({len(cproof)} hashes)")
    print(f"verify both          {t_verify * 1e6:.0f} µs")
    print(f"tree storage         {stored / 2**20:.1f} MiB")
    print(f"peak RSS (process)   {peak_mb:.0f} MiB (includes the {n:,} input hashes)")


if __name__ == "__main__":
    main()
