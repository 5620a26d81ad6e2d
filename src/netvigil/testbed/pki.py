"""Certificates of the emulated network: a "web PKI" for the sites, and the censor's national roots.

- The testbed web PKI is to the testbed what the Mozilla roots are to the Internet: the probe
  trusts its root in testbed mode, every site has a valid certificate from it, and the CDN-like
  site has two valid certificates from two different intermediates.
- A national root (``[[national_root]]`` in a profile) signs an intermediate, which signs forged
  leaves the way Kazakhstan's 2019 system did (see ``forge_leaf``).

Root keys are expensive (RSA-4096 takes seconds), so national roots are cached per user under
``$XDG_CACHE_HOME/netvigil/testbed-roots``: the same root across runs, as a user who installed the
national certificate would have it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netvigil.testbed.plan import Plan, RootPlan
from netvigil.testbed.profile import MAX_NAME_ATTRIBUTE

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_NAME_OIDS = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
}

WEBPKI_ROOT_FILE = "webpki-root.pem"


def name_from(fields: dict[str, str]) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(_NAME_OIDS[k], v) for k, v in fields.items() if k in _NAME_OIDS]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_cert(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    signer: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int | None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(signer, hashes.SHA256())


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: PrivateKey


def sibling_names(domain: str) -> list[str]:
    """Real certificates usually cover both the apex and www: so do ours."""
    if domain.startswith("www."):
        return [domain, domain[4:]]
    if domain.count(".") == 1:
        return [domain, "www." + domain]
    return [domain]


def leaf_subject(domain: str) -> x509.Name:
    """CN = the domain, as CAs still write it; a name over 64 characters (the CN's upper bound,
    which cryptography enforces) is named by the SAN alone, as real CAs do for long names."""
    if len(domain) > MAX_NAME_ATTRIBUTE["CN"]:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])


def issue_leaf(
    ca: CA, domain: str, key: PrivateKey | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names = sibling_names(domain)
    cert = (
        x509.CertificateBuilder()
        .subject_name(leaf_subject(domain))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now + dt.timedelta(days=60))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def site_cert_paths(pki_dir: Path, domain: str, variant: str = "") -> tuple[Path, Path]:
    """(chain PEM, key PEM) of a site; variant 'a'/'b' for the CDN's two certificates."""
    stem = f"{domain}.{variant}" if variant else domain
    return pki_dir / "sites" / f"{stem}.pem", pki_dir / "sites" / f"{stem}.key"


def build_testbed_pki(plan: Plan) -> None:
    """Write the web PKI root, one certificate per site (two for a CDN), and the ISP's own cert."""
    pki = plan.pki_dir
    (pki / "sites").mkdir(parents=True, exist_ok=True)
    now = _now()
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = name_from(
        {"C": "US", "O": "Netvigil Testbed Web PKI", "CN": "Netvigil Testbed Root CA"}
    )
    root = CA(
        _ca_cert(
            root_name,
            root_name,
            root_key.public_key(),
            root_key,
            now - dt.timedelta(days=365),
            now + dt.timedelta(days=3650),
            None,
        ),
        root_key,
    )
    intermediates = []
    for number in (1, 2):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = name_from(
            {"C": "US", "O": "Netvigil Testbed Web PKI", "CN": f"Testbed Issuing CA {number}"}
        )
        intermediates.append(
            CA(
                _ca_cert(
                    subject,
                    root_name,
                    key.public_key(),
                    root_key,
                    now - dt.timedelta(days=180),
                    now + dt.timedelta(days=1800),
                    0,
                ),
                key,
            )
        )
    (pki / WEBPKI_ROOT_FILE).write_bytes(cert_pem(root.cert))
    signal_ca = _signal_ca(pki) if any(s.im_app == "signal" for s in plan.sites) else None
    for site in plan.sites:
        if site.plain_on_443 or _is_ip(site.domain):
            continue  # a Telegram data centre: plain HTTP, no certificate
        if site.im_app == "signal" and signal_ca is not None:
            # Signal's servers hold certificates of Signal's own CA, which the app pins.
            cert, leaf_key = issue_leaf(signal_ca, site.domain)
            chain_path, key_path = site_cert_paths(pki, site.domain)
            chain_path.write_bytes(cert_pem(cert))
            key_path.write_bytes(_key_pem(leaf_key))
            continue
        variants = (
            [("a", intermediates[0]), ("b", intermediates[1])]
            if site.kind == "cdn"
            else [("", intermediates[0])]
        )
        for variant, ca in variants:
            cert, leaf_key = issue_leaf(ca, site.domain)
            chain_path, key_path = site_cert_paths(pki, site.domain, variant)
            chain_path.write_bytes(cert_pem(cert) + cert_pem(ca.cert))
            key_path.write_bytes(_key_pem(leaf_key))
    # The ISP's blockpage server answers HTTPS with a self-signed certificate of its own.
    isp_key = ec.generate_private_key(ec.SECP256R1())
    isp_name = name_from({"O": plan.isp_name, "CN": "blocked.isp.invalid"})
    isp_cert = _ca_cert(
        isp_name,
        isp_name,
        isp_key.public_key(),
        isp_key,
        now - dt.timedelta(days=1),
        now + dt.timedelta(days=365),
        None,
    )
    (pki / "isp-blockpage.pem").write_bytes(cert_pem(isp_cert))
    (pki / "isp-blockpage.key").write_bytes(_key_pem(isp_key))


