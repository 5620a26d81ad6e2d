"""What each namespace of the testbed is made of, rendered as plain shell and nftables text.

Everything the censor does in the kernel is written out here, in one place, and saved in the
state folder (``setup-<host>.sh``, ``<host>.nft``) so a researcher can read exactly what the
emulated ISP does.
"""

from __future__ import annotations

from netvigil.testbed.plan import (
    BOGUS_DEFAULT,
    CENSOR_CLIENT_IF,
    HOSTS,
    INJECT_DEFAULT,
    LINKS,
    ROUTERS,
    ROUTES,
    SERVICE_ADDRS,
    SERVICE_PORT,
    Plan,
)

# The TPROXY ports of the censor's agents (kept here so nftables and the agents agree).
MIDDLEBOX_TCP_PORT = 15001
INJECTOR_UDP_PORT = 15053
TPROXY_MARK = 1
TPROXY_TABLE = 100
# htb class for throttled traffic on the censor's subscriber-facing interface.
THROTTLE_BASE_CLASS = 10

REJECT_STATEMENTS = {
    "tcp-reset": "reject with tcp reset",
    "icmp-admin-prohibited": "reject with icmp type admin-prohibited",
    "icmp-host-unreachable": "reject with icmp type host-unreachable",
}


def veth_names(index: int) -> tuple[str, str]:
    """Temporary names in the supervisor's namespace; renamed when moved into the hosts."""
    return f"nv{index}l", f"nv{index}r"


def link_commands() -> list[str]:
    """`ip -batch` lines, run in the supervisor's own namespace, that create and place the veths."""
    lines = [f"netns add {host}" for host in HOSTS]
    for index, link in enumerate(LINKS):
        left, right = veth_names(index)
        lines += [
            f"link add name {left} type veth peer name {right}",
            f"link set {left} netns {link.left}",
            f"link set {right} netns {link.right}",
        ]
    return lines


def host_ip_batch(host: str, plan: Plan) -> list[str]:
    """`ip -batch` lines run inside `host`: names, addresses, routes."""
    lines = ["link set lo up"]
    for index, link in enumerate(LINKS):
        left, right = veth_names(index)
        for side, tmp, name, addr in (
            (link.left, left, link.left_if, link.left_addr),
            (link.right, right, link.right_if, link.right_addr),
        ):
            if side == host:
                lines += [
                    f"link set dev {tmp} name {name}",
                    f"addr add {addr}/{link.prefix} dev {name}",
                    f"link set {name} up",
                ]
    for addr in SERVICE_ADDRS.get(host, ()):
        lines.append(f"addr add {addr}/32 dev lo")
    if host == "internet":
        # Every site address is local to `internet`; down sites too (the kernel refuses them).
        for site in plan.sites:
            for addr in site.addresses:
                lines.append(f"addr add {addr}/32 dev lo")
    for prefix, via in ROUTES[host]:
        lines.append(f"route add {prefix} via {via}")
    if host == "censor":
        # TPROXY: marked packets are delivered locally, whatever their destination address.
        lines += [
            f"rule add fwmark {TPROXY_MARK} lookup {TPROXY_TABLE}",
            f"route add local 0.0.0.0/0 dev lo table {TPROXY_TABLE}",
        ]
    return lines


def sysctl_lines(host: str) -> list[str]:
    values = {
        "net/ipv4/conf/all/rp_filter": "0",
        "net/ipv4/conf/default/rp_filter": "0",
        "net/ipv6/conf/all/disable_ipv6": "1",
        "net/ipv6/conf/default/disable_ipv6": "1",
    }
    if host in ROUTERS:
        values["net/ipv4/ip_forward"] = "1"
    return [f"echo {v} > /proc/sys/{k}" for k, v in values.items()]


def _set(addresses: list[str] | tuple[str, ...]) -> str:
    return "{ " + ", ".join(addresses) + " }"


def throttle_classes(plan: Plan) -> dict[str, int]:
    """The htb class of each throttle rule, over every phase (the classes are made once)."""
    rules = [r for r in plan.all_rules if r.stage == "throttle"]
    return {rule.id: THROTTLE_BASE_CLASS + number for number, rule in enumerate(rules)}


