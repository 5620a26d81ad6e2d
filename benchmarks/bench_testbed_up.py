"""Benchmark: how long `testbed up` and `testbed down` take for 10, 100 and 500 sites.

Target (issue #2): 500 sites up in under 5 s on the 2-core reference machine.
Run as root:  .venv/bin/python benchmarks/bench_testbed_up.py [--repeat 3] [--sizes 10,100,500]

Each size gets a synthetic profile: N sites, a tenth of them behind a mix of rules (DNS, IP,
SNI, HTTP), so the censor's nftables sets and the ISP resolver have real work to load. The
national-root cache is warmed first, so the figures are those of every run after the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from netvigil.testbed import control


def synthetic_profile(sites: int) -> str:
    domains = [f"site{i:04d}.example.kz" for i in range(sites)]
    blocked = domains[: max(1, sites // 10)]
    quarter = max(1, len(blocked) // 4)
    groups = [blocked[i * quarter : (i + 1) * quarter] or blocked[:1] for i in range(4)]

    def listing(names: list[str]) -> str:
        return "[" + ", ".join(f'"{d}"' for d in names) + "]"

    return "\n".join(
        [
            f'name = "bench-{sites}"',
            f'description = "{sites} synthetic sites for the up/down benchmark"',
            f"domains = {listing(domains)}",
            f'[[rule]]\naction = "dns-nxdomain"\ndomain = {listing(groups[0])}',
            f'[[rule]]\naction = "ip-drop"\ndomain = {listing(groups[1])}',
            f'[[rule]]\naction = "tls-reset"\nsni = {listing(groups[2])}',
            f'[[rule]]\naction = "http-blockpage"\nhost = {listing(groups[3])}',
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="10,100,500")
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results" / "testbed_up.json")
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"bench-{size}.toml"
            path.write_text(synthetic_profile(size))
            ups, downs, inside = [], [], []
            for _ in range(args.repeat):
                started = time.perf_counter()
                info = control.up(str(path), name=f"bench-{size}")
                ups.append(time.perf_counter() - started)
                inside.append(info.up_seconds)
                started = time.perf_counter()
                control.down(f"bench-{size}")
                downs.append(time.perf_counter() - started)
            row = {
                "sites": size,
                "up_median_s": round(statistics.median(ups), 3),
                "up_max_s": round(max(ups), 3),
                "supervisor_up_median_s": round(statistics.median(inside), 3),
                "down_median_s": round(statistics.median(downs), 3),
                "runs": args.repeat,
            }
            results.append(row)
            print(
                f"{size:5d} sites: up {row['up_median_s']:.2f} s (max {row['up_max_s']:.2f}), "
                f"down {row['down_median_s']:.2f} s   [median of {args.repeat}]",
                flush=True,
            )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    target = next((r for r in results if r["sites"] == 500), None)
    if target is not None:
        verdict = "meets" if target["up_median_s"] < 5 else "MISSES"
        print(f"500 sites up in {target['up_median_s']:.2f} s: {verdict} the 5 s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
