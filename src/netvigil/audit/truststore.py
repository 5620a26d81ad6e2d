"""``netvigil check --trust-store``: which roots does this computer trust, and should it?

Reads, without any network access, the trust stores a TLS client on this machine may use — the
OS bundles, the locally added anchors (where a user following an ISP's instructions puts a
"national security certificate") and the NSS databases of Firefox, Thunderbird and Chromium — and
compares every trust anchor with

- the known interception roots (``netvigil.verdict.roots``: Kazakhstan's Qaznet/ISCA roots,
  Superfish, eDellRoot, …): severity **high** when trusted for websites;
- the Mozilla root list shipped in ``certifi`` (by certificate and by SPKI SHA-256): a trusted
  root outside it is severity **medium** ("not a public web root: added locally or by a vendor"),
  unless the distribution's own copy of the Mozilla list has it (an older or newer Mozilla list:
  severity **low**, listed in ``--json`` only).

Everything read is bounded (5,000 certificates per source, 50 MB per file); a malformed entry is
counted and skipped, an unreadable source is recorded as a problem — never a crash.

Exit status: 0 nothing flagged; 1 a known interception root is trusted; 2 no trust store could be
read; 3 something else was flagged (roots outside the Mozilla list, or a known interception root
that is present but not trusted for websites).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from netvigil.audit import nss

MAX_CERTS = 5_000  # per source
MAX_FILE_BYTES = 50 * 1024 * 1024  # per file
MAX_DIR_FILES = 5_000  # files looked at in one anchors folder
MAX_PROFILES = 200  # profile folders looked at under one parent
MAX_TEXT_NOTE_LINES = 1_000_000

EXIT_CLEAN = 0
EXIT_INTERCEPTION = 1
EXIT_UNREADABLE = 2
EXIT_FLAGGED = 3

SCHEMA = "netvigil.trust-store-audit/1"

# Where a trust anchor came from.
KIND_OS_BUNDLE = "os-bundle"
KIND_LOCAL_ANCHORS = "local-anchors"
KIND_NSS = "nss"

TRUST_ANCHOR = "anchor"  # every certificate of an OS bundle or anchors folder is trusted
# Trust values that make a certificate a TLS trust anchor (unknown counts: it may be one).
ANCHOR_TRUSTS = frozenset({TRUST_ANCHOR, nss.TRUST_CA, nss.TRUST_UNKNOWN})

TRUST_TEXT = {
    TRUST_ANCHOR: "trusted (OS store)",
    nss.TRUST_CA: "trusted to identify websites",
    nss.TRUST_PEER: "trusted as a website certificate, not as a CA",
    nss.TRUST_DISTRUSTED: "explicitly distrusted",
    nss.TRUST_NONE: "present, not trusted for websites",
    nss.TRUST_NO_RECORD: "present, no trust flags (not a trust anchor)",
    nss.TRUST_UNKNOWN: "present in the user's certificate database (trust not decoded)",
}

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


# --------------------------------------------------------------------------- the roots database


class RootMatcher(Protocol):
    """What the audit needs from ``netvigil.verdict.roots.load_known_roots()``."""

    def match_certificate(self, der: bytes) -> object | None: ...


class _NoRoots:
    """Stand-in when the known-roots database cannot be loaded: matches nothing."""

    def match_certificate(self, der: bytes) -> object | None:
        return None


def load_matcher() -> tuple[RootMatcher, str | None]:
    """The known interception roots, or a matcher of nothing and the reason."""
    try:
        from netvigil.verdict.roots import load_known_roots
    except ImportError as exc:
        return _NoRoots(), f"the known-roots database is not available ({exc})"
    try:
        return load_known_roots(), None
    except Exception as exc:  # a damaged data file must not stop the rest of the audit
        return _NoRoots(), f"the known-roots database could not be loaded ({exc})"


def _known_root_dict(root: object) -> dict[str, Any]:
    to_dict = getattr(root, "to_dict", None)
    if callable(to_dict):
        with contextlib.suppress(Exception):
            data = to_dict()
            if isinstance(data, dict):
                return data
    out: dict[str, Any] = {}
    for key in (
        "name",
        "operator",
        "country",
        "years",
        "description",
        "cert_sha256",
        "spki_sha256",
    ):
        value = getattr(root, key, None)
        if value is not None and not isinstance(value, str | int | float | bool):
            value = value if isinstance(value, list | tuple) else str(value)
            if isinstance(value, tuple):
                value = list(value)
        out[key] = value
    return out


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class AnchorDir:
    """A folder of locally added anchors; ``suffixes`` empty = every regular file."""

    path: Path
    suffixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NssDatabase:
    """An NSS database: the folder holding ``cert9.db`` (or the file), with a readable label."""

    path: Path
    label: str


@dataclass(frozen=True)
class ProfileParent:
    """A folder of application profiles (``~/.mozilla/firefox``): each ``*/cert9.db`` is read."""

    path: Path
    app: str  # "Firefox", "Thunderbird"


@dataclass(frozen=True, eq=False)
class AuditSources:
    """What to read. Every source is optional; a missing one is reported as not found."""

    bundles: tuple[Path, ...] = ()
    anchor_dirs: tuple[AnchorDir, ...] = ()
    nss_databases: tuple[NssDatabase, ...] = ()
    profile_parents: tuple[ProfileParent, ...] = ()
    mozilla_bundle: Path | None = None  # None: certifi's
    distro_mozilla: tuple[Path, ...] = ()  # the distribution's copy of the Mozilla roots
    matcher: RootMatcher | None = None  # None: netvigil.verdict.roots
    max_certs: int = MAX_CERTS
    max_file_bytes: int = MAX_FILE_BYTES

    @classmethod
    def system(cls, root: Path | None = None, home: Path | None = None) -> AuditSources:
        """The usual places on Linux (and macOS's /etc/ssl/cert.pem), under ``root`` if given."""
        base = root or Path("/")

        def at(path: str) -> Path:
            return base / path.lstrip("/")

        if home is None:
            try:
                real_home = Path.home()
            except (RuntimeError, KeyError):
                real_home = None
            if real_home is not None:
                home = base / str(real_home).lstrip("/") if root is not None else real_home
        bundles = tuple(
            at(p)
            for p in (
                "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu
                "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
                "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # Fedora, RHEL
                "/etc/ssl/ca-bundle.pem",  # openSUSE
                "/etc/ssl/cert.pem",  # Alpine, macOS, BSDs
            )
        )
        anchor_dirs = (
            AnchorDir(at("/usr/local/share/ca-certificates"), (".crt",)),
            AnchorDir(at("/etc/pki/ca-trust/source/anchors")),
        )
        distro = (
            at("/usr/share/ca-certificates/mozilla"),  # Debian, Ubuntu, Alpine
            at("/usr/share/pki/ca-trust-source/ca-bundle.trust.p11-kit"),  # Fedora, RHEL
        )
        databases: list[NssDatabase] = []
        parents: list[ProfileParent] = []
        if home is not None:
            for rel, app in (
                (".mozilla/firefox", "Firefox"),
                ("snap/firefox/common/.mozilla/firefox", "Firefox (snap)"),
                (".var/app/org.mozilla.firefox/.mozilla/firefox", "Firefox (flatpak)"),
                (".thunderbird", "Thunderbird"),
                ("snap/thunderbird/common/.thunderbird", "Thunderbird (snap)"),
                (".var/app/org.mozilla.Thunderbird/.thunderbird", "Thunderbird (flatpak)"),
            ):
                parents.append(ProfileParent(home / rel, app))
            databases.append(NssDatabase(home / ".pki/nssdb", "Chrome/Chromium NSS database"))
            databases.append(
                NssDatabase(
                    home / "snap/chromium/current/.pki/nssdb", "Chromium (snap) NSS database"
                )
            )
        return cls(
            bundles=bundles,
            anchor_dirs=anchor_dirs,
            nss_databases=tuple(databases),
            profile_parents=tuple(parents),
            distro_mozilla=distro,
        )


# --------------------------------------------------------------------------- report


@dataclass
class CertInfo:
    sha256: str
    spki_sha256: str | None
    subject: str
    issuer: str
    not_before: str | None
    not_after: str | None
    self_signed: bool

    @property
    def short_name(self) -> str:
        match = re.search(r"(?:^|,)CN=((?:[^,\\]|\\.)*)", self.subject)
        if match:
            return match.group(1).replace("\\", "")
        return self.subject or "(no subject)"


@dataclass
class Location:
    kind: str  # os-bundle | local-anchors | nss
    source: str  # "OS bundle", "Firefox profile default-release", …
    path: str  # the file the certificate was read from
    trust: str  # "anchor", or the NSS trust for TLS servers
    nickname: str = ""

    @property
    def text(self) -> str:
        if self.kind == KIND_NSS:
            nick = f" as '{self.nickname}'" if self.nickname else ""
            return f"{self.source}{nick}: {TRUST_TEXT.get(self.trust, self.trust)}"
        return f"{self.source}: {self.path}"


@dataclass
class SourceResult:
    kind: str
    label: str
    path: str
    found: bool = False
    read: bool = False
    certificates: int = 0
    malformed: int = 0
    truncated: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class Finding:
    severity: str  # high | medium | low | info
    kind: str  # interception-root | not-in-mozilla
    message: str
    trusted: bool  # a TLS trust anchor in at least one store (or trust not decodable)
    certificate: CertInfo
    locations: list[Location]
    known_root: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        return _where(self.locations)


@dataclass
class AuditReport:
    headline: str
    exit_code: int
    status: str  # interception | flagged | clean | unreadable
    sources: list[SourceResult]
    findings: list[Finding]
    anchors: int  # distinct trust anchors found
    in_mozilla: int  # of which in the Mozilla list
    reference: dict[str, Any]
    problems: list[str]

    def flagged(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in ("high", "medium")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "headline": self.headline,
            "status": self.status,
            "exit_code": self.exit_code,
            "summary": {
                "trust_anchors": self.anchors,
                "in_mozilla_list": self.in_mozilla,
                "by_severity": {
                    sev: sum(1 for f in self.findings if f.severity == sev)
                    for sev in SEVERITY_ORDER
                },
            },
            "findings": [asdict(f) for f in self.findings],
            "sources": [asdict(s) for s in self.sources],
            "reference": self.reference,
            "problems": self.problems,
        }


# --------------------------------------------------------------------------- certificates


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``pos``; ValueError when malformed."""
    if pos + 2 > len(buf):
        raise ValueError("truncated DER")
    tag = buf[pos]
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(buf):
            raise ValueError("bad DER length")
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(buf):
        raise ValueError("truncated DER")
    return tag, pos, end


def first_element(der: bytes) -> bytes:
    """The first DER element (an OpenSSL TRUSTED CERTIFICATE carries trust data after it)."""
    _, _, end = _tlv(der, 0)
    return der[:end]


def spki_der(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a certificate, exactly as encoded in it."""
    _, pos, _ = _tlv(der, 0)  # Certificate
    _, pos, _ = _tlv(der, pos)  # TBSCertificate
    tag, _, end = _tlv(der, pos)
    if tag == 0xA0:  # [0] version
        pos = end
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        _, _, pos = _tlv(der, pos)
    tag, _, end = _tlv(der, pos)
    if tag != 0x30:
        raise ValueError("no SubjectPublicKeyInfo")
    return der[pos:end]


def describe(der: bytes) -> CertInfo | None:
    """Subject, issuer, validity and hashes of a DER certificate; None when it is not one."""
    from cryptography import x509

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. negative serials of old roots
            cert = x509.load_der_x509_certificate(der)
            spki: bytes | None
            try:
                spki = spki_der(der)
            except ValueError:
                spki = None
            try:
                subject = cert.subject.rfc4514_string()
                issuer = cert.issuer.rfc4514_string()
                self_signed = cert.subject == cert.issuer
            except Exception:  # undecodable names: still a certificate worth reporting
                subject, issuer, self_signed = "(undecodable name)", "(undecodable name)", False
            try:
                not_before: str | None = cert.not_valid_before_utc.isoformat()
                not_after: str | None = cert.not_valid_after_utc.isoformat()
            except Exception:
                not_before = not_after = None
    except Exception:  # not DER, not a certificate, unsupported: counted as malformed
        return None
    return CertInfo(
        sha256=hashlib.sha256(der).hexdigest(),
        spki_sha256=hashlib.sha256(spki).hexdigest() if spki is not None else None,
        subject=subject,
        issuer=issuer,
        not_before=not_before,
        not_after=not_after,
        self_signed=self_signed,
    )


_BEGIN = re.compile(rb"-----BEGIN ((?:TRUSTED |X509 )?CERTIFICATE)-----")
_ANY_PEM = re.compile(rb"-----BEGIN [A-Z0-9 ]+-----")


@dataclass
class _FileRead:
    ders: list[bytes] = field(default_factory=list)
    malformed: int = 0
    truncated: bool = False
    problems: list[str] = field(default_factory=list)


def _read_bounded(path: Path, max_bytes: int) -> tuple[bytes | None, str | None]:
    try:
        if not path.is_file():
            return None, "not a regular file"
        if path.stat().st_size > max_bytes:
            return None, f"larger than {max_bytes // (1024 * 1024)} MB: skipped"
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if len(data) > max_bytes:
        return None, f"larger than {max_bytes // (1024 * 1024)} MB: skipped"
    return data, None


def read_certificate_file(path: Path, *, max_certs: int, max_bytes: int) -> _FileRead:
    """The DER certificates of a PEM bundle (or a single DER file), bounded."""
    out = _FileRead()
    data, problem = _read_bounded(path, max_bytes)
    if data is None:
        out.problems.append(problem or "cannot read")
        return out
    if _ANY_PEM.search(data) is None:
        if data[:1] == b"\x30":  # a single DER certificate (.cer/.der in an anchors folder)
            try:
                out.ders.append(first_element(data))
            except ValueError:
                out.malformed += 1
        elif data.strip():
            out.problems.append("no certificate found (not PEM or DER)")
        return out
    stray_lines = 0
    pos = 0
    while True:
        match = _BEGIN.search(data, pos)
        stray_lines += _stray_lines(data[pos : match.start() if match else len(data)])
        if match is None:
            break
        end_marker = b"-----END " + match.group(1) + b"-----"
        end = data.find(end_marker, match.end())
        if end < 0:
            out.problems.append(f"unterminated PEM block at byte {match.start()}: rest ignored")
            break
        pos = end + len(end_marker)
        if len(out.ders) >= max_certs:
            out.truncated = True
            break
        body = b"".join(data[match.end() : end].split())
        try:
            der = base64.b64decode(body, validate=True)
            if match.group(1).startswith(b"TRUSTED"):
                der = first_element(der)
        except (binascii.Error, ValueError):
            out.malformed += 1
            continue
        out.ders.append(der)
    if stray_lines:
        out.problems.append(
            f"{stray_lines} line(s) of unexpected text between certificates ignored"
        )
    return out


def _stray_lines(chunk: bytes) -> int:
    """Lines outside PEM blocks that are neither blank nor '#' comments."""
    if not chunk.strip():
        return 0
    count = 0
    for line in chunk.splitlines()[:MAX_TEXT_NOTE_LINES]:
        text = line.strip()
        if text and not text.startswith(b"#"):
            count += 1
    return count


# --------------------------------------------------------------------------- reading the sources


@dataclass
class _Entry:
    der: bytes
    info: CertInfo
    locations: list[Location] = field(default_factory=list)


class _Collector:
    def __init__(self, sources: AuditSources) -> None:
        self.sources = sources
        self.entries: dict[str, _Entry] = {}
        self.results: list[SourceResult] = []

    def add(self, der: bytes, location: Location, result: SourceResult) -> None:
        key = hashlib.sha256(der).hexdigest()
        entry = self.entries.get(key)
        if entry is None:
            info = describe(der)
            if info is None:
                result.malformed += 1
                return
            entry = self.entries[key] = _Entry(der, info)
        result.certificates += 1
        if location not in entry.locations:
            entry.locations.append(location)

    def bundle(self, path: Path) -> None:
        result = SourceResult(KIND_OS_BUNDLE, "OS bundle", str(path))
        self.results.append(result)
        if not path.exists():
            return
        result.found = True
        read = read_certificate_file(
            path, max_certs=self.sources.max_certs, max_bytes=self.sources.max_file_bytes
        )
        self._file_into(read, path, result, KIND_OS_BUNDLE, "OS bundle")

    def _file_into(
        self,
        read: _FileRead,
        path: Path,
        result: SourceResult,
        kind: str,
        label: str,
        prefix: str = "",
    ) -> None:
        result.problems.extend(prefix + p for p in read.problems)
        result.malformed += read.malformed
        if read.truncated and not result.truncated:
            result.truncated = True
            result.problems.append(
                f"{prefix}more than {self.sources.max_certs} certificates: "
                f"only the first {self.sources.max_certs} read"
            )
        if read.ders or not read.problems:
            result.read = True
        for der in read.ders:
            self.add(der, Location(kind, label, str(path), TRUST_ANCHOR), result)

    def anchor_dir(self, anchors: AnchorDir) -> None:
        label = "locally added anchors"
        result = SourceResult(KIND_LOCAL_ANCHORS, label, str(anchors.path))
        self.results.append(result)
        if not anchors.path.is_dir():
            return
        result.found = True
        result.read = True
        files = _walk_files(anchors.path, anchors.suffixes, result)
        for path in files:
            if result.certificates >= self.sources.max_certs:
                result.truncated = True
                result.problems.append(
                    f"more than {self.sources.max_certs} certificates: "
                    f"only the first {self.sources.max_certs} read"
                )
                break
            read = read_certificate_file(
                path,
                max_certs=self.sources.max_certs - result.certificates,
                max_bytes=self.sources.max_file_bytes,
            )
            self._file_into(read, path, result, KIND_LOCAL_ANCHORS, label, prefix=f"{path.name}: ")

    def nss_database(self, db: NssDatabase) -> None:
        path = db.path / "cert9.db" if db.path.is_dir() or db.path.suffix != ".db" else db.path
        result = SourceResult(KIND_NSS, db.label, str(path))
        self.results.append(result)
        if not path.exists():
            if (path.parent / "cert8.db").exists():
                result.found = True
                result.problems.append("only the old cert8.db (Berkeley DB) format: not read")
            return
        result.found = True
        read = nss.read_cert9(
            path, max_certs=self.sources.max_certs, max_bytes=self.sources.max_file_bytes
        )
        result.problems.extend(read.problems)
        result.malformed += read.malformed
        result.truncated = read.truncated
        result.read = not read.problems or bool(read.certificates)
        if result.read and not read.trust_decoded:
            result.problems.append("trust flags not decoded: certificates listed as present")
        for cert in read.certificates:
            location = Location(KIND_NSS, db.label, str(path), cert.trust, cert.label)
            self.add(cert.der, location, result)

    def profiles(self, parent: ProfileParent) -> None:
        try:
            children = sorted(p for p in parent.path.iterdir() if p.is_dir())
        except OSError:
            return  # no such application: nothing to report
        for child in children[:MAX_PROFILES]:
            if (child / "cert9.db").exists() or (child / "cert8.db").exists():
                name = child.name.split(".", 1)[1] if "." in child.name else child.name
                self.nss_database(NssDatabase(child, f"{parent.app} profile {name}"))


def _walk_files(top: Path, suffixes: tuple[str, ...], result: SourceResult) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if suffixes and not name.endswith(suffixes):
                continue
            files.append(Path(dirpath) / name)
            if len(files) >= MAX_DIR_FILES:
                result.problems.append(f"more than {MAX_DIR_FILES} files: only the first read")
                return files
    return files


@dataclass
class _Reference:
    cert: set[str] = field(default_factory=set)
    spki: set[str] = field(default_factory=set)

    def has(self, info: CertInfo) -> bool:
        return info.sha256 in self.cert or (
            info.spki_sha256 is not None and info.spki_sha256 in self.spki
        )

    def add(self, der: bytes) -> None:
        self.cert.add(hashlib.sha256(der).hexdigest())
        with contextlib.suppress(ValueError):
            self.spki.add(hashlib.sha256(spki_der(der)).hexdigest())


def _load_reference(
    paths: Iterable[Path], sources: AuditSources, problems: list[str]
) -> _Reference:
    ref = _Reference()
    for path in paths:
        files = [path]
        if path.is_dir():
            holder = SourceResult("reference", "reference", str(path))
            files = _walk_files(path, (".crt", ".pem"), holder)
        for file in files:
            if not file.exists():
                continue
            read = read_certificate_file(file, max_certs=MAX_CERTS, max_bytes=MAX_FILE_BYTES)
            problems.extend(f"{file}: {p}" for p in read.problems if "unexpected text" not in p)
            for der in read.ders:
                ref.add(der)
    return ref


# --------------------------------------------------------------------------- analysis


def audit_trust_stores(sources: AuditSources) -> AuditReport:
    """Read every source and compare each trust anchor with the known roots and Mozilla's list.

    Reads files only (no network, nothing written).
    """
    problems: list[str] = []
    matcher = sources.matcher
    if matcher is None:
        matcher, why = load_matcher()
        if why:
            problems.append(why + ": known interception roots cannot be recognised")

    reference: dict[str, Any] = {}
    mozilla_path = sources.mozilla_bundle
    if mozilla_path is None:
        import certifi

        mozilla_path = Path(certifi.where())
        reference["certifi_version"] = getattr(certifi, "__version__", None)
    reference["mozilla_bundle"] = str(mozilla_path)
    ref_problems: list[str] = []
    mozilla = _load_reference([mozilla_path], sources, ref_problems)
    reference["mozilla_roots"] = len(mozilla.cert)
    if not mozilla.cert:
        problems.append(
            f"the Mozilla root list ({mozilla_path}) could not be read: roots outside it are not flagged"
        )
    problems.extend(ref_problems)
    distro = _load_reference([p for p in sources.distro_mozilla if p.exists()], sources, [])
    reference["distribution_mozilla"] = [str(p) for p in sources.distro_mozilla if p.exists()]
    reference["distribution_mozilla_roots"] = len(distro.cert)

    collector = _Collector(sources)
    for path in sources.bundles:
        collector.bundle(path)
    for folder in sources.anchor_dirs:
        collector.anchor_dir(folder)
    for parent in sources.profile_parents:
        collector.profiles(parent)
    for db in sources.nss_databases:
        collector.nss_database(db)

    findings: list[Finding] = []
    anchors = in_mozilla = 0
    for entry in collector.entries.values():
        trusted = any(loc.trust in ANCHOR_TRUSTS for loc in entry.locations)
        anchors += trusted
        known = matcher.match_certificate(entry.der)
        if known is not None:
            findings.append(_interception_finding(entry, known, trusted))
            continue
        if not mozilla.cert or mozilla.has(entry.info):
            in_mozilla += trusted and bool(mozilla.cert)
            continue
        findings.append(_unknown_finding(entry, trusted, distro.has(entry.info)))
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.kind, f.certificate.subject))

    read_any = any(r.read for r in collector.results)
    headline, status, code = _verdict(findings, collector.results, read_any, anchors)
    return AuditReport(
        headline=headline,
        exit_code=code,
        status=status,
        sources=collector.results,
        findings=findings,
        anchors=anchors,
        in_mozilla=in_mozilla,
        reference=reference,
        problems=problems,
    )


