"""The testbed supervisor: PID 1 of a private pid + mount + network namespace.

It is started by ``netvigil testbed up|run`` through ``unshare`` (see ``control.py``), so that
whatever happens to it — a crash, kill -9, a lost terminal — the kernel tears down every process,
mount and network namespace it created: nothing is left behind on the host.

Inside, it mounts a private tmpfs on /run (state, /run/netns), points /etc/resolv.conf at the
ISP's resolver, creates the five hosts and their links, configures the censor, starts the agents
and reports ``READY {json}`` on the ready pipe. Then it either runs one command in `client`
(``--run``) or waits for SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from netvigil.testbed import messaging, pki, topology
from netvigil.testbed.plan import (
    CLOCK_FILE,
    HOSTS,
    ISP_RESOLVER,
    STATE_DIR,
    Plan,
    command_environment,
    make_plan,
    testbed_environment,
)
from netvigil.testbed.profile import load_profile

# One process per line: the control helper gets its own, so a measurement burst does not
# compete with the sites in one event loop (two cores: the kernel spreads processes). So does
# the middlebox: forging and terminating a burst of intercepted handshakes keeps its loop busy
# for seconds, and the ISP's resolver, in the same loop, answered so late that the probe
# recorded dns/timeout for names the censor never touched.
AGENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("internet", ("sites", "public-dns")),
    ("internet", ("control-helper",)),
    ("internet", ("collector",)),
    ("censor", ("isp-dns", "blockpage", "injector")),
    ("censor", ("middlebox",)),
)
REQUIRED_TOOLS = ("ip", "nft", "tc", "mount")


class SetupError(RuntimeError):
    """A clear, one-line reason why the testbed cannot come up on this machine."""


@dataclass
class Agent:
    host: str
    process: subprocess.Popen[bytes]


def run(cmd: list[str], what: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        cmd, input=stdin.encode() if stdin else None, capture_output=True, timeout=60
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise SetupError(
            f"{what} failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}"
        )


def preflight() -> None:
    """Check, in this throw-away namespace, every kernel feature the censor relies on."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise SetupError(
            f"missing programs: {', '.join(missing)} — install iproute2 and nftables (see the README)"
        )
    probe_rules = (
        "table inet netvigil_preflight {\n"
        "  chain p { type filter hook prerouting priority mangle; policy accept;\n"
        "    meta l4proto tcp tproxy ip to :1 meta mark set 1 accept\n  }\n"
        "  chain f { type filter hook forward priority filter; policy accept;\n"
        "    meta l4proto tcp reject with tcp reset\n    reject with icmp type admin-prohibited\n  }\n"
        "  chain o { type filter hook postrouting priority mangle; policy accept;\n"
        "    meta priority set 1:10\n  }\n}\n"
    )
    result = subprocess.run(
        ["nft", "-c", "-f", "-"], input=probe_rules.encode(), capture_output=True, timeout=20
    )
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise SetupError(
            "this kernel lacks an nftables feature the censor needs (tproxy, reject or meta priority): "
            + (detail[0] if detail else "nft -c failed")
            + " — use a kernel with nf_tables, nft_tproxy and nft_reject"
        )


def check_veth_and_tc(need_throttle: bool) -> None:
    try:
        run(
            ["ip", "link", "add", "name", "nvpre0", "type", "veth", "peer", "name", "nvpre1"],
            "veth",
        )
    except SetupError as exc:
        raise SetupError(f"{exc} — this kernel lacks veth (CONFIG_VETH)") from None
    try:
        if need_throttle:
            try:
                run(
                    [
                        "tc",
                        "qdisc",
                        "add",
                        "dev",
                        "nvpre0",
                        "root",
                        "handle",
                        "1:",
                        "htb",
                        "default",
                        "1",
                    ],
                    "tc htb",
                )
                run(
                    [
                        "tc",
                        "class",
                        "add",
                        "dev",
                        "nvpre0",
                        "parent",
                        "1:",
                        "classid",
                        "1:2",
                        "htb",
                        "rate",
                        "1mbit",
                    ],
                    "tc htb class",
                )
                run(
                    [
                        "tc",
                        "qdisc",
                        "add",
                        "dev",
                        "nvpre0",
                        "parent",
                        "1:2",
                        "handle",
                        "2:",
                        "tbf",
                        "rate",
                        "64kbit",
                        "burst",
                        "16kbit",
                        "latency",
                        "2s",
                    ],
                    "tc tbf",
                )
            except SetupError as exc:
                raise SetupError(
                    f"{exc} — throttle rules need sch_htb and sch_tbf in the kernel"
                ) from None
    finally:
        subprocess.run(["ip", "link", "del", "nvpre0"], capture_output=True, timeout=10)


