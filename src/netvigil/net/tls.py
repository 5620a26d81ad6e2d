"""Traced TLS handshake that captures the whole presented chain, verified by us.

The handshake itself never verifies (``CERT_NONE``): that way the complete chain the server
presented is available even when it would not verify (an interception proxy's forged chain is
the evidence). The chain is then verified with ``cryptography.x509.verification`` against a
``TrustStore`` built from a PEM bundle (certifi's Mozilla bundle on real networks, the testbed
root in testbed mode; never the OS store). A chain that fails verification closes the
connection, as a browser would (unless ``keep_unverified=True``).

``TLSStream`` is an ``asyncio.StreamReader``/``StreamWriter`` pair made with
``asyncio.open_connection(sock=..., ssl=...)``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import os
import socket
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from .failures import (
    SSL_FAILED_HANDSHAKE,
    SSL_INVALID_CERTIFICATE,
    SSL_INVALID_HOSTNAME,
    SSL_UNKNOWN_AUTHORITY,
    failure_string,
)
from .tcp import format_address
from .trace import Clock, NetworkEvent, Trace

__all__ = [
    "MAX_CHAIN",
    "TLSResult",
    "TLSStream",
    "TrustStore",
    "client_context",
    "handshake",
    "policy_builder",
    "reaches_trusted_root",
    "verify_chain",
]

MAX_CHAIN = 32
"""Certificates kept (and considered for verification) from a presented chain."""

_READ_LIMIT = 64 * 1024
_ENCODING_DER: int = getattr(ssl, "_ssl").ENCODING_DER  # noqa: B009 - private CPython module


class TrustStore:
    """Trusted roots, parsed once. Build it once and share it between handshakes."""

    __slots__ = ("roots", "store")
    _cache: dict[tuple[str, int, int], TrustStore] = {}  # noqa: RUF012 - class-level cache

    def __init__(self, roots: Iterable[x509.Certificate]) -> None:
        self.roots: tuple[x509.Certificate, ...] = tuple(roots)
        if not self.roots:
            raise ValueError("a trust store needs at least one root certificate")
        self.store = Store(list(self.roots))

    @classmethod
    def from_pem_bytes(cls, data: bytes) -> TrustStore:
        with warnings.catch_warnings():
            # A few long-lived roots have non-positive serials; they are still roots.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return cls(x509.load_pem_x509_certificates(data))

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str]) -> TrustStore:
        """Load a PEM bundle; cached by path, size and mtime, so repeated calls are free."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns)
        found = cls._cache.get(key)
        if found is None:
            found = cls.from_pem_bytes(resolved.read_bytes())
            cls._cache[key] = found
        return found

    @classmethod
    def mozilla(cls) -> TrustStore:
        """certifi's copy of the Mozilla root bundle (what the probe trusts on real networks)."""
        import certifi

        return cls.from_pem_file(certifi.where())


_contexts: dict[tuple[str, ...], ssl.SSLContext] = {}


def client_context(alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
    """A cached non-verifying client context (verification is done by ``verify_chain``)."""
    key = tuple(alpn)
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if key:
            ctx.set_alpn_protocols(list(key))
        _contexts[key] = ctx
    return ctx


@dataclass(frozen=True, slots=True)
class TLSStream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True, slots=True)
class TLSResult:
    address: str
    server_name: str
    failure: str | None
    tls_version: str
    cipher_suite: str
    negotiated_protocol: str
    peer_chain: tuple[bytes, ...]
    verify_failure: str | None
    t0: float
    t: float
    transaction_id: int = 0
    chain_truncated: bool = False

    def to_ooni(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": self.address,
            "cipher_suite": self.cipher_suite,
            "failure": self.failure,
            "negotiated_protocol": self.negotiated_protocol,
            "no_tls_verify": False,
            "peer_certificates": [
                {"data": base64.b64encode(der).decode("ascii"), "format": "base64"}
                for der in self.peer_chain
            ],
            "server_name": self.server_name,
            "t0": self.t0,
            "t": self.t,
            "tls_version": self.tls_version,
            "transaction_id": self.transaction_id,
            "x_verify_failure": self.verify_failure,
        }
        if self.chain_truncated:
            out["x_peer_certificates_truncated"] = True
        return out


def _subject(name: str) -> DNSName | IPAddress:
    try:
        return IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return DNSName(name.rstrip(".").lower())