def _interception_finding(entry: _Entry, known: object, trusted: bool) -> Finding:
    root = _known_root_dict(known)
    operator = root.get("operator") or "unknown operator"
    if trusted:
        message = f"known HTTPS-interception root ({operator}), trusted for websites"
    else:
        message = (
            f"known HTTPS-interception root ({operator}), present but not trusted for websites"
        )
    return Finding(
        severity="high" if trusted else "medium",
        kind="interception-root",
        message=message,
        trusted=trusted,
        certificate=entry.info,
        locations=entry.locations,
        known_root=root,
    )


def _unknown_finding(entry: _Entry, trusted: bool, in_distro: bool) -> Finding:
    if not trusted:
        severity = "info"
        message = "not in the Mozilla list, but not a trust anchor here (no TLS trust)"
    elif in_distro:
        severity = "low"
        message = (
            "not in certifi's current Mozilla list, but in the distribution's copy of it "
            "(an older or newer Mozilla list)"
        )
    else:
        severity = "medium"
        message = "not a public web root: added locally or by a vendor"
    return Finding(
        severity=severity,
        kind="not-in-mozilla",
        message=message,
        trusted=trusted,
        certificate=entry.info,
        locations=entry.locations,
    )


def _where(locations: list[Location]) -> str:
    labels: list[str] = []
    for loc in locations:
        label = f"in {loc.source}" if loc.kind == KIND_NSS else f"in {loc.path}"
        if label not in labels:
            labels.append(label)
    if len(labels) > 2:
        return ", ".join(labels[:2]) + f" and {len(labels) - 2} more"
    return " and ".join(labels)


