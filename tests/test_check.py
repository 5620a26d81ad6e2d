"""`netvigil check`: interception found on the Kazakh profiles, none on honest networks.

Testbed tests measure from inside `client` (a thread in its namespace), with the testbed's ISP
resolver, control helper and web-PKI root. The built-in trigger set holds real domain names:
they are only ever resolved through the testbed's resolver here. Unit tests cover the verdict
rules, the headline and the chain functions on hostile input, without a network.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import RunningTestbed, needs_testbed
from netvigil import check_cli
from netvigil.experiments import interception_check as ic
from netvigil.experiments.web_connectivity import ProbeConfig
from netvigil.measure import probe_config
from netvigil.net.tls import TrustStore
from netvigil.testbed import control
from netvigil.testbed.plan import CONTROL_HELPER, ISP_RESOLVER, SERVICE_PORT, Plan
from netvigil.testbed.truth import ground_truth

# ----------------------------------------------------------------------------------------------
# Helpers


def _cert(
    subject: str,
    issuer: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
    *,
    ca: bool = False,
    san: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(signer or key, hashes.SHA256()), key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _config(bed: RunningTestbed, bundle: str | None = None) -> ProbeConfig:
    return probe_config(
        ca_bundle=bundle or str(bed.info.trust_anchor),
        resolver=ISP_RESOLVER,
        second_resolver=None,
        helper=f"http://{CONTROL_HELPER}:{SERVICE_PORT}/",
        no_doh=True,
    )


def _check(bed: RunningTestbed, domains: list[str], bundle: str | None = None) -> ic.CheckReport:
    config = _config(bed, bundle)

    def job() -> ic.CheckReport:
        return asyncio.run(ic.check_domains(domains, config, timeout=5.0))

    report = bed.in_client(job, timeout=90)
    assert isinstance(report, ic.CheckReport)
    return report


def _intercepted_snis(plan: Plan) -> set[str]:
    return {v for r in plan.rules if r.action == "tls-intercept" for v in r.values}


def _sites(plan: Plan) -> set[str]:
    return {s.domain for s in plan.sites}


def _censored_or_failing(plan: Plan) -> set[str]:
    """Sites that the ground truth says are not plainly reachable (any rule, or down)."""
    return {row.domain for row in ground_truth(plan) if row.outcome != "ok"}


# ----------------------------------------------------------------------------------------------
# Without a network


def test_trigger_set_has_2019_2024_social_messaging_and_circumvention_sites() -> None:
    sets = {s.name: s for s in ic.load_triggers()}
    assert len(sets["kz-2019"].domains) == 37
    assert len(sets["kz-2024"].domains) == 14
    assert "www.bbc.com" in sets["social-news"].domains
    messaging = set(sets["messaging"].domains)
    for app in (
        {"signal.org", "updates.signal.org", "chat.signal.org"},
        {"whatsapp.com", "web.whatsapp.com", "www.whatsapp.com"},
        {"telegram.org", "web.telegram.org", "t.me"},
        {"messenger.com", "www.messenger.com", "edge-chat.facebook.com"},
    ):
        assert app <= messaging, app - messaging
    circumvention = set(sets["circumvention"].domains)
    assert {"www.torproject.org", "bridges.torproject.org", "psiphon.ca", "psiphon3.com"} <= (
        circumvention
    )
    assert {"protonvpn.com", "nordvpn.com", "expressvpn.com", "mullvad.net", "windscribe.com"} <= (
        circumvention
    )
    # every name of every set is a valid host name, and the default is all of them, once
    everything = [d for s in sets.values() for d in s.domains]
    assert all(ic.normalize_domain(d) == d for d in everything)
    assert ic.default_domains() == list(dict.fromkeys(everything))
    assert 100 <= len(ic.default_domains()) <= 150


def test_normalize_domain() -> None:
    assert ic.normalize_domain("https://WWW.Example.org:443/path?q=1") == "www.example.org"
    assert ic.normalize_domain("example.org.") == "example.org"
    assert ic.normalize_domain("198.19.0.1") is None
    assert ic.normalize_domain("bad name") is None
    assert ic.normalize_domain("a" * 300 + ".com") is None


def _result(**kw: Any) -> ic.DomainResult:
    base: dict[str, Any] = {
        "domain": "site.test",
        "chain": (b"x",),
        "verified": True,
        "leaf_spki": "a",
        "anchor": "CN=Public Root",
        "control_status": True,
        "control_leaf_spki": "a",
        "control_anchor": "CN=Public Root",
    }
    base.update(kw)
    return ic.DomainResult(**base)


def test_verdict_rules() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, ic.OK),
        ({"control_leaf_spki": "b"}, ic.OK),  # CDN: another key from the same root
        ({"verified": False, "verify_failure": "ssl_unknown_authority"}, ic.INTERCEPTED),
        (
            {"verified": False, "verify_failure": "ssl_unknown_authority", "control_status": False},
            ic.CANNOT_TELL,
        ),
        # the national root installed: verifies, but another key and another root
        ({"leaf_spki": "b", "anchor": "CN=Qaznet Trust Network"}, ic.INTERCEPTED),
        ({"failure": "dns: dns_nxdomain_error", "chain": ()}, ic.CANNOT_TELL),
        ({"control_failure": "no control helper", "control_status": None}, ic.CANNOT_TELL),
    ]
    for fields, expected in cases:
        result = _result(**fields)
        ic.judge(result)
        assert result.verdict == expected, (fields, result.reason)


def test_known_root_without_control_is_interception_unless_it_is_the_real_certificate() -> None:
    root = ic.KnownRoot("Qaznet Trust Network", "The Kazakh government root.", "issuer-name")
    no_control = _result(control_failure="no control helper", control_status=None, known_root=root)
    ic.judge(no_control)
    assert no_control.verdict == ic.INTERCEPTED
    assert "matches by name" in no_control.reason
    same = _result(known_root=root)  # the control saw the same key: the genuine certificate
    ic.judge(same)
    assert same.verdict == ic.OK


def test_headline_names_the_issuer_and_the_root() -> None:
    root = ic.KnownRoot(
        "Qaznet Trust Network",
        "The Kazakh government root that browsers have blocked since 2019.",
        "issuer-name",
    )
    results = [
        _result(
            domain=f"d{i}.test",
            verdict=ic.INTERCEPTED,
            issuer="Qaznet Trust Network",
            known_root=root,
        )
        for i in range(12)
    ] + [_result(domain="ok.test", verdict=ic.OK)]
    report = ic.CheckReport(results, 1.0, True)
    text = ic.headline(report)
    assert text.startswith(
        "HTTPS to 12 sites is intercepted with a certificate issued by 'Qaznet Trust Network', "
        "the Kazakh government root that browsers have blocked since 2019 (matches by name)."
    ), text
    assert report.exit_code == 1
    assert ic.CheckReport([_result(verdict=ic.OK)], 1.0, True).exit_code == 0
    nothing = ic.CheckReport([_result(verdict=ic.CANNOT_TELL, failure="dns: x")], 1.0, True)
    assert nothing.exit_code == 2
    assert ic.headline(nothing).startswith("Could not tell")


def test_headline_says_what_was_checked_when_nothing_is_found() -> None:
    sets = ic.load_triggers()
    names = ic.domains_of(sets)
    report = ic.CheckReport([_result(domain=d, verdict=ic.OK) for d in names], 1.0, True, sets)
    text = ic.headline(report)
    assert text.startswith("No interception seen: HTTPS to "), text
    assert (
        f"Checked {len(names)} names: kz-2019 (37), kz-2024 (14), social-news (16), "
        f"messaging ({len(sets[3].domains)}), circumvention ({len(sets[4].domains)})."
    ) in text
    # a few names are named one by one, also when none could be checked
    few = [_result(domain="signal.org", verdict=ic.OK), _result(domain="t.me", verdict=ic.OK)]
    assert ic.headline(ic.CheckReport(few, 1.0, True)).endswith("Checked: signal.org, t.me.")
    failed = _result(domain="signal.org", verdict=ic.CANNOT_TELL, failure="dns: x")
    assert ic.headline(ic.CheckReport([failed], 1.0, True)).endswith("Checked: signal.org.")
    assert ic.CheckReport([failed], 1.0, True, sets[:1]).to_json()["checked"] == [
        {"name": "kz-2019", "description": sets[0].description, "count": 37}
    ]


def _run_check_cli(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[int, list[str], list[ic.TriggerSet]]:
    """`netvigil check ARGV` with the network replaced: which names and sets would be checked."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    seen: dict[str, Any] = {}

    async def fake_check(domains: list[str], config: Any, **kw: Any) -> ic.CheckReport:
        seen["domains"], seen["sets"] = list(domains), list(kw["sets"])
        results = [_result(domain=d, verdict=ic.OK) for d in domains]
        return ic.CheckReport(results, 0.1, True, list(kw["sets"]))

    monkeypatch.setattr(ic, "check_domains", fake_check)
    parser = argparse.ArgumentParser()
    check_cli.add_parser(parser.add_subparsers(dest="command"))
    code = check_cli.run(parser.parse_args(["check", "--consent", "--json", *argv]))
    return code, seen.get("domains", []), seen.get("sets", [])


