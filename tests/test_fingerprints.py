"""Blockpage fingerprints: loading, false positives first, locations, the testbed's pages."""

from __future__ import annotations

from pathlib import Path

import numpy  # noqa: F401  (the vectorised pass is taken once numpy is loaded: _vector_worth)
import pytest

from netvigil.verdict.fingerprints import (
    Fingerprint,
    LiteralMatcher,
    build_fingerprints,
    load_fingerprints,
)

BLOCKPAGES = sorted((Path(__file__).parents[1] / "src/netvigil/testbed/blockpages").glob("*.html"))


def test_loads_all_three_sources() -> None:
    fps = load_fingerprints()
    sources = {fp.source for fp in fps.fingerprints}
    assert sources == {"ooni", "censoredplanet", "citizenlab"}
    assert len(fps) > 3000
    assert {"body", "headers", "header.location", "header.server"} <= fps.locations


@pytest.mark.parametrize("path", BLOCKPAGES, ids=lambda p: p.name)
def test_every_testbed_blockpage_is_matched(path: Path) -> None:
    hit, fp_hit = load_fingerprints().match_response(path.read_text("utf-8", "replace"), {})
    assert fp_hit is None
    assert hit is not None, path.name


def test_there_are_testbed_blockpages() -> None:
    assert len(BLOCKPAGES) >= 8


def test_false_positive_wins() -> None:
    fps = load_fingerprints()
    hit, fp_hit = fps.match_response("<p><em>Thank you for using nginx.</em></p> Web Filter", {})
    assert hit is None and fp_hit is not None


def test_header_locations() -> None:
    fps = load_fingerprints()
    hit, _ = fps.match_response("", {"Location": "http://warning.rt.ru/?x=1"})
    assert hit is not None and hit.location in ("header.location", "headers")
    hit, _ = fps.match_response("", {"Server": "Protected by WireFilter 8000"})
    assert hit is not None


def test_dns_fingerprint() -> None:
    assert load_fingerprints().match_dns("134.17.0.7") is not None
    assert load_fingerprints().match_dns("93.184.216.34") is None


def test_plain_page_is_not_a_blockpage() -> None:
    hit, _ = load_fingerprints().match_response("<html><body>hello world</body></html>", {})
    assert hit is None


def test_literal_matcher_finds_each_literal() -> None:
    lits = ["abc", "Zebra crossing", "blocked.example.ru", "доступ", "q"]
    m = LiteralMatcher(lits)
    for lit in lits:
        assert m.search(f"..before {lit} after..") == lit
    assert m.search("nothing here") is None
    assert LiteralMatcher([]).search("anything") is None


def test_regex_signatures_are_linear_on_hostile_bodies() -> None:
    import time

    fps = build_fingerprints([Fingerprint("t.re", "test", "body", "regexp", "URL .* Sp.*er Gate")])
    body = "URL " * 100_000  # many starts, never a match: must not go quadratic
    start = time.perf_counter()
    assert fps.match_body(body) is None
    assert time.perf_counter() - start < 1.0
    assert fps.match_body("URL http://x Spyder Gate") is not None


def test_prefix_and_full_patterns() -> None:
    fps = build_fingerprints(
        [
            Fingerprint("t.p", "test", "header.location", "prefix", "http://block."),
            Fingerprint("t.f", "test", "header.server", "full", "Censor/1.0"),
        ]
    )
    assert fps.match_response("", {"location": "http://block.isp/x"})[0] is not None
    assert fps.match_response("", {"Server": "Censor/1.0"})[0] is not None
    assert fps.match_response("", {"Server": "Censor/1.0 extra"})[0] is None


def _sample_texts(literals: list[str], seed: int) -> list[str]:
    """Long texts stitched from pieces of literals (overlaps, near-misses) and filler."""
    import random

    rnd = random.Random(seed)
    filler = ["<div class='x'>", " the ", "новости ", "\n", "http://", ".com/", "ёж", "\ud800"]
    out: list[str] = []
    for _ in range(40):
        parts: list[str] = []
        while sum(map(len, parts)) < 4096:
            lit = rnd.choice(literals)
            cut = rnd.choice(
                [lit, lit[: rnd.randint(1, len(lit))], lit[rnd.randint(0, len(lit)) :]]
            )
            parts.append(cut if rnd.random() < 0.5 else rnd.choice(filler))
        out.append("".join(parts))
    return out


def test_vectorised_find_all_equals_the_regex_pass() -> None:
    """The 4-gram filter replays the regex pass exactly: same literals, same order."""
    for loc in ("body", "headers", "header.location"):
        matcher = load_fingerprints()._sets[loc].literals
        texts = _sample_texts(sorted(matcher.literals), seed=len(loc))
        for text in texts:
            assert len(text) >= 1024
            for limit in (1, 3, 64):
                assert matcher.find_all(text, limit) == matcher.find_all_regex(text, limit)


def test_vectorised_find_all_on_overlapping_literals() -> None:
    lits = ["xyzw-block", "zw-blocked page", "blocked page!", "Zebra crossing", "доступ ограничен"]
    m = LiteralMatcher(lits)
    for text in (
        "." * 2000 + "xyzw-blocked page!" + "." * 10,
        "доступ ограничен" * 100 + "Zebra crossing",
        "xyzw-block" * 300,
    ):
        assert m.find_all(text) == m.find_all_regex(text)


def test_repeated_literal_body_is_bounded() -> None:
    """A body that is one literal over and over (more occurrences than the index keeps)
    falls back to the constant-memory regex pass, with the same answer."""
    import time

    m = load_fingerprints()._sets["body"].literals
    lit = next(iter(sorted(m.literals, key=len)))
    body = lit * (256 * 1024 // len(lit))
    assert m._grams is not None and m._grams.occurrences(body) is None
    start = time.perf_counter()
    assert m.find_all(body) == m.find_all_regex(body) == [lit]
    assert time.perf_counter() - start < 10.0
