"""``netvigil helper``: run an OONI-compatible control helper on a real network."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from netvigil import textsafe
from netvigil.control.policy import AddressPolicy, parse_networks
from netvigil.control.server import HelperConfig, ServerLimits, start_helper

HELP = """\
Run a control helper (OONI web-connectivity test-helper protocol, POST /): an uncensored
vantage point that probes compare their view of a site with.

It connects wherever its clients ask, so it is fenced in: by default only public unicast
addresses on ports 80 and 443 (never private, loopback or link-local space), at most
--max-inflight measurements at once, load shed beyond --max-queue waiting requests.
"""


def _certifi_bundle() -> str | None:
    try:
        import certifi
    except ImportError:
        return None
    return str(certifi.where())


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``helper`` command to the CLI's sub-parsers."""
    default_trust = _certifi_bundle()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "helper",
        help="run an OONI-compatible control helper",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:8080; put a TLS proxy in front for the public)",
    )
    parser.add_argument(
        "--resolver",
        required=True,
        metavar="IP[:PORT]|DOH-URL",
        help="the resolver the helper asks for the measured names: an IP (UDP, port 53), IP:PORT "
        "or an https:// DoH URL. The helper never falls back to the system resolver "
        "or silently to some public resolver — choose one you trust to be uncensored",
    )
    parser.add_argument(
        "--resolver-address",
        metavar="IP",
        help="the DoH server's IP, when the --resolver URL names it by host name",
    )
    parser.add_argument(
        "--trust",
        default=default_trust,
        required=default_trust is None,
        metavar="PEM",
        help="trust anchors for the TLS checks (flag 8, tls_handshake)"
        + (f" (default: certifi's Mozilla bundle, {default_trust})" if default_trust else ""),
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="networks the helper may connect to (repeatable). Default: public unicast only. "
        "Given, it replaces the default entirely (private space included if you list it)",
    )
    parser.add_argument(
        "--max-inflight", type=int, default=64, metavar="N", help="measurements at once (64)"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=256,
        metavar="N",
        help="requests waiting for a slot (256); beyond, 503 with Retry-After at once",
    )
    parser.add_argument("--ipv6", action="store_true", help="also resolve and measure AAAA")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug-level log messages")
    return parser


def _listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port_text)


async def _serve(config: HelperConfig, host: str, port: int) -> None:
    server, bound = await start_helper(config, host, port)
    print(f"control helper listening on {host}:{bound}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await server.stop()


def _raise_fd_limit() -> None:
    """Soft fd limit up to the hard one: each measurement holds a socket per endpoint, and
    thousands of client connections are within the server's bounds (1024 is a common default)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError):
        pass  # not fatal: the server still bounds itself, it may just refuse sooner


def run(args: argparse.Namespace) -> int:
    from netvigil.control.netops import NetvigilOps, ResolverSpec

    # a probe chooses the URLs quoted in log lines: logged as plain text
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        handlers=[textsafe.log_handler("%(asctime)s %(name)s %(levelname)s %(message)s")],
    )
    try:
        host, port = _listen(args.listen)
        resolver = ResolverSpec.parse(args.resolver, doh_address=args.resolver_address)
        if args.max_inflight < 1 or args.max_queue < 0:
            raise ValueError("--max-inflight must be ≥ 1 and --max-queue ≥ 0")
        if not args.trust or not Path(args.trust).is_file():
            raise ValueError(f"--ca-bundle {args.trust!r}: no such PEM file")
        policy = (
            AddressPolicy(networks=parse_networks(args.allow), require_global=False)
            if args.allow
            else AddressPolicy.public()
        )
        ops = NetvigilOps.from_trust_file(resolver, args.trust, also_aaaa=args.ipv6)
    except (ValueError, OSError) as exc:
        print(textsafe.visible(f"netvigil helper: {exc}"), file=sys.stderr)
        return 2
    _raise_fd_limit()
    limits = ServerLimits(max_inflight=args.max_inflight, max_queue=args.max_queue)
    config = HelperConfig(ops=ops, policy=policy, limits=limits)
    try:
        asyncio.run(_serve(config, host, port))
    except OSError as exc:
        print(
            textsafe.visible(f"netvigil helper: cannot listen on {args.listen}: {exc}"),
            file=sys.stderr,
        )
        return 1
    return 0