def _list_hosts(code: str) -> list[str]:
    import csv
    from importlib import resources

    text = resources.files("netvigil.data").joinpath("test-lists", f"{code}.csv").read_text()
    hosts = (ic.normalize_domain(row["url"]) for row in csv.DictReader(text.splitlines()))
    return list(dict.fromkeys(h for h in hosts if h))


def test_list_adds_a_country_test_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kz = _list_hosts("kz")
    assert 100 < len(kz) < ic.MAX_LIST_NAMES
    code, domains, sets = _run_check_cli(["--list", "KZ", "signal.org"], monkeypatch, tmp_path)
    assert code == 0
    assert [s.name for s in sets] == [
        *(t.name for t in ic.load_triggers()),
        "list kz",
        ic.NAMED_SET,
    ]
    assert list(sets[-2].domains) == kz
    assert domains == list(dict.fromkeys([*ic.default_domains(), *kz, "signal.org"]))
    doc = json.loads(capsys.readouterr().out)
    assert f"list kz ({len(kz)})" in doc["headline"]
    assert {"name": "list kz", "description": "Citizen Lab test list 'kz'", "count": len(kz)} in (
        doc["checked"]
    )
    # --only: the list and the names given, nothing built in
    code, domains, sets = _run_check_cli(["--only", "--list", "kz"], monkeypatch, tmp_path)
    assert [s.name for s in sets] == ["list kz"] and domains == kz
    capsys.readouterr()


