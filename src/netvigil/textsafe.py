"""Untrusted strings on a terminal: always plain text, never a command to the terminal.

A censor controls much of what netvigil prints: a forged certificate's issuer name, a blockpage's
title and headers, the URLs and failure strings of a measurement file, a profile's names. Printed
as they are, such strings can

- be parsed as rich markup (``Evil [/bold] Root`` raises ``MarkupError``; ``[link=…]`` makes a
  live hyperlink), when handed to rich as a ``str``;
- drive the terminal: ESC sequences (clear the screen, move the cursor, set the title, OSC 8
  hyperlinks), BEL, a carriage return or backspaces that overwrite what was printed before, C1
  controls (0x9b is a one-byte CSI on some terminals);
- reorder what the reader sees: BiDi overrides and isolates (U+202E turns ``moc.evil`` around);
- crash the encoder: a lone surrogate (JSON allows ``"\\ud800"``) cannot be written as UTF-8.

This module is the one place that turns any such string into plain text that is safe to show:

- :func:`visible` returns a ``str`` in which every character that could act on the terminal is
  replaced by a visible, printable token: ``\\x1b`` for C0/C1 controls and DEL, ``<U+202E>`` for
  BiDi controls, line and paragraph separators and lone surrogates. Ordinary text (any script,
  including the ZWNJ/ZWJ Persian and emoji need) is unchanged. The result is idempotent:
  ``visible(visible(s)) == visible(s)`` (it contains only printable characters, and backslashes
  are not themselves escaped — this is for reading, not for parsing back).
- :func:`text` wraps it in a ``rich.text.Text``, which rich never parses as markup.
- :func:`make_console` is a console with markup, emoji codes and highlighting off, so even a
  ``str`` that slips through is printed literally (defence in depth).

``--json`` output never goes through here: JSON escaping is already exact and safe.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # rich costs ~0.1-0.2 s to import: only the commands that draw with it pay
    from rich.console import Console
    from rich.text import Text

__all__ = [
    "DEFAULT_LIMIT",
    "LogFormatter",
    "log_handler",
    "make_console",
    "text",
    "visible",
]

# A cell or a line of a report: long enough for any real URL, certificate name or failure
# string; a 1 MB "title" must not flood the terminal (--json has the value in full).
DEFAULT_LIMIT = 1000

# BiDi embedding/override/isolate controls and marks, and the Arabic letter mark: they reorder
# or hide what is displayed ("Trojan Source", CVE-2021-42574).
_BIDI = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
# Other invisible characters that change how a line is laid out or read, but are not needed by
# any script (unlike ZWNJ U+200C and ZWJ U+200D, which Persian and emoji sequences use).
_INVISIBLE = frozenset([0x2028, 0x2029, 0xFEFF, 0xFFF9, 0xFFFA, 0xFFFB, 0x180E, 0x2060])

# Unicode "tag" characters: invisible, and used to smuggle text past a reader.
_TAGS = range(0xE0000, 0xE0080)


def _build_table() -> dict[int, str]:
    """str.translate's table: every character that needs a visible stand-in (few, listed once;
    translate is then fast when there is nothing to replace, the common case)."""
    table: dict[int, str] = {}
    for cp in [*range(0x00, 0x20), *range(0x7F, 0xA0)]:  # C0, DEL, C1 (0x9b: one-byte CSI)
        table[cp] = f"\\x{cp:02x}"
    for cp in [*_BIDI, *_INVISIBLE, *range(0xD800, 0xE000), *_TAGS]:  # incl. lone surrogates
        table[cp] = f"<U+{cp:04X}>"
    return table


_TABLE = _build_table()


def visible(value: object, *, limit: int | None = DEFAULT_LIMIT, multiline: bool = False) -> str:
    """`value` as printable plain text: controls, BiDi and surrogates made visible.

    ``limit`` bounds the characters kept from the value (the rest is counted, not shown);
    ``multiline`` keeps line feeds (for a text that is meant to span lines, such as a profile's
    description); every other control is always escaped.
    """
    raw = value if isinstance(value, str) else _as_str(value)
    cut = ""
    if limit is not None and len(raw) > limit:
        cut = f"… [+{len(raw) - limit} chars]"
        raw = raw[:limit]
    if multiline:
        lines = raw.split("\n")
        return "\n".join(line.translate(_TABLE) for line in lines) + cut
    return raw.translate(_TABLE) + cut


def _as_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a hostile __str__: still print something
        return f"<unprintable {type(value).__name__}>"


def text(
    value: object,
    style: str = "",
    *,
    limit: int | None = DEFAULT_LIMIT,
    multiline: bool = False,
) -> Text:
    """A rich ``Text`` of :func:`visible` (`value`): never parsed as markup."""
    from rich.text import Text

    return Text(visible(value, limit=limit, multiline=multiline), style=style)


def make_console(file: TextIO | None = None, *, stderr: bool = False, **kwargs: Any) -> Console:
    """A console that prints what it is given literally (no markup, no emoji codes, no
    highlighting); when not a terminal, wide enough that URLs are not folded."""
    from rich.console import Console

    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    options: dict[str, Any] = {
        "markup": False,
        "emoji": False,
        "highlight": False,
    }
    if not is_tty:
        options["width"] = 160
    options.update(kwargs)
    if file is not None:
        options["file"] = file
    elif stderr:
        options["stderr"] = True
    return Console(**options)


class LogFormatter(logging.Formatter):
    """Log lines quote what clients chose (a request path, a URL to measure): made visible like
    everything else, since a log read with ``tail`` or ``less`` is a terminal too. Tracebacks
    keep their line breaks; nothing is cut."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record), limit=None, multiline=True)


def log_handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) whose lines are plain text (:class:`LogFormatter`)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LogFormatter(fmt))
    return handler
