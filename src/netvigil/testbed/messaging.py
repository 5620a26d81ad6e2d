"""The testbed's side of the messaging-app experiments: the endpoint override file.

With ``messaging_apps = [...]`` in a profile, the plan gives every endpoint host of those apps a
site (``SitePlan.im_app``) in `internet`, served at its real name by the testbed's resolvers,
sites server (HTTP, HTTPS, and the endpoints' own ports such as WhatsApp's 5222) and PKI. What
the probe cannot learn from DNS comes from the override file written here
(``<state>/im-endpoints.toml``, ``$NETVIGIL_IM_ENDPOINTS``):

- every IP-literal endpoint (Telegram's data centres) mapped to its testbed address, and those
  of apps the profile does not serve to an address where nothing listens: the probe never
  dials a real address from inside the testbed;
- Signal's pinned CA: the testbed's stand-in for it (``pki/signal-ca.pem``);
- Facebook's network (AS32934) as the addresses the testbed serves Facebook's names from.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from netvigil.experiments.im_endpoints import APPS, load_app
from netvigil.testbed import pki
from netvigil.testbed.plan import BOGUS_DEFAULT, Plan

OVERRIDE_FILE = "im-endpoints.toml"
# Where an IP literal of an app the profile does not serve goes: an address of `internet`
# where nothing listens, so a connect is refused at once and nothing leaves the testbed.
UNSERVED = BOGUS_DEFAULT


def override_text(plan: Plan) -> str:
    lines = [
        "# written by the netvigil testbed: where the messaging apps' endpoints are here",
        "[addresses]",
    ]
    for app in APPS:
        for endpoint in load_app(app).endpoints:
            if not endpoint.is_ip_literal:
                continue
            site = plan.site(endpoint.host)
            target = site.addresses[0] if site is not None and site.im_app else UNSERVED
            lines.append(f"{json.dumps(endpoint.host)} = {json.dumps(target)}")
    signal_ca = plan.pki_dir / pki.SIGNAL_CA_FILE
    if "signal" in plan.messaging_apps:
        # inlined when it exists: the file is then whole by itself (``testbed up`` publishes it)
        if signal_ca.is_file():
            pem = signal_ca.read_text(encoding="ascii").strip()
            lines += ["", "[signal]", f"pinned_ca = {json.dumps(pem)}"]
        else:
            lines += ["", "[signal]", f"pinned_ca_file = {json.dumps(str(signal_ca))}"]
    facebook = [str(net) for net in facebook_prefixes(plan)]
    lines += ["", "[facebook_messenger]", f"asn_prefixes = {json.dumps(facebook)}"]
    return "\n".join(_unique(lines)) + "\n"


def facebook_prefixes(plan: Plan) -> tuple[ipaddress.IPv4Network, ...]:
    """Facebook's network in the testbed: the addresses its names are served from."""
    return tuple(
        ipaddress.IPv4Network(f"{a}/32")
        for s in plan.sites
        if s.im_app == "facebook_messenger"
        for a in s.addresses
    )


def _unique(lines: list[str]) -> list[str]:
    """Each IP literal once (an endpoint on two ports is one address)."""
    seen: set[str] = set()
    out: list[str] = []
    for line in lines:
        if line and line in seen:
            continue
        seen.add(line)
        out.append(line)
    return out


def write_override(plan: Plan, state: Path) -> Path:
    path = state / OVERRIDE_FILE
    path.write_text(override_text(plan), encoding="utf-8")
    return path
