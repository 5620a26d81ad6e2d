"""Blockpage fingerprints: loading, false positives first, locations, the testbed's pages."""

from __future__ import annotations

from pathlib import Path

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
