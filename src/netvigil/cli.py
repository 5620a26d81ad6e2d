"""The `netvigil` command. Thin: parses arguments and calls the packages that do the work."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from netvigil import __version__

# Start-up: each command's module (and what it imports: rich, cryptography, numpy, starlette,
# pandas…) is imported only when that command runs. For the others the parser holds a stand-in
# with the same name and help line, enough for ``netvigil --help`` and for argparse to say
# which commands exist. The help lines are repeated here; tests/test_startup.py checks them
# against the modules' own parsers. (module, function that adds the parser, help line)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "measure": (
        "netvigil.measure",
        "add_parser",
        "measure websites from this network (OONI web_connectivity)",
    ),
    "check": (
        "netvigil.check_cli",
        "add_parser",
        "is my HTTPS being intercepted right now? (forged certificates, which SNIs, where)",
    ),
    "analyze": (
        "netvigil.verdict.cli",
        "add_parser",
        "verdicts for OONI-format measurements (JSON/JSONL, .gz, '-' for stdin)",
    ),
    "helper": ("netvigil.control.cli", "add_parser", "run an OONI-compatible control helper"),
    "verify": (
        "netvigil.evidence.cli",
        "add_parser",
        "check a measurement and its evidence-log proof offline",
    ),
    "upload": (
        "netvigil.upload.cli",
        "add_parser",
        "send measurements waiting in the local outbox to a collector you choose",
    ),
    "schedule": (
        "netvigil.schedule.cli",
        "add_parser",
        "measure on a schedule: a systemd user timer or cron, results kept until sent",
    ),
    "collector": (
        "netvigil.collector.cli",
        "add_parser",
        "run the measurement collector (HTTP API and evidence log)",
    ),
    "pipeline": (
        "netvigil.pipeline.cli",
        "add_parser",
        "OONI measurements and the collector's store → Parquet tables",
    ),
    "query": (
        "netvigil.pipeline.cli",
        "add_query_parser",
        "ask a pipeline output which domains were blocked, where, when and how",
    ),
    "report": (
        "netvigil.pipeline.cli",
        "add_report_parser",
        "write a self-contained HTML report (timelines, onsets, first/last seen)",
    ),
    "sitecheck": (
        "netvigil.sitecheck.cli",
        "add_parser",
        "site-side detection of intercepted visitors (ClientHello vs User-Agent)",
    ),
    "explorer": (
        "netvigil.explorer.cli",
        "add_parser",
        "browse the pipeline output and the evidence log in a browser",
    ),
}

DESCRIPTION = """\
netvigil measures Internet censorship and says precisely how a site is blocked.

Start with:

  netvigil testbed demo                                    the Kazakhstan 2019 network, emulated
  netvigil testbed run -p kz-2024 -- netvigil measure --list kz
                                                           measure a country list in the testbed
  netvigil check                                           is my HTTPS being intercepted?
  netvigil analyze measurements.jsonl                      verdicts for any OONI-format file
  netvigil pipeline run raw/ -o OUT && netvigil report OUT -o report.html
                                                           OONI's files → Parquet → trends
