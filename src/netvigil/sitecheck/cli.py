"""``netvigil sitecheck``: is a site's visitors' HTTPS intercepted? (the site-side view)"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from netvigil import textsafe


def _visible(text: object) -> str:
    """Untrusted text (a User-Agent, a log's field, an error) as one line of plain text."""
    return textsafe.visible(str(text))


HELP = """\
Site-side interception detection: a site compares each visitor's TLS ClientHello with what
the browser named by its User-Agent sends. See docs/site-side-detection.md.

Actions: hello (one ClientHello), logs (a log with ClientHello or JA4 + User-Agent), front
(terminate TLS, add X-Netvigil-TLS-* headers for the site).
"""

EXAMPLES = """\
Examples:
  netvigil sitecheck logs access.jsonl --json
  netvigil sitecheck hello 16030100c8010000c4... --user-agent "Mozilla/5.0 ..."
  netvigil sitecheck front --listen 127.0.0.1:8443 --cert site.pem --key site.key --upstream http://127.0.0.1:8080

exit status: 0 done (the verdicts are in the output), 2 usage error or bad input
"""


def _epilog(example: str) -> str:
    return (
        f"Example:\n  {example}\n\n"
        "exit status: 0 done (the verdicts are in the output), 2 usage error or bad input\n"
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sitecheck",
        help="site-side detection of intercepted visitors (ClientHello vs User-Agent)",
        description=HELP,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="sitecheck_command", metavar="ACTION")
    hello = actions.add_parser(
        "hello",
        help="judge one ClientHello (hex or base64)",
        epilog=_epilog(
            'netvigil sitecheck hello 16030100c8010000c4... --user-agent "Mozilla/5.0 ..."'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hello.add_argument("client_hello", help="the TLS record(s) of a ClientHello, hex or base64")
    hello.add_argument("--user-agent", "-A", required=True, help="the User-Agent it sent")
    hello.add_argument("--json", action="store_true", help="print the verdict as JSON")
    logs = actions.add_parser(
        "logs",
        help="verdicts and per-network/hour aggregates over JSON lines or CSV logs",
        description="Fields (case-insensitive): client_hello (hex/base64) or ja4 / ja4_r, "
        "user_agent, and optionally time and client_ip (kept only as a /24 or /48 prefix).",
        epilog=_epilog("netvigil sitecheck logs access.jsonl --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs.add_argument("file", type=Path, help="JSON lines or CSV; '-' for standard input")
    logs.add_argument("--json", action="store_true", help="print the report as JSON")
    logs.add_argument("--rows", action="store_true", help="print one JSON verdict per line")
    logs.add_argument(
        "--prometheus", action="store_true", help="print the counts as Prometheus metrics"
    )
    logs.add_argument("--max-rows", type=int, default=None, help="stop after this many lines")
    logs.add_argument(
        "--asn-db",
        type=Path,
        default=None,
        help="a MaxMind-format ASN database (e.g. GeoLite2-ASN.mmdb): aggregate per ASN",
    )
    front = actions.add_parser(
        "front",
        help="TLS-terminating front: peeks each ClientHello, forwards with X-Netvigil-TLS-*",
        epilog=_epilog(
            "netvigil sitecheck front --listen 127.0.0.1:8443 --cert site.pem --key site.key "
            "--upstream http://127.0.0.1:8080"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    front.add_argument("--listen", required=True, help="HOST:PORT to accept TLS on")
    front.add_argument("--cert", required=True, help="PEM certificate chain of the site")
    front.add_argument("--key", required=True, help="PEM private key of the site")
    front.add_argument("--upstream", required=True, help="http://HOST:PORT of the site itself")
    front.add_argument(
        "--log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append one JSON line per judged connection (verdict, fingerprints, ClientHello, "
        "User-Agent, the client's /24 or /48 only); 'netvigil sitecheck logs FILE' reads it",
    )


def _print_verdict(verdict: dict[str, Any]) -> None:
    print(f"verdict: {verdict['verdict']}")
    print(f"claimed: {_visible(verdict['claimed'] or 'no known browser')}")
    for reason in verdict["reasons"]:
        print(f"  - {reason['rule']}: {_visible(reason['detail'])}")
    match = verdict.get("best_match")
    if match:
        print(f"looks like: {_visible(match['name'])} (similarity {match['score']})")
    for key in ("ja4", "ja3", "family"):
        if verdict.get(key):
            print(f"{key}: {_visible(verdict[key])}")
    for note in verdict.get("notes", []):
        print(f"note: {_visible(note)}")


def _hello(args: argparse.Namespace) -> int:
    from netvigil.sitecheck.clienthello import ClientHello, parse_client_hello
    from netvigil.sitecheck.logs import decode_client_hello
    from netvigil.sitecheck.verdict import judge

    data = decode_client_hello(args.client_hello)
    if data is None:
        print("netvigil sitecheck: the ClientHello is neither hex nor base64", file=sys.stderr)
        return 2
    hello = parse_client_hello(data)
    if not isinstance(hello, ClientHello):
        print(f"netvigil sitecheck: not a ClientHello: {hello.reason}", file=sys.stderr)
        return 2
    verdict = judge(hello, args.user_agent).to_json()
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        _print_verdict(verdict)
    return 0


def _logs(args: argparse.Namespace) -> int:
    from netvigil.sitecheck.logs import Report, analyse
    from netvigil.sitecheck.mmdb import MMDBError, MMDBReader

    asn_db = None
    if args.asn_db is not None:
        try:
            asn_db = MMDBReader(args.asn_db)
        except (OSError, MMDBError) as exc:
            print(f"netvigil sitecheck: --asn-db: {_visible(exc)}", file=sys.stderr)
            return 2
    report = Report()
    path: Path = args.file
    try:
        stream = (
            sys.stdin
            if str(path) == "-"
            else path.open(encoding="utf-8", errors="replace", newline="")
        )
    except OSError as exc:
        print(f"netvigil sitecheck: cannot read {_visible(path)}: {exc.strerror}", file=sys.stderr)
        return 2
    with stream:
        for row in analyse(stream, max_rows=args.max_rows, asn_db=asn_db):
            report.add(row)
            if args.rows:
                print(json.dumps(row.to_json(), sort_keys=True))
    if args.rows:
        return 0
    if args.prometheus:
        from netvigil.sitecheck.logs import to_prometheus

        print(to_prometheus(report), end="")
        return 0
    summary = report.to_json()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"lines: {summary['rows']}  errors: {summary['errors']}")
    for name, count in sorted(summary["verdicts"].items()):
        print(f"  {name}: {count}")
    if summary["rules"]:
        print("rules fired: " + ", ".join(f"{k} {v}" for k, v in summary["rules"].items()))
    flagged = [n for n in summary["networks"] if n["intercepted"]]
    if flagged:
        print("networks with likely-intercepted visits (prefix, hour, share, looks like):")
        for network in sorted(flagged, key=lambda n: -n["intercepted_share"])[:20]:
            products = ", ".join(_visible(p) for p in network["products"]) or "-"
            print(
                f"  {network['prefix']}  {network['hour']}  "
                f"{network['intercepted']}/{network['visits']} "
                f"({network['intercepted_share']:.0%})  {products}"
            )
    for onset in summary["onsets"]:
        print(
            f"onset: {onset['prefix']} at {onset['hour']}: {onset['intercepted']}/"
            f"{onset['visits']} intercepted (baseline {onset['baseline_share']:.0%}, "
            f"p={onset['p_value']:.2g})"
        )
    return 0


def _front(args: argparse.Namespace) -> int:
    import asyncio
    import ssl

    from netvigil.sitecheck.front import Front, server_context

    host, _, port = str(args.listen).rpartition(":")
    if not host or not port.isdigit():
        print("netvigil sitecheck: --listen must be HOST:PORT", file=sys.stderr)
        return 2
    log: IO[str] | None = None
    try:
        context = server_context(args.cert, args.key)
        if args.log is not None:
            log = args.log.open("a", encoding="utf-8")
        front = Front(
            (host.strip("[]"), int(port)),
            context,
            args.upstream,
            on_record=None if log is None else _line_writer(log),
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        print(f"netvigil sitecheck: {_visible(exc)}", file=sys.stderr)
        return 2

    def listening() -> None:
        # Said once the socket listens: a script (the testbed's browse) waits for this line.
        print(
            f"netvigil sitecheck front: {_visible(args.listen)} -> {_visible(args.upstream)}",
            flush=True,
        )

    try:
        asyncio.run(front.serve(listening))
    except OSError as exc:
        print(f"netvigil sitecheck: {_visible(exc)}", file=sys.stderr)
        return 2
    finally:
        if log is not None:
            log.close()
    return 0


def _line_writer(log: IO[str]) -> Callable[[dict[str, object]], None]:
    def write(record: dict[str, object]) -> None:
        # One line per connection, flushed: a reader (or a crash) never sees half a record.
        log.write(json.dumps(record, sort_keys=True) + "\n")
        log.flush()

    return write


def run(args: argparse.Namespace) -> int:
    if args.sitecheck_command == "hello":
        return _hello(args)
    if args.sitecheck_command == "logs":
        return _logs(args)
    if args.sitecheck_command == "front":
        return _front(args)
    print(HELP)
    return 2
