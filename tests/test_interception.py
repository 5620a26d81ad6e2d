"""Interception evidence: forged chains made as Kazakhstan's 2019 middlebox did, hostile chains,
and the verdict's decision (interception vs misconfigured site vs CDN variation)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kz_certs import QAZNET, der, make_ca
from netvigil.net.tls import TrustStore
from netvigil.testbed.pki import forge_leaf, issue_leaf, name_from
from netvigil.testbed.plan import RootPlan
from netvigil.verdict import analyze, engine
from netvigil.verdict.interception import describe_interception

HOST = "www.google.com"


class World:
    """A web PKI with the site's real certificate, and a Qaznet-named censor forging it."""

    def __init__(self) -> None:
        self.web_root = make_ca(name_from({"C": "US", "O": "Web PKI", "CN": "Web Root"}))
        self.web_inter = make_ca(name_from({"C": "US", "CN": "Web Issuing CA"}), self.web_root)
        self.real, _ = issue_leaf(self.web_inter, HOST)
        # Real serials are large (≥ 64 bits), so the kept prefix is meaningful.
        assert self.real.serial_number >> 33
        self.national = make_ca(name_from(QAZNET.subject))
        self.inter = make_ca(name_from(QAZNET.intermediate_subject), self.national)
        self.key = rsa.generate_private_key(public_exponent=3, key_size=2048)
        self.forged = forge_leaf(self.real, self.inter, QAZNET, self.key)

    @property
    def real_chain(self) -> list[bytes]:
        return [der(self.real), der(self.web_inter.cert)]

    @property
    def forged_chain(self) -> list[bytes]:
        return [der(self.forged), der(self.inter.cert)]


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_forged_leaf_shows_the_kz2019_signature(world: World) -> None:
    ev = describe_interception(world.forged_chain, world.real_chain, HOST)
    assert ev["kz2019_signature"] is True, ev["kz2019_reasons"]
    copied = ev["copied"]
    assert copied["subject"] is True and copied["san"] is True
    assert copied["serial_prefix"] is True
    assert copied["validity_shift_hours"] == 6.0
    assert copied["key_differs"] is True and copied["same_certificate"] is False
    assert copied["public_exponent"] == {"presented": 3, "real": None}  # the real key is EC
    assert set(copied["extensions_dropped"]) >= {"BasicConstraints", "ExtendedKeyUsage"}
    assert ev["leaf_covers_host"] is True
    # The issuer path, leaf first, and a name-only match of the national root.
    steps = ev["issuer_path"]["steps"]
    assert [s["position"] for s in steps] == [0, 1]
    assert "Qaznet Trust Network" in steps[-1]["issuer"]
    assert ev["issuer_path"]["ends"] == "issuer not presented"
    known = ev["known_root"]
    assert known["match"] == "issuer-name" and known["proven"] is False
    assert known["root"]["name"] == "Qaznet Trust Network"
    assert ev["chain_pem"].count("BEGIN CERTIFICATE") == 2
    loaded = x509.load_pem_x509_certificates(ev["chain_pem"].encode())
    assert [der(c) for c in loaded] == world.forged_chain
    assert ev["certificates"][0]["key"] == "RSA-2048 e=3"
    json.dumps(ev)


def test_24_hour_shift_and_no_real_certificate(world: World) -> None:
    later = RootPlan(**{**QAZNET.__dict__, "validity_shift_hours": 24})
    forged = forge_leaf(world.real, world.inter, later, world.key)
    ev = describe_interception([der(forged), der(world.inter.cert)], world.real_chain, HOST)
    assert ev["kz2019_signature"] and ev["copied"]["validity_shift_hours"] == 24.0
    alone = describe_interception(world.forged_chain, None, HOST)
    assert alone["kz2019_signature"] is False and alone["copied"] is None
    assert alone["known_root"]["match"] == "issuer-name"


