"""Profile checks catch what cryptography would refuse later, and name a misspelt key.

Before, a CN over 64 characters passed validation and failed deep in the supervisor with a
cryptography traceback; a misspelt key was refused without saying what was meant.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netvigil.testbed.plan import make_plan
from netvigil.testbed.profile import ProfileError, parse_profile

PROFILE = """name = "p"
domains = ["a.example"]

[[national_root]]
id = "r"
subject = {{ C = "KZ", CN = "{cn}" }}
intermediate = {{ CN = "Security Certificate" }}
{extra}

[[rule]]
action = "tls-intercept"
sni = ["a.example"]
root = "r"
"""


def profile(cn: str = "Qaznet Trust Network", extra: str = "") -> str:
    return PROFILE.format(cn=cn, extra=extra)


@pytest.mark.parametrize(
    ("cn", "extra", "expected"),
    [
        ("X" * 65, "", r"subject CN has 65 characters, more than a certificate allows \(64\)"),
        ("ok", "intermediate_validity_days = 0", "intermediate_validity_days '0' is not a whole"),
        ("ok", 'not_before = "2016-13-02"', "not_before '2016-13-02' is not a date"),
        ("ok", 'not_before = "1900-01-01"', "outside what a certificate can carry"),
        ("ok", 'not_after = "2010-01-01"', "not_after 2010-01-01 is not after not_before"),
        ("ok", 'root_key = "rsa-1024"', "root_key 'rsa-1024' is not a key the testbed makes"),
        ("ok", 'validity_shift_hours = "six"', "validity_shift_hours 'six' is not a whole"),
    ],
)
def test_what_cryptography_would_reject_is_one_line_at_load(
    cn: str, extra: str, expected: str
) -> None:
    with pytest.raises(ProfileError, match=expected) as caught:
        parse_profile(profile(cn, extra), "my.toml")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("my.toml:")


def test_a_bad_country_attribute_is_named() -> None:
    text = profile().replace('C = "KZ"', 'C = "KAZ"')
    with pytest.raises(ProfileError, match="subject C 'KAZ' is not a two-letter country code"):
        parse_profile(text, "my.toml")
    text = profile().replace('C = "KZ"', 'CNN = "x"')
    with pytest.raises(
        ProfileError, match=r"unknown subject attribute 'CNN' \(did you mean 'CN'\?\)"
    ):
        parse_profile(text, "my.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'name = "p"\ndomians = ["a.example"]\n',
            "unknown key 'domians' (did you mean 'domains'?)",
        ),
        (
            'name = "p"\n[[site]]\ndomain = "a.example"\nkidn = "slow"\n',
            "unknown site key 'kidn' (did you mean 'kind'?)",
        ),
        (
            'name = "p"\ndomains = ["a.example"]\n[[rule]]\naction = "tls-rest"\nsni = "a.example"\n',
            "unknown action 'tls-rest' (did you mean 'tls-reset'?)",
        ),
        (
            'name = "p"\ndomains = ["a.example"]\n[[rule]]\naction = "tls-reset"\nsin = "a.example"\n',
            "unknown rule key 'sin' (did you mean 'sni'?)",
        ),
        (
            'name = "p"\ndomains = ["a.example"]\n[[rule]]\naction = "http-blockpage"\n'
            'host = "a.example"\nblockpag = "nat_ir"\n',
            "has no parameter 'blockpag' (did you mean 'blockpage'?)",
        ),
        (
            profile(extra='root_kye = "rsa-2048"'),
            "unknown national_root key 'root_kye' (did you mean 'root_key'?)",
        ),
    ],
)
def test_a_misspelt_key_is_named_with_a_suggestion(text: str, expected: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "my.toml")
    assert expected in str(caught.value)


def test_a_misspelt_profile_name_gets_a_suggestion() -> None:
    from netvigil.testbed.profile import load_profile

    with pytest.raises(ProfileError, match=r"did you mean 'kz-2024'"):
        load_profile("kz-2042")


def test_what_the_checks_accept_the_pki_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limits themselves (a 64-character CN, 1950 and 9999) and a 70-character site name."""
    from netvigil.testbed import pki

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    long_site = "a" * 60 + ".long.example"
    text = profile(
        "Q" * 64,
        'root_key = "ec-p256"\nnot_before = "1950-01-01"\nnot_after = "9999-12-31"\n'
        "validity_shift_hours = 8784",
    ).replace('domains = ["a.example"]', f'domains = ["a.example", "{long_site}"]')
    plan = make_plan(parse_profile(text, "my.toml"))
    root_ca, inter_ca = pki.national_ca(plan.national_roots[0])
    assert root_ca.cert.subject.rfc4514_string() == "CN=" + "Q" * 64 + ",C=KZ"
    cert, _key = pki.issue_leaf(inter_ca, long_site)
    assert cert.subject.rfc4514_string() == ""  # named by the SAN alone, as real CAs do
    assert long_site in str(cert.extensions)
