"""Site-side interception detection measured on real ClientHellos.

    .venv/bin/python benchmarks/bench_sitecheck.py [--json] [--details]

Data: MITMEngine's 1,152 captures (shipped in netvigil/sitecheck/data/mitmengine/) and the live
loopback captures of Debian's Chromium, Firefox ESR, curl, Python, OpenSSL and GnuTLS.
Every hello is paired with a User-Agent for the browser its label names (written in that
browser's real UA format, then parsed by ua-parser like any visitor's), and judged with its
own capture left out of the references (leave-one-out), so no hello is judged against itself.

- Positives: every antivirus and middlebox hello (folders ``antivirus/`` and ``middleboxes/``,
  less the ``-none-`` captures that had no product installed) against the browser in its label.
- Negatives: every browser hello (``browsers/``, the ``-none-`` captures, live Chromium and
  Firefox ESR) against its own browser.
Precision and recall count ``unknown`` as "not flagged".
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from typing import Any

from netvigil.sitecheck.clienthello import ClientHello, parse_client_hello
from netvigil.sitecheck.fingerprint import ja4, ja4_r
from netvigil.sitecheck.ja4check import judge_ja4
from netvigil.sitecheck.reference import ReferenceDB, labelled_records, shipped_observations
from netvigil.sitecheck.verdict import CONSISTENT, LIKELY_INTERCEPTED, UNKNOWN, judge

_LABEL = re.compile(r"-(chrome|firefox|opera|safari|ie|edge)-(\d{1,3})(?:\.(\d+))?", re.IGNORECASE)
_WINDOWS = {"xp": "5.1", "vista": "6.0", "7": "6.1", "8": "6.2", "8.1": "6.3", "10": "10.0"}


def _os_token(label: str) -> str:
    lowered = label.lower()
    if "mac" in lowered or "os_x" in lowered:
        return "Macintosh; Intel Mac OS X 10_11_4"
    for name in ("8.1", "10", "xp", "vista", "8", "7"):
        if f"windows-{name}-" in lowered or f"win-{name}-" in lowered:
            return f"Windows NT {_WINDOWS[name]}"
    return "Windows NT 6.1"


def user_agent_for(label: str) -> str | None:
    """A real-format User-Agent for the browser a capture's label names."""
    match = _LABEL.search(label)
    if match is None:
        return None
    browser, major = match.group(1).lower(), int(match.group(2))
    os_token = _os_token(label)
    if browser == "chrome":
        return (
            f"Mozilla/5.0 ({os_token}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{major}.0.2623.87 Safari/537.36"
        )
    if browser == "opera":
        if major < 15:
            return f"Opera/9.80 ({os_token}) Presto/2.12.388 Version/{major}.00"
        chromium = major + 13
        return (
            f"Mozilla/5.0 ({os_token}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{chromium}.0.2062.94 Safari/537.36 OPR/{major}.0.1558.53"
        )
    if browser == "firefox":
        return f"Mozilla/5.0 ({os_token}; rv:{major}.0) Gecko/20100101 Firefox/{major}.0"
    if browser == "safari":
        minor = match.group(3) or "0"
        return (
            f"Mozilla/5.0 ({os_token}) AppleWebKit/601.5.17 (KHTML, like Gecko) "
            f"Version/{major}.{minor} Safari/601.5.17"
        )
    if browser == "ie":
        if major >= 11:
            return f"Mozilla/5.0 ({os_token}; Trident/7.0; rv:11.0) like Gecko"
        trident = {8: "; Trident/4.0", 9: "; Trident/5.0", 10: "; Trident/6.0"}.get(major, "")
        return f"Mozilla/5.0 (compatible; MSIE {major}.0; {os_token}{trident})"
    if browser == "edge":
        return (
            f"Mozilla/5.0 ({os_token}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/42.0.2311.135 Safari/537.36 Edge/{major}.10136"
        )
    return None


def _role(record: dict[str, Any]) -> str | None:
    label, category = str(record["label"]), str(record.get("category", "live"))
    if label.startswith("live/"):
        return "browser" if record["client"] in ("chromium", "firefox-esr") else None
    if "-none-" in label or category == "browsers":
        return "browser"
    if category in ("antivirus", "middleboxes"):
        return "interception"
    return None