SIGNAL_CA_FILE = "signal-ca.pem"


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _signal_ca(pki: Path) -> CA:
    """The testbed's stand-in for Signal's own CA (written to SIGNAL_CA_FILE: the pinned CA of
    the probe's endpoint override file; the web PKI root does not vouch for it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = name_from({"C": "US", "O": "Signal Messenger, LLC (testbed)", "CN": "Signal Messenger"})
    now = _now()
    ca = CA(
        _ca_cert(
            name,
            name,
            key.public_key(),
            key,
            now - dt.timedelta(days=365),
            now + dt.timedelta(days=3650),
            None,
        ),
        key,
    )
    (pki / SIGNAL_CA_FILE).write_bytes(cert_pem(ca.cert))
    return ca


# ----------------------------------------------------------------------------------------------
# National roots and forged certificates


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "netvigil" / "testbed-roots"


def _generate(key_type: str, exponent: int = 65537) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    bits = 4096 if key_type == "rsa-4096" else 2048
    return rsa.generate_private_key(public_exponent=exponent, key_size=bits)


def _root_folder(root: RootPlan) -> Path:
    identity = [root.subject, root.root_key, root.not_before, root.not_after]
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return _cache_dir() / f"{root.id}-{fingerprint}"


def national_ca(root: RootPlan) -> tuple[CA, CA]:
    """(root, intermediate) for a national root, from the per-user cache or made once."""
    folder = _root_folder(root)
    files = [folder / n for n in ("root.pem", "root.key", "inter.pem", "inter.key")]
    if all(f.is_file() for f in files):
        loaded = [f.read_bytes() for f in files]
        root_ca = CA(x509.load_pem_x509_certificate(loaded[0]), _load_key(loaded[1]))
        inter_ca = CA(x509.load_pem_x509_certificate(loaded[2]), _load_key(loaded[3]))
        if inter_ca.cert.not_valid_after_utc > _now() + dt.timedelta(days=1):
            return root_ca, inter_ca
    root_key = _generate(root.root_key)
    root_name = name_from(root.subject)
    start = dt.datetime.fromisoformat(root.not_before).replace(tzinfo=dt.UTC)
    end = dt.datetime.fromisoformat(root.not_after).replace(tzinfo=dt.UTC)
    root_ca = CA(
        _ca_cert(root_name, root_name, root_key.public_key(), root_key, start, end, None), root_key
    )
    inter_key = _generate("rsa-2048")
    now = _now()
    inter_ca = CA(
        _ca_cert(
            name_from(root.intermediate_subject),
            root_name,
            inter_key.public_key(),
            root_key,
            now - dt.timedelta(days=1),
            now + dt.timedelta(days=root.intermediate_validity_days),
            0,
        ),
        inter_key,
    )
    folder.mkdir(parents=True, exist_ok=True)
    for path, data in zip(
        files,
        (cert_pem(root_ca.cert), _key_pem(root_key), cert_pem(inter_ca.cert), _key_pem(inter_key)),
        strict=True,
    ):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return root_ca, inter_ca


def _load_key(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("unsupported key type in the root cache")
    return key


def forge_leaf(
    real: x509.Certificate, inter: CA, root: RootPlan, key: rsa.RSAPrivateKey
) -> x509.Certificate:
    """Forge a leaf the way Kazakhstan's 2019 middlebox did (Raman et al., IMC 2020).

    Subject and SAN are copied from the site's *real* certificate (not from the SNI); validity
    is shifted earlier by ``validity_shift_hours``; the serial is the real one with its low 33
    bits randomised; every other extension is dropped; the key is per host (RSA-2048, e=3).
    """
    shift = dt.timedelta(hours=root.validity_shift_hours)
    low_bits = (1 << 33) - 1
    serial = (real.serial_number & ~low_bits) | secrets.randbits(33)
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(inter.cert.subject)
        .public_key(key.public_key())
        .serial_number(max(serial, 1))
        .not_valid_before(real.not_valid_before_utc - shift)
        .not_valid_after(real.not_valid_after_utc - shift)
    )
    try:
        san = real.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=san.critical)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(inter.key, hashes.SHA256())


def forged_leaf_key(root: RootPlan, host: str) -> rsa.RSAPrivateKey:
    """The censor's key for `host`: one per host, kept with the national root across runs.

    RSA-2048 with e=3 takes ~120 ms to make; a real middlebox keeps its keys too, and a
    testbed that starts with 37 fresh keys would answer its first handshakes seconds late.
    """
    folder = _root_folder(root) / "leaf-keys"
    name = hashlib.sha256(host.encode()).hexdigest()[:24]
    path = folder / f"{name}-e{root.leaf_rsa_exponent}.key"
    try:
        key = _load_key(path.read_bytes())
        if isinstance(key, rsa.RSAPrivateKey):
            return key
    except (OSError, ValueError):
        pass
    key = rsa.generate_private_key(public_exponent=root.leaf_rsa_exponent, key_size=2048)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(_key_pem(key))
    tmp.replace(path)
    return key


def write_chain(
    path: Path, key_path: Path, leaf: x509.Certificate, key: PrivateKey, *chain: x509.Certificate
) -> None:
    path.write_bytes(cert_pem(leaf) + b"".join(cert_pem(c) for c in chain))
    key_path.write_bytes(_key_pem(key))