def _the(operator: str) -> str:
    return "the " + operator if operator.startswith("Government") else operator


def _verdict(
    findings: list[Finding], results: list[SourceResult], read_any: bool, anchors: int
) -> tuple[str, str, int]:
    if not read_any:
        found = [r for r in results if r.found]
        detail = f"{len(found)} found, none readable" if found else "none of the usual places exist"
        return (
            f"Could not read any trust store ({detail}); see the sources below.",
            "unreadable",
            EXIT_UNREADABLE,
        )
    high = [f for f in findings if f.severity == "high"]
    medium = [f for f in findings if f.severity == "medium"]
    others = [f for f in medium if f.kind != "interception-root"]
    tail = f"; {len(others)} other root(s) outside the Mozilla list" if others else ""
    if high:
        first = high[0]
        root = first.known_root or {}
        name = root.get("name") or first.certificate.short_name
        operator = root.get("operator")
        of = f" of {_the(operator)}" if operator else ""
        more = f" and {len(high) - 1} more known interception root(s)" if len(high) > 1 else ""
        return (
            f"Your system trusts the known HTTPS-interception root '{name}'{of} "
            f"({first.where}){more}{tail}: whoever holds its key can read and change your HTTPS "
            "traffic without a browser warning.",
            "interception",
            EXIT_INTERCEPTION,
        )
    if medium:
        present = [f for f in medium if f.kind == "interception-root"]
        parts = []
        if present:
            root = present[0].known_root or {}
            parts.append(
                f"known interception root '{root.get('name') or present[0].certificate.short_name}' "
                f"is present but not trusted for websites ({present[0].where})"
            )
        else:
            parts.append("No known interception root")
        if others:
            parts.append(f"{len(others)} root(s) outside the Mozilla list (see below)")
        text = "; ".join(parts)
        return text[0].upper() + text[1:], "flagged", EXIT_FLAGGED
    return (
        f"No known interception root; all {anchors} trusted root(s) found are in the Mozilla list "
        "or the distribution's copy of it.",
        "clean",
        EXIT_CLEAN,
    )


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """The trust-store audit's options (``json_flag=False`` when the parser already has --json)."""
    group = parser.add_argument_group("trust-store audit")
    group.add_argument(
        "--root",
        dest="trust_root",
        metavar="DIR",
        type=Path,
        help="look for the system stores and home folder under DIR instead of / (tests, mounted disks)",
    )
    group.add_argument(
        "--home",
        dest="trust_home",
        metavar="DIR",
        type=Path,
        help="the home folder whose Firefox/Thunderbird/Chromium databases are read (default: yours)",
    )
    group.add_argument(
        "--bundle",
        dest="trust_bundles",
        metavar="FILE",
        type=Path,
        action="append",
        default=[],
        help="read this PEM bundle (repeatable); with --bundle or --firefox-profile only those are read",
    )
    group.add_argument(
        "--firefox-profile",
        dest="trust_profiles",
        metavar="DIR",
        type=Path,
        action="append",
        default=[],
        help="read the NSS database (cert9.db) of this profile folder (repeatable)",
    )
    group.add_argument(
        "--mozilla-bundle",
        dest="trust_mozilla",
        metavar="FILE",
        type=Path,
        help="the Mozilla root list to compare with (default: certifi's)",
    )
    if json_flag:
        group.add_argument("--json", action="store_true", help="print one JSON document")