def mount_private_run(state: Path) -> None:
    """A tmpfs on /run seen only by this mount namespace: state and /run/netns vanish with us."""
    run(["mount", "--make-rprivate", "/"], "making mounts private")
    run(
        ["mount", "-t", "tmpfs", "-o", "mode=0755,size=256m", "netvigil", "/run"],
        "mounting tmpfs on /run",
    )
    (Path("/run") / "netns").mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    resolv = state / "resolv.conf"
    resolv.write_text(
        f"# netvigil testbed: the ISP's resolver\nnameserver {ISP_RESOLVER}\noptions timeout:2 attempts:2\n"
    )
    # Every process of the testbed, the user's command included, resolves through the ISP.
    if Path("/etc/resolv.conf").exists():
        run(
            ["mount", "--bind", str(resolv), "/etc/resolv.conf"],
            "pointing /etc/resolv.conf at the testbed",
        )


def build_network(plan: Plan, state: Path) -> None:
    (state / "links.ip").write_text("\n".join(topology.link_commands()) + "\n")
    run(["ip", "-batch", str(state / "links.ip")], "creating namespaces and links")
    (state / "censor.nft").write_text(topology.censor_ruleset(plan))
    (state / "internet.nft").write_text(topology.internet_ruleset(plan))
    tc_lines = topology.throttle_tc_lines(plan)
    if tc_lines:
        (state / "censor.tc").write_text("\n".join(tc_lines) + "\n")
    procs = []
    for host in HOSTS:
        (state / f"{host}.ip").write_text("\n".join(topology.host_ip_batch(host, plan)) + "\n")
        script = state / f"setup-{host}.sh"
        script.write_text(topology.host_script(host, plan, str(state)))
        procs.append(
            (
                host,
                subprocess.Popen(
                    ["ip", "netns", "exec", host, "sh", str(script)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                ),
            )
        )
    for host, proc in procs:
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            lines = (err or out).decode(errors="replace").strip().splitlines()
            raise SetupError(
                f"configuring {host} failed: {lines[-1] if lines else 'exit ' + str(proc.returncode)}"
            )


class PhaseSwitcher:
    """Swaps the censor's nftables at each phase's start, by the testbed's clock.

    The agents (ISP resolver, injector, middlebox) read the same clock and consult the phase in
    force themselves; what lives in the kernel (address blocking, diversion to the middlebox,
    the shutdown's drop) is this class's job. Each swap is one nft transaction.
    """

    def __init__(self, plan: Plan, state: Path, started_at: float) -> None:
        self.plan = plan
        self.state = state
        self.started_at = started_at
        self.current = plan.phase_index_at(0.0)  # build_network installed the first phase
        self.log = state / "logs" / "phases.log"

    def _note(self, text: str) -> None:
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(f"{time.time():.3f} {text}\n")

    def tick(self) -> float:
        """Apply the phase in force now if it changed; the seconds until the next start."""
        if not self.plan.phases:
            return 3600.0
        offset = time.time() - self.started_at
        index = self.plan.phase_index_at(offset)
        if index != self.current:
            phase = self.plan.phases[index]
            censor = self.plan.in_phase(phase.name)
            script = self.state / f"censor-{index}-{phase.name}.nft"
            script.write_text(topology.censor_swap(censor))
            try:
                run(["ip", "netns", "exec", "censor", "nft", "-f", str(script)], "phase switch")
                self._note(f"phase {phase.name} in force at +{offset:.3f} s")
            except SetupError as exc:  # keep running: the agents still switch; say it loudly
                self._note(f"phase {phase.name}: nft swap FAILED: {exc}")
            self.current = index
        upcoming = self.plan.next_phase(offset)
        return 3600.0 if upcoming is None else max(0.0, upcoming.start_seconds - offset)


def write_clock(state: Path, started_at: float) -> None:
    """The testbed's start, read by every agent and tool (written whole, then renamed)."""
    partial = state / (CLOCK_FILE + ".partial")
    partial.write_text(json.dumps({"started_at": started_at}))
    partial.replace(state / CLOCK_FILE)


def agent_env(state: Path) -> dict[str, str]:
    return {**os.environ, **testbed_environment(str(state)), "PYTHONUNBUFFERED": "1"}


def start_agents(state: Path) -> list[Agent]:
    logs = state / "logs"
    logs.mkdir(exist_ok=True)
    agents = []
    for host, roles in AGENTS:
        log = open(logs / f"{host}-{roles[0]}.log", "ab")  # noqa: SIM115 - owned by the child for its life
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host,
                sys.executable,
                "-m",
                "netvigil.testbed.agent",
                "--state",
                str(state),
                "--roles",
                ",".join(roles),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env=agent_env(state),
        )
        log.close()
        agents.append(Agent(f"{host}-{roles[0]}", proc))
    deadline = time.monotonic() + 60
    for agent in agents:
        assert agent.process.stdout is not None
        line = _readline_until(agent.process.stdout, deadline)
        if line.strip() != b"READY":
            tail = (
                (logs / f"{agent.host}.log").read_text(errors="replace").strip().splitlines()[-3:]
            )
            raise SetupError(
                f"the {agent.host} agent did not start: {' | '.join(tail) or 'no output'}"
            )
    return agents


def _readline_until(stream: IO[bytes], deadline: float) -> bytes:
    import select

    buffer = b""
    fd = stream.fileno()
    while time.monotonic() < deadline and not buffer.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 256)
        if not chunk:
            break
        buffer += chunk
    return buffer