"""

TESTBED_HELP = """\
An emulated censored network in network namespaces: client → access → censor → transit →
internet. The censor (ISP router, DNS resolver, DPI middlebox) follows a profile: a TOML
file of sites and rules. Nothing in it routes outside 198.18.0.0/15.
"""


def _add_profile(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--profile",
        "-p",
        required=required,
        default=None if required else "kz-2019-interception",
        help="a shipped profile name (see 'netvigil testbed profiles') or a path to a .toml file",
    )


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", default="netvigil", help="which testbed (several may run at once)"
    )


def build_parser(needed: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``needed``: the commands whose real parsers are built (None:
    all of them; the others get a stand-in with their help line, see COMMANDS)."""
    parser = argparse.ArgumentParser(
        prog="netvigil",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"netvigil {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    testbed = commands.add_parser(
        "testbed",
        help="the emulated censored network",
        description=TESTBED_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tb = testbed.add_subparsers(dest="testbed_command", metavar="ACTION")

    p = tb.add_parser("up", help="bring a testbed up in the background")
    _add_profile(p)
    _add_name(p)
    p.add_argument("--json", action="store_true", help="print the testbed's details as JSON")

    p = tb.add_parser("down", help="stop a testbed and remove everything it made")
    _add_name(p)

    p = tb.add_parser("status", help="is a testbed up, with which profile")
    _add_name(p)
    p.add_argument("--json", action="store_true", help="print the testbed's details as JSON")

    p = tb.add_parser(
        "phase", help="the phase in force in a running testbed, and the next (phased profiles)"
    )
    _add_name(p)
    p.add_argument("--json", action="store_true", help="print it as JSON")

    p = tb.add_parser(
        "truth", help="what the censor does to each URL of a profile (no testbed needed)"
    )
    _add_profile(p)
    p.add_argument("--json", action="store_true", help="one JSON object per URL")

    p = tb.add_parser(
        "run",
        help="bring a testbed up, run a command in 'client', tear it down",
        description="Bring a testbed up, run one command in 'client', tear everything down. "
        "The command's output, errors and exit status are passed through unchanged; netvigil "
        "inside is this installation whatever the PATH; a missing command exits 127.",
    )
    _add_profile(p)
    p.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        metavar="-- CMD ...",
        help="the command to run in 'client', after --",
    )

    p = tb.add_parser("exec", help="run a command in a host of a running testbed")
    _add_name(p)
    p.add_argument("--host", default="client", help="client, access, censor, transit or internet")
    p.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        metavar="-- CMD ...",
        help="the command to run, after -- (default: bash)",
    )

    p = tb.add_parser(
        "selftest", help="check from 'client' that the censor does what the profile says"
    )
    _add_profile(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per URL: what the censor was seen to do",
    )

    p = tb.add_parser(
        "demo", help="show the censor of a profile at work (default: kz-2019-interception)"
    )
    _add_profile(p, required=False)
    p.add_argument(
        "--save",
        metavar="FILE",
        help="also write the demo's measurements (OONI JSONL) to FILE, e.g. for the pipeline; "
        "for a profile with phases (the protest-day demo): the folder for its collector log, "
        "pipeline and report (default demo-output/protest)",
    )

    p = tb.add_parser(
        "score", help="measure every URL of a profile with the probe and compare with the truth"
    )
    _add_profile(p)
    p.add_argument(
        "--json", action="store_true", help="one JSON object per URL: truth, verdict, agreement"
    )

    p = tb.add_parser(
        "browse",
        help="headless browsers in 'client' visit sites behind 'netvigil sitecheck front'",
        description="Bring a testbed up; serve each site visited behind 'netvigil sitecheck "
        "front' (in 'internet', where the site is) and visit it with headless Chromium and "
        "Firefox ESR from 'client', whose certificate store trusts the testbed's web PKI and "
        "the profile's national root (as a visitor who installed it). Prints what the site "
        "concluded about each visit next to what the censor did. Without URLs: three names the "
        "censor intercepts and two it does not. Exit status: 0 when every visit reached the "
        "site and was flagged exactly when the censor intercepted it, 1 otherwise, 2 usage.",
    )
    _add_profile(p)
    p.add_argument(
        "--browser",
        default="chromium,firefox",
        help="comma-separated: chromium, firefox (default: both; a missing one is skipped)",
    )
    p.add_argument("--all", action="store_true", help="visit every plain site of the profile")
    p.add_argument("--json", action="store_true", help="one JSON object per visit, then a summary")
    p.add_argument(
        "--netlog-dir",
        metavar="DIR",
        help="keep Chromium's NetLog of each visit in DIR (what the browser negotiated)",
    )
    p.add_argument(
        "--no-front",
        action="store_true",
        help="visit the sites directly, without the front (a baseline: no verdicts)",
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="https:// URLs of the profile's sites")

    p = tb.add_parser("profiles", help="list the shipped profiles")
    p.add_argument("--json", action="store_true", help="one JSON object per profile")

    for name, (module, adder, help_line) in COMMANDS.items():
        if needed is None or name in needed:
            getattr(importlib.import_module(module), adder)(commands)
        else:
            commands.add_parser(name, help=help_line)
    _one_vocabulary(parser)
    return parser


