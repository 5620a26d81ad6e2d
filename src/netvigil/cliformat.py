"""How every `netvigil` command's help is laid out: one formatter, so all of them read alike.

- Text is reflowed paragraph by paragraph (a blank line ends one), but a paragraph with an
  indented line or a list item is kept as written: examples and lists stay aligned.
- Module docstrings serve as descriptions, and they are reStructuredText: inline literals
  (````--workers````, ```x```) are shown as plain text, not with their backticks.
- A required option says "(required)" in its help, not only by the missing brackets in usage.
- Old spellings of an option (``--trust`` for ``--ca-bundle``) still work but are not shown:
  :func:`hide_aliases` marks them.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Iterable

_LITERAL = re.compile(r"``([^`\n]+)``|(?<![\w`])`([^`\n]+)`(?![\w`])")
_HIDDEN = "netvigil_hidden_option_strings"


def plain(text: str) -> str:
    """reStructuredText inline literals as plain text: ``--out`` → --out."""
    return _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)


def hide_aliases(action: argparse.Action, *aliases: str) -> argparse.Action:
    """Accept `aliases` (old or short spellings) for `action` without listing them in help."""
    missing = [a for a in aliases if a not in action.option_strings]
    if missing:
        raise ValueError(f"{missing} are not option strings of {action.dest}")
    setattr(action, _HIDDEN, frozenset(aliases))
    return action


def hidden_aliases(action: argparse.Action) -> frozenset[str]:
    hidden: frozenset[str] = getattr(action, _HIDDEN, frozenset())
    return hidden


def _verbatim(paragraph: str) -> bool:
    return any(
        line[:1].isspace() or line.lstrip().startswith(("- ", "* ", "$ "))
        for line in paragraph.splitlines()
    )


class HelpFormatter(argparse.HelpFormatter):
    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for paragraph in re.split(r"\n\s*\n", plain(text).strip("\n")):
            if _verbatim(paragraph):
                out.append(textwrap.indent(paragraph.rstrip(), indent))
            else:
                out.append(
                    textwrap.fill(
                        " ".join(paragraph.split()),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                    )
                )
        return "\n\n".join(out) + "\n"

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is None or text == argparse.SUPPRESS:
            return text
        text = plain(text)
        if action.required and action.option_strings and "(required)" not in text:
            text += " (required)"
        return text

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = hidden_aliases(action)
        if not hidden:
            return super()._format_action_invocation(action)
        shown = [s for s in action.option_strings if s not in hidden]
        clone = argparse.Action(
            shown, action.dest, nargs=action.nargs, metavar=action.metavar, help=action.help
        )
        return super()._format_action_invocation(clone)


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterable[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under `parser` (itself first), with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*path, name))