def test_a_different_honest_certificate_is_not_the_signature(world: World) -> None:
    """A CDN's second certificate: same names, another key and serial, same validity."""
    other, _ = issue_leaf(world.web_inter, HOST)
    ev = describe_interception([der(other)], world.real_chain, HOST)
    assert ev["copied"]["key_differs"] is True
    assert ev["copied"]["serial_prefix"] is False
    assert ev["kz2019_signature"] is False
    same = describe_interception(world.real_chain, world.real_chain, HOST)
    assert same["copied"]["same_certificate"] is True and same["copied"]["key_differs"] is False
    assert same["kz2019_signature"] is False and same["known_root"] is None


def test_root_presented_is_a_proven_match(world: World) -> None:
    from importlib import resources

    bundle = resources.files("netvigil.verdict").joinpath(
        "data", "interception-roots", "kz_government_roots_bundle.pem"
    )
    qaznet = x509.load_pem_x509_certificates(bundle.read_bytes())[0]
    ev = describe_interception([*world.forged_chain, der(qaznet)], world.real_chain, HOST)
    assert ev["known_root"]["match"] == "certificate" and ev["known_root"]["proven"]
    assert ev["known_root"]["position"] == 2


# -- hostile chains --------------------------------------------------------------------------


def test_ten_thousand_certificates_are_capped_and_fast(world: World) -> None:
    chain = [der(world.inter.cert)] * 10_000
    start = time.perf_counter()
    ev = describe_interception(chain, chain, HOST)
    assert time.perf_counter() - start < 1.0
    assert ev["count"] == 10_000 and ev["decoded"] == 32 and ev["truncated"]
    assert len(ev["certificates"]) == 32
    assert ev["chain_pem"].count("BEGIN CERTIFICATE") == 32


def test_malformed_der_is_unparseable_never_an_exception(world: World) -> None:
    junk: list[Any] = [
        b"\x30\x82\xff\xff" + bytes(40),
        b"",
        b"not der at all",
        None,
        12,
        "a string",
        b"\x30" * 70_000,
        der(world.inter.cert)[:-10],
    ]
    ev = describe_interception(junk, junk, HOST)
    assert len(ev["certificates"]) == len(junk)
    assert all(c.get("error") == "unparseable" for c in ev["certificates"])
    assert ev["copied"] is None and ev["kz2019_signature"] is False
    assert ev["issuer_path"]["ends"] == "unparseable leaf"
    json.dumps(ev)
    for weird in ([], None, b"bytes", "str", 5, [[]], {"a": 1}):
        out = describe_interception(weird, weird, HOST)  # type: ignore[arg-type]
        json.dumps(out)
    json.dumps(describe_interception(world.forged_chain, [b"junk"], 42))  # type: ignore[arg-type]


def test_chain_loop_is_recorded_not_followed() -> None:
    """A issues B issues A: the walk stops and says so."""
    a_name = name_from({"CN": "Loop A"})
    b_name = name_from({"CN": "Loop B"})
    key_a = ec.generate_private_key(ec.SECP256R1())
    key_b = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    def make(subject: x509.Name, issuer: x509.Name, key: Any, signer: Any) -> bytes:
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=1))
            .sign(signer, hashes.SHA256())
        )
        return der(cert)

    leaf = make(name_from({"CN": HOST}), a_name, ec.generate_private_key(ec.SECP256R1()), key_a)
    a = make(a_name, b_name, key_a, key_b)
    b = make(b_name, a_name, key_b, key_a)
    start_time = time.perf_counter()
    ev = describe_interception([leaf, a, b] * 11, None, HOST)
    assert time.perf_counter() - start_time < 1.0
    path = ev["issuer_path"]
    assert path["loop"] is True and path["ends"] == "loop"
    assert len(path["steps"]) == 3


# -- the verdict -------------------------------------------------------------------------------


def _b64(chain: list[bytes]) -> list[dict[str, str]]:
    return [{"data": base64.b64encode(d).decode(), "format": "base64"} for d in chain]


