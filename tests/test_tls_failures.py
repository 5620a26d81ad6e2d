"""Which OONI failure string a presented chain gets, class by class, as OONI's Go probe says it.

probe-cli's ``netxlite.ClassifyTLSHandshakeError`` maps Go's errors: ``x509.HostnameError`` to
``ssl_invalid_hostname``, ``x509.UnknownAuthorityError`` to ``ssl_unknown_authority``,
``x509.CertificateInvalidError`` to ``ssl_invalid_certificate``. Which error Go returns follows
the order of ``x509.Certificate.Verify``: the leaf's validity period, then the host name, then a
path to a root built by issuer name and signature (a signing certificate that is expired or not
a CA is a ``CertificateInvalidError``; no signing certificate at all an unknown authority), then
the extended key usage. The authority key identifier is never required. Every certificate here
is built in the test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netvigil import net
from netvigil.net.tls import TrustStore
from netvigil.testbed import pki
from netvigil.testbed.plan import RootPlan

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def make(
    cn: str,
    issuer: Issued | None = None,
    *,
    ca: bool | None = False,
    names: tuple[str, ...] = (),
    aki: bool = False,
    start: dt.datetime = NOW - 30 * DAY,
    end: dt.datetime = NOW + 60 * DAY,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    issuer_name: x509.Name | None = None,
) -> Issued:
    """A certificate; self-signed without ``issuer``. No key identifiers unless ``aki``;
    ``ca=None`` leaves basic constraints out."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or (issuer.cert.subject if issuer else subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if aki and issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


ROOT = make("Trusted Root", ca=True, start=NOW - 365 * DAY, end=NOW + 3650 * DAY)
INTER = make("Trusted Issuing CA", ROOT, ca=True)
TRUST = TrustStore([ROOT.cert])
ROGUE_ROOT = make("Rogue Root", ca=True, start=NOW - 365 * DAY, end=NOW + 3650 * DAY)
ROGUE_INTER = make("Rogue Issuing CA", ROGUE_ROOT, ca=True)


def verify(*chain: Issued, host: str = "site.test") -> str | None:
    failure, message = net.verify_chain([c.der for c in chain], host, TRUST, now=NOW)
    assert (failure is None) == (message is None)
    return failure


def test_chain_without_aki_from_a_trusted_root_verifies() -> None:
    # Go builds a path by issuer name and signature; the AKI is only a hint for choosing among
    # candidates, so OONI's probe accepts such a chain (so do browsers). Every other check
    # (signatures, validity, name, CA flags, usage) still applies: see the tests below.
    leaf = make("site.test", INTER, names=("site.test",))
    assert verify(leaf, INTER) is None
    with_aki = make("site.test", INTER, names=("site.test",), aki=True)
    assert verify(with_aki, INTER) is None


def test_chain_without_aki_from_an_untrusted_root_is_unknown_authority() -> None:
    leaf = make("site.test", ROGUE_INTER, names=("site.test",))
    assert verify(leaf, ROGUE_INTER) == "ssl_unknown_authority"
    assert verify(leaf, ROGUE_INTER, ROGUE_ROOT) == "ssl_unknown_authority"  # root presented
    assert verify(leaf) == "ssl_unknown_authority"  # intermediate missing
    self_signed = make("site.test", ca=None, names=("site.test",))
    assert verify(self_signed) == "ssl_unknown_authority"