def _lenient_policies() -> PolicyBuilder:
    """cryptography's web-PKI policy, except that the key identifiers (AKI, and the SKI of a CA)
    may be absent: they are hints for finding the issuer, which Go's verifier (OONI's probes)
    does not require; signatures, validity, names, constraints and usages are all still
    checked. Real forged chains (Kazakhstan's) and some real sites omit them."""
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None
    )
    ca = (
        ExtensionPolicy.webpki_defaults_ca()
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
        .may_be_present(x509.SubjectKeyIdentifier, Criticality.NON_CRITICAL, None)
    )
    return PolicyBuilder().extension_policies(ca_policy=ca, ee_policy=ee)


_POLICY = _lenient_policies()


def policy_builder() -> PolicyBuilder:
    """The verification policy of ``verify_chain`` (add ``.store``, ``.time``), for callers that
    need the verified path itself: the same chains verify everywhere."""
    return _POLICY


def _verify(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    trust: TrustStore,
    when: dt.datetime,
    subject: DNSName | IPAddress,
) -> str | None:
    """None when the chain verifies, else the verifier's message."""
    try:
        verifier = _POLICY.store(trust.store).time(when).build_server_verifier(subject)
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        return str(exc)
    except Exception as exc:  # unsupported algorithms, odd encodings: still a bad certificate
        return f"{type(exc).__name__}: {exc}"
    return None


def _validity_problem(cert: x509.Certificate, when: dt.datetime) -> str | None:
    if when < cert.not_valid_before_utc:
        return f"current time {when.isoformat()} is before {cert.not_valid_before_utc.isoformat()}"
    if when > cert.not_valid_after_utc:
        return f"current time {when.isoformat()} is after {cert.not_valid_after_utc.isoformat()}"
    return None


def _dns_names(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:
        return []
    return [name for name in san.get_values_for_type(DNSName) if isinstance(name, str)]


def _name_mismatch(leaf: x509.Certificate, subject: DNSName | IPAddress) -> str | None:
    """Go's VerifyHostname: the subjectAltName only (no CN fallback), a wildcard only as the
    whole leftmost label, matching exactly one label; IP literals against IP entries."""
    if isinstance(subject, IPAddress):
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            addresses = san.get_values_for_type(IPAddress)
        except Exception:
            addresses = []
        if subject.value in addresses:
            return None
        return f"certificate is not valid for IP address {subject.value}"
    host = subject.value.rstrip(".").lower()
    labels = host.split(".")
    for pattern in _dns_names(leaf):
        pattern = pattern.rstrip(".").lower()
        if pattern == host:
            return None
        parts = pattern.split(".")
        if (
            len(parts) >= 2
            and parts[0] == "*"
            and "*" not in ".".join(parts[1:])
            and len(labels) == len(parts)
            and labels[0]
            and labels[1:] == parts[1:]
        ):
            return None
    return f"certificate (subjectAltName) is not valid for {host}"


MAX_SIGNATURE_CHECKS = 100
"""Signature checks in one path search, as Go's ``maxChainSignatureChecks``."""

_INSECURE_HASHES = ("md5", "sha1")


def _signs(parent: x509.Certificate, child: x509.Certificate) -> bool:
    """Go's CheckSignatureFrom: the signature verifies; MD5/SHA-1 signatures do not count."""
    try:
        algorithm = child.signature_hash_algorithm
        if algorithm is not None and algorithm.name in _INSECURE_HASHES:
            return False
        child.verify_directly_issued_by(parent)
    except Exception:
        return False
    return True


def _ca_problem(cert: x509.Certificate, below: int, intermediate: bool) -> str | None:
    """Go's isValid for an issuer: an intermediate must be a CA; a path length must hold."""
    try:
        constraints: x509.BasicConstraints | None = cert.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
    except x509.ExtensionNotFound:
        constraints = None
    except Exception as exc:
        return f"unreadable basic constraints: {exc}"
    if intermediate and (constraints is None or not constraints.ca):
        return f"{cert.subject.rfc4514_string()} is not a CA"
    limit = constraints.path_length if constraints is not None else None
    if limit is not None and below > limit:
        return f"{cert.subject.rfc4514_string()}: too many intermediates for its path length"
    return None


def _same_issuer(a: x509.Certificate, b: x509.Certificate) -> bool:
    """Go's alreadyInChain, simplified: same subject and key (cross-signature loops)."""
    return a.subject == b.subject and a.public_key() == b.public_key()


def _trusted_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust: TrustStore,
    when: dt.datetime | None,
) -> tuple[bool, str | None]:
    """Does a path lead from ``leaf`` to a trusted root by issuer name and signature (the key
    identifiers are not needed)? ``(found, defect)``: with no path, ``defect`` says why a
    certificate that did sign was refused (expired, not a CA, path length); Go then reports
    that (``CertificateInvalidError``) rather than an unknown authority. Bounded by the chain
    length (no certificate twice on a path) and ``MAX_SIGNATURE_CHECKS``."""
    if any(root == leaf for root in trust.roots):
        return True, None
    checks = 0
    defect: str | None = None

    def extend(path: list[x509.Certificate]) -> bool:
        nonlocal checks, defect
        child = path[-1]
        candidates = [(root, False) for root in trust.roots if root.subject == child.issuer]
        candidates += [(c, True) for c in intermediates if c.subject == child.issuer]
        for candidate, is_intermediate in candidates:
            if any(_same_issuer(candidate, seen) for seen in path):
                continue
            checks += 1
            if checks > MAX_SIGNATURE_CHECKS:
                return False
            if not _signs(candidate, child):
                continue
            dated = _validity_problem(candidate, when) if when is not None else None
            problem = dated or _ca_problem(candidate, len(path) - 1, is_intermediate)
            if problem is not None:
                defect = defect or problem
                continue
            if not is_intermediate or extend([*path, candidate]):
                return True
        return False

    found = extend([leaf])
    return found, None if found else defect