def test_list_is_bounded_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = _list_hosts("global")
    assert len(hosts) > ic.MAX_LIST_NAMES  # the shipped global list is larger than the bound
    code, domains, _ = _run_check_cli(["--only", "--list", "global"], monkeypatch, tmp_path)
    assert code == 0 and domains == hosts[: ic.MAX_LIST_NAMES]
    err = capsys.readouterr().err
    assert (
        f"list global: {len(hosts):,} host names; checking the first {ic.MAX_LIST_NAMES:,}" in err
    )
    code, domains, _ = _run_check_cli(["--only", "--list", "atlantis"], monkeypatch, tmp_path)
    assert code == 2 and domains == []
    assert "no test list 'atlantis'" in capsys.readouterr().err


def test_chain_functions_are_bounded_on_hostile_chains() -> None:
    leaf, _ = _cert("leaf.test", san="leaf.test")
    ca, ca_key = _cert("Loop CA", "Loop CA", ca=True)
    trust = TrustStore([ca])
    hostile: list[list[bytes]] = [
        [_der(leaf)] + [_der(ca)] * 10_000,  # 10,000 certificates
        [b"\x30\x82garbage"] * 10_000,  # malformed
        [_der(ca), _der(ca), _der(ca)],  # a loop: the chain issues itself
        [b""],
        [b"\x30" * (ic.MAX_CERT_BYTES + 1)],
    ]
    for chain in hostile:
        started = time.monotonic()
        ic.top_issuer(chain)
        ic.leaf_spki_sha256(chain)
        assert ic.verified_path(chain, "leaf.test", trust) is None
        pem = ic.chain_to_pem(chain)
        assert pem.count("BEGIN CERTIFICATE") <= ic.MAX_CHAIN
        ic.known_root(chain)
        assert time.monotonic() - started < 10
    # the control's chain: bounded too, and garbage is skipped
    entry = {"x_peer_certificates": [{"data": "!!", "format": "base64"}] + ["AAAA"] * 10_000}
    assert len(ic.control_chain(entry)) <= ic.MAX_CHAIN
    assert ic.control_chain({"x_peer_certificates": "nope"}) == ()
    _ = ca_key


