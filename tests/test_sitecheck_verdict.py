"""Every verdict rule of docs/site-side-detection.md, on real captured hellos."""

from __future__ import annotations

from dataclasses import replace

import pytest

from netvigil.sitecheck.clienthello import ClientHello, is_grease, parse_client_hello
from netvigil.sitecheck.reference import (
    CHROMIUM,
    FIREFOX,
    SCHANNEL,
    ReferenceDB,
    claimed_client,
    labelled_records,
)
from netvigil.sitecheck.verdict import CONSISTENT, LIKELY_INTERCEPTED, UNKNOWN, judge

RECORDS = {str(r["label"]): r for r in labelled_records()}
CHROME_120 = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
CHROME_156 = CHROME_120.replace("120.0.0.0", "156.0.0.0")
CHROME_47 = CHROME_120.replace("120.0.0.0", "47.0.2526.111")
CHROME_49 = CHROME_120.replace("120.0.0.0", "49.0.2623.87")
FIREFOX_153 = "Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0"
FIREFOX_43 = "Mozilla/5.0 (Windows NT 6.1; rv:43.0) Gecko/20100101 Firefox/43.0"
IE_11 = "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko"


def _hello(label: str) -> ClientHello:
    parsed = parse_client_hello(bytes.fromhex(str(RECORDS[label]["client_hello_record_hex"])))
    assert isinstance(parsed, ClientHello)
    return parsed


def _rules(hello: ClientHello, user_agent: str) -> set[str]:
    return {reason.rule for reason in judge(hello, user_agent).reasons}


def _first(prefix: str) -> str:
    return next(label for label in RECORDS if label.startswith(prefix))


def test_user_agents_map_to_tls_stacks() -> None:
    assert claimed_client(CHROME_120) == claimed_client(CHROME_120)
    chrome = claimed_client(CHROME_120)
    assert chrome is not None and (chrome.stack, chrome.version) == (CHROMIUM, 120)
    edge = claimed_client(CHROME_120 + " Edg/120.0.2210.91")
    assert edge is not None and (edge.stack, edge.version) == (CHROMIUM, 120)
    opera = claimed_client(CHROME_120 + " OPR/106.0.0.0")
    assert opera is not None and (opera.stack, opera.version) == (CHROMIUM, 120)
    firefox = claimed_client(FIREFOX_153)
    assert firefox is not None and (firefox.stack, firefox.version) == (FIREFOX, 153)
    ie = claimed_client(IE_11)
    assert ie is not None and (ie.stack, ie.version) == (SCHANNEL, 11)
    ios = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/120.0 Mobile/15E148 Safari/604.1"
    )
    assert claimed_client(ios) is None  # Chrome on iOS uses Apple's stack
    assert claimed_client("curl/7.88.1") is None
    assert claimed_client("x" * 100_000) is None


def test_real_current_browsers_are_consistent() -> None:
    assert judge(_hello("live/chromium"), CHROME_156).verdict == CONSISTENT
    assert judge(_hello("live/firefox-esr"), FIREFOX_153).verdict == CONSISTENT
    # A Chrome release between the 2016 captures and Chromium 156 is judged on both.
    assert judge(_hello("live/chromium"), CHROME_120).verdict == CONSISTENT


def test_chrome_extension_shuffle_stays_consistent() -> None:
    hello = _hello("live/chromium")
    shuffled = replace(hello, extensions=tuple(reversed(hello.extensions)))
    assert judge(shuffled, CHROME_156).verdict == CONSISTENT


def test_unknown_without_reference() -> None:
    verdict = judge(_hello("live/curl"), "curl/7.88.1")
    assert verdict.verdict == UNKNOWN and verdict.claimed is None
    presto = "Opera/9.80 (Windows NT 6.1) Presto/2.12.388 Version/12.16"
    assert judge(_hello("live/chromium"), presto).verdict == UNKNOWN


def test_library_behind_a_modern_chrome_is_named() -> None:
    verdict = judge(_hello("live/python-ssl"), CHROME_120)
    assert verdict.verdict == LIKELY_INTERCEPTED
    rules = {r.rule for r in verdict.reasons}
    # Chrome 120 lies between the 2016 captures and Chromium 156: only the documented facts
    # and code points no browser sends (OpenSSL's encrypt_then_mac, x448, ed25519...) count.
    assert {"grease-absent", "extension-never-sent", "point-format-never-sent"} <= rules
    assert {"group-never-sent", "signature-algorithm-never-sent"} <= rules
    assert verdict.best_match is not None and "OpenSSL" in verdict.best_match.name
    assert verdict.to_json()["verdict"] == LIKELY_INTERCEPTED


