"""Certificates for tests that forge Kazakhstan-2019-style interception chains: the Qaznet root
plan and a small CA builder, shared by the interception tests and the explorer's test world."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from netvigil.testbed.pki import CA
from netvigil.testbed.plan import RootPlan

QAZNET = RootPlan(
    id="qaznet",
    subject={"C": "KZ", "CN": "Qaznet Trust Network"},
    intermediate_subject={"C": "KZ", "CN": "Security Certificate"},
    root_key="ec-p256",
    not_before="2016-02-02",
    not_after="2046-02-02",
    intermediate_validity_days=365,
    validity_shift_hours=6,
    leaf_rsa_exponent=3,
)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def make_ca(
    subject: x509.Name, issuer: CA | None = None, *, start: dt.datetime | None = None
) -> CA:
    """A CA valid for ten years from ``start`` (2024-01-01 UTC unless given), self-signed
    unless ``issuer`` signs it."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = start or dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer.key if issuer else key, hashes.SHA256())
    )
    return CA(cert, key)