def test_forged_testbed_leaf_is_unknown_authority() -> None:
    """The middlebox's forgery (pki.forge_leaf: no AKI, names copied from the real leaf) under a
    national root the probe does not trust: no path, as Go says for Kazakhstan's chains."""
    plan = RootPlan(
        id="national",
        subject={"C": "KZ", "CN": "Qaznet Trust Network"},
        intermediate_subject={"C": "KZ", "CN": "Security Certificate"},
        root_key="ec-p256",
        not_before="2016-02-02",
        not_after="2046-02-02",
        intermediate_validity_days=365,
        validity_shift_hours=6,
        leaf_rsa_exponent=65537,
    )
    national_root = make("Qaznet Trust Network", ca=True, start=NOW - 999 * DAY)
    inter = make("Security Certificate", national_root, ca=True)
    real = make("site.test", INTER, names=("site.test", "www.site.test"), aki=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = pki.forge_leaf(real.cert, pki.CA(inter.cert, inter.key), plan, key)
    assert x509.AuthorityKeyIdentifier.oid not in [e.oid for e in forged.extensions]
    chain = [forged.public_bytes(serialization.Encoding.DER), inter.der]
    failure, message = net.verify_chain(chain, "www.site.test", TRUST, now=NOW)
    assert failure == "ssl_unknown_authority" and message
    # The same forgery from a root the probe does trust (a user who installed the national
    # root) verifies: the missing AKI is no defect to Go.
    trusting = TrustStore([ROOT.cert, national_root.cert])
    assert net.verify_chain(chain, "www.site.test", trusting, now=NOW) == (None, None)


def test_impostor_with_the_roots_name_is_unknown_authority() -> None:
    # Issuer name matches the trusted root, but the signature is not the root's.
    impostor = make("Trusted Root", ca=True)
    leaf = make("site.test", impostor, names=("site.test",))
    assert verify(leaf, impostor) == "ssl_unknown_authority"
    # A leaf naming the trusted intermediate as issuer, signed by someone else.
    liar = make("site.test", ROGUE_INTER, names=("site.test",), issuer_name=INTER.cert.subject)
    assert verify(liar, INTER) == "ssl_unknown_authority"


def test_name_mismatch_is_invalid_hostname_whoever_issued_it() -> None:
    leaf = make("other.test", INTER, names=("other.test",))
    assert verify(leaf, INTER) == "ssl_invalid_hostname"
    # Go checks the name before building a path: an untrusted leaf for another name too.
    rogue = make("other.test", ROGUE_INTER, names=("other.test",))
    assert verify(rogue, ROGUE_INTER) == "ssl_invalid_hostname"
    # Go reads the subjectAltName only, never the CN.
    no_san = make("site.test", INTER)
    assert verify(no_san, INTER) == "ssl_invalid_hostname"
    wildcard = make("wild", INTER, names=("*.site.test",))
    assert verify(wildcard, INTER, host="www.site.test") is None
    assert verify(wildcard, INTER, host="a.b.site.test") == "ssl_invalid_hostname"
    assert verify(wildcard, INTER, host="site.test") == "ssl_invalid_hostname"


def test_expired_or_not_yet_valid_leaf_is_invalid_certificate() -> None:
    expired = make("site.test", INTER, names=("site.test",), end=NOW - DAY)
    assert verify(expired, INTER) == "ssl_invalid_certificate"
    future = make("site.test", INTER, names=("site.test",), start=NOW + DAY)
    assert verify(future, INTER) == "ssl_invalid_certificate"
    # Go checks the leaf's validity first of all: expired and untrusted is still "invalid"
    # (expired.badssl.com vs self-signed.badssl.com in OONI's QA).
    rogue_expired = make("other.test", ROGUE_INTER, names=("other.test",), end=NOW - DAY)
    assert verify(rogue_expired, ROGUE_INTER) == "ssl_invalid_certificate"


def test_defect_in_a_chain_that_reaches_a_root_is_invalid_certificate() -> None:
    # An expired intermediate that did sign the leaf: Go's buildChains returns the
    # candidate's CertificateInvalidError (Expired), not an unknown authority.
    old_inter = make("Old Issuing CA", ROOT, ca=True, end=NOW - DAY)
    leaf = make("site.test", old_inter, names=("site.test",))
    assert verify(leaf, old_inter) == "ssl_invalid_certificate"
    # An "intermediate" that is no CA (NotAuthorizedToSign).
    not_ca = make("Not A CA", ROOT, ca=False)
    leaf = make("site.test", not_ca, names=("site.test",))
    assert verify(leaf, not_ca) == "ssl_invalid_certificate"
    # A leaf for client authentication only (IncompatibleUsage).
    client_only = make(
        "site.test", INTER, names=("site.test",), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    assert verify(client_only, INTER) == "ssl_invalid_certificate"


def test_path_search_is_bounded() -> None:
    # 31 certificates that all claim the leaf's issuer name, none of them the signer.
    decoys = [make("Trusted Issuing CA", ROOT, ca=True) for _ in range(31)]
    leaf = make("site.test", INTER, names=("site.test",))
    assert verify(leaf, *decoys) == "ssl_unknown_authority"
    assert verify(leaf, *decoys[:20], INTER) is None


def test_reaches_trusted_root_ignores_the_name_and_the_leafs_dates() -> None:
    other = make("other.test", INTER, names=("other.test",), end=NOW - DAY)
    assert net.tls.reaches_trusted_root([other.der, INTER.der], TRUST, now=NOW)
    rogue = make("other.test", ROGUE_INTER, names=("other.test",))
    assert not net.tls.reaches_trusted_root([rogue.der, ROGUE_INTER.der], TRUST, now=NOW)
    old_inter = make("Old Issuing CA", ROOT, ca=True, end=NOW - DAY)
    leaf = make("site.test", old_inter, names=("site.test",))
    assert not net.tls.reaches_trusted_root([leaf.der, old_inter.der], TRUST, now=NOW)
    assert net.tls.reaches_trusted_root([leaf.der, old_inter.der], TRUST)  # dates not asked
    assert not net.tls.reaches_trusted_root([b"junk", INTER.der], TRUST)
    assert net.tls.reaches_trusted_root([leaf.der, b"junk", old_inter.der], TRUST)
