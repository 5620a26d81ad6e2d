"""The explorer's one rendering path: every value is escaped unless it was built here.

A page is assembled from :func:`el` calls. A plain ``str`` given as a child or an attribute
value is *always* escaped (``html.escape`` with quotes); only :class:`Safe` strings, which only
this module creates (from escaped text or from other :func:`el` calls), pass through. A value
from a measurement (a censor's blockpage, a forged certificate's issuer, a URL) is therefore
text in the page, never markup, whatever it contains. Link targets are checked too: only paths
inside the explorer (``/…``, or relative in the static export) are ever written; anything else
(``javascript:``, ``data:``, ``//host``) becomes ``#``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping

from netvigil import textsafe

__all__ = ["Child", "Safe", "block", "el", "join", "page", "text"]

# A cell of a page: a long value is cut (the raw JSON and the download have it whole).
CELL_LIMIT = 400


class Safe(str):
    """Markup this module built. Never construct one from outside data."""

    __slots__ = ()


Child = Safe | str | int | float | None | Iterable["Child"]

_TAG = re.compile(r"[a-z][a-z0-9]*\Z")
_ATTR_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*\Z")
_URL_ATTRS = frozenset({"href", "src", "action"})
# Internal targets: an absolute path (not "//host"), a query, a fragment, or a relative file
# path whose first segment has no ":" (so no scheme).
_INTERNAL_URL = re.compile(r"(/(?!/)|\?|#|\.{1,2}/|[A-Za-z0-9_.-]+(/|\.|\Z))[^\s\\]*\Z")


def text(value: object, limit: int | None = CELL_LIMIT) -> Safe:
    """``value`` as text in a page: control/BiDi characters made visible, then escaped."""
    if isinstance(value, Safe):
        return value
    shown = (
        value if isinstance(value, str) and limit is None else textsafe.visible(value, limit=limit)
    )
    return Safe(html.escape(str(shown), quote=True))


def block(value: object, limit: int = 256 * 1024) -> Safe:
    """Text for a ``<pre>``: like :func:`text`, but line breaks are kept."""
    return Safe(html.escape(textsafe.visible(value, limit=limit, multiline=True), quote=True))


def url_ok(url: str) -> bool:
    return bool(_INTERNAL_URL.match(url)) and ":" not in url.split("/", 1)[0].split("?", 1)[0]


def _render(child: Child) -> str:
    if child is None:
        return ""
    if isinstance(child, Safe):
        return child
    if isinstance(child, str | int | float):
        return text(child)
    return "".join(_render(c) for c in child)


def el(tag: str, attrs: Mapping[str, object] | None = None, *children: Child) -> Safe:
    """``<tag attrs>children</tag>``; ``tag`` and attribute names are the code's own."""
    assert _TAG.match(tag), tag
    parts = [f"<{tag}"]
    for name, value in (attrs or {}).items():
        name = name.rstrip("_").replace("_", "-")
        assert _ATTR_NAME.match(name) and not name.lower().startswith("on"), name
        if value is None or value is False:
            continue
        if value is True:
            parts.append(f" {name}")
            continue
        raw = str(value)
        if name in _URL_ATTRS and not url_ok(raw):
            raw = "#"
        parts.append(f' {name}="{html.escape(raw, quote=True)}"')
    parts.append(">")
    if tag in _VOID:
        return Safe("".join(parts))
    parts.append(_render(list(children)))
    parts.append(f"</{tag}>")
    return Safe("".join(parts))


_VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})


def join(children: Iterable[Child]) -> Safe:
    return Safe(_render(list(children)))


def page(title: str, body: Child, *, static: str, nav: Child = None) -> Safe:
    """A whole document: the stylesheet from the app's own static files, nothing inline."""
    return Safe(
        "<!DOCTYPE html>\n"
        + el(
            "html",
            {"lang": "en"},
            el(
                "head",
                None,
                el("meta", {"charset": "utf-8"}),
                el("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}),
                el("meta", {"name": "referrer", "content": "no-referrer"}),
                el("title", None, text(title, 200), " · netvigil explorer"),
                el("link", {"rel": "stylesheet", "href": static + "explorer.css"}),
                el(
                    "link", {"rel": "icon", "href": static + "favicon.svg", "type": "image/svg+xml"}
                ),
            ),
            el(
                "body",
                None,
                el("a", {"class": "skip", "href": "#main"}, "Skip to content"),
                el("header", None, nav),
                el("main", {"id": "main", "tabindex": "-1"}, body),
                el(
                    "footer",
                    None,
                    "netvigil explorer · read-only · every value from a measurement is shown as text",
                ),
            ),
        )
    )
