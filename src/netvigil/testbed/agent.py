"""An agent: one process inside one testbed namespace that runs some of the testbed's servers.

The supervisor starts ``python -m netvigil.testbed.agent --state DIR --roles a,b`` inside a
namespace (``ip netns exec``). The agent loads the plan, starts each role, prints ``READY`` on
stdout once every role listens, and runs until SIGTERM.

A role is an async function ``start(plan) -> Stop`` that binds its sockets, starts serving in
the background and returns a coroutine function that stops it. Roles:

    sites       (internet) HTTP :80 and HTTPS :443 for every site
    public-dns  (internet) the uncensored public resolver
    isp-dns     (censor)   the ISP's resolver, which applies the dns-* rules
    blockpage   (censor)   the ISP's blockpage / warning server
    middlebox   (censor)   transparent TCP proxy: SNI and HTTP rules, TLS interception
    injector    (censor)   on-path DNS injection (dns-inject rules)
    control-helper (internet) the OONI-compatible control helper (uncensored vantage point)
    collector   (internet) the measurement collector and evidence log
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from netvigil.testbed.plan import Plan

Stop = Callable[[], Awaitable[None]]
Role = Callable[[Plan], Awaitable[Stop]]

ROLE_MODULES = {
    "sites": ("netvigil.testbed.sites", "start_sites"),
    "public-dns": ("netvigil.testbed.dns_servers", "start_public_resolver"),
    "isp-dns": ("netvigil.testbed.dns_servers", "start_isp_resolver"),
    "blockpage": ("netvigil.testbed.sites", "start_blockpage_server"),
    "middlebox": ("netvigil.testbed.middlebox", "start_middlebox"),
    "injector": ("netvigil.testbed.dns_servers", "start_injector"),
    "control-helper": ("netvigil.control.server", "start_control_helper"),
    "collector": ("netvigil.collector.testbed_role", "start_collector"),
}


def load_role(name: str) -> Role:
    module_name, attr = ROLE_MODULES[name]
    role: Role = getattr(importlib.import_module(module_name), attr)
    return role


async def run(plan: Plan, roles: list[str]) -> None:
    stops: list[Stop] = []
    for name in roles:
        stops.append(await load_role(name)(plan))
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print("READY", flush=True)
    await done.wait()
    for stop in stops:
        try:
            await asyncio.wait_for(stop(), timeout=2)
        except Exception:
            logging.getLogger(__name__).exception("stopping a role failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netvigil.testbed.agent")
    parser.add_argument("--state", required=True, help="the testbed's state folder")
    parser.add_argument("--roles", required=True, help="comma-separated roles")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    roles = [r for r in args.roles.split(",") if r]
    unknown = [r for r in roles if r not in ROLE_MODULES]
    if unknown:
        print(f"unknown role(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    plan = Plan.load(args.state)
    asyncio.run(run(plan, roles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