def _live_user_agent(record: dict[str, Any]) -> str | None:
    if record.get("user_agent"):
        return str(record["user_agent"])
    version = re.search(r"(\d+)\.", str(record.get("client_version", "")))
    if record["client"] == "firefox-esr" and version:
        major = version.group(1)
        return f"Mozilla/5.0 (X11; Linux x86_64; rv:{major}.0) Gecko/20100101 Firefox/{major}.0"
    return None


def run(details: bool, source: str = "hello") -> dict[str, Any]:
    shipped_observations()  # parse references outside the timing
    db = ReferenceDB.shipped()
    counts: dict[str, collections.Counter[str]] = {
        "browser": collections.Counter(),
        "interception": collections.Counter(),
    }
    by_family: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    rules: collections.Counter[str] = collections.Counter()
    named = collections.Counter[str]()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    judged = 0
    for record in labelled_records():
        role = _role(record)
        if role is None:
            continue
        label = str(record["label"])
        agent = _live_user_agent(record) if label.startswith("live/") else user_agent_for(label)
        hello = parse_client_hello(bytes.fromhex(str(record["client_hello_record_hex"])))
        if agent is None or not isinstance(hello, ClientHello):
            counts[role]["no-user-agent"] += 1
            continue
        if source == "hello":
            verdict = judge(hello, agent, db, exclude_label=label)
        else:
            # Logs keep only a JA4 or JA4_r: judged with the same leave-one-out.
            text = ja4(hello) if source == "ja4" else ja4_r(hello)
            found, _ = judge_ja4(text, agent, db, exclude_label=label)
            if found is None:
                counts[role]["no-verdict"] += 1
                continue
            verdict = found
        judged += 1
        counts[role][verdict.verdict] += 1
        if role == "browser":
            family = _LABEL.search(label)
            key = family.group(1) if family else str(record.get("client"))
            by_family[key][verdict.verdict] += 1
        else:
            for reason in verdict.reasons:
                rules[reason.rule] += 1
            if verdict.best_match is not None:
                named["named"] += 1
                product = verdict.best_match.name.split("-")[0].lower()
                if product and product in label.lower():
                    named["same-product"] += 1
        if details:
            rows.append(
                {
                    "label": label,
                    "role": role,
                    "verdict": verdict.verdict,
                    "claimed": verdict.claimed,
                    "reasons": [r.rule for r in verdict.reasons],
                    "best_match": verdict.best_match.name if verdict.best_match else None,
                }
            )
    elapsed = time.perf_counter() - started
    positives = counts["interception"]
    negatives = counts["browser"]
    true_positive = positives[LIKELY_INTERCEPTED]
    false_positive = negatives[LIKELY_INTERCEPTED]
    total_positive = sum(positives.values())
    result: dict[str, Any] = {
        "interception_hellos": dict(positives),
        "browser_hellos": dict(negatives),
        "browser_by_family": {k: dict(v) for k, v in sorted(by_family.items())},
        "recall": true_positive / total_positive if total_positive else 0.0,
        "precision": true_positive / (true_positive + false_positive)
        if true_positive + false_positive
        else 0.0,
        "false_positives": false_positive,
        "rules_fired_on_interception": dict(rules.most_common()),
        "best_match_named": named["named"],
        "best_match_same_product": named["same-product"],
        "judged": judged,
        "seconds": round(elapsed, 3),
        "verdicts_per_second": round(judged / elapsed, 1) if elapsed else 0.0,
    }
    if details:
        result["rows"] = rows
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--details", action="store_true", help="one row per judged hello")
    parser.add_argument(
        "--source",
        choices=["hello", "ja4_r", "ja4"],
        default="hello",
        help="judge the whole ClientHello (default) or only what a JA4_r / JA4 log line keeps",
    )
    args = parser.parse_args()
    result = run(args.details, args.source)
    if args.json or args.details:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["CONSISTENT", "UNKNOWN", "run", "user_agent_for"]
