"""The demo, run inside `client`: the probe measures every URL, then shows the evidence.

``netvigil testbed demo`` (the README's main job) prints what the censor does, brings the
testbed up and runs this: the probe's summary grouped by outcome, its agreement with the ground
truth per technique, a close look at one forged certificate next to the real one, and the
answer of ``netvigil check``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from rich.text import Text

from netvigil import textsafe
from netvigil.measure import RunResult, print_summary, testbed_config
from netvigil.testbed.observe import presented_chain
from netvigil.testbed.plan import Plan
from netvigil.testbed.report import make_console, print_interception_closeup
from netvigil.testbed.score import compare, print_scores
from netvigil.testbed.truth import ground_truth


def upload_and_verify(measurements: list[dict[str, Any]], state: Path) -> str:
    """Queue the measurements, upload them to the testbed's collector, and check one proof
    offline, as a reader of a report would."""
    from netvigil.evidence.log import verify_measurement
    from netvigil.upload.cli import queue_measurements
    from netvigil.upload.outbox import Outbox
    from netvigil.upload.uploader import UploadConfig, upload_outbox

    collector = os.environ.get("NETVIGIL_COLLECTOR_URL", "")
    outbox_dir = state / "outbox"
    queue_measurements(measurements, outbox_dir)
    summary = asyncio.run(
        upload_outbox(Outbox(outbox_dir), UploadConfig(collector=collector, timeout=10))
    )

    def get(path: str) -> bytes:
        with urllib.request.urlopen(collector + path, timeout=10) as response:
            data: bytes = response.read(8 * 1024 * 1024)
            return data

    listing = json.loads(get("api/v1/measurements?limit=1&test_name=web_connectivity"))
    items = listing.get("results") or []
    if not items:
        return f"  uploaded {summary.sent}, but the collector lists nothing"
    uid = items[0]["measurement_uid"]
    stored = json.loads(get(f"api/v1/measurements/{uid}"))
    key = get("api/v1/log/public-key")
    result = verify_measurement(stored, stored["x_evidence"], None, key)
    evidence = state / "evidence-example.json"
    evidence.write_text(json.dumps(stored, indent=1))
    verdict = "verifies" if result.ok else f"does NOT verify: {result.reason}"
    return (
        f"  {summary.sent} measurements uploaded to the collector at {collector} "
        f"({summary.duplicates} already there, {summary.pending} pending).\n"
        f"  The proof for {uid} (leaf {result.leaf_index} of a tree of {result.tree_size}) "
        f"{verdict} offline against the log's signed tree head."
    )


def keep_collector_data(collector_dir: Path, out_dir: Path) -> Path | None:
    """A consistent copy of the collector's database in ``out_dir`` (SQLite's backup API: the
    collector may still be running), so the explorer can show the log's proofs after the
    testbed, and its private state, are gone. Only the database: never the signing key.

    Returns the copy, or None when the collector kept no database.
    """
    import sqlite3
    import urllib.parse

    from netvigil.collector.store import DB_FILE

    source = collector_dir / DB_FILE
    if not source.is_file():
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / DB_FILE
    partial = out_dir / (DB_FILE + ".partial")
    partial.unlink(missing_ok=True)
    uri = "file:" + urllib.parse.quote(str(source.resolve())) + "?mode=ro"
    with (
        contextlib.closing(sqlite3.connect(uri, uri=True)) as src,
        contextlib.closing(sqlite3.connect(partial)) as dst,
    ):
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    for stale in (target.with_name(DB_FILE + "-wal"), target.with_name(DB_FILE + "-shm")):
        stale.unlink(missing_ok=True)  # a previous copy's journal must not meet the new file
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    save = Path(args[1]) if len(args) == 2 and args[0] == "--save" else None
    state = os.environ.get("NETVIGIL_TESTBED_STATE")
    if not state:
        print("run this inside the testbed: netvigil testbed demo", file=sys.stderr)
        return 2
    from netvigil.experiments.web_connectivity import WebConnectivity
    from netvigil.measure import make_progress, run_measurements

    plan = Plan.load(state)
    rows = ground_truth(plan)
    console = make_console()
    progress = make_progress(sys.stderr.isatty())

    sink = io.StringIO()

    async def measure() -> RunResult:
        experiment = WebConnectivity(testbed_config(timeout=8.0))
        return await run_measurements(
            experiment, [r.url for r in rows], progress=progress, output=sink
        )

    with progress if progress is not None else contextlib.nullcontext():
        result = asyncio.run(measure())
    console.rule(Text("What the probe found (netvigil measure)", "bold"))
    print_summary(result, console)
    scores = compare(rows, result.verdicts)
    print_scores(plan.profile, scores)
    intercepted = [
        v for v in result.verdicts if str(v.get("outcome", "")).startswith("tls/interception")
    ]
    if intercepted:
        host = urlsplit(str(intercepted[0]["input"])).hostname or ""
        site = plan.site(host)
        if site is not None:
            forged = asyncio.run(presented_chain(site.isp_answer[0], host))
            real = x509.load_pem_x509_certificates(
                (plan.pki_dir / "sites" / f"{site.domain}.pem").read_bytes()
            )
            console.rule(Text("Evidence", "bold"))
            print_interception_closeup(host, forged, real, console)
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(sink.getvalue())
        console.print(
            textsafe.text(f"  The {len(result.verdicts)} measurements are saved in {save}.")
        )
    console.rule(Text("Into the evidence log (netvigil upload, netvigil verify)", "bold"))
    measurements = [json.loads(line) for line in sink.getvalue().splitlines()]
    # the collector's answers (uid, failure reasons) are untrusted too
    console.print(textsafe.text(upload_and_verify(measurements, Path(state)), multiline=True))
    if save is not None:
        # The testbed's state (and its collector) goes when the testbed does: keep the log.
        kept = keep_collector_data(Path(state) / "collector", save.parent / "collector")
        if kept is not None:
            console.print(
                textsafe.text(
                    f"  The collector's log is kept in {kept.parent} "
                    f"(netvigil explorer --collector-data {kept.parent})."
                )
            )
    console.rule(Text("Is my HTTPS being intercepted? (netvigil check)", "bold"))
    from collections import Counter

    from netvigil.experiments import interception_check as ic

    domains = [s.domain for s in plan.sites if s.kind != "down"]
    report = asyncio.run(ic.check_domains(domains, testbed_config(timeout=5.0)))
    console.print(textsafe.text(ic.headline(report), "bold"))
    verdicts = Counter(r.verdict for r in report.results)
    console.print(
        Text(
            f"  {len(report.results)} sites checked in {report.seconds:.1f} s: "
            + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))
            + " (netvigil check --json for the chains)"
        )
    )
    browsed = site_side_view(plan, console)
    return 0 if all(s.agrees for s in scores) and browsed else 1


def site_side_view(plan: Plan, console: Any) -> bool:
    """The same interception seen by the site: headless Chromium, trusting the national root
    as an obedient citizen's browser does, visits one intercepted and one untouched site served
    behind ``netvigil sitecheck front``. False only when a verdict disagrees with the truth."""
    import shutil

    from netvigil.testbed import browse

    console.rule(Text("What the site sees (netvigil sitecheck front, headless Chromium)", "bold"))
    if shutil.which("chromium") is None:
        console.print(Text("  chromium is not installed (scripts/setup.sh installs it): skipped."))
        return True
    candidates = browse.visitable(plan)
    urls = [
        next((u for u, t in candidates if t), ""),
        next((u for u, t in candidates if not t), ""),
    ]
    visits = browse.run_visits(plan, [u for u in urls if u], ["chromium"])
    with contextlib.redirect_stdout(io.StringIO()) as text:
        browse.print_report(visits, browse.score(visits))
    console.print(textsafe.text(text.getvalue().rstrip(), multiline=True))
    console.print(
        Text(
            "  More browsers and names: netvigil testbed browse -p "
            f"{plan.profile} --browser chromium,firefox --all"
        )
    )
    return all(browse.agrees(v) for v in visits)


if __name__ == "__main__":
    sys.exit(main())