def reaches_trusted_root(
    chain: Sequence[bytes], trust: TrustStore, *, now: dt.datetime | None = None
) -> bool:
    """Does the presented chain (DER, leaf first) lead to a root of ``trust`` by issuer name and
    signature, whatever the leaf's name and dates? With ``now``, the issuers' validity periods
    count too. Go's failure order reports a name mismatch before it looks for a path, so
    ``ssl_invalid_hostname`` alone does not say whether a trusted CA issued the leaf; this does.
    Bounded as ``verify_chain`` (``MAX_CHAIN``, ``MAX_SIGNATURE_CHECKS``)."""
    certs: list[x509.Certificate] = []
    for der in list(dict.fromkeys(chain[:MAX_CHAIN])):
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except Exception:
            if not certs:
                return False  # no leaf to start from; a junk intermediate is just no candidate
    if not certs:
        return False
    return _trusted_path(certs[0], certs[1:], trust, now)[0]


def verify_chain(
    chain: Sequence[bytes],
    server_name: str,
    trust: TrustStore,
    *,
    now: dt.datetime | None = None,
) -> tuple[str | None, str | None]:
    """Verify a presented chain (DER, leaf first) for ``server_name``.

    Returns ``(failure, message)``: ``(None, None)`` when it verifies, else an OONI string,
    decided in the order of Go's ``x509.Certificate.Verify`` (OONI's probes), which probe-cli's
    ``netxlite.ClassifyTLSHandshakeError`` maps to strings:

    1. the leaf outside its validity period: ``ssl_invalid_certificate`` (``Expired``);
    2. the name not in the leaf's subjectAltName: ``ssl_invalid_hostname`` (``HostnameError``),
       whoever issued the leaf;
    3. no path to a trusted root by issuer name and signature: ``ssl_unknown_authority``
       (``UnknownAuthorityError``), unless a certificate that did sign was refused (expired, not
       a CA, path length): ``ssl_invalid_certificate`` (Go returns that error then);
    4. a path exists but cryptography's web-PKI verifier (missing key identifiers allowed, as Go
       allows them) still refuses the chain (wrong usage, weak key, ...):
       ``ssl_invalid_certificate``. A chain only verifies when cryptography's verifier accepts it.

    Only the first ``MAX_CHAIN`` certificates are considered, duplicates dropped, so hostile
    chains are bounded in time.
    """
    if not chain:
        return SSL_INVALID_CERTIFICATE, "no certificate presented"
    when = now or dt.datetime.now(dt.UTC)
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
    except Exception as exc:
        return SSL_INVALID_CERTIFICATE, f"malformed leaf certificate: {exc}"
    intermediates: list[x509.Certificate] = []
    seen = {chain[0]}
    for position, der in enumerate(chain[1:MAX_CHAIN], start=1):
        if der in seen:
            continue
        seen.add(der)
        try:
            intermediates.append(x509.load_der_x509_certificate(der))
        except Exception as exc:
            return SSL_INVALID_CERTIFICATE, f"malformed certificate at position {position}: {exc}"
    try:
        subject = _subject(server_name)
    except ValueError as exc:
        return SSL_INVALID_HOSTNAME, f"invalid server name {server_name!r}: {exc}"
    message = _verify(leaf, intermediates, trust, when, subject)
    if message is None:
        return None, None
    problem = _validity_problem(leaf, when)
    if problem is not None:
        return SSL_INVALID_CERTIFICATE, f"leaf certificate expired or not yet valid: {problem}"
    problem = _name_mismatch(leaf, subject)
    if problem is not None:
        return SSL_INVALID_HOSTNAME, problem
    found, defect = _trusted_path(leaf, intermediates, trust, when)
    if not found:
        if defect is not None:
            return SSL_INVALID_CERTIFICATE, defect
        return SSL_UNKNOWN_AUTHORITY, f"no path to a trusted root: {message}"
    return SSL_INVALID_CERTIFICATE, message