def measurement(
    probe_chain: list[bytes],
    failure: str | None,
    control_chain: list[bytes] | None,
    control_ok: bool = True,
    control_failure: str | None = None,
    with_control: bool = True,
) -> dict[str, Any]:
    ip = "142.250.74.36"
    ep = f"{ip}:443"
    tk: dict[str, Any] = {
        "queries": [
            {
                "hostname": HOST,
                "query_type": "A",
                "engine": "system",
                "failure": None,
                "answers": [{"answer_type": "A", "ipv4": ip, "ttl": 60}],
            }
        ],
        "tcp_connect": [
            {"ip": ip, "port": 443, "status": {"success": True, "failure": None}},
        ],
        "tls_handshakes": [
            {
                "address": ep,
                "server_name": HOST,
                "failure": failure,
                "no_tls_verify": False,
                "peer_certificates": _b64(probe_chain),
            }
        ],
        "requests": [],
        "control_failure": None,
    }
    if failure is None:
        tk["requests"].append(
            {
                "failure": None,
                "request": {"url": f"https://{HOST}/", "method": "GET", "headers": {}},
                "response": {
                    "code": 200,
                    "body": "<html><title>Google Search Page</title>" + "x" * 900,
                    "headers": {"X-Site": "1"},
                },
            }
        )
    if with_control:
        entry: dict[str, Any] = {
            "server_name": HOST,
            "status": control_ok,
            "failure": None if control_ok else (control_failure or "ssl_invalid_certificate"),
        }
        if control_chain is not None:
            entry["x_peer_certificates"] = _b64(control_chain)
        tk["control"] = {
            "dns": {"failure": None, "addrs": [ip]},
            "tcp_connect": {ep: {"status": True, "failure": None}},
            "tls_handshake": {ep: entry},
            "http_request": {
                "failure": None if control_ok else "ssl_invalid_certificate",
                "status_code": 200 if control_ok else -1,
                "body_length": 940 if control_ok else -1,
                "title": "Google Search Page",
                "headers": {"X-Site": "1"},
            },
        }
    else:
        tk["control"] = {}
        tk["control_failure"] = "generic_timeout_error"
    return {
        "test_name": "web_connectivity",
        "test_version": "0.5.28",
        "input": f"https://{HOST}/",
        "test_keys": tk,
    }


def test_verdict_interception_carries_the_evidence(world: World) -> None:
    v = analyze(measurement(world.forged_chain, "ssl_unknown_authority", world.real_chain))
    assert v.outcome == "tls/interception" and v.blocked
    assert v.confidence >= 0.95
    ev = v.evidence["interception"]
    assert ev["kz2019_signature"] is True
    assert ev["real_from"] == {"endpoint": "142.250.74.36:443", "status": True}
    assert ev["known_root"]["root"]["name"] == "Qaznet Trust Network"
    assert "chain" in v.evidence["tls"]  # the older evidence is still there
    json.dumps(v.to_dict())


def test_verdict_interception_without_the_control_chain(world: World) -> None:
    """An OONI helper sends no x_peer_certificates: still interception, no signature."""
    v = analyze(measurement(world.forged_chain, "ssl_unknown_authority", None))
    assert v.outcome == "tls/interception"
    assert v.evidence["interception"]["copied"] is None


