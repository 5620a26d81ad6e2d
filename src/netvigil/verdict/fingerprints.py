"""Blockpage fingerprints: OONI's, Censored Planet's and Citizen Lab's, compiled once.

The three sets ship as package data under ``verdict/data/`` (origins and licences in
``data/ATTRIBUTION.md``). Every signature becomes a :class:`Fingerprint` with a prefixed name
(``ooni.ru_3``, ``cp.a_prod_fortinet_1``, ``cl.isp_ru_rostelcom_block``) and a location:

- ``body`` — the response body (text);
- ``header.<name>`` — the value of one response header (``header.location``, ``header.server``…);
- ``headers`` — the whole header block serialised as ``Name: value`` lines (Citizen Lab's
  ``header`` signatures, and Censored Planet's, which match the raw response);
- ``dns`` — an address returned by a resolver.

False-positive signatures (OONI scope ``fp``, Censored Planet's ``false_positive_signatures``,
benign injections scoped ``injb``) are checked first: a response that matches one is not a
blockpage.

Speed: the ~1,400 plain-substring signatures of a location are matched in *one* pass. The
reference semantics is one ``re`` pass: each literal is anchored on its rarest character (by
frequency in real web pages); the pattern starts with the set of anchor characters and at an
anchor walks a trie of what follows, confirming the full literal with a look-behind. Short texts
(headers, small pages) take that pass. Long texts take a vectorised one (numpy, ~5 ns a byte
instead of ~70 ns a character): every 4-byte window of the UTF-8 body is hashed against each
literal's rarest 4 bytes, then checked against a second 4 bytes of the literal, and the few
survivors are confirmed in Python; the regex pass's order is replayed from those occurrences,
so both give the same answer (tests/test_fingerprints.py compares them). The same pass reports
which literals required by the regular-expression signatures occur, so those are not searched
for one by one. Regular-expression signatures are matched one by one; those of the form
``A.*B`` are split at ``.*`` and matched piecewise, line by line, so a hostile body cannot make
them quadratic. See ``benchmarks/bench_fingerprints.py`` and ``benchmarks/bench_verdict.py``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import ipaddress
import json
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# numpy is imported when the vectorised pass first pays for it (_vector_worth), not with this
# module: a command that analyses a few measurements does not wait for it (see bench_startup).

# ASCII characters from most to least frequent in real web pages (measured on the bodies of
# the OONI sample measurements). A literal is anchored on its rarest character.
_FREQUENCY_ORDER = "etai 0rs_on\"lducmp-hg2b\\:f36wv/y,.51=><k4xE{}ICA789TPMBNS;zDRLOqVjFU()GHKWQYXJ[]Z%'#?&@!|+$~*`^"
_RANK = {c: i for i, c in enumerate(_FREQUENCY_ORDER)}
# Characters outside that table (non-ASCII, control): as rare as an uppercase letter. A page in
# Cyrillic or Persian is full of them, so they must not look rarer than punctuation.
_DEFAULT_RANK = _RANK["E"]
_PLAIN_BELOW = _RANK["k"]
_NEWLINE_SENSITIVE = re.compile(r"(?<!\\)\.\*")

FALSE_POSITIVE_SCOPES = frozenset({"fp", "injb"})


@dataclass(frozen=True)
class Fingerprint:
    """One signature of one source."""

    name: str  # prefixed: ooni.*, cp.*, cl.*
    source: str  # "ooni" | "censoredplanet" | "citizenlab"
    location: str  # body | headers | header.<name> | dns
    pattern_type: str  # contains | prefix | full | regexp
    pattern: str
    scope: str = ""
    false_positive: bool = False
    expected_countries: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "location": self.location,
            "pattern_type": self.pattern_type,
            "pattern": self.pattern,
            "scope": self.scope,
            "false_positive": self.false_positive,
        }


@dataclass(frozen=True)
class Match:
    """A fingerprint that matched, and where."""

    fingerprint: Fingerprint
    location: str  # where it matched: body, headers, header.location, dns
    excerpt: str  # the matched text (truncated)

    @property
    def name(self) -> str:
        return self.fingerprint.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.fingerprint.name,
            "source": self.fingerprint.source,
            "scope": self.fingerprint.scope,
            "location": self.location,
            "pattern_type": self.fingerprint.pattern_type,
            "pattern": self.fingerprint.pattern[:200],
            "excerpt": self.excerpt[:200],
        }


# ---------------------------------------------------------------------------------------------
# Fast literal matching


def _anchor(literal: str) -> int:
    """Index of the rarest character of the literal (first occurrence)."""
    best, best_rank = 0, -1
    for i, ch in enumerate(literal):
        rank = _RANK.get(ch, _DEFAULT_RANK)
        if rank > best_rank:
            best, best_rank = i, rank
    return best


def _trie_regex(entries: list[tuple[str, str]]) -> str:
    """Regex for (suffix, full literal) pairs: a trie over suffixes, look-behind at leaves."""
    root: dict[str, Any] = {}
    for suffix, literal in entries:
        node = root
        for ch in suffix:
            node = node.setdefault(ch, {})
        node.setdefault("", []).append(literal)

    def build(node: dict[str, Any]) -> str:
        alternatives = [f"(?<={re.escape(lit)})" for lit in sorted(set(node.get("", [])))]
        for ch in sorted(k for k in node if k):
            alternatives.append(re.escape(ch) + build(node[ch]))
        if len(alternatives) == 1:
            return alternatives[0]
        return "(?:" + "|".join(alternatives) + ")"

    return build(root)


class LiteralMatcher:
    """Finds which of many plain substrings occur in a text.

    Two exact implementations of one semantics (``find_all``'s list, order included):

    - short texts (headers, small pages): one ``re`` pass over an anchor-and-trie regex;
    - long texts: a vectorised 4-gram filter (numpy) over the UTF-8 bytes, then a check of each
      candidate in Python; the regex pass's order is then replayed from the occurrences found.

    The regex pass costs ~70 ns per character (anchors are dense in real pages), the 4-gram
    filter ~5 ns: a 512 KiB page drops from ~35 ms to a few ms.
    """

    def __init__(self, literals: Iterable[str], extra: Iterable[str] = ()) -> None:
        """``extra``: more literals to look for in the same pass (the literals the regex
        signatures require); ``scan`` says which of them occur, ``find_all`` ignores them."""
        unique = sorted({lit for lit in literals if lit})
        self.literals = frozenset(unique)
        groups: dict[str, list[tuple[str, str]]] = {}
        # Literals made only of very common characters would make the anchor set dense (every
        # 'g' of a page a candidate): they are checked with a plain ``in`` (memchr speed).
        self._plain: list[str] = []
        # literal -> (anchor character, byte offset of the anchor in the literal's UTF-8)
        self._anchor_of: dict[str, tuple[str, int]] = {}
        for lit in unique:
            i = _anchor(lit)
            if _RANK.get(lit[i], _DEFAULT_RANK) < _PLAIN_BELOW:
                self._plain.append(lit)
                continue
            groups.setdefault(lit[i], []).append((lit[i + 1 :], lit))
            self._anchor_of[lit] = (lit[i], len(_utf8(lit[:i])))
        self._by_anchor = {ch: [lit for _, lit in entries] for ch, entries in groups.items()}
        # Most frequent anchors first: the engine tries top-level branches in order.
        order = sorted(groups, key=lambda ch: _RANK.get(ch, _DEFAULT_RANK))
        parts = [re.escape(ch) + _trie_regex(groups[ch]) for ch in order]
        self._regex: re.Pattern[str] | None = (
            re.compile("|".join(parts), re.DOTALL) if parts else None
        )
        self._rank = {lit: n for n, lit in enumerate(unique)}
        indexed = sorted(set(unique) | {lit for lit in extra if len(_utf8(lit)) >= _GRAM})
        self._grams = _GramIndex(indexed) if indexed else None

    def search(self, text: str) -> str | None:
        """A literal found in ``text``, or None."""
        for lit in self._plain:
            if lit in text:
                return lit
        if self._regex is None:
            return None
        m = self._regex.search(text)
        if m is None:
            return None
        end = m.end()
        for lit in sorted(self._by_anchor.get(m.group(0)[0], ()), key=len, reverse=True):
            if text.startswith(lit, end - len(lit)):
                return lit
        return None  # pragma: no cover - the look-behind guarantees a literal

    def find_all(self, text: str, limit: int = 64) -> list[str]:
        """Literals found in ``text`` (at most about ``limit``), in the regex pass's order."""
        return self.scan(text, limit)[0]

    def scan(self, text: str, limit: int = 64) -> tuple[list[str], frozenset[str] | None]:
        """(``find_all``, every indexed literal that occurs in ``text``) — the second is None
        when the text was not scanned by the index (short text, bound reached)."""
        if (
            self._grams is not None
            and self._grams.usable
            and len(text) >= _VECTOR_MIN_CHARS
            and _vector_worth(len(text))
        ):
            occurrences = self._grams.occurrences(text)
            if occurrences is not None:
                present = frozenset(lit for _, _, lit in occurrences)
                return self._replay(occurrences, present, limit), present
        return self.find_all_regex(text, limit), None

    def find_all_regex(self, text: str, limit: int = 64) -> list[str]:
        """``find_all`` by the ``re`` pass (the reference semantics)."""
        found: list[str] = [lit for lit in self._plain if lit in text]
        if self._regex is None:
            return found
        for m in self._regex.finditer(text):
            end = m.end()
            for lit in self._by_anchor.get(m.group(0)[0], ()):
                if len(lit) <= end and text.startswith(lit, end - len(lit)) and lit not in found:
                    found.append(lit)
            if len(found) >= limit:
                break
        return found

    def _replay(
        self, occurrences: list[tuple[int, int, str]], present: frozenset[str], limit: int
    ) -> list[str]:
        """``find_all_regex``'s answer from every occurrence (byte offsets) of every literal.

        The regex pass finds, left to right and without overlap, each position where a
        literal's anchor character sits; the match there ends at the nearest end of such a
        literal, and every literal with that anchor character ending there is taken. UTF-8
        keeps both order and boundaries, so byte offsets replay it exactly.
        """
        found = [lit for lit in self._plain if lit in present]
        matches: dict[int, tuple[int, str]] = {}  # anchor offset -> (nearest end, anchor char)
        ending: dict[int, list[str]] = {}
        for start, end, lit in occurrences:
            anchor = self._anchor_of.get(lit)
            if anchor is None:
                continue  # a plain (or extra) literal: not part of the regex pass
            pos = start + anchor[1]
            best = matches.get(pos)
            if best is None or end < best[0]:
                matches[pos] = (end, anchor[0])
            ending.setdefault(end, []).append(lit)
        resume = 0
        for pos in sorted(matches):
            if pos < resume:
                continue  # inside the previous match: finditer does not overlap
            end, ch = matches[pos]
            for lit in sorted(ending[end], key=self._rank.__getitem__):
                if self._anchor_of[lit][0] == ch and lit not in found:
                    found.append(lit)
            resume = end
            if len(found) >= limit:
                break
        return found


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


_GRAM = 4  # bytes per gram: a literal shorter than this disables the filter (tests only)
_HASH_BITS = 18  # 256 KiB table: ~0.5 % of a page's positions pass it with ~1,400 grams
_HASH_MULT = 0x9E3779B1
_HASH_SHIFT = 32 - _HASH_BITS
_CHUNK = 1 << 18  # positions per numpy pass: temporaries stay ~1 MiB whatever the body
_VECTOR_MIN_CHARS = 1024  # below this the regex pass is cheaper than numpy's fixed ~30 µs
# A body that is one literal repeated (hostile or absurd) would make the candidate list huge:
# past this many occurrences the regex pass (constant memory) answers instead.
_MAX_OCCURRENCES = 50_000


# Rarity of each byte value (non-ASCII bytes: as rare as an uppercase letter, see _DEFAULT_RANK).
_BYTE_RANK = tuple(
    _RANK.get(chr(b), _DEFAULT_RANK) if b < 0x80 else _DEFAULT_RANK for b in range(256)
)


# Characters of long text scanned by the regex pass while numpy was not loaded: past this
# (~0.1 s of regex at ~70 ns a character, what importing numpy costs) the vectorised pass is
# worth loading numpy for. Both passes give the same answer (tests/test_fingerprints.py).
_VECTOR_AFTER_CHARS = 2_000_000
_long_chars = 0


def _vector_worth(chars: int) -> bool:
    global _long_chars
    if "numpy" in sys.modules:
        return True
    _long_chars += chars  # a race between threads only moves the switch by one text
    return _long_chars > _VECTOR_AFTER_CHARS


def _hash(grams: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    import numpy as np

    # multiplicative hashing; uint32 arithmetic wraps, as intended
    return (grams * np.uint32(_HASH_MULT)) >> np.uint32(_HASH_SHIFT)


class _GramIndex:
    """Every literal indexed by its rarest 4 bytes (UTF-8), confirmed by a second 4 bytes.

    Both filters run vectorised; only positions that pass both (nearly always a real
    occurrence) reach the exact check in Python.
    """

    def __init__(self, literals: list[str]) -> None:
        encoded = [(lit, _utf8(lit)) for lit in literals]
        self.usable = all(len(data) >= _GRAM for _, data in encoded)
        self._by_gram: dict[int, list[tuple[int, bytes, str]]] = {}
        if not self.usable:
            return
        # How many literals contain each gram: the literals are web text too, so a gram many
        # of them share ("s://", ".com", "lock") is common in pages; prefer the rarest there,
        # then by character rarity.
        shared: dict[bytes, int] = {}
        for _, data in encoded:
            for gram_bytes in {data[o : o + _GRAM] for o in range(len(data) - _GRAM + 1)}:
                shared[gram_bytes] = shared.get(gram_bytes, 0) + 1

        second: dict[int, tuple[int, int]] = {}  # first gram -> (offset of second, its value)
        for lit, data in encoded:
            ranks = [_BYTE_RANK[b] for b in data]
            cost = [
                (shared[data[o : o + _GRAM]], -sum(ranks[o : o + _GRAM]), o)
                for o in range(len(data) - _GRAM + 1)
            ]
            off = min(cost)[2]
            gram = int.from_bytes(data[off : off + _GRAM], "little")
            self._by_gram.setdefault(gram, []).append((off, data, lit))
            # the rarest window not overlapping the first (else any other window)
            off2 = min([c for c in cost if abs(c[2] - off) >= _GRAM] or cost)[2]
            second[gram] = (off2 - off, int.from_bytes(data[off2 : off2 + _GRAM], "little"))
        self._gram_list = sorted(self._by_gram)
        # Per first gram, where its second gram sits and what it is; a gram shared by several
        # literals checks itself again (always true) and leaves the choice to Python.
        self._delta_list: list[int] = []
        self._second_list: list[int] = []
        for gram in self._gram_list:
            if len(self._by_gram[gram]) == 1:
                d, v = second[gram]
            else:
                d, v = 0, gram
            self._delta_list.append(d)
            self._second_list.append(v)
        # numpy arrays of the lists above, made on first use (plain lists pickle without numpy)
        self._arrays: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def _numpy_arrays(self) -> tuple[Any, ...]:
        if self._arrays is None:
            import numpy as np

            grams = np.array(self._gram_list, dtype=np.uint32)
            table = np.zeros(1 << _HASH_BITS, dtype=np.bool_)
            table[_hash(grams)] = True
            delta = np.array(self._delta_list, dtype=np.int64)
            second = np.array(self._second_list, dtype=np.uint32)
            self._arrays = (grams, table, delta, second)  # one assignment: thread-safe
        return self._arrays

    def occurrences(self, text: str) -> list[tuple[int, int, str]] | None:
        """(start, end, literal) of every occurrence, byte offsets; None past the bound."""
        import numpy as np

        grams_sorted, table, deltas, seconds = self._numpy_arrays()
        data = _utf8(text)
        out: list[tuple[int, int, str]] = []
        last = len(data) - _GRAM  # the last position a gram starts at
        if last < 0:
            return out
        # every 4-byte window as one little-endian uint32: a strided view, no copy
        every: npt.NDArray[np.uint32] = np.ndarray(
            (last + 1,), dtype="<u4", buffer=data, strides=(1,)
        )
        for base in range(0, last + 1, _CHUNK):
            windows = every[base : base + _CHUNK]
            hits = np.flatnonzero(table.take(_hash(windows)))
            if not hits.size:
                continue
            grams = windows[hits]
            slot = np.minimum(np.searchsorted(grams_sorted, grams), len(grams_sorted) - 1)
            keep = grams_sorted[slot] == grams
            hits, slot = hits[keep] + base, slot[keep]
            other = hits + deltas[slot]
            inside = (other >= 0) & (other <= last)
            keep = inside & (every[np.clip(other, 0, last)] == seconds[slot])
            if np.count_nonzero(keep) > _MAX_OCCURRENCES - len(out):
                return None  # checked before the Python loop: its work stays bounded too
            for pos, gram in zip(
                hits[keep].tolist(), grams_sorted[slot[keep]].tolist(), strict=True
            ):
                for off, lit_bytes, lit in self._by_gram[gram]:
                    start = pos - off
                    if start >= 0 and data.startswith(lit_bytes, start):
                        out.append((start, start + len(lit_bytes), lit))
        return out


# ---------------------------------------------------------------------------------------------
# Regular-expression signatures


def required_literal(pattern: str) -> str:
    """The longest run of plain characters every match of ``pattern`` must contain ("" if unsure)."""
    if "|" in pattern:
        return ""
    runs: list[str] = []
    run: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        nxt = (
            pattern[i + 2]
            if ch == "\\" and i + 2 < len(pattern)
            else (pattern[i + 1] if i + 1 < len(pattern) else "")
        )
        if ch == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            lit, step = pattern[i + 1], 2
        elif ch in ".^$[]()*+?{}\\":
            depth += ch == "("
            depth -= ch == ")"
            runs.append("".join(run))
            run = []
            if ch == "[":
                close = pattern.find("]", i + 2)
                i = close + 1 if close > 0 else len(pattern)
                continue
            i += 2 if ch == "\\" else 1
            continue
        else:
            lit, step = ch, 1
        if nxt in ("?", "*", "{") or depth:
            runs.append("".join(run))
            run = []
        else:
            run.append(lit)
        i += step
    runs.append("".join(run))
    return max(runs, key=len)


class _RegexSignature:
    """A regex signature; ``A.*B`` patterns are matched piecewise, linear in the text.

    A literal every match must contain is checked first: from the location's one literal pass
    when it indexed the text, else with ``in`` (C speed, but one scan per signature).
    """

    def __init__(self, pattern: str) -> None:
        alternatives = pattern.split("|") if "(" not in pattern else [pattern]
        required = [required_literal(p) for p in alternatives]
        self.required_any = required if all(required) else []
        # whether the literal index holds every required literal (it needs 4 bytes or more)
        self.indexed = all(len(_utf8(lit)) >= _GRAM for lit in self.required_any)
        self.pieces: list[re.Pattern[str]] = []
        pieces = _NEWLINE_SENSITIVE.split(pattern)
        if len(pieces) > 1:
            try:
                self.pieces = [re.compile(p) for p in pieces]
            except re.error:
                self.pieces = []
        self.whole: re.Pattern[str] | None = None
        if not self.pieces:
            self.whole = re.compile(pattern)

    def search(self, text: str, present: frozenset[str] | None = None) -> tuple[int, int] | None:
        """(start, end) of a match. ``present``: the indexed literals known to occur in
        ``text`` (from the one literal pass), which answers the required-literal test."""
        if self.required_any and present is not None and self.indexed:
            if present.isdisjoint(self.required_any):
                return None
        elif self.required_any:
            for lit in self.required_any:  # a loop, not any(genexpr): called per text per regex
                if lit in text:
                    break
            else:
                return None
        if self.whole is not None:
            m = self.whole.search(text)
            return (m.start(), m.end()) if m else None
        first, rest = self.pieces[0], self.pieces[1:]
        pos = 0
        while pos <= len(text):
            m = first.search(text, pos)
            if m is None:
                return None
            end = m.end()
            newline = text.find("\n", m.start())
            limit = len(text) if newline < 0 else newline
            ok = True
            for piece in rest:
                found = piece.search(text, end, limit)
                if found is None:
                    ok = False
                    break
                end = found.end()
            if ok:
                return (m.start(), end)
            if newline < 0:
                return None
            pos = newline + 1
        return None


# ---------------------------------------------------------------------------------------------
# A compiled set for one location


class _LocationSet:
    """Blockpage and false-positive signatures of one location; literals in one shared pass."""

    def __init__(self, fingerprints: list[Fingerprint]) -> None:
        self.contains: dict[str, Fingerprint] = {}
        self.fp_contains: dict[str, Fingerprint] = {}
        self.prefix: list[Fingerprint] = []
        self.full: dict[str, Fingerprint] = {}
        self.regexes: list[tuple[_RegexSignature, Fingerprint]] = []
        # false positives first, so a pattern listed as both counts as a false positive
        for fp in sorted(fingerprints, key=lambda f: not f.false_positive):
            if fp.pattern_type == "contains":
                target = self.fp_contains if fp.false_positive else self.contains
                if fp.pattern not in self.fp_contains:
                    target.setdefault(fp.pattern, fp)
            elif fp.pattern_type == "prefix":
                self.prefix.append(fp)
            elif fp.pattern_type == "full":
                self.full.setdefault(fp.pattern, fp)
            else:
                try:
                    self.regexes.append((_RegexSignature(fp.pattern), fp))
                except re.error:
                    continue  # an upstream pattern Python cannot compile: skip it
        required = [lit for sig, _ in self.regexes for lit in sig.required_any]
        self.literals = LiteralMatcher([*self.contains, *self.fp_contains], extra=required)
        # Prefix patterns by their text: one dict lookup per distinct pattern length instead
        # of one startswith per pattern (header.location has ~270); the index keeps list order.
        self._prefixes: dict[str, list[tuple[int, Fingerprint]]] = {}
        for n, fp in enumerate(self.prefix):
            self._prefixes.setdefault(fp.pattern, []).append((n, fp))
        self._prefix_lengths = sorted({len(p) for p in self._prefixes})

    def match(self, text: str, location: str) -> tuple[Match | None, Match | None]:
        """(first blockpage match, first false-positive match) in ``text``."""
        block: Match | None = None
        false: Match | None = None
        if not text:
            return None, None

        def take(hit: Match) -> None:
            nonlocal block, false
            if hit.fingerprint.false_positive:
                false = false or hit
            else:
                block = block or hit

        full = self.full.get(text)
        if full is not None:
            take(Match(full, location, text))
        if self._prefixes:
            hits: list[tuple[int, Fingerprint]] = []
            for size in self._prefix_lengths:
                if size > len(text):
                    break
                hits += self._prefixes.get(text[:size], ())
            for _, fp in sorted(hits, key=lambda hit: hit[0]):
                take(Match(fp, location, fp.pattern))
        if false is not None:
            return None, false  # what the rest would return: the first false positive wins
        found, present = self.literals.scan(text)
        for lit in found:
            fp = self.fp_contains.get(lit) or self.contains[lit]
            take(Match(fp, location, lit))
            if false is not None:
                return None, false
        for sig, fp in self.regexes:
            if false is not None or (block is not None and not fp.false_positive):
                continue
            span = sig.search(text, present)
            if span is not None:
                take(Match(fp, location, text[span[0] : min(span[1], span[0] + 200)]))
        return (None, false) if false is not None else (block, None)


# ---------------------------------------------------------------------------------------------
# The database


def _ascii_title(name: str) -> str:
    # header names repeat across measurements: cached, short ones only (bounded memory)
    return _title_cached(name) if len(name) <= 64 else _title_cached.__wrapped__(name)


@functools.lru_cache(maxsize=4096)
def _title_cached(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_block(headers: Mapping[str, str]) -> str:
    """Headers as ``Name: value`` lines (canonical capitalisation), as on the wire."""
    return "".join(f"{_ascii_title(k)}: {v}\r\n" for k, v in headers.items())


@dataclass
class Fingerprints:
    """All signatures, compiled per location and kind (blockpage / false positive)."""

    fingerprints: tuple[Fingerprint, ...]
    _sets: dict[str, _LocationSet] = field(default_factory=dict, repr=False)
    _dns: dict[str, Fingerprint] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        by_location: dict[str, list[Fingerprint]] = {}
        for fp in self.fingerprints:
            if fp.location == "dns":
                if not fp.false_positive:
                    self._dns.setdefault(_normalise_ip(fp.pattern), fp)
                continue
            by_location.setdefault(fp.location, []).append(fp)
        self._sets = {loc: _LocationSet(fps) for loc, fps in by_location.items()}

    def __len__(self) -> int:
        return len(self.fingerprints)

    @property
    def locations(self) -> set[str]:
        return set(self._sets)

    def match_response(
        self, body: str | None, headers: Mapping[str, str] | None = None
    ) -> tuple[Match | None, Match | None]:
        """(blockpage match, false-positive match) for one HTTP response.

        When a false-positive signature matches, the blockpage match is None: the page is a
        known non-blockpage (a CDN error, a captcha, a parking page…).

        Cached (bounded LRU, keyed by a BLAKE2b digest of the body and the headers): the same
        blockpages are served to thousands of measurements, and a scan costs up to a
        millisecond. ``Match`` is immutable, so the cached pair is shared safely.
        """
        key = _response_key(body, headers)
        if key is None:
            return self._match_response(body, headers)
        key = (id(self), *key)
        with _RESPONSE_LOCK:
            hit = _RESPONSE_CACHE.get(key)
            if hit is not None and hit[0] is self:
                _RESPONSE_CACHE.move_to_end(key)
                return hit[1]
        result = self._match_response(body, headers)
        with _RESPONSE_LOCK:
            _RESPONSE_CACHE[key] = (self, result)  # self kept: its id cannot be reused
            _RESPONSE_CACHE.move_to_end(key)
            while len(_RESPONSE_CACHE) > RESPONSE_CACHE_SIZE:
                _RESPONSE_CACHE.popitem(last=False)
        return result

    def _match_response(
        self, body: str | None, headers: Mapping[str, str] | None = None
    ) -> tuple[Match | None, Match | None]:
        body = body or ""
        lowered = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
        block = header_block(headers or {}) if headers else ""
        targets: list[tuple[str, str]] = [("body", body), ("headers", block)]
        for name, value in lowered.items():
            targets.append((f"header.{name}", value))
        first: Match | None = None
        for location, text in targets:
            s = self._sets.get(location)
            if s is None:
                continue
            hit, fp_hit = s.match(text, location)
            if fp_hit is not None:
                return None, fp_hit
            first = first or hit
        return first, None

    def match_body(self, body: str) -> Match | None:
        """Blockpage match for a body alone (False-positive signatures checked first)."""
        hit, _ = self.match_response(body, None)
        return hit

    def match_dns(self, address: str) -> Match | None:
        fp = self._dns.get(_normalise_ip(address))
        return Match(fp, "dns", address) if fp is not None else None


RESPONSE_CACHE_SIZE = 1024  # responses remembered (digests and headers: a few MiB at most)
_RESPONSE_CACHE: OrderedDict[
    tuple[Any, ...], tuple[Fingerprints, tuple[Match | None, Match | None]]
]
_RESPONSE_CACHE = OrderedDict()
_RESPONSE_LOCK = threading.Lock()
_CACHED_HEADERS = 64  # responses with more headers than this are scanned, not cached
_CACHED_HEADER_CHARS = 16 * 1024  # nor those whose headers are longer than this


def _response_key(body: Any, headers: Any) -> tuple[Any, ...] | None:
    """(body length, BLAKE2b-256 of its UTF-8, header items) or None when not cacheable."""
    if body is None:
        body = ""
    if type(body) is not str:
        return None
    if headers is None:
        items: tuple[tuple[str, str], ...] | None = None
    elif type(headers) is dict and len(headers) <= _CACHED_HEADERS:
        items = tuple(headers.items())
        size = 0
        for k, v in items:
            if type(k) is not str or type(v) is not str:
                return None
            size += len(k) + len(v)
        if size > _CACHED_HEADER_CHARS:
            return None
    else:
        return None
    digest = hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=32).digest()
    return len(body), digest, items


def _normalise_ip(text: str) -> str:
    # Called for every address of every measurement: cached, short keys only (bounded memory).
    return _normalised_ip(text) if len(text) <= 64 else _normalised_ip.__wrapped__(text)


@functools.lru_cache(maxsize=65536)
def _normalised_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text.strip()


# ---------------------------------------------------------------------------------------------
# Loading


def _read(*parts: str) -> str:
    return resources.files("netvigil.verdict").joinpath("data", *parts).read_text("utf-8")


def _countries(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        return tuple(c.strip() for c in value.split(",") if c.strip())
    return ()


def _ooni(filename: str) -> list[Fingerprint]:
    out = []
    for row in csv.DictReader(io.StringIO(_read("ooni", filename))):
        scope = (row.get("scope") or "").strip()
        location = (row.get("location_found") or "").strip().lower()
        pattern_type = (row.get("pattern_type") or "contains").strip()
        pattern = row.get("pattern") or ""
        if not pattern or not location:
            continue
        out.append(
            Fingerprint(
                name=(row.get("name") or "").strip(),
                source="ooni",
                location=location,
                pattern_type="regexp" if pattern_type == "regexp" else pattern_type,
                pattern=pattern,
                scope=scope,
                false_positive=scope in FALSE_POSITIVE_SCOPES,
                expected_countries=_countries(row.get("expected_countries")),
            )
        )
    return out


def _is_plain(pattern: str) -> str | None:
    """The literal a regex stands for, when it has no operators (only escapes)."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1].isalnum():
                return None
            out.append(pattern[i + 1])
            i += 2
            continue
        if ch in ".^$*+?{}[]|()":
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def _censoredplanet(filename: str, false_positive: bool) -> list[Fingerprint]:
    out = []
    for line in _read("censoredplanet", filename).splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        pattern = str(row.get("pattern") or "")
        name = "cp." + str(row.get("fingerprint") or "")
        if not pattern:
            continue
        plain = _is_plain(pattern)
        for location in ("body", "headers"):
            out.append(
                Fingerprint(
                    name=name,
                    source="censoredplanet",
                    location=location,
                    pattern_type="contains" if plain is not None else "regexp",
                    pattern=plain if plain is not None else pattern,
                    scope="fp" if false_positive else "",
                    false_positive=false_positive,
                )
            )
    return out


def _citizenlab_http() -> list[Fingerprint]:
    out = []
    for row in json.loads(_read("citizenlab", "http.json")):
        pattern = str(row.get("pattern") or "")
        scope = str(row.get("scope") or "")
        location = "body" if row.get("location_found") == "body" else "headers"
        if not pattern:
            continue
        out.append(
            Fingerprint(
                name="cl." + str(row.get("name") or ""),
                source="citizenlab",
                location=location,
                pattern_type="contains",
                pattern=pattern,
                scope=scope,
                false_positive=scope in FALSE_POSITIVE_SCOPES,
                expected_countries=_countries(row.get("expected_countries")),
            )
        )
    return out


def _citizenlab_dns() -> list[Fingerprint]:
    out = []
    for row in json.loads(_read("citizenlab", "dns.json")):
        response = str(row.get("response") or "")
        if not response:
            continue
        out.append(
            Fingerprint(
                name="cl." + str(row.get("name") or ""),
                source="citizenlab",
                location="dns",
                pattern_type="full",
                pattern=response,
                scope=str(row.get("scope") or ""),
                expected_countries=_countries(row.get("expected_countries")),
            )
        )
    return out


def build_fingerprints(fingerprints: Iterable[Fingerprint]) -> Fingerprints:
    """Compile a database from any list of fingerprints (tests use small ones)."""
    return Fingerprints(tuple(fingerprints))


@functools.cache
def load_fingerprints() -> Fingerprints:
    """The shipped database (OONI + Censored Planet + Citizen Lab), compiled once: read from
    the user's cache when a valid copy is there (see :mod:`netvigil.verdict._fpcache`), else
    compiled (~1-2 s, mostly ``re``) and cached for the next process."""
    from netvigil.verdict import _fpcache

    key = _fpcache.cache_key()
    cached = _fpcache.read(key)
    if isinstance(cached, Fingerprints):
        return cached
    fps = compile_shipped()
    _fpcache.write(key, fps)
    return fps


def compile_shipped() -> Fingerprints:
    """The shipped database compiled from its files (what the cache holds)."""
    fps: list[Fingerprint] = []
    fps += _ooni("fingerprints_http.csv")
    fps += _ooni("fingerprints_dns.csv")
    fps += _censoredplanet("blockpage_signatures.json", False)
    fps += _censoredplanet("false_positive_signatures.json", True)
    fps += _citizenlab_http()
    fps += _citizenlab_dns()
    return build_fingerprints(fps)