def _der_chain(sslobj: Any) -> list[bytes]:
    """The unverified presented chain: public API on 3.13+, private ``_sslobj`` on 3.11."""
    getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is None:
        inner = getattr(sslobj, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
    if getter is None:
        der = sslobj.getpeercert(binary_form=True)
        return [der] if der else []
    items = getter() or []
    out: list[bytes] = []
    for item in items[: MAX_CHAIN + 1]:
        out.append(item if isinstance(item, bytes) else item.public_bytes(_ENCODING_DER))
    if len(items) > MAX_CHAIN + 1:
        out.append(b"")  # marker: more than MAX_CHAIN + 1, the exact count is not needed
    return out


def _peer_address(sock: socket.socket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        return ""
    return format_address(str(peer[0]), int(peer[1]))


async def handshake(
    sock: socket.socket,
    server_name: str,
    *,
    trust: TrustStore,
    timeout: float = 10.0,
    alpn: Sequence[str] = ("http/1.1",),
    trace: Trace | None = None,
    keep_unverified: bool = False,
    address: str | None = None,
) -> tuple[TLSResult, TLSStream | None]:
    """TLS over a connected socket with SNI ``server_name`` (none for IP literals).

    The socket is taken over: on any failure it is closed and the stream is None. On success
    the returned ``TLSStream`` owns it. ``address`` (``ip:port``) is the endpoint the caller
    connected to; given, it is recorded even when a reset has already disconnected the socket
    (then the socket can no longer say its peer, and the handshake would lose its endpoint and
    its connection's transaction id).
    """
    address = address or _peer_address(sock)
    # over the connection of a traced connect: its transaction id, as OONI's probes record it
    clock = Clock(trace, trace.connect_id(address) if trace is not None and address else None)
    failure: str | None = None
    verify_failure: str | None = None
    chain: list[bytes] = []
    version = cipher = protocol = ""
    stream: TLSStream | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                sock=sock,
                ssl=client_context(alpn),
                server_hostname=server_name,
                ssl_handshake_timeout=timeout + 1.0,
                limit=_READ_LIMIT,
            )
        stream = TLSStream(reader, writer)
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is not None:
            chain = _der_chain(sslobj)
            version = sslobj.version() or ""
            cipher_info = sslobj.cipher()
            cipher = cipher_info[0] if cipher_info else ""
            protocol = sslobj.selected_alpn_protocol() or ""
    except (OSError, ssl.SSLError, TimeoutError, EOFError, ValueError) as exc:
        failure = failure_string(exc)
        if failure.startswith("unknown_failure") and isinstance(exc, ssl.SSLError):
            failure = SSL_FAILED_HANDSHAKE
        sock.close()
    except BaseException:
        sock.close()
        raise
    truncated = len(chain) > MAX_CHAIN
    chain = chain[:MAX_CHAIN]
    if stream is not None:
        failure, verify_failure = verify_chain(chain, server_name, trust)
        if failure is not None and not keep_unverified:
            stream.writer.transport.abort()
            stream = None
    result = TLSResult(
        address=address,
        server_name=server_name,
        failure=failure,
        tls_version=version,
        cipher_suite=cipher,
        negotiated_protocol=protocol,
        peer_chain=tuple(chain),
        verify_failure=verify_failure,
        t0=clock.t0,
        t=clock.now(),
        transaction_id=clock.transaction_id,
        chain_truncated=truncated,
    )
    if trace is not None:
        trace.tls_handshakes.append(result)
        # OONI's builder reads a handshake's events by its transaction id (and requires one at
        # the handshake's address); read/write events are not recorded (asyncio's TLS).
        for operation, when, fail in (
            ("tls_handshake_start", result.t0, None),
            ("tls_handshake_done", result.t, failure),
        ):
            trace.network_events.append(
                NetworkEvent(operation, address, fail, when, transaction_id=result.transaction_id)
            )
    return result, stream