def test_misconfigured_site_is_down(world: World) -> None:
    """The control saw the same certificate and failed too: broken for everyone."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = name_from({"CN": HOST})
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    self_signed = der(
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    v = analyze(
        measurement([self_signed], "ssl_unknown_authority", [self_signed], control_ok=False)
    )
    assert v.outcome == "down" and not v.blocked
    assert "misconfigured" in v.evidence["reason"]
    # The same self-signed leaf, though the control (another trust store) accepted it.
    v = analyze(measurement([self_signed], "ssl_unknown_authority", [self_signed]))
    assert v.outcome == "down" and "misconfigured" in v.evidence["reason"]
    # The site's real, CA-issued leaf the probe could not verify (its own trust store/clock).
    v = analyze(measurement(world.real_chain, "ssl_unknown_authority", world.real_chain))
    assert v.outcome == "unknown" and "not interception" in v.evidence["reason"]


def test_control_failed_but_another_key_and_issuer_is_interception(world: World) -> None:
    v = analyze(measurement(world.forged_chain, "ssl_unknown_authority", world.real_chain, False))
    assert v.outcome == "tls/interception" and v.confidence == pytest.approx(0.7)
    # The control failed and saw nothing to compare with: down, as before.
    v = analyze(measurement(world.forged_chain, "ssl_unknown_authority", None, False))
    assert v.outcome == "down"


def test_cdn_certificate_variation_is_ok(world: World) -> None:
    other, _ = issue_leaf(world.web_inter, HOST)
    v = analyze(measurement([der(other), der(world.web_inter.cert)], None, world.real_chain))
    assert v.outcome == "ok" and not v.blocked


def test_known_root_without_control_is_interception(world: World) -> None:
    from importlib import resources

    bundle = resources.files("netvigil.verdict").joinpath(
        "data", "interception-roots", "kz_government_roots_bundle.pem"
    )
    qaznet = der(x509.load_pem_x509_certificates(bundle.read_bytes())[0])
    m = measurement([*world.forged_chain, qaznet], "ssl_unknown_authority", None, False)
    m["test_keys"]["control"] = {}
    m["test_keys"]["control_failure"] = "generic_timeout_error"
    v = analyze(m)
    assert v.outcome == "tls/interception" and v.confidence == pytest.approx(0.85)
    # Name only, no control: not enough.
    m = measurement(world.forged_chain, "ssl_unknown_authority", None, with_control=False)
    assert analyze(m).outcome == "unknown"


def test_untrusted_leaf_for_another_name_lowers_confidence(world: World) -> None:
    """An untrusted certificate for another name (a blockpage server's own): interception,
    less sure."""
    other, _ = issue_leaf(world.inter, "blocked.isp.example")
    v = analyze(measurement([der(other)], "ssl_unknown_authority", world.real_chain))
    assert v.outcome == "tls/interception" and v.confidence == pytest.approx(0.8)
    assert v.evidence["interception"]["leaf_covers_host"] is False
    assert "captive portal" in v.evidence["note"]


def test_publicly_trusted_leaf_for_another_name_is_a_captive_portal(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid certificate for the portal's own name (ssl_invalid_hostname, and the chain leads
    to a public root): a forger cannot get one, a captive portal has one. Not censorship."""
    # The test world's web PKI plays the public roots.
    monkeypatch.setattr(engine, "_WEB_TRUST", [TrustStore([world.web_root.cert])])
    portal, _ = issue_leaf(world.web_inter, "login.portal.example")
    portal_chain = [der(portal), der(world.web_inter.cert)]
    v = analyze(measurement(portal_chain, "ssl_invalid_hostname", world.real_chain))
    assert v.outcome == "captive-portal"
    assert v.blocked is False
    assert v.evidence["certificates"]["leaf_covers_host"] is False
    assert v.evidence["certificates"]["reaches_web_root"] is True


def test_untrusted_leaf_for_another_name_with_invalid_hostname_is_interception(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Go (OONI's probes, and netvigil's TLS layer) checks the name before the path: a forger's
    or blockpage server's leaf for another name says ssl_invalid_hostname too. Without a path to
    a public root it is no captive portal."""
    monkeypatch.setattr(engine, "_WEB_TRUST", [TrustStore([world.web_root.cert])])
    other, _ = issue_leaf(world.inter, "blocked.example")
    chain = [der(other), der(world.inter.cert)]
    v = analyze(measurement(chain, "ssl_invalid_hostname", world.real_chain))
    assert v.outcome == "tls/interception" and v.confidence == pytest.approx(0.8)
    assert v.evidence["interception"]["reaches_web_root"] is False
    assert "captive portal" in v.evidence["note"]


def test_hostile_chain_in_a_measurement_is_bounded(world: World) -> None:
    chain = [b"\x30\x82\xff\xff" + bytes(40)] * 10_000
    m = measurement(chain, "ssl_unknown_authority", chain)
    m["test_keys"]["tls_handshakes"][0]["peer_certificates"][1] = {"data": "!!"}
    start = time.perf_counter()
    v = analyze(m)
    assert time.perf_counter() - start < 2.0
    assert v.outcome == "tls/interception"
    ev = v.evidence["interception"]
    assert ev["count"] == 10_000 and ev["decoded"] == 32
    json.dumps(v.to_dict())


def test_extended_key_usage_is_reported_dropped(world: World) -> None:
    assert world.real.extensions.get_extension_for_oid(
        x509.oid.ExtensionOID.EXTENDED_KEY_USAGE
    ).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert world.forged.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOST
