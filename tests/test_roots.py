"""The known interception roots database: every packaged root matches by both hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from importlib import resources

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netvigil.verdict.roots import (
    KnownRoots,
    load_known_roots,
    spki_der,
    spki_sha256,
)

pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number:UserWarning")

DATA = resources.files("netvigil.verdict").joinpath("data", "interception-roots")


def _kz_roots() -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(
        DATA.joinpath("kz_government_roots_bundle.pem").read_bytes()
    )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


KZ = _kz_roots()


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = False,
    san: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(signer, hashes.SHA256()), key


def _cn(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def test_database_loads_once_and_is_complete() -> None:
    roots = load_known_roots()
    assert roots is load_known_roots()
    assert len(roots) == 26
    assert sum(r.country == "KZ" for r in roots) == 10
    for root in roots:
        assert root.name and root.operator and root.country and root.years
        assert root.sources and root.description.endswith(".")
        assert len(root.spki_sha256) == 64
        assert root.cert_sha256 is None or len(root.cert_sha256) == 64
    assert sum(r.cert_sha256 is None for r in roots) == 4  # the .key entries


def test_metadata_is_keyed_by_certificate_hash() -> None:
    meta = json.loads(DATA.joinpath("roots.json").read_text("utf-8"))["roots"]
    for key, entry in meta.items():
        assert key == (entry["cert_sha256"] or f"spki:{entry['spki_sha256']}")


@pytest.mark.parametrize("cert", KZ, ids=lambda c: hashlib.sha256(_der(c)).hexdigest()[:12])
def test_every_kz_root_matches_by_both_hashes(cert: x509.Certificate) -> None:
    roots = load_known_roots()
    der = _der(cert)
    digest = hashlib.sha256(der).hexdigest()
    spki = hashlib.sha256(
        cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).hexdigest()
    assert spki_sha256(der) == spki
    by_cert = roots.by_cert_sha256(digest)
    by_spki = roots.by_spki_sha256(spki)
    assert by_cert is not None and by_cert is by_spki and by_cert.country == "KZ"
    assert roots.match_certificate(der) is by_cert
    # The leaf and the root, as a middlebox that sends its root would present them.
    leaf, _ = _cert(_cn("example.kz"), cert.subject, ec.generate_private_key(ec.SECP256R1()))
    match = roots.match_chain([_der(leaf), der])
    assert match is not None and match.match == "certificate" and match.position == 1
    assert match.root is by_cert and match.proven


def test_qaznet_is_described_as_in_the_field_notes() -> None:
    roots = load_known_roots()
    qaznet = roots.by_cert_sha256(
        "00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2"
    )
    assert qaznet is not None
    assert qaznet.spki_sha256.startswith("b5ba8dd7") and qaznet.spki_sha256.endswith("be50")
    assert qaznet.name == "Qaznet Trust Network" and "2019-08-21" in qaznet.years
    assert any("IMC 2020" in s for s in qaznet.sources)


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("b6fe9151402bad1c06d7e66db67a26aa7356f2e6c644dbcf9f98968ff632e1b7.pem", "Superfish"),
        ("ec30c9c3065a06bb07dc5b1c6b497f370c1ca65c0f30c08e042ba6bcecc78f2c.pem", "eDellRoot"),
        ("0f912fd7be760be25afbc56bdc09cd9e5dcc9c6f6a55a778aefcb6aa30e31554.pem", "DSDTest"),
        ("91e5cc32910686c5cac25c18cc805696c7b33868c280caf0c72844a2a8eb91e2.pem", "Senncom"),
        ("e54e9fc27e7350ff63a77764a40267b7e95ae5df3ed7df5336e8f8541356c845.pem", "Trésor"),
    ],
)
def test_other_known_roots_match(file: str, name: str) -> None:
    cert = x509.load_pem_x509_certificate(DATA.joinpath("chromium-blocklist", file).read_bytes())
    root = load_known_roots().match_certificate(_der(cert))
    assert root is not None and name in root.name


def test_every_packaged_certificate_matches_itself() -> None:
    roots = load_known_roots()
    for root in roots:
        data = DATA.joinpath(*root.file.split("/")).read_bytes()
        if root.cert_sha256 is None:
            continue
        der = _der(x509.load_pem_x509_certificate(data))
        assert roots.match_certificate(der) is root


def test_key_only_entry_matches_a_certificate_with_that_key() -> None:
    """Cyberoam's blocklisted key is SPKI-only: any certificate with that key matches."""
    roots = load_known_roots()
    cyberoam = next(r for r in roots if "Cyberoam" in r.name)
    assert cyberoam.cert_sha256 is None
    pem = DATA.joinpath(*cyberoam.file.split("/")).read_bytes()
    public = serialization.load_pem_public_key(pem)
    # A certificate carrying that key (signed by anyone: we do not have the private key).
    signer = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_cn("Cyberoam SSL CA"))
        .issuer_name(_cn("Cyberoam SSL CA"))
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )
    assert roots.match_certificate(_der(cert)) is cyberoam
    match = roots.match_chain([_der(cert)])
    assert match is not None and match.match == "spki" and match.proven


def test_reissued_root_with_the_same_key_matches_by_spki() -> None:
    """A KZ root re-signed (new certificate, same key) still matches: by SPKI."""
    roots = load_known_roots()
    original = KZ[0]
    signer = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    reissued = (
        x509.CertificateBuilder()
        .subject_name(original.subject)
        .issuer_name(original.subject)
        .public_key(original.public_key())  # type: ignore[arg-type]
        .serial_number(12345)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .sign(signer, hashes.SHA256())
    )
    expected = roots.match_certificate(_der(original))
    assert roots.match_certificate(_der(reissued)) is expected
    match = roots.match_chain([_der(reissued)])
    assert match is not None and match.match == "spki"


@pytest.mark.parametrize("root", KZ, ids=lambda c: c.subject.rfc4514_string()[:40])
def test_issuer_name_path_for_an_intermediate_of_a_kz_root(root: x509.Certificate) -> None:
    """The normal case: the chain ends at an intermediate whose issuer is the national root."""
    fake_root_key = ec.generate_private_key(ec.SECP256R1())  # we cannot sign with theirs
    inter, inter_key = _cert(_cn("Security Certificate"), root.subject, fake_root_key, ca=True)
    leaf, _ = _cert(_cn("www.google.com"), inter.subject, inter_key, san="www.google.com")
    match = load_known_roots().match_chain([_der(leaf), _der(inter)])
    assert match is not None
    assert match.match == "issuer-name" and not match.proven
    assert match.position == 1
    assert match.root.country == "KZ"
    assert any(c.cert_sha256 == match.root.cert_sha256 for c in match.candidates)
    assert "issuer name only" in match.to_dict()["note"]
    # A name written differently (attribute order, case) is the same name.
    shuffled = x509.Name(
        [x509.NameAttribute(a.oid, str(a.value).upper()) for a in reversed(list(root.subject))]
    )
    inter2, _ = _cert(_cn("Security Certificate"), shuffled, fake_root_key, ca=True)
    again = load_known_roots().match_chain([_der(inter2)])
    assert again is not None and again.match == "issuer-name"


def test_issuer_name_picks_the_root_named_by_the_authority_key_id() -> None:
    """Seven ISCA roots share one name; the intermediate's authority key id names one."""
    roots = load_known_roots()
    name = "c530fadc9bfa265e63b755cc6ee04c2d70d60bb916ce2f331dc7359362571b25"
    target = next(c for c in KZ if hashlib.sha256(_der(c)).hexdigest() == name)
    signer = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    inter = (
        x509.CertificateBuilder()
        .subject_name(_cn("ISCA Intermediate"))
        .issuer_name(target.subject)
        .public_key(key.public_key())
        .serial_number(99)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=75))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(target.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    match = roots.match_chain([_der(inter)])
    assert match is not None and match.match == "issuer-name"
    assert len(match.candidates) == 7
    assert match.key_id_match is True and match.root.cert_sha256 == name


def test_unrelated_and_hostile_chains_do_not_match() -> None:
    roots = load_known_roots()
    key = ec.generate_private_key(ec.SECP256R1())
    ca, _ = _cert(_cn("Some Honest CA"), _cn("Some Honest CA"), key, key=key, ca=True)
    leaf, _ = _cert(_cn("example.org"), ca.subject, key)
    assert roots.match_chain([_der(leaf), _der(ca)]) is None
    assert roots.match_certificate(b"") is None
    assert roots.match_certificate(b"\x30\x82\xff\xff" + bytes(40)) is None
    assert roots.match_chain([b"", b"junk", None, 5]) is None  # type: ignore[list-item]
    assert roots.match_chain("not a chain") is None  # type: ignore[arg-type]
    assert spki_der(b"\x30\x03\x02\x01\x01") is None
    assert isinstance(roots, KnownRoots)