# The same thing has the same name on every command. (command, dest) → the spellings shown, then
# the old ones that keep working but are not shown. Applied here, after every command has added
# its options, so this table is the one place that says what the CLI's words are.
VOCABULARY: dict[tuple[tuple[str, ...], str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    (("helper",), "trust"): (("--ca-bundle",), ("--trust",)),
    (("pipeline", "run"), "out"): (("-o", "--output"), ("--out",)),
    (("pipeline", "generate"), "out"): (("-o", "--output"), ("--out",)),
    (("report",), "html"): (("-o", "--output"), ("--html",)),
    (("pipeline", "run"), "workers"): (("-j", "--jobs"), ("--workers",)),
    (("pipeline", "generate"), "workers"): (("-j", "--jobs"), ("--workers",)),
}

# An example in every command's help (a command may set its own epilog instead).
EXAMPLES: dict[tuple[str, ...], str] = {
    (): "netvigil testbed run -p kz-2024 -- netvigil measure --list kz",
    (
        "testbed",
    ): "netvigil testbed demo\nnetvigil testbed run -p clean -- netvigil measure --list kz",
    ("testbed", "up"): "netvigil testbed up -p kz-2024 --name kz",
    ("testbed", "down"): "netvigil testbed down --name kz",
    ("testbed", "status"): "netvigil testbed status --name kz --json",
    ("testbed", "truth"): "netvigil testbed truth -p kz-2024 --json",
    ("testbed", "phase"): "netvigil testbed phase --name kz22",
    ("testbed", "run"): "netvigil testbed run -p kz-2024 -- netvigil measure --list kz\n"
    "netvigil testbed run -p kz-2019-interception -- netvigil check",
    ("testbed", "exec"): "netvigil testbed exec --name kz -- dig www.example.org\n"
    "netvigil testbed exec --name kz --host censor -- nft list ruleset",
    ("testbed", "selftest"): "netvigil testbed selftest -p all-techniques",
    ("testbed", "demo"): "netvigil testbed demo -p kz-2019-interception --save kz.jsonl",
    ("testbed", "score"): "netvigil testbed score -p kz-2024 --json",
    ("testbed", "profiles"): "netvigil testbed profiles --json",
    ("testbed", "browse"): "netvigil testbed browse -p kz-2019-interception --browser chromium",
    ("measure",): "netvigil measure https://www.example.org/ --helper https://helper.example/\n"
    "netvigil measure -f urls.txt -o out.jsonl --helper https://helper.example/",
    ("check",): "netvigil check --helper https://helper.example/ --list kz\n"
    "netvigil check --trust-store",
    ("analyze",): "netvigil analyze measurements.jsonl.gz\nnetvigil analyze --json m.json",
    ("helper",): "netvigil helper --resolver 9.9.9.9 --listen 127.0.0.1:8080",
    ("verify",): "netvigil verify m.json --tree-head head.json --log-key log.pub.pem",
    ("upload",): "netvigil upload --collector https://collector.example/ --remember",
    ("schedule",): "netvigil schedule install --every 6h --list kz --consent\n"
    "netvigil schedule status",
    ("schedule", "install"): "netvigil schedule install --every 6h --suite all --list kz "
    "--upload https://collector.example/",
    ("schedule", "run"): "netvigil schedule run --json",
    ("schedule", "loop"): "netvigil schedule loop --every 30s --count 10 --list kz --upload",
    ("schedule", "status"): "netvigil schedule status --json",
    ("schedule", "remove"): "netvigil schedule remove",
    ("collector",): "netvigil collector --data /var/lib/netvigil --listen 127.0.0.1:8480",
    ("pipeline",): "netvigil pipeline run ooni-data/raw/ -o kz\n"
    "netvigil pipeline generate -o gen --count 10000 --days 7",
    ("pipeline", "run"): "netvigil pipeline run ooni-data/raw/ my-measurements.jsonl -o kz -j 2",
    ("pipeline", "generate"): "netvigil pipeline generate -o gen --count 10000 --days 21 "
    "--event KZ:9:facebook.com:tls",
    ("query",): "netvigil query kz --cc KZ --since 2024-01-01\nnetvigil query kz --what events",
    ("report",): "netvigil report kz --cc KZ -o kz.html",
}

EXIT_STATUS = "exit status: 0 ok, 1 findings or failure, 2 usage error or bad input"


def _one_vocabulary(root: argparse.ArgumentParser) -> None:
    from netvigil.cliformat import HelpFormatter, hide_aliases, subcommands

    parsers = dict(subcommands(root))
    for (path, dest), (shown, old) in VOCABULARY.items():
        parser = parsers.get(path)
        if parser is None:
            continue  # a command this run did not build (a stand-in carrying its help line)
        action = next((a for a in parser._actions if a.dest == dest and a.option_strings), None)
        if action is None:
            continue  # likewise: the stand-in has no options
        spellings = list(dict.fromkeys((*shown, *action.option_strings, *old)))
        for spelling in spellings:
            other = parser._option_string_actions.get(spelling)
            if other is not None and other is not action:
                raise ValueError(f"{' '.join(path)}: {spelling} already means {other.dest}")
            parser._option_string_actions[spelling] = action
        action.option_strings = spellings
        hide_aliases(action, *(s for s in spellings if s not in shown))
    for path, parser in parsers.items():
        parser.formatter_class = HelpFormatter
        if parser.epilog is not None:
            continue
        # A command whose description already gives an example or its exit status keeps it.
        said = (parser.description or "").lower()
        parts = []
        if "example" not in said and path in EXAMPLES:
            lines = "\n".join(f"  {line}" for line in EXAMPLES[path].splitlines())
            parts.append(f"example:\n{lines}")
        if "exit status" not in said:
            parts.append(EXIT_STATUS)
        parser.epilog = "\n\n".join(parts)


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (the top-level
    options, --help and --version, take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors reported as one line (imported only when an error is being handled)."""
    from netvigil.measure import InputError
    from netvigil.testbed.control import TestbedError
    from netvigil.testbed.profile import ProfileError

    return (ProfileError, TestbedError, InputError)


def _strip_dashes(cmd: Sequence[str]) -> list[str]:
    cmd = list(cmd)
    return cmd[1:] if cmd[:1] == ["--"] else cmd


def _testbed(args: argparse.Namespace) -> int:
    from netvigil import textsafe
    from netvigil.testbed import control
    from netvigil.testbed.plan import make_plan
    from netvigil.testbed.profile import builtin_profiles, load_profile
    from netvigil.testbed.truth import ground_truth

    # Profiles (names, descriptions, sites) are files anyone can hand over: plain text only.
    say = textsafe.visible
    action = args.testbed_command
    if action == "profiles":
        for name in builtin_profiles():
            profile = load_profile(name)
            if args.json:
                print(
                    json.dumps(
                        {
                            "name": name,
                            "description": profile.description,
                            "sites": len(profile.sites),
                            "rules": len(profile.rules),
                        }
                    )
                )
                continue
            print(
                say(
                    f"{name:24} {len(profile.sites):4} sites {len(profile.rules):3} rules  "
                    f"{profile.description}"
                )
            )
        return 0
    if action == "truth":
        from netvigil.testbed.truth import phase_truth

        plan = make_plan(load_profile(args.profile))
        # One truth per phase (a profile without phases has one, as before).
        for name, start, rows in phase_truth(plan):
            if args.json:
                for row in rows:
                    print(json.dumps(row.to_dict()))
                continue
            from netvigil.testbed.report import print_truth

            if name:
                censor = plan.in_phase(name)
                described = next(p.description for p in plan.phases if p.name == name)
                print()
                print(say(f"phase {name} from +{start:g} s: {described}"))
                if censor.shutdown:
                    print(say("  shutdown: the subscriber reaches nothing (network/offline)"))
                    continue
                print_truth(censor, rows)
            else:
                print_truth(plan, rows)
        return 0
    if action == "up":
        info = control.up(args.profile, args.name)
        if args.json:
            print(
                json.dumps(
                    {
                        "name": info.name,
                        "profile": info.profile,
                        "pid": info.host_pid,
                        "trust_anchor": str(info.trust_anchor),
                        "up_seconds": info.up_seconds,
                    }
                )
            )
        else:
            print(
                say(
                    f"testbed '{info.name}' is up with profile {info.profile} in "
                    f"{info.up_seconds:.2f} s (supervisor pid {info.host_pid})."
                )
            )
            print(say(f"  trust anchor (testbed web PKI): {info.trust_anchor}"))
            print(say(f"  enter it:  netvigil testbed exec --name {info.name} -- bash"))
            print(say(f"  stop it:   netvigil testbed down --name {info.name}"))
        return 0
    if action == "down":
        was_up = control.down(args.name)
        print(say(f"testbed '{args.name}' " + ("stopped." if was_up else "was not running.")))
        return 0
    if action == "status":
        found = control.status(args.name)
        if args.json:
            print(
                json.dumps(
                    None
                    if found is None
                    else {
                        "name": found.name,
                        "profile": found.profile,
                        "pid": found.host_pid,
                        "hosts": sorted(found.netns),
                        "trust_anchor": str(found.trust_anchor),
                    }
                )
            )
        elif found is None:
            print(say(f"testbed '{args.name}' is not running."))
        else:
            print(
                say(
                    f"testbed '{found.name}' is up: profile {found.profile}, "
                    f"supervisor pid {found.host_pid}, hosts {', '.join(sorted(found.netns))}."
                )
            )
            phase = control.phase_status(found)
            if phase is not None:
                print(say("  " + control.phase_line(phase)))
        return 0 if found is not None else 1
    if action == "phase":
        found = control.status(args.name)
        if found is None:
            raise control.TestbedError(
                f"testbed '{args.name}' is not running — start it with 'netvigil testbed up --profile P'"
            )
        phase = control.phase_status(found)
        if args.json:
            print(json.dumps(phase))
        elif phase is None:
            print(say(f"testbed '{found.name}' (profile {found.profile}) has no phases."))
        else:
            print(say(control.phase_line(phase)))
        return 0
    if action == "run":
        return control.run(args.profile, _strip_dashes(args.cmd), name=f"run-{os.getpid()}")
    if action == "exec":
        found = control.status(args.name)
        if found is None:
            raise control.TestbedError(
                f"testbed '{args.name}' is not running — start it with 'netvigil testbed up --profile P'"
            )
        cmd = _strip_dashes(args.cmd) or ["bash"]
        return control.exec_command(found, args.host, cmd).returncode
    if action == "selftest":
        cmd = [sys.executable, "-m", "netvigil.testbed.observe"] + (["--json"] if args.json else [])
        return control.run(args.profile, cmd, name=f"selftest-{os.getpid()}")
    if action == "score":
        cmd = [sys.executable, "-m", "netvigil.testbed.score"] + (["--json"] if args.json else [])
        return control.run(args.profile, cmd, name=f"score-{os.getpid()}")
    if action == "browse":
        cmd = [sys.executable, "-m", "netvigil.testbed.browse", "--browser", args.browser]
        cmd += ["--all"] if args.all else []
        cmd += ["--json"] if args.json else []
        cmd += ["--no-front"] if args.no_front else []
        if args.netlog_dir:
            cmd += ["--netlog-dir", str(Path(args.netlog_dir).resolve())]
        return control.run(args.profile, [*cmd, "--", *args.urls], name=f"browse-{os.getpid()}")
    if action == "demo":
        from collections import Counter

        from rich.text import Text

        from netvigil.testbed.report import make_console

        plan = make_plan(load_profile(args.profile))
        if plan.phases:
            from netvigil.testbed.protest import run_protest_demo

            return run_protest_demo(args.profile, plan, Path(args.save or "demo-output/protest"))
        console = make_console()
        console.rule(textsafe.text(f"netvigil testbed: {args.profile}", "bold"))
        console.print(textsafe.text(plan.description.strip(), multiline=True))
        counts = Counter(row.outcome for row in ground_truth(plan))
        console.print(
            textsafe.text(
                "What the emulated censor does to the profile's URLs "
                "(netvigil testbed truth lists them): "
                + ", ".join(f"{outcome} {n}" for outcome, n in sorted(counts.items()))
            )
        )
        console.rule(
            Text("Bringing the emulated network up; the probe measures from 'client'", "bold")
        )
        cmd = [sys.executable, "-m", "netvigil.testbed.demo"]
        if args.save:
            cmd += ["--save", str(Path(args.save).resolve())]
        return control.run(args.profile, cmd, name=f"demo-{os.getpid()}")
    raise control.TestbedError(
        "choose an action: up, down, status, phase, truth, run, exec, selftest, score, demo, "
        "browse, profiles"
    )


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool whose reader went away


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A reader that goes away (``netvigil … | head -1``) ends it quietly with
    141, like other Unix tools, whichever command was printing."""
    try:
        try:
            status = _run_command(sys.argv[1:] if argv is None else list(argv))
        except SystemExit:  # argparse after --help or a usage error
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # inside the try: a small output is written only here
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests): nothing to flush
        pass


def _run_command(words: list[str]) -> int:
    parser = build_parser(needed={_command_of(words) or ""} & COMMANDS.keys())
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command in ("testbed", "pipeline", "schedule") and (
            getattr(args, f"{args.command}_command", None) is None
        ):
            # An action is missing: a usage error, like a missing argument (exit 2), with the
            # command's help so the user sees the actions.
            from netvigil.cliformat import subcommands

            dict(subcommands(parser))[(args.command,)].print_help()
            return 2
        if args.command == "testbed":
            return _testbed(args)
        if args.command == "measure":
            from netvigil import measure

            return measure.run(args)
        if args.command == "check":
            from netvigil import check_cli

            return check_cli.run(args)
        if args.command == "analyze":
            from netvigil.verdict import cli as verdict_cli

            return verdict_cli.run(args)
        if args.command == "upload":
            from netvigil.upload import cli as upload_cli

            return upload_cli.run(args)
        if args.command == "schedule":
            from netvigil.schedule import cli as schedule_cli

            return schedule_cli.run(args)
        if args.command == "collector":
            from netvigil.collector import cli as collector_cli

            return collector_cli.run(args)
        if args.command == "verify":
            from netvigil.evidence import cli as evidence_cli

            return evidence_cli.run(args)
        if args.command in ("pipeline", "query", "report"):
            return int(args.func(args))
        if args.command == "explorer":
            from netvigil.explorer import cli as explorer_cli

            return explorer_cli.run(args)
        if args.command == "helper":
            from netvigil.control import cli as control_cli

            return control_cli.run(args)
        if args.command == "sitecheck":
            from netvigil.sitecheck import cli as sitecheck_cli

            return sitecheck_cli.run(args)
    except _user_errors() as exc:
        from netvigil import textsafe

        print(textsafe.visible(f"netvigil: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netvigil: interrupted", file=sys.stderr)
        return 130
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