def test_check_against_a_local_server_presenting_garbage() -> None:
    """A 'TLS' server on 127.0.0.1 that answers garbage: cannot tell, bounded, no crash."""
    anchor, _ = _cert("Some Root", ca=True)
    config = ProbeConfig(trust=TrustStore([anchor]), helper_url=None)

    async def main() -> ic.DomainResult:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"\x16\x03\x01\xff\xff" + b"\x00" * 4096)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await ic.check_domain(
                "garbage.test", config, timeout=3.0, port=port, address="127.0.0.1"
            )

    started = time.monotonic()
    result = asyncio.run(main())
    assert time.monotonic() - started < 15
    assert result.verdict == ic.CANNOT_TELL
    assert result.failure is not None and result.failure.startswith("tls: ")


def test_check_against_a_local_server_with_an_untrusted_self_signed_chain(tmp_path: Path) -> None:
    """A real TLS server with an unknown root and no control: the chain is kept, cannot tell."""
    root, root_key = _cert("Rogue Root", ca=True)
    leaf, leaf_key = _cert("rogue.test", "Rogue Root", signer=root_key, san="rogue.test")
    chain_path, key_path = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain_path.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + root.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain_path, key_path)
    anchor, _ = _cert("Some Root", ca=True)
    config = ProbeConfig(trust=TrustStore([anchor]), helper_url=None)

    async def main() -> ic.DomainResult:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()  # after the handshake: the chain has been sent

        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await ic.check_domain(
                "rogue.test", config, timeout=3.0, port=port, address="127.0.0.1"
            )

    result = asyncio.run(main())
    assert result.verdict == ic.CANNOT_TELL
    assert result.verify_failure in ("ssl_unknown_authority", "ssl_invalid_certificate")
    assert result.issuer == "Rogue Root"
    assert len(result.chain) == 2
    assert "BEGIN CERTIFICATE" in result.to_json()["chain_pem"]


def test_trust_store_flag_is_delegated_or_not_available(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    check_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check", "--trust-store", "--json"])
    code = check_cli.run(args)
    out = capsys.readouterr().out
    assert isinstance(code, int)  # the audit's own exit status
    assert out  # either the audit's report or "not available"


# ----------------------------------------------------------------------------------------------
# In the testbed


@pytest.mark.parametrize(
    ("profile", "root_name"),
    [
        ("kz-2019-interception", "Qaznet Trust Network"),
        ("kz-2024", "Information Security Certification Authority"),
    ],
)
@needs_testbed
@pytest.mark.testbed
def test_check_finds_every_intercepted_domain_and_names_the_root(
    testbed: Callable[[str], RunningTestbed], profile: str, root_name: str
) -> None:
    bed = testbed(profile)
    plan = Plan.load(bed.info.public_dir)
    expected = _intercepted_snis(plan) & _sites(plan)
    domains = ic.default_domains() + sorted(expected)
    report = _check(bed, domains)
    intercepted = {r.domain for r in report.by_verdict(ic.INTERCEPTED)}
    assert intercepted == expected & set(domains), [
        (r.domain, r.verdict, r.reason) for r in report.results if r.domain in expected
    ]
    assert report.exit_code == 1
    text = ic.headline(report)
    assert root_name in text, text
    assert f"HTTPS to {len(intercepted)} sites is intercepted" in text
    for r in report.by_verdict(ic.INTERCEPTED):
        assert r.chain and r.control_status is True
        assert root_name in r.issuer
    # every uncensored site of the profile that was checked is ok
    honest = (set(domains) & _sites(plan)) - _censored_or_failing(plan)
    assert honest and all(r.verdict == ic.OK for r in report.results if r.domain in honest)
    # the whole run, ~60+ domains, is bounded (the figure goes in the report, not asserted)
    assert report.seconds < 60


@needs_testbed
@pytest.mark.testbed
def test_check_cli_exit_codes_json_and_evidence(
    testbed: Callable[[str], RunningTestbed],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # --consent writes there
    bed = testbed("kz-2019-interception")
    parser = argparse.ArgumentParser()
    check_cli.add_parser(parser.add_subparsers(dest="command"))
    common = [
        "--resolver",
        ISP_RESOLVER,
        "--helper",
        f"http://{CONTROL_HELPER}:{SERVICE_PORT}/",
        "--ca-bundle",
        str(bed.info.trust_anchor),
        "--consent",
        "--json",
        "--only",
    ]
    evidence = tmp_path / "evidence"
    intercepted_args = parser.parse_args(
        ["check", "www.google.com", "vk.com", "tengrinews.kz", "--evidence", str(evidence), *common]
    )
    clean_args = parser.parse_args(["check", "tengrinews.kz", "www.bbc.com", *common])
    unknown_args = parser.parse_args(["check", "no-such-site.example", *common])
    codes = bed.in_client(
        lambda: [check_cli.run(a) for a in (intercepted_args, clean_args, unknown_args)],
        timeout=90,
    )
    assert codes == [1, 0, 2]
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [d["exit_code"] for d in docs] == [1, 0, 2]
    verdicts = {d["domain"]: d["verdict"] for d in docs[0]["domains"]}
    assert verdicts == {
        "www.google.com": "intercepted",
        "vk.com": "intercepted",
        "tengrinews.kz": "ok",
    }
    assert "Qaznet Trust Network" in docs[0]["headline"]
    assert (evidence / "vk.com.pem").read_text().count("BEGIN CERTIFICATE") == 2
    assert (evidence / "vk.com.control.pem").exists()
    raw = json.loads((evidence / "results.json").read_text())
    assert raw["domains"][0]["control"]["response"] is not None


@needs_testbed
@pytest.mark.testbed
def test_clean_profile_has_no_interception(testbed: Callable[[str], RunningTestbed]) -> None:
    bed = testbed("clean")
    plan = Plan.load(bed.info.public_dir)
    report = _check(bed, sorted(_sites(plan)) + ic.default_domains())
    assert not report.by_verdict(ic.INTERCEPTED), [
        (r.domain, r.reason) for r in report.by_verdict(ic.INTERCEPTED)
    ]
    assert report.exit_code == 0
    assert report.by_verdict(ic.OK)


@needs_testbed
@pytest.mark.testbed
def test_cdn_site_with_two_valid_certificates_is_not_interception(
    testbed: Callable[[str], RunningTestbed],
) -> None:
    bed = testbed("all-techniques")
    report = _check(bed, ["cdn-images.kz"])
    assert [r.verdict for r in report.results] == [ic.OK], report.results[0].reason
    assert report.exit_code == 0


@needs_testbed
@pytest.mark.testbed
def test_national_root_in_the_trust_store_does_not_hide_interception(
    testbed: Callable[[str], RunningTestbed], tmp_path: Path
) -> None:
    """The 2015 law's situation: the national root is installed. The chain then verifies,
    but the control sees another key from another root: still interception."""
    bed = testbed("kz-2019-interception")
    plan = Plan.load(bed.info.public_dir)
    bundle = tmp_path / "with-national-root.pem"
    bundle.write_bytes(
        bed.info.trust_anchor.read_bytes()
        + (bed.info.public_dir / "national-root-qaznet.pem").read_bytes()
    )
    expected = _intercepted_snis(plan) & _sites(plan)
    domains = [*sorted(expected), "tengrinews.kz", "www.bbc.com"]
    report = _check(bed, domains, bundle=str(bundle))
    intercepted = report.by_verdict(ic.INTERCEPTED)
    assert {r.domain for r in intercepted} == expected
    for r in intercepted:
        # The probe's chain leads to the installed national root …
        assert r.anchor is not None and "Qaznet Trust Network" in r.anchor, r.reason
        # … and the control saw another key from another issuer at the same address.
        assert r.control_leaf_spki is not None and r.leaf_spki != r.control_leaf_spki
        assert r.control_issuer and r.control_issuer != r.issuer
        assert r.control_anchor is not None and r.control_anchor != r.anchor
        # Verification alone is not what decides: were the forged chain accepted (a lenient
        # verifier, a browser with the root installed), the comparison still says interception.
        lenient = dataclasses.replace(r, verified=True, verify_failure=None, known_root=None)
        ic.judge(lenient)
        assert lenient.verdict == ic.INTERCEPTED, lenient.reason
        assert "another key than the control's" in lenient.reason
    assert report.exit_code == 1
    assert "Qaznet Trust Network" in ic.headline(report)
    assert all(
        r.verdict == ic.OK for r in report.results if r.domain in ("tengrinews.kz", "www.bbc.com")
    )


# A network that intercepts only a messaging and a circumvention site: the built-in set must
# cover them (it did not: "no interception" on such a network). Not a shipped profile; written
# here, with an invented root, so the verdict comes from the comparison with the control.
MESSAGING_PROFILE = """\
name = "pytest-messaging-circumvention"
description = "Intercepts only signal.org and www.torproject.org"
isp = "Test ISP"
country = "ZZ"
domains = [
    "signal.org",
    "www.torproject.org",
    "web.telegram.org",
    "nordvpn.com",
    "www.bbc.com",
    "github.com",
]

[[national_root]]
id = "test-root"
subject = { C = "ZZ", CN = "Example National Security Root" }
intermediate = { C = "ZZ", CN = "Example National Intermediate" }
root_key = "ec-p256"

[[rule]]
action = "tls-intercept"
root = "test-root"
sni = ["signal.org", "www.torproject.org"]
"""


@needs_testbed
@pytest.mark.testbed
def test_check_with_no_names_finds_messaging_and_circumvention_interception(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    profile = tmp_path / "messaging.toml"
    profile.write_text(MESSAGING_PROFILE)
    bed = RunningTestbed(control.up(str(profile), name=f"pytest-msg-{os.getpid()}"))
    try:
        parser = argparse.ArgumentParser()
        check_cli.add_parser(parser.add_subparsers(dest="command"))
        common = [
            "--resolver",
            ISP_RESOLVER,
            "--helper",
            f"http://{CONTROL_HELPER}:{SERVICE_PORT}/",
            "--ca-bundle",
            str(bed.info.trust_anchor),
            "--consent",
        ]
        runs = [
            parser.parse_args(["check", *common, "--json"]),  # no names: the built-in sets
            parser.parse_args(["check", *common]),  # the same, as a person reads it
            parser.parse_args(["check", *common, "--only", "www.bbc.com", "github.com"]),
        ]
        codes = bed.in_client(lambda: [check_cli.run(a) for a in runs], timeout=180)
    finally:
        bed.close()
    out = capsys.readouterr().out
    assert codes == [1, 1, 0], out[-3000:]
    doc = json.loads(out.splitlines()[0])
    verdicts = {d["domain"]: d["verdict"] for d in doc["domains"]}
    intercepted = {d for d, v in verdicts.items() if v == ic.INTERCEPTED}
    assert intercepted == {"signal.org", "www.torproject.org"}, doc["headline"]
    for honest in ("web.telegram.org", "nordvpn.com", "www.bbc.com", "github.com"):
        assert verdicts[honest] == ic.OK, honest
    assert "HTTPS to 2 sites is intercepted" in doc["headline"]
    assert "Example National" in doc["headline"]
    assert [c["name"] for c in doc["checked"]] == [s.name for s in ic.load_triggers()]
    assert "HTTPS to 2 sites is intercepted" in out  # the table's headline
    assert "No interception seen: HTTPS to 2 sites presented the genuine certificate. " in out
    assert "Checked: www.bbc.com, github.com." in out