def test_grease_absent_in_a_chromium() -> None:
    hello = _hello("live/chromium")
    fields = ("cipher_suites", "extensions", "supported_groups", "supported_versions")
    fields += ("key_share_groups", "signature_algorithms")
    no_grease = replace(
        hello,
        **{f: tuple(v for v in getattr(hello, f) if not is_grease(v)) for f in fields},
    )
    assert not no_grease.grease
    assert _rules(no_grease, CHROME_156) == {"grease-absent"}


def test_grease_unexpected_in_a_firefox() -> None:
    assert "grease-unexpected" in _rules(_hello("live/chromium"), FIREFOX_153)


def test_version_too_low_for_a_browser_with_tls13_for_years() -> None:
    hello = _hello("live/firefox-esr")
    tls12 = replace(hello, supported_versions=(0x0303,))
    assert _rules(tls12, FIREFOX_153) == {"version-too-low"}


def test_version_too_high_for_internet_explorer() -> None:
    assert "version-too-high" in _rules(_hello("live/chromium"), IE_11)


def test_cipher_and_extension_never_sent_and_missing() -> None:
    # Avast's own TLS stack in front of Chrome 49 (MITMEngine capture).
    rules = _rules(_hello("antivirus/mac-10.11.4-avast-11.7-chrome-49"), CHROME_49)
    assert {"cipher-never-sent", "cipher-missing", "extension-never-sent"} <= rules
    assert {"extension-missing", "group-never-sent", "signature-algorithm-never-sent"} <= rules


def test_point_format_never_sent() -> None:
    hello = _hello("live/firefox-esr")
    assert _rules(replace(hello, ec_point_formats=(0, 1, 2)), FIREFOX_153) == {
        "point-format-never-sent"
    }


def test_compression_never_sent() -> None:
    hello = _hello(_first("browsers/computer-Windows-7-chrome-47"))
    assert judge(hello, CHROME_47).verdict == CONSISTENT
    assert _rules(replace(hello, compression_methods=(1, 0)), CHROME_47) == {
        "compression-never-sent"
    }


def test_cipher_order_unseen_for_schannel() -> None:
    hello = _hello("browsers/computer-Windows-7-ie-11.0")
    assert judge(hello, IE_11).verdict == CONSISTENT
    reordered = replace(hello, cipher_suites=tuple(reversed(hello.cipher_suites)))
    assert _rules(reordered, IE_11) == {"cipher-order-unseen"}


def test_signature_algorithm_and_group_never_sent() -> None:
    hello = _hello("live/firefox-esr")
    odd = replace(
        hello,
        signature_algorithms=(*hello.signature_algorithms, 0x0303),
        supported_groups=(*hello.supported_groups, 0x001E),
    )
    assert _rules(odd, FIREFOX_153) == {"signature-algorithm-never-sent", "group-never-sent"}


def test_kz_style_middlebox_behind_modern_browsers() -> None:
    # MITMEngine's kzmitm-20190719 signature has no bytes; the GnuTLS and OpenSSL captures
    # stand in for a middlebox library: each is flagged behind Chrome and Firefox.
    names = {
        "live/gnutls-cli": "GnuTLS",
        "live/openssl-s_client": "OpenSSL",
        "live/curl": "curl",
        "live/go-net-http": "Go crypto/tls",
    }
    for library, name in names.items():
        for agent in (CHROME_120, CHROME_156, FIREFOX_153):
            verdict = judge(_hello(library), agent)
            assert verdict.verdict == LIKELY_INTERCEPTED, (library, agent)
            assert verdict.best_match is not None and name in verdict.best_match.name


@pytest.mark.parametrize(
    "label",
    [
        "browsers/computer-Windows-7-chrome-45.0",
        "browsers/computer-Windows-7-firefox-43.0",
        "antivirus/windows-7-none-chrome-51",
    ],
)
def test_leave_one_out_keeps_real_browsers_consistent(label: str) -> None:
    db = ReferenceDB.shipped()
    agent = CHROME_120.replace("120.0.0.0", label.rsplit("-", 1)[1] + ".0")
    if "firefox" in label:
        agent = FIREFOX_43
    assert judge(_hello(label), agent, db, exclude_label=label).verdict == CONSISTENT


def test_newer_than_every_reference_counts_only_library_markers() -> None:
    hello = _hello("live/chromium")
    without = replace(hello, extensions=tuple(e for e in hello.extensions if e != 0xCA34))
    chrome_160 = CHROME_120.replace("120.0.0.0", "160.0.0.0")
    # Chrome 156 always sent 0xca34 in our captures: its absence is evidence for a 156 ...
    assert _rules(without, CHROME_156) == {"extension-missing"}
    # ... but not for a later release, which may have dropped it.
    verdict = judge(without, chrome_160)
    assert verdict.verdict == CONSISTENT and verdict.notes
    # What no browser sends still counts there: OpenSSL's encrypt_then_mac.
    with_etm = replace(hello, extensions=(*hello.extensions, 0x0016))
    assert _rules(with_etm, chrome_160) == {"extension-never-sent"}