def sources_from_args(args: argparse.Namespace) -> AuditSources:
    bundles: list[Path] = list(getattr(args, "trust_bundles", None) or [])
    profiles: list[Path] = list(getattr(args, "trust_profiles", None) or [])
    mozilla: Path | None = getattr(args, "trust_mozilla", None)
    if bundles or profiles:
        root: Path | None = getattr(args, "trust_root", None)
        distro = AuditSources.system(root=root).distro_mozilla if root is not None else ()
        return AuditSources(
            bundles=tuple(bundles),
            nss_databases=tuple(NssDatabase(p, _profile_label(p)) for p in profiles),
            mozilla_bundle=mozilla,
            distro_mozilla=distro,
        )
    system = AuditSources.system(
        root=getattr(args, "trust_root", None), home=getattr(args, "trust_home", None)
    )
    return AuditSources(
        bundles=system.bundles,
        anchor_dirs=system.anchor_dirs,
        nss_databases=system.nss_databases,
        profile_parents=system.profile_parents,
        mozilla_bundle=mozilla,
        distro_mozilla=system.distro_mozilla,
    )


def _profile_label(path: Path) -> str:
    folder = path.parent if path.name == "cert9.db" else path
    name = folder.name.split(".", 1)[1] if "." in folder.name else folder.name
    return f"Firefox profile {name or folder}"