def censor_ruleset(plan: Plan) -> str:
    """The censor's nftables: address blocking, diversion to the middlebox, throttling marks.

    For a profile with phases, `plan` is the censor of one phase (``plan.at(…)``); in a
    shutdown phase everything the subscribers send is dropped: forwarded or addressed to the
    censor itself (its resolver, its blockpage server).
    """
    if plan.shutdown:
        return _ruleset([], [], [], [], [f'iifname "{CENSOR_CLIENT_IF}" drop comment "shutdown"'])
    blocked: set[str] = set()
    forward: list[str] = []
    for rule in plan.rules_for("tcp"):
        targets = list(rule.address_targets)
        if not targets:
            continue
        if rule.action == "ip-drop":
            statement = "drop"
        else:
            statement = REJECT_STATEMENTS[str(rule.params.get("reject_with", "tcp-reset"))]
        if statement == "reject with tcp reset":
            forward.append(
                f'iifname "{CENSOR_CLIENT_IF}" ip daddr {_set(targets)} '
                f'meta l4proto tcp {statement} comment "{rule.id}"'
            )
            forward.append(
                f'iifname "{CENSOR_CLIENT_IF}" ip daddr {_set(targets)} drop comment "{rule.id}"'
            )
        else:
            forward.append(
                f'iifname "{CENSOR_CLIENT_IF}" ip daddr {_set(targets)} {statement} comment "{rule.id}"'
            )
        if rule.matcher != "ip":
            blocked.update(targets)
        else:
            blocked.update(a for a in plan.live_site_addresses if _in_any(a, targets))
    # Only flows to live, unblocked sites go through the middlebox: a flow to a dead address
    # must fail exactly as it would without a censor (refused, unreachable), not at the proxy.
    diverted = [a for a in plan.live_site_addresses if a not in blocked]
    # The middlebox sees a port only when a rule may act there (a censor with no SNI rules
    # has no reason to proxy TLS): other flows go through the kernel untouched and fast.
    # Plain HTTP on 443 (Telegram's data centres) is HTTP to the DPI too.
    plain_443 = any(s.plain_on_443 for s in plan.sites)
    ports = sorted(
        ({443} if plan.rules_for("tls") or (plain_443 and plan.rules_for("http")) else set())
        | ({80} if plan.rules_for("http") else set())
    )
    prerouting: list[str] = []
    if diverted and ports:
        prerouting.append(
            f'iifname "{CENSOR_CLIENT_IF}" meta l4proto tcp ip daddr @diverted '
            f"tcp dport {{ {', '.join(map(str, ports))} }} "
            f"tproxy ip to :{MIDDLEBOX_TCP_PORT} meta mark set {TPROXY_MARK} accept"
        )
    if any(r.action == "dns-inject" for r in plan.rules):
        prerouting.append(
            f'iifname "{CENSOR_CLIENT_IF}" meta l4proto udp udp dport 53 '
            f"tproxy ip to :{INJECTOR_UDP_PORT} meta mark set {TPROXY_MARK} accept"
        )
    postrouting: list[str] = []
    classes = throttle_classes(plan)
    for rule in plan.rules_for("throttle"):
        targets = list(rule.address_targets)
        if targets:
            postrouting.append(
                f'oifname "{CENSOR_CLIENT_IF}" ip saddr {_set(targets)} '
                f'meta priority set 1:{classes[rule.id]} comment "{rule.id}"'
            )
    return _ruleset(diverted, prerouting, forward, postrouting, [])


