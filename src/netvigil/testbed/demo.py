"""The demo, run inside `client`: the probe measures every URL, then shows the evidence.

``netvigil testbed demo`` (the README's main job) prints what the censor does, brings the
testbed up and runs this: the probe's summary grouped by outcome, its agreement with the ground
truth per technique, a close look at one forged certificate next to the real one, and the
answer of ``netvigil check``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit

from cryptography import x509

from netvigil.measure import RunResult, print_summary, testbed_config
from netvigil.testbed.observe import presented_chain
from netvigil.testbed.plan import Plan
from netvigil.testbed.report import make_console, print_interception_closeup
from netvigil.testbed.score import compare, print_scores
from netvigil.testbed.truth import ground_truth


def main() -> int:
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

    async def measure() -> RunResult:
        experiment = WebConnectivity(testbed_config(timeout=8.0))
        return await run_measurements(experiment, [r.url for r in rows], progress=progress)

    if progress is not None:
        with progress:
            result = asyncio.run(measure())
    else:
        result = asyncio.run(measure())
    console.rule("[bold]What the probe found (netvigil measure)")
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
            console.rule("[bold]Evidence")
            print_interception_closeup(host, forged, real, console)
    console.rule("[bold]Is my HTTPS being intercepted? (netvigil check)")
    from collections import Counter

    from netvigil.experiments import interception_check as ic

    domains = [s.domain for s in plan.sites if s.kind != "down"]
    report = asyncio.run(ic.check_domains(domains, testbed_config(timeout=5.0)))
    console.print(f"[bold]{ic.headline(report)}[/]", highlight=False)
    verdicts = Counter(r.verdict for r in report.results)
    console.print(
        f"  {len(report.results)} sites checked in {report.seconds:.1f} s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))
        + " (netvigil check --json for the chains)"
    )
    return 0 if all(s.agrees for s in scores) else 1


if __name__ == "__main__":
    sys.exit(main())
