"""`netvigil check`: is my HTTPS being intercepted right now? (and which SNIs, and where)"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

from netvigil import textsafe
from netvigil.experiments import interception_check as ic
from netvigil.experiments import sni_triggers as st
from netvigil.measure import InputError, ensure_consent, probe_config

DESCRIPTION = """\
Is HTTPS being intercepted on this network right now?

For about 120 sites (the 37 names intercepted in Kazakhstan in 2019, the 14 of 2024, large
social and news sites, messaging apps -- Signal, WhatsApp, Telegram, Facebook Messenger -- and
circumvention tools -- the Tor Project, Psiphon, VPN providers) plus any you name and, with
--list CC, the hosts of a country's Citizen Lab test list, netvigil connects with the site's
name (SNI),
captures the whole certificate chain, verifies it against the Mozilla roots (never your
system's store, so a root you were told to install does not hide anything) and compares it
with what an uncensored control sees at the same address.

Exit status: 0 no interception seen, 1 interception, 2 nothing could be checked.

Trigger discovery (IMC 2020's method): --discover-triggers --address IP sends one handshake per
SNI to an address that serves a valid certificate, and lists the SNIs that get a forged one;
--locate then finds the hop where the forged certificate first appears (TTL-limited handshakes).

Examples:
  netvigil testbed run -p kz-2019-interception -- netvigil check
  netvigil check --helper https://helper.example/ www.example.org --json
  netvigil check --helper https://helper.example/ --list kz
  netvigil check --discover-triggers --address 198.19.0.5 --sni-file names.txt --locate
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check",
        help="is my HTTPS being intercepted right now? (forged certificates, which SNIs, where)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "domains", nargs="*", metavar="DOMAIN", help="more names to check (SNIs with --address)"
    )
    p.add_argument(
        "--only",
        action="store_true",
        help="check only the names given (DOMAIN…, --list), not the built-in sets",
    )
    p.add_argument(
        "--list",
        "-l",
        action="append",
        default=[],
        metavar="CC",
        help="also check the hosts of a shipped Citizen Lab test list (kz, ru, ir, cn, by, cis, "
        f"global; at most {ic.MAX_LIST_NAMES} names from each)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument(
        "--evidence", metavar="DIR", help="write every chain (PEM) and the raw results here"
    )
    p.add_argument("--resolver", metavar="IP", help="resolver (default: system, or the testbed's)")
    p.add_argument("--helper", metavar="URL", help="control helper URL (OONI-compatible)")
    p.add_argument(
        "--ca-bundle", metavar="PEM", help="trust anchors (default: certifi's Mozilla roots)"
    )
    p.add_argument(
        "--concurrency", type=int, default=64, help="sites in flight at once (default 64)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per step (default 5)")
    p.add_argument(
        "--consent",
        action="store_true",
        help="I have read the risks: measuring from my network is visible to whoever watches it",
    )
    p.add_argument(
        "--trust-store",
        action="store_true",
        help="audit this machine's trust stores for known interception roots",
    )
    from netvigil.audit import truststore

    truststore.add_arguments(p, json_flag=False)
    g = p.add_argument_group("trigger discovery and localisation")
    g.add_argument(
        "--discover-triggers",
        action="store_true",
        help="which SNIs (DOMAIN… or --sni-file) get a forged certificate from --address",
    )
    g.add_argument("--address", metavar="IP", help="an address that serves a valid certificate")
    g.add_argument("--sni-file", metavar="F", help="SNIs, one per line (# comments)")
    g.add_argument(
        "--locate",
        action="store_true",
        help="find the hop where the forged certificate first appears (TTL 1…--max-ttl)",
    )
    g.add_argument("--max-ttl", type=int, default=8, help="hops to try with --locate (default 8)")


def _names(values: list[str], source: str) -> list[str]:
    out: list[str] = []
    for value in values:
        name = ic.normalize_domain(value)
        if name is None:
            print(
                textsafe.visible(
                    f"netvigil: {source}: '{value[:80]}' is not a host name — skipped"
                ),
                file=sys.stderr,
            )
        else:
            out.append(name)
    return out


def _sni_file(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: no such file — give one SNI per line")
    lines = file.read_text(encoding="utf-8", errors="replace").splitlines()[: st.MAX_SNIS]
    return _names([ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")], path)


def _test_list(code: str) -> ic.TriggerSet:
    """The host names of a shipped Citizen Lab list, read as `measure --list` reads it."""
    from netvigil.measure import gather_inputs

    inputs = gather_inputs([], [], [code])  # an unknown list: InputError naming the known ones
    # one name per host (a list has several URLs of a site; an IP address is not an SNI)
    hosts = list(dict.fromkeys(d for d in map(ic.normalize_domain, inputs.urls) if d))
    if len(hosts) > ic.MAX_LIST_NAMES:
        print(
            f"netvigil: list {code}: {len(hosts):,} host names; checking the first "
            f"{ic.MAX_LIST_NAMES:,} in the list's order (name others as arguments, or measure "
            f"the whole list with 'netvigil measure --list {code}')",
            file=sys.stderr,
        )
        hosts = hosts[: ic.MAX_LIST_NAMES]
    return ic.TriggerSet(f"list {code}", f"Citizen Lab test list '{code}'", tuple(hosts))


def _trust_store(args: Any) -> int:
    from netvigil.audit import truststore

    return truststore.run(args)


def run(args: Any) -> int:
    try:
        return _run(args)
    except InputError as exc:
        print(textsafe.visible(f"netvigil: {exc}"), file=sys.stderr)
        return 2


def _run(args: Any) -> int:
    if args.trust_store:
        return _trust_store(args)
    in_testbed = os.environ.get("NETVIGIL_TESTBED") == "1"
    if not in_testbed:
        ensure_consent(args.consent, sys.stdin.isatty())
    timeout = max(0.5, float(args.timeout))
    config = probe_config(
        ca_bundle=args.ca_bundle,
        resolver=args.resolver,
        helper=args.helper,
        no_doh=True,
        timeout=timeout,
    )
    if args.discover_triggers or args.locate:
        return _discover(args, config.trust, timeout)
    sets = [] if args.only else ic.load_triggers()
    sets += [_test_list(code) for code in dict.fromkeys(c.lower() for c in args.list)]
    named = _names(list(args.domains), "argument")
    if named:
        sets.append(ic.TriggerSet(ic.NAMED_SET, "named on the command line", tuple(named)))
    domains = ic.domains_of(sets)
    if not domains:
        raise InputError("nothing to check — name domains, or leave out --only")
    if config.helper_url is None:
        print(
            "netvigil: no control helper (--helper URL): only chains from known interception "
            "roots can be called interception",
            file=sys.stderr,
        )
    report = asyncio.run(
        ic.check_domains(
            domains, config, concurrency=max(1, args.concurrency), timeout=timeout, sets=sets
        )
    )
    if args.evidence:
        ic.write_evidence(report, args.evidence)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        _print_report(report, args.evidence)
    return report.exit_code


def _print_report(report: ic.CheckReport, evidence: str | None) -> None:
    from rich.table import Table
    from rich.text import Text

    from netvigil.testbed.report import make_console

    # Issuer names, reasons and addresses come from the network (a forged certificate names its
    # issuer as the censor likes): every one is printed as plain text, never as markup.
    console = make_console()
    style = {ic.INTERCEPTED: "bold red", ic.OK: "green", ic.CANNOT_TELL: "yellow"}
    console.print(textsafe.text(ic.headline(report), "bold"))
    table = Table(
        title=Text(f"{len(report.results)} sites checked in {report.seconds:.1f} s"),
        title_justify="left",
    )
    table.add_column("domain")
    table.add_column("verdict")
    table.add_column("address")
    table.add_column("issuer")
    table.add_column("why", overflow="fold")
    order = {ic.INTERCEPTED: 0, ic.CANNOT_TELL: 1, ic.OK: 2}
    for r in sorted(report.results, key=lambda r: (order[r.verdict], r.domain)):
        table.add_row(
            textsafe.text(r.domain),
            Text(r.verdict, style[r.verdict]),
            textsafe.text(r.address or "-"),
            textsafe.text(r.issuer or "-"),
            textsafe.text(r.reason),
        )
    console.print(table)
    if not report.roots_database:
        console.print(Text("  (the known-roots database is not available: issuers are not named)"))
    if evidence:
        console.print(textsafe.text(f"  evidence: {evidence}"))


def _discover(args: Any, trust: Any, timeout: float) -> int:
    if not args.address:
        raise InputError("--discover-triggers and --locate need --address IP")
    try:
        address = str(ipaddress.ip_address(args.address))
    except ValueError:
        raise InputError(f"--address {args.address!r} is not an IP address") from None
    snis = _names(list(args.domains), "argument")
    if args.sni_file:
        snis += _sni_file(args.sni_file)
    if not snis:
        raise InputError("no SNIs — name them (DOMAIN…) or give --sni-file F")
    out: dict[str, Any] = {"address": address}

    async def work() -> None:
        probes = await st.discover(address, snis, trust, timeout=timeout)
        out["snis"] = probes
        triggered = [p.sni for p in probes if p.outcome == st.TRIGGERED]
        out["triggered"] = triggered
        if args.locate and triggered:
            out["location"] = await st.locate(
                address, triggered[0], trust, max_ttl=args.max_ttl, timeout=min(timeout, 3.0)
            )

    asyncio.run(work())
    probes: list[st.SNIProbe] = out["snis"]
    triggered: list[str] = out["triggered"]
    location: st.Location | None = out.get("location")
    usable = [p for p in probes if p.outcome != st.FAILED]
    code = 1 if triggered else 0 if usable else 2
    if args.json:
        doc = {
            "address": address,
            "triggered": triggered,
            "snis": [p.to_json() for p in probes],
            "location": location.to_json() if location else None,
            "exit_code": code,
        }
        print(json.dumps(doc))
        return code
    # SNIs are host names we checked, but summaries and routers come from the network.
    say = textsafe.visible
    print(
        say(
            f"{len(triggered)} of {len(probes)} SNIs trigger interception at {address}"
            + (f": {', '.join(triggered)}" if triggered else ".")
        )
    )
    for outcome in (st.BLOCKED, st.NOT_SERVED, st.FAILED):
        names = [p.sni for p in probes if p.outcome == outcome]
        if names:
            print(say(f"  {outcome}: {', '.join(names[:20])}" + (" …" if len(names) > 20 else "")))
    if location is not None:
        print(say(f"{location.sni}: {location.summary()}."))
        for hop in location.hops:
            router = f" router {hop.router} ({hop.router_icmp})" if hop.router else ""
            print(say(f"  ttl {hop.ttl}: {hop.outcome}{router}"))
    elif args.locate:
        print("Nothing to locate: no SNI triggered interception.")
    return code
