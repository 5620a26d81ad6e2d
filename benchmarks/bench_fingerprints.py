"""Benchmark: matching one 512 KiB body against the whole fingerprint set.

Run:  .venv/bin/python benchmarks/bench_fingerprints.py [--repeat 20]

Bodies: a synthetic HTML page (English text and markup, no signature in it), the same with a
blockpage appended at the end (worst case for a match), and a Cyrillic-heavy page (non-ASCII
anchors are denser there). Prints the best and median time per body, and the one-off load time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from netvigil.verdict.fingerprints import load_fingerprints

SIZE = 512 * 1024
ROOT = Path(__file__).resolve().parents[1]


def _page(words: list[str], seed: int) -> str:
    rnd = random.Random(seed)
    parts = ["<!doctype html><html><head><title>News of the day</title></head><body>"]
    size = len(parts[0])
    while size < SIZE:
        chunk = (
            f'<div class="c{rnd.randint(0, 99)}"><a href="/p/{rnd.randint(0, 10**6)}">'
            + " ".join(rnd.choice(words) for _ in range(12))
            + "</a></div>\n"
        )
        parts.append(chunk)
        size += len(chunk)
    return "".join(parts)[:SIZE]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    start = time.perf_counter()
    fps = load_fingerprints()
    print(f"load + compile: {(time.perf_counter() - start) * 1000:.0f} ms ({len(fps)} signatures)")
    english = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "was",
        "with",
        "be",
        "by",
        "on",
        "not",
        "he",
        "this",
        "are",
        "or",
        "his",
    ]
    english += [
        "government",
        "election",
        "report",
        "market",
        "weather",
        "football",
        "science",
        "music",
        "travel",
    ]
    cyrillic = [
        "новости",
        "погода",
        "спорт",
        "экономика",
        "политика",
        "культура",
        "наука",
        "общество",
        "мир",
    ]
    blockpage = (ROOT / "src/netvigil/testbed/blockpages/isp_ru_rostelcom_block.html").read_text()
    bodies = {
        "english 512 KiB, no match": _page(english, 1),
        "english 512 KiB, blockpage at end": _page(english, 2)[: SIZE - len(blockpage)] + blockpage,
        "cyrillic 512 KiB, no match": _page(cyrillic, 3),
    }
    headers = {"Server": "nginx", "Content-Type": "text/html"}
    for name, body in bodies.items():
        times = []
        hit = None
        for _ in range(args.repeat):
            t = time.perf_counter()
            hit, _fp = fps.match_response(body, headers)
            times.append((time.perf_counter() - t) * 1000)
        label = hit.name if hit else "-"
        print(
            f"{name:36s} best {min(times):6.2f} ms  median {statistics.median(times):6.2f} ms"
            f"  match={label}"
        )


if __name__ == "__main__":
    main()