def stop_agents(agents: list[Agent]) -> None:
    for agent in agents:
        if agent.process.poll() is None:
            agent.process.terminate()
    deadline = time.monotonic() + 3
    for agent in agents:
        try:
            agent.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait(timeout=5)


COMMAND_NOT_FOUND = 127  # what a shell answers for a missing command


def exit_status(returncode: int) -> int:
    """A command killed by signal N ends `testbed run` with 128 + N, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def _say(fd: int | None, message: str) -> None:
    from netvigil import textsafe

    line = (textsafe.visible(message) + "\n").encode(errors="replace")
    if fd is None:
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
    else:
        os.write(fd, line)


def host_pid() -> int:
    """Our pid as the host sees it: /proc is still the host's mount, so /proc/self says it."""
    return int(os.readlink("/proc/self"))


def publish(public_dir_fd: int | None, plan: Plan, state: Path, info: dict[str, object]) -> None:
    """Copy what users outside need (trust anchor, plan) into the host-visible public folder."""
    if public_dir_fd is None:
        return

    def write(name: str, data: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=public_dir_fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    write(pki.WEBPKI_ROOT_FILE, (plan.pki_dir / pki.WEBPKI_ROOT_FILE).read_bytes())
    write("plan.json", plan.to_json().encode())
    write(messaging.OVERRIDE_FILE, (state / messaging.OVERRIDE_FILE).read_bytes())
    for root in plan.national_roots:
        root_ca, _ = pki.national_ca(root)
        write(f"national-root-{root.id}.pem", pki.cert_pem(root_ca.cert))
    write("info.json", json.dumps(info, indent=1).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netvigil.testbed.supervisor")
    parser.add_argument("--profile", required=True)
    parser.add_argument("--public-dir", help="host-visible folder for the trust anchor and plan")
    parser.add_argument("--ready-fd", type=int, help="write READY/ERROR here")
    parser.add_argument(
        "--command-stderr-fd", type=int, help="the user's stderr, for the command's messages"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD to run in client")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    ready = os.fdopen(args.ready_fd, "w") if args.ready_fd is not None else sys.stdout
    stop_requested = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    # PID 1 of a pid namespace ignores signals it has no handler for.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    public_fd = os.open(args.public_dir, os.O_RDONLY | os.O_DIRECTORY) if args.public_dir else None
    agents: list[Agent] = []
    started = time.monotonic()
    try:
        profile = load_profile(args.profile)
        plan = make_plan(profile, state_dir=STATE_DIR)
        preflight()
        check_veth_and_tc(any(r.stage == "throttle" for r in plan.all_rules))
        state = Path(STATE_DIR)
        mount_private_run(state)
        (state / "plan.json").write_text(plan.to_json())
        pki.build_testbed_pki(plan)
        messaging.write_override(plan, state)
        # The network starts with the censor of the first phase (the plan itself without phases).
        build_network(plan.at(0.0), state)
        agents = start_agents(state)
        netns_fds = {host: os.open(f"/run/netns/{host}", os.O_RDONLY) for host in HOSTS}
        pid = host_pid()
        info: dict[str, object] = {
            "profile": plan.profile,
            "host_pid": pid,
            "netns": {host: f"/proc/{pid}/fd/{fd}" for host, fd in netns_fds.items()},
            "state_dir": str(state),
            "sites": len(plan.sites),
            "rules": len(plan.rules),
            "up_seconds": round(time.monotonic() - started, 3),
        }
        # The clock starts when the testbed is ready: phase offsets count from here.
        started_at = time.time()
        write_clock(state, started_at)
        info["started_at"] = started_at
        switcher = PhaseSwitcher(plan, state, started_at)
        publish(public_fd, plan, state, info)
        ready.write("READY " + json.dumps(info) + "\n")
        ready.flush()
        if args.ready_fd is not None:
            ready.close()
        if command:
            env = command_environment(
                dict(os.environ), testbed_environment(str(state), plan.profile, plan.country)
            )
            command_stderr = args.command_stderr_fd
            executable = shutil.which(command[0], path=env["PATH"])
            if executable is None:
                _say(command_stderr, f"netvigil testbed run: command not found: {command[0]}")
                return COMMAND_NOT_FOUND
            child = subprocess.Popen(
                ["ip", "netns", "exec", "client", executable, *command[1:]],
                env=env,
                stderr=command_stderr,
            )
            while child.poll() is None:
                switcher.tick()
                if stop_requested:
                    child.terminate()
                    try:
                        child.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        child.kill()
                    break
                time.sleep(0.05)
            return exit_status(child.wait())
        while not stop_requested:
            if plan.phases:
                # Short sleeps: a signal ends the wait within one, and a phase starts on time.
                time.sleep(min(0.05, switcher.tick()))
            else:
                signal.pause()
        return 0
    except SetupError as exc:
        message = str(exc)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
    finally:
        stop_agents(agents)
        for host in HOSTS:
            subprocess.run(["ip", "netns", "del", host], capture_output=True, timeout=10)
    try:
        ready.write("ERROR " + message.replace("\n", " ") + "\n")
        ready.flush()
    except (BrokenPipeError, ValueError):
        print(message, file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