def _ruleset(
    diverted: list[str],
    prerouting: list[str],
    forward: list[str],
    postrouting: list[str],
    cut: list[str],
) -> str:
    """The censor's table; `cut`: statements that drop the subscribers' traffic both where it
    is forwarded and where it reaches the censor itself (a shutdown)."""
    forward = [*cut, *forward]
    out = ["table inet netvigil_censor {"]
    out.append(
        "  set diverted { type ipv4_addr; flags interval; }"
        if not diverted
        else f"  set diverted {{ type ipv4_addr; elements = {_set(diverted)} }}"
    )
    out.append("  chain prerouting { type filter hook prerouting priority mangle; policy accept;")
    out += [f"    {line}" for line in prerouting]
    out.append("  }")
    out.append("  chain forward { type filter hook forward priority filter; policy accept;")
    out += [f"    {line}" for line in forward]
    out.append("  }")
    out.append("  chain postrouting { type filter hook postrouting priority mangle; policy accept;")
    out += [f"    {line}" for line in postrouting]
    out.append("  }")
    out.append("  chain input { type filter hook input priority filter; policy accept;")
    out += [f"    {line}" for line in cut]
    out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def censor_swap(plan: Plan) -> str:
    """An nft script that replaces the censor's table by `plan`'s in one transaction: the
    kernel applies a whole ``nft -f`` file or none of it, so no packet sees a half-made censor."""
    return "table inet netvigil_censor\ndelete table inet netvigil_censor\n" + censor_ruleset(plan)


def _in_any(address: str, cidrs: list[str]) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(c) for c in cidrs)


def internet_ruleset(plan: Plan) -> str:
    """A down site: its address exists but the kernel refuses every connection (RST). So do the
    addresses no site owns (the bogus and injected answers', the services' on other ports than
    their own): the sites server listens on every address, and accepting there only to reset
    would race the client's connect (refused or reset, by timing) — a wrong answer's port is
    closed, deterministically."""
    down = [a for s in plan.sites if s.kind == "down" for a in s.addresses]
    lines = [
        "table inet netvigil_internet {",
        "  chain input { type filter hook input priority filter; policy accept;",
    ]
    if down:
        lines.append(f"    ip daddr {_set(down)} meta l4proto tcp reject with tcp reset")
    nowhere = [a for a in SERVICE_ADDRS["internet"] if a in (BOGUS_DEFAULT, INJECT_DEFAULT)]
    services = [a for a in SERVICE_ADDRS["internet"] if a not in nowhere]
    lines.append(f"    ip daddr {_set(nowhere)} meta l4proto tcp reject with tcp reset")
    lines.append(
        f"    ip daddr {_set(services)} tcp dport != {{ 53, {SERVICE_PORT} }} reject with tcp reset"
    )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def throttle_tc_lines(plan: Plan) -> list[str]:
    """`tc -batch` lines: an htb root whose default class is unlimited, one tbf class per rule.

    The tbf queue holds 1 s of traffic. Deeper queues make the round trip as long as the queue
    (5 s at 5 s), and each loss then waits for a retransmission timer as long: measured at
    32 kbit/s, a lone flow went silent for 4-6 s of a 12 s transfer, which reads as a stall, not
    a throttle; at 1 s it trickles steadily at the set rate (silences under 0.4 s), and what a
    closed connection left queued drains within a second. (This kernel has no sfq/fq_codel to
    share the throttle fairly between flows; the probe measures one URL per host at a time by
    default.)
    """
    rules = [r for r in plan.all_rules if r.stage == "throttle"]
    if not rules:
        return []
    classes = throttle_classes(plan)
    dev = CENSOR_CLIENT_IF
    lines = [
        f"qdisc add dev {dev} root handle 1: htb default 1 r2q 1000",
        f"class add dev {dev} parent 1: classid 1:1 htb rate 10gbit",
    ]
    for rule in rules:
        classid = classes[rule.id]
        rate = str(rule.params.get("rate", "128kbit"))
        lines += [
            f"class add dev {dev} parent 1: classid 1:{classid} htb rate 10gbit",
            f"qdisc add dev {dev} parent 1:{classid} handle {classid}: tbf rate {rate} burst 16kbit latency 1s",
        ]
    return lines


def host_script(host: str, plan: Plan, state_dir: str) -> str:
    """The shell script run inside `host` (via `ip netns exec`) to configure it."""
    lines = ["set -e"]
    lines += sysctl_lines(host)
    lines.append(f"ip -batch {state_dir}/{host}.ip")
    if host == "censor":
        lines.append(f"nft -f {state_dir}/censor.nft")
        if any(r.stage == "throttle" for r in plan.all_rules):
            lines.append(f"tc -batch {state_dir}/censor.tc")
    if host == "internet":
        lines.append(f"nft -f {state_dir}/internet.nft")
    return "\n".join(lines) + "\n"
