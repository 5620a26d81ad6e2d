"""One vocabulary for the CLI: the same names for the same things, help and an example everywhere."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from netvigil.cli import build_parser, main
from netvigil.cliformat import hidden_aliases, plain, subcommands

PARSER = build_parser()
COMMANDS = dict(subcommands(PARSER))
IDS = [" ".join(path) or "netvigil" for path in COMMANDS]


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]


def shown(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in options(parser) for s in a.option_strings if s not in hidden_aliases(a)}


@pytest.mark.parametrize("path", COMMANDS, ids=IDS)
def test_every_command_has_help_for_each_option_an_example_and_its_exit_status(
    path: tuple[str, ...],
) -> None:
    parser = COMMANDS[path]
    undocumented = [a.dest for a in options(parser) if not a.help]
    assert not undocumented, f"options without help: {undocumented}"
    text = parser.format_help()
    assert "`" not in text, "raw reStructuredText in the help"
    assert re.search(r"(?im)^examples?:?\s*\n\s+netvigil ", text), "no example"
    assert "exit status" in text.lower()


@pytest.mark.parametrize("path", COMMANDS, ids=IDS)
def test_every_example_in_the_help_parses(path: tuple[str, ...]) -> None:
    text = COMMANDS[path].format_help()
    examples = re.findall(r"(?m)^\s+(netvigil (?:\S.*))$", text.split("example", 1)[-1])
    assert examples
    for example in examples:
        argv = shlex.split(example.split("  ")[0])[1:]
        if "&&" in argv:
            argv = argv[: argv.index("&&")]
        try:
            PARSER.parse_args(argv)
        except SystemExit as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{example!r} does not parse (exit {exc.code})")


def test_the_same_thing_has_the_same_name() -> None:
    for path, parser in COMMANDS.items():
        assert "--trust" not in shown(parser), path
        assert "--out" not in shown(parser) and "--workers" not in shown(parser), path
    for path in [("measure",), ("check",), ("helper",)]:
        assert "--ca-bundle" in shown(COMMANDS[path]), path
    for path in [("measure",), ("pipeline", "run"), ("pipeline", "generate"), ("report",)]:
        assert {"-o", "--output"} <= shown(COMMANDS[path]), path
    for path in [("pipeline", "run"), ("pipeline", "generate")]:
        assert {"-j", "--jobs"} <= shown(COMMANDS[path]), path
    json_commands = [
        ("testbed", "up"),
        ("testbed", "status"),
        ("testbed", "truth"),
        ("testbed", "selftest"),
        ("testbed", "score"),
        ("testbed", "profiles"),
        ("measure",),
        ("check",),
        ("analyze",),
        ("verify",),
        ("upload",),
        ("pipeline", "run"),
        ("pipeline", "generate"),
        ("query",),
    ]
    for path in json_commands:
        assert "--json" in shown(COMMANDS[path]), path


def test_old_spellings_still_work_but_are_not_shown() -> None:
    old = PARSER.parse_args(["helper", "--resolver", "127.0.0.1", "--trust", "x.pem"])
    new = PARSER.parse_args(["helper", "--resolver", "127.0.0.1", "--ca-bundle", "x.pem"])
    assert old.trust == new.trust == "x.pem"
    assert "--trust" not in COMMANDS[("helper",)].format_help()
    for argv in (["pipeline", "run", "src", "--out", "d"], ["pipeline", "run", "src", "-o", "d"]):
        assert PARSER.parse_args(argv).out == "d"
    assert PARSER.parse_args(["pipeline", "run", "s", "-o", "d", "--workers", "3"]).workers == 3
    assert PARSER.parse_args(["pipeline", "run", "s", "-o", "d", "-j", "3"]).workers == 3
    assert PARSER.parse_args(["report", "d", "--html", "r.html"]).html == "r.html"
    assert PARSER.parse_args(["report", "d", "-o", "r.html"]).html == "r.html"


def test_required_options_are_shown_as_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--log-key KEY.pem     the log's Ed25519 public key (PEM) (required)" in (
        COMMANDS[("verify",)].format_help()
    )
    with pytest.raises(SystemExit) as caught:
        PARSER.parse_args(["verify", "m.json"])
    assert caught.value.code == 2
    assert "--log-key" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["testbed", "pipeline"])
def test_a_command_without_its_action_prints_help_and_exits_2(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"usage: netvigil {command}") and "ACTION" in out


def test_restructured_text_literals_are_shown_plain() -> None:
    assert plain("run ``netvigil pipeline run`` with `-j`") == "run netvigil pipeline run with -j"