def run(args: argparse.Namespace) -> int:
    report = audit_trust_stores(sources_from_args(args))
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    else:
        render(report)
    return report.exit_code


def render(report: AuditReport, console: Any = None) -> None:
    """The headline, a table of what is flagged and which sources were read."""
    from rich.console import Console
    from rich.markup import escape as markup_escape
    from rich.table import Table

    from netvigil import textsafe

    def escape(value: str) -> str:
        # Certificate names and file contents are untrusted (a censor's root names itself):
        # control characters made visible, then markup escaped, as this function builds markup.
        return markup_escape(textsafe.visible(value, multiline=True))

    console = console or Console()
    style = {"interception": "bold red", "flagged": "bold yellow", "clean": "bold green"}.get(
        report.status, "bold"
    )
    console.print(f"[{style}]{escape(report.headline)}[/{style}]")
    flagged = report.flagged()
    if flagged:
        table = Table(title="Trust anchors flagged", show_lines=True)
        for col in ("#", "severity", "root", "where", "why"):
            table.add_column(col, overflow="fold")
        for n, f in enumerate(flagged, 1):
            sev = "red" if f.severity == "high" else "yellow"
            name = str((f.known_root or {}).get("name") or f.certificate.short_name)
            table.add_row(
                str(n),
                f"[{sev}]{f.severity}[/{sev}]",
                escape(name),
                escape("\n".join(loc.text for loc in f.locations)),
                escape(f.message),
            )
        console.print(table)
        for n, f in enumerate(flagged, 1):
            cert = f.certificate
            console.print(f"[bold]{n}.[/bold] subject: {escape(cert.subject)}")
            console.print(f"   issuer:  {escape(cert.issuer)}")
            console.print(f"   valid:   {cert.not_before or '?'} → {cert.not_after or '?'}")
            console.print(f"   SHA-256: {cert.sha256}")
            console.print(f"   SPKI SHA-256: {cert.spki_sha256 or '?'}")
            if f.known_root and f.known_root.get("description"):
                console.print(f"   {escape(str(f.known_root['description']))}")
            for loc in f.locations:
                console.print(f"   file: {escape(loc.path)}")
    low = sum(1 for f in report.findings if f.severity == "low")
    info = sum(1 for f in report.findings if f.severity == "info")
    if low:
        console.print(
            f"{low} trusted root(s) are in the distribution's copy of the Mozilla list but not in "
            "certifi's (an older or newer list): not flagged, listed by --json."
        )
    if info:
        console.print(f"{info} other certificate(s) present without TLS trust: listed by --json.")
    console.print(
        f"{report.anchors} distinct trust anchor(s), {report.in_mozilla} in the Mozilla list "
        f"({report.reference.get('mozilla_roots', 0)} roots in {escape(str(report.reference.get('mozilla_bundle')))})."
    )
    for src in report.sources:
        if not src.found:
            continue
        state = "read" if src.read else "unreadable"
        extra = f", {src.malformed} malformed skipped" if src.malformed else ""
        console.print(
            f"  {state}: {escape(src.label)} {escape(src.path)} ({src.certificates} certificate(s){extra})"
        )
        for problem in src.problems[:10]:
            console.print(f"    [yellow]{escape(problem)}[/yellow]")
    missing = sum(1 for s in report.sources if not s.found)
    if missing:
        console.print(
            f"  [dim]{missing} usual location(s) not present on this system (--json lists them)[/dim]"
        )
    for problem in report.problems:
        console.print(f"[yellow]{escape(problem)}[/yellow]")
