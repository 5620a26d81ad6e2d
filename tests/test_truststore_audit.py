"""``netvigil check --trust-store``: OS bundles, local anchors and real NSS databases, in tmp dirs.

No network, nothing outside tmp dirs and ``tests/data`` is read (certifi's bundle is the
installed package's). The NSS test builds a real ``cert9.db`` with NSS's own ``certutil``
(Debian package ``libnss3-tools``) and is skipped, saying so, when it is missing.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netvigil.audit import AuditSources, NssDatabase, add_arguments, audit_trust_stores, run
from netvigil.audit.truststore import EXIT_CLEAN, EXIT_FLAGGED, EXIT_INTERCEPTION, EXIT_UNREADABLE

DATA = Path(__file__).parent / "data"
KZ_PEM = (DATA / "kz-root-qaznet.pem").read_bytes()
KZ_SHA256 = "00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2"
KZ_SPKI = "b5ba8dd7f89564c2889d3d6453c84998c77824919b64ea0835aa62986591be50"
CERTIFI = Path(certifi.where()).read_bytes()

CERTUTIL = shutil.which("certutil")
needs_certutil = pytest.mark.skipif(
    CERTUTIL is None,
    reason="NSS 'certutil' is missing (apt-get install libnss3-tools): cannot build a real cert9.db",
)


def _corporate_root(cn: str = "Example Corp Inspection CA") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


CORP_PEM = _corporate_root()


def _sha256_of_pem(pem: bytes) -> str:
    return hashlib.sha256(
        x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    ).hexdigest()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _system(root: Path) -> AuditSources:
    return AuditSources.system(root=root, home=root / "home" / "user")


def test_os_bundle_with_kz_root_and_local_corporate_root(tmp_path: Path) -> None:
    _write(tmp_path / "etc/ssl/certs/ca-certificates.crt", CERTIFI + KZ_PEM + CORP_PEM)
    _write(tmp_path / "usr/local/share/ca-certificates/corp/inspection.crt", CORP_PEM)

    report = audit_trust_stores(_system(tmp_path))

    assert report.exit_code == EXIT_INTERCEPTION
    assert report.status == "interception"
    assert "Qaznet Trust Network" in report.headline
    assert "1 other root(s) outside the Mozilla list" in report.headline
    high = [f for f in report.findings if f.severity == "high"]
    assert len(high) == 1
    kz = high[0]
    assert kz.kind == "interception-root"
    assert kz.certificate.sha256 == KZ_SHA256
    assert kz.certificate.spki_sha256 == KZ_SPKI
    assert kz.known_root is not None and kz.known_root["name"] == "Qaznet Trust Network"
    assert "Kazakhstan" in kz.known_root["operator"]
    medium = [f for f in report.findings if f.severity == "medium"]
    assert [f.certificate.sha256 for f in medium] == [_sha256_of_pem(CORP_PEM)]
    assert medium[0].message.startswith("not a public web root")
    assert {loc.path for loc in medium[0].locations} == {
        str(tmp_path / "etc/ssl/certs/ca-certificates.crt"),
        str(tmp_path / "usr/local/share/ca-certificates/corp/inspection.crt"),
    }
    assert report.in_mozilla == report.reference["mozilla_roots"]
    found = {s.path for s in report.sources if s.found}
    assert found == {
        str(tmp_path / "etc/ssl/certs/ca-certificates.crt"),
        str(tmp_path / "usr/local/share/ca-certificates"),
    }
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["exit_code"] == EXIT_INTERCEPTION
    assert doc["summary"]["by_severity"]["high"] == 1


def test_clean_and_only_unknown_and_nothing(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    _write(clean / "etc/ssl/cert.pem", CERTIFI)
    report = audit_trust_stores(_system(clean))
    assert report.exit_code == EXIT_CLEAN, report.headline
    assert report.headline.startswith("No known interception root")
    assert not report.flagged()

    corp = tmp_path / "corp"
    _write(corp / "etc/pki/tls/certs/ca-bundle.crt", CERTIFI)
    _write(corp / "etc/pki/ca-trust/source/anchors/corp.pem", CORP_PEM)
    report = audit_trust_stores(_system(corp))
    assert report.exit_code == EXIT_FLAGGED
    assert (
        report.headline
        == "No known interception root; 1 root(s) outside the Mozilla list (see below)"
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    report = audit_trust_stores(_system(empty))
    assert report.exit_code == EXIT_UNREADABLE
    assert report.status == "unreadable"
    assert not any(s.found for s in report.sources)


def test_distribution_mozilla_copy_is_not_flagged(tmp_path: Path) -> None:
    # A root the distribution still ships from an older Mozilla list: listed as low, not flagged.
    old = _corporate_root("Old Public Root CA")
    _write(tmp_path / "etc/ssl/certs/ca-certificates.crt", CERTIFI + old)
    _write(tmp_path / "usr/share/ca-certificates/mozilla/Old_Public_Root_CA.crt", old)
    report = audit_trust_stores(_system(tmp_path))
    assert report.exit_code == EXIT_CLEAN
    assert [f.severity for f in report.findings] == ["low"]


def _certutil(*args: str) -> None:
    assert CERTUTIL is not None
    subprocess.run([CERTUTIL, *args], check=True, capture_output=True, timeout=60)


def _nss_profile(home: Path, tmp_path: Path) -> Path:
    profile = home / ".mozilla/firefox/k3x9a1bz.default-release"
    profile.mkdir(parents=True)
    db = f"sql:{profile}"
    _certutil("-N", "-d", db, "--empty-password")
    kz = _write(tmp_path / "kz.pem", KZ_PEM)
    corp = _write(tmp_path / "corp.pem", CORP_PEM)
    other = _write(tmp_path / "other.pem", _corporate_root("Some Device CA"))
    _certutil("-A", "-n", "Qaznet", "-t", "C,,", "-i", str(kz), "-d", db)
    _certutil("-A", "-n", "Corp (distrusted)", "-t", "p,,", "-i", str(corp), "-d", db)
    _certutil("-A", "-n", "Device", "-t", ",,", "-i", str(other), "-d", db)
    return profile


@needs_certutil
def test_real_nss_cert9_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home" / "user"
    profile = _nss_profile(home, tmp_path)
    cert9 = profile / "cert9.db"
    before = hashlib.sha256(cert9.read_bytes()).hexdigest(), cert9.stat().st_mtime_ns

    report = audit_trust_stores(_system(tmp_path))

    assert report.exit_code == EXIT_INTERCEPTION
    assert "Qaznet Trust Network" in report.headline
    assert "in Firefox profile default-release" in report.headline
    kz = next(f for f in report.findings if f.kind == "interception-root")
    assert kz.severity == "high"
    (loc,) = kz.locations
    assert (loc.source, loc.nickname, loc.trust) == (
        "Firefox profile default-release",
        "Qaznet",
        "trusted-ca",
    )
    assert loc.path == str(cert9)
    by_sha = {f.certificate.sha256: f for f in report.findings}
    corp = by_sha[_sha256_of_pem(CORP_PEM)]
    assert (corp.severity, corp.locations[0].trust) == ("info", "distrusted")
    device = next(f for f in report.findings if "Some Device CA" in f.certificate.subject)
    assert (device.severity, device.locations[0].trust) == (
        "info",
        "no-trust-record",
    )  # certutil -t ",," writes no trust object
    src = next(s for s in report.sources if s.path == str(cert9))
    assert (src.found, src.read, src.certificates, src.problems) == (True, True, 3, [])
    # read-only: nothing written, even though NSS did not "close" the database for us
    assert (hashlib.sha256(cert9.read_bytes()).hexdigest(), cert9.stat().st_mtime_ns) == before

    # the same through the command line, explicit profile, JSON
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = run(parser.parse_args(["--firefox-profile", str(profile), "--json"]))
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_INTERCEPTION == doc["exit_code"]
    assert doc["findings"][0]["known_root"]["name"] == "Qaznet Trust Network"
    assert doc["findings"][0]["locations"][0]["trust"] == "trusted-ca"

    # and the table
    code = run(parser.parse_args(["--firefox-profile", str(profile)]))
    out = capsys.readouterr().out
    assert code == EXIT_INTERCEPTION
    assert "Qaznet Trust Network" in out and KZ_SHA256 in out


@needs_certutil
def test_truncated_real_cert9_db(tmp_path: Path) -> None:
    profile = _nss_profile(tmp_path / "home", tmp_path)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    data = (profile / "cert9.db").read_bytes()
    (damaged / "cert9.db").write_bytes(data[: len(data) // 3])
    report = audit_trust_stores(
        AuditSources(nss_databases=(NssDatabase(damaged, "damaged profile"),))
    )
    (src,) = report.sources
    assert src.found
    assert src.problems or src.certificates <= 3  # never a crash; whatever is readable is read


def test_garbage_cert9_db(tmp_path: Path) -> None:
    not_sqlite = _write(tmp_path / "a" / "cert9.db", b"\x00garbage" * 1000)
    no_table = tmp_path / "b" / "cert9.db"
    no_table.parent.mkdir()
    with sqlite3.connect(no_table) as conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    odd_rows = tmp_path / "c" / "cert9.db"
    odd_rows.parent.mkdir()
    with sqlite3.connect(odd_rows) as conn:
        conn.execute("CREATE TABLE nssPublic (id PRIMARY KEY, a0, a3, a11, ace536358)")
        cert_class = (1).to_bytes(4, "big")
        conn.execute(
            "INSERT INTO nssPublic VALUES (1, ?, 'x', ?, NULL)", (cert_class, b"\x30\x03\x02\x01")
        )
        conn.execute("INSERT INTO nssPublic VALUES (2, ?, 42, 'text', NULL)", (cert_class,))
        conn.execute("INSERT INTO nssPublic VALUES (3, 'junk', NULL, NULL, 7)")
    conn.close()
    sources = AuditSources(
        nss_databases=(
            NssDatabase(not_sqlite.parent, "not sqlite"),
            NssDatabase(no_table.parent, "no table"),
            NssDatabase(odd_rows, "odd rows"),
            NssDatabase(tmp_path / "missing", "missing"),
        )
    )
    report = audit_trust_stores(sources)
    a, b, c, d = report.sources
    assert a.found and not a.read and "not an SQLite database" in a.problems[0]
    assert b.found and not b.read and "no nssPublic table" in b.problems[0]
    assert c.found and c.read and c.malformed == 2 and c.certificates == 0
    assert not d.found
    assert report.exit_code == EXIT_CLEAN  # something was read, nothing flagged


def test_bundle_with_garbage_between_and_inside_blocks(tmp_path: Path) -> None:
    bad_block = b"-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n"
    not_a_cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    data = (
        b"# a comment is fine\n"
        + KZ_PEM
        + b"\x00\xff random junk \x89PNG\nsubject=/CN=whatever\n"
        + bad_block
        + not_a_cert
        + CORP_PEM
        + b"-----BEGIN CERTIFICATE-----\nMIIB"  # unterminated
    )
    bundle = _write(tmp_path / "bundle.pem", data)
    report = audit_trust_stores(AuditSources(bundles=(bundle,)))
    (src,) = report.sources
    assert src.read and src.certificates == 2 and src.malformed == 2
    assert any("unexpected text" in p for p in src.problems)
    assert any("unterminated PEM block" in p for p in src.problems)
    assert report.exit_code == EXIT_INTERCEPTION


def test_ten_thousand_certificates_are_bounded(tmp_path: Path) -> None:
    blocks = [
        b"-----BEGIN CERTIFICATE-----" + part
        for part in CERTIFI.split(b"-----BEGIN CERTIFICATE-----")[1:]
    ]
    many = (
        b"".join(blocks[i % len(blocks)] for i in range(9_999)) + KZ_PEM
    )  # the KZ root is 10,000th
    bundle = _write(tmp_path / "huge.pem", many)
    start = time.monotonic()
    report = audit_trust_stores(AuditSources(bundles=(bundle,)))
    elapsed = time.monotonic() - start
    (src,) = report.sources
    assert src.truncated and src.certificates == 5_000
    assert any("more than 5000 certificates" in p for p in src.problems)
    assert elapsed < 30
    assert report.exit_code == EXIT_CLEAN  # the KZ root lies beyond the bound: documented limit


def test_oversized_file_and_special_files(tmp_path: Path) -> None:
    big = _write(tmp_path / "big.pem", CERTIFI)
    folder = tmp_path / "as-bundle"
    folder.mkdir()
    sources = AuditSources(bundles=(big, folder), max_file_bytes=1024)
    report = audit_trust_stores(sources)
    first, second = report.sources
    assert first.found and not first.read and "larger than" in first.problems[0]
    assert second.found and not second.read and "not a regular file" in second.problems[0]
    assert report.exit_code == EXIT_UNREADABLE
