"""Read the certificates of an NSS ``cert9.db`` (Firefox, Thunderbird, Chromium on Linux).

``cert9.db`` is SQLite. Every PKCS #11 object is a row of table ``nssPublic``; each attribute is a
column named ``a`` + the attribute type in lower-case hex (``a0`` = CKA_CLASS, ``a3`` = CKA_LABEL,
``a11`` = CKA_VALUE, ``a81`` = CKA_ISSUER, ``a82`` = CKA_SERIAL_NUMBER, ``ace536358`` =
CKA_TRUST_SERVER_AUTH …). Values are blobs; ulongs are 4 bytes big-endian; an empty value is
stored as NSS's "explicit NULL" marker ``a5 00 5a``.

Certificates are CKO_CERTIFICATE objects (DER in CKA_VALUE). Their trust lives in separate
CKO_NSS_TRUST objects, linked by CKA_CERT_SHA1_HASH or by (CKA_ISSUER, CKA_SERIAL_NUMBER). The
built-in Mozilla roots are not in ``cert9.db`` (they come from ``libnssckbi``), so every
certificate found here was added by the user, an administrator, a vendor or cached by the browser.

The database is opened read-only and ``immutable`` (no lock is taken and nothing is written, so a
running Firefox does not matter). Hostile input never raises: problems are returned as text.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

SQLITE_MAGIC = b"SQLite format 3\x00"
EXPLICIT_NULL = b"\xa5\x00\x5a"

CKO_CERTIFICATE = 0x1
CKO_NSS_TRUST = 0xCE534353

COL_CLASS = "a0"
COL_LABEL = "a3"
COL_VALUE = "a11"
COL_ISSUER = "a81"
COL_SERIAL = "a82"
COL_TRUST_SERVER_AUTH = "ace536358"
COL_CERT_SHA1 = "ace5363b4"

# CK_TRUST values of NSS (pkcs11n.h), as stored in CKA_TRUST_* attributes.
CKT_NSS_TRUSTED = 0xCE534351
CKT_NSS_TRUSTED_DELEGATOR = 0xCE534352
CKT_NSS_MUST_VERIFY_TRUST = 0xCE534353
CKT_NSS_TRUST_UNKNOWN = 0xCE534355
CKT_NSS_NOT_TRUSTED = 0xCE53435A
CKT_NSS_VALID_DELEGATOR = 0xCE53435B

# Trust of one certificate for TLS servers, in the audit's vocabulary.
TRUST_CA = "trusted-ca"  # trusted to issue certificates for websites (an anchor)
TRUST_PEER = "trusted-peer"  # trusted as a website certificate itself, not as a CA
TRUST_DISTRUSTED = "distrusted"  # explicitly distrusted
TRUST_NONE = "not-trusted-for-tls"  # a trust record that gives no TLS server trust
TRUST_NO_RECORD = "no-trust-record"  # no trust record: not an anchor (e.g. a cached intermediate)
TRUST_UNKNOWN = "unknown"  # trust could not be decoded: "present in the certificate database"

_SERVER_AUTH_TRUST = {
    CKT_NSS_TRUSTED_DELEGATOR: TRUST_CA,
    CKT_NSS_TRUSTED: TRUST_PEER,
    CKT_NSS_NOT_TRUSTED: TRUST_DISTRUSTED,
    CKT_NSS_MUST_VERIFY_TRUST: TRUST_NONE,
    CKT_NSS_TRUST_UNKNOWN: TRUST_NONE,
    CKT_NSS_VALID_DELEGATOR: TRUST_NONE,
}

MAX_ROWS_SCANNED = 200_000


@dataclass
class NssCertificate:
    der: bytes
    label: str
    trust: str


@dataclass
class NssResult:
    certificates: list[NssCertificate] = field(default_factory=list)
    malformed: int = 0
    problems: list[str] = field(default_factory=list)
    trust_decoded: bool = False
    truncated: bool = False


def _blob(value: object) -> bytes | None:
    """A stored attribute as bytes; None when absent or empty."""
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if not isinstance(value, bytes) or not value or value == EXPLICIT_NULL:
        return None
    return value


def _ulong(value: object) -> int | None:
    raw = _blob(value)
    if raw is None or len(raw) not in (4, 8):
        return None
    return int.from_bytes(raw, "big")


def _label(value: object) -> str:
    raw = _blob(value)
    if raw is None:
        return ""
    return raw[:256].decode("utf-8", "replace").rstrip("\x00")


def read_cert9(path: Path, *, max_certs: int, max_bytes: int) -> NssResult:
    """The certificates of an NSS SQL database and their TLS-server trust."""
    result = NssResult()
    try:
        st = path.stat()
    except OSError as exc:
        result.problems.append(f"cannot read: {exc.strerror or exc}")
        return result
    if not path.is_file():
        result.problems.append("not a regular file")
        return result
    if st.st_size > max_bytes:
        result.problems.append(f"larger than {max_bytes // (1024 * 1024)} MB: skipped")
        return result
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        result.problems.append(f"cannot read: {exc.strerror or exc}")
        return result
    if head != SQLITE_MAGIC:
        result.problems.append("not an SQLite database (damaged or not an NSS cert9.db)")
        return result
    uri = f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        result.problems.append(f"cannot open as SQLite: {exc}")
        return result
    try:
        _read(conn, result, max_certs)
    except (sqlite3.Error, MemoryError, OverflowError) as exc:
        result.problems.append(f"damaged database: {exc}")
    finally:
        conn.close()
    return result


def _read(conn: sqlite3.Connection, result: NssResult, max_certs: int) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "nssPublic" not in tables:
        result.problems.append("no nssPublic table: not an NSS certificate database")
        return
    columns = {str(row[1]).lower() for row in conn.execute("PRAGMA table_info(nssPublic)")}
    if COL_CLASS not in columns or COL_VALUE not in columns:
        result.problems.append("nssPublic has no CKA_CLASS/CKA_VALUE columns: cannot read")
        return

    def col(name: str) -> str:
        return name if name in columns else "NULL"

    # Trust records first: CKA_TRUST_SERVER_AUTH by certificate SHA-1 and by (issuer, serial).
    by_sha1: dict[bytes, str] = {}
    by_issuer_serial: dict[tuple[bytes, bytes], str] = {}
    if COL_TRUST_SERVER_AUTH in columns:
        result.trust_decoded = True
        query = (
            f"SELECT {col(COL_CERT_SHA1)}, {col(COL_ISSUER)}, {col(COL_SERIAL)}, "
            f"{COL_TRUST_SERVER_AUTH} FROM nssPublic WHERE {COL_CLASS} = ? LIMIT ?"
        )
        class_blob = CKO_NSS_TRUST.to_bytes(4, "big")
        for sha1, issuer, serial, server in conn.execute(query, (class_blob, MAX_ROWS_SCANNED)):
            value = _ulong(server)
            server_trust = (
                _SERVER_AUTH_TRUST.get(value, TRUST_NONE) if value is not None else TRUST_NONE
            )
            key_sha1 = _blob(sha1)
            if key_sha1 is not None:
                by_sha1[key_sha1] = server_trust
            key_issuer, key_serial = _blob(issuer), _blob(serial)
            if key_issuer is not None and key_serial is not None:
                by_issuer_serial[(key_issuer, key_serial)] = server_trust

    query = (
        f"SELECT {col(COL_LABEL)}, {COL_VALUE}, {col(COL_ISSUER)}, {col(COL_SERIAL)} "
        f"FROM nssPublic WHERE {COL_CLASS} = ? LIMIT ?"
    )
    class_blob = CKO_CERTIFICATE.to_bytes(4, "big")
    for label, value, issuer, serial in conn.execute(query, (class_blob, max_certs + 1)):
        if len(result.certificates) >= max_certs:
            result.truncated = True
            result.problems.append(
                f"more than {max_certs} certificates: only the first {max_certs} read"
            )
            break
        der = _blob(value)
        if der is None or der[:1] != b"\x30":
            result.malformed += 1
            continue
        trust: str | None = by_sha1.get(hashlib.sha1(der, usedforsecurity=False).digest())
        if trust is None:
            key_issuer, key_serial = _blob(issuer), _blob(serial)
            if key_issuer is not None and key_serial is not None:
                trust = by_issuer_serial.get((key_issuer, key_serial))
        if trust is None:
            trust = TRUST_NO_RECORD if result.trust_decoded else TRUST_UNKNOWN
        result.certificates.append(NssCertificate(der, _label(label), trust))
