"""OONI failure strings for the exceptions network code meets.

``failure_string(exc)`` maps Python, ``ssl``, ``socket`` and dnspython exceptions (and raw errnos)
to OONI's vocabulary. Code in this package that detects a failure itself raises ``NetFailure``
with the exact string.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import dns.exception
import dns.resolver

__all__ = [
    "CONNECTION_ABORTED",
    "CONNECTION_REFUSED",
    "CONNECTION_RESET",
    "DNS_NO_ANSWER",
    "DNS_NXDOMAIN",
    "DNS_REFUSED",
    "DNS_SERVER_FAILURE",
    "EOF_ERROR",
    "GENERIC_TIMEOUT",
    "HOST_UNREACHABLE",
    "NETWORK_UNREACHABLE",
    "SSL_FAILED_HANDSHAKE",
    "SSL_INVALID_CERTIFICATE",
    "SSL_INVALID_HOSTNAME",
    "SSL_UNKNOWN_AUTHORITY",
    "TOO_MANY_REDIRECTS",
    "NetFailure",
    "errno_failure",
    "failure_string",
    "unknown_failure",
]

CONNECTION_REFUSED = "connection_refused"
CONNECTION_RESET = "connection_reset"
CONNECTION_ABORTED = "connection_aborted"
GENERIC_TIMEOUT = "generic_timeout_error"
HOST_UNREACHABLE = "host_unreachable"
NETWORK_UNREACHABLE = "network_unreachable"
EOF_ERROR = "eof_error"
SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
DNS_NXDOMAIN = "dns_nxdomain_error"
DNS_NO_ANSWER = "dns_no_answer"
DNS_REFUSED = "dns_refused_error"
DNS_SERVER_FAILURE = "dns_server_failure"
TOO_MANY_REDIRECTS = "x_too_many_redirects"

_MAX_TEXT = 200


class NetFailure(Exception):
    """A failure this package detected itself; ``failure`` is the OONI string."""

    def __init__(self, failure: str, detail: str = "") -> None:
        super().__init__(detail or failure)
        self.failure = failure


_ERRNO: dict[int, str] = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.EPIPE: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_ABORTED,
    errno.ETIMEDOUT: GENERIC_TIMEOUT,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.EHOSTDOWN: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ENETDOWN: NETWORK_UNREACHABLE,
}

# getaddrinfo error codes (negative numbers on Linux); EAI_NODATA is a glibc extension.
_GAI: dict[int, str] = {
    socket.EAI_NONAME: DNS_NXDOMAIN,
    socket.EAI_AGAIN: DNS_SERVER_FAILURE,
    socket.EAI_FAIL: DNS_SERVER_FAILURE,
}
_eai_nodata = getattr(socket, "EAI_NODATA", None)
if isinstance(_eai_nodata, int):
    _GAI[_eai_nodata] = DNS_NO_ANSWER
_eai_addrfamily = getattr(socket, "EAI_ADDRFAMILY", None)
if isinstance(_eai_addrfamily, int):
    _GAI[_eai_addrfamily] = DNS_NO_ANSWER

# X509_V_ERR_* codes of ssl.SSLCertVerificationError.verify_code.
_VERIFY_UNKNOWN_AUTHORITY = frozenset({2, 18, 19, 20, 21, 27, 28})
_VERIFY_HOSTNAME = frozenset({62, 63, 64})


def unknown_failure(text: str) -> str:
    """``unknown_failure: <text>``, the text bounded to a sensible length."""
    text = " ".join(text.split())
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "…"
    return f"unknown_failure: {text}"


def errno_failure(code: int | None) -> str | None:
    """The OONI string for an errno, or None when it has none."""
    if code is None:
        return None
    return _ERRNO.get(code)


def _ssl_failure(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _VERIFY_UNKNOWN_AUTHORITY:
            return SSL_UNKNOWN_AUTHORITY
        if code in _VERIFY_HOSTNAME:
            return SSL_INVALID_HOSTNAME
        return SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return EOF_ERROR
    if isinstance(exc, ssl.SSLSyscallError):
        found = errno_failure(exc.errno)
        return found if found is not None else EOF_ERROR
    return SSL_FAILED_HANDSHAKE


def failure_string(exc: BaseException) -> str:
    """Map an exception to an OONI failure string (``unknown_failure: …`` if nothing fits)."""
    if isinstance(exc, NetFailure):
        return exc.failure
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | dns.exception.Timeout):
        return GENERIC_TIMEOUT
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return DNS_NXDOMAIN
    if isinstance(exc, dns.resolver.NoAnswer):
        return DNS_NO_ANSWER
    if isinstance(exc, dns.resolver.NoNameservers):
        return DNS_SERVER_FAILURE
    if isinstance(exc, ssl.SSLError):
        return _ssl_failure(exc)
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return EOF_ERROR
    if isinstance(exc, socket.gaierror):
        found = _GAI.get(exc.errno) if isinstance(exc.errno, int) else None
        return found if found is not None else unknown_failure(f"getaddrinfo: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return CONNECTION_RESET
    if isinstance(exc, ConnectionAbortedError):
        return CONNECTION_ABORTED
    if isinstance(exc, OSError):
        found = errno_failure(exc.errno)
        if found is not None:
            return found
    text = str(exc) or type(exc).__name__
    return unknown_failure(f"{type(exc).__name__}: {text}")
