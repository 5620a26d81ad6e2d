"""Traced network primitives: DNS, TCP, TLS (full chain capture), HTTP.

Each primitive returns a frozen result with timings and an OONI failure string, renders itself
with ``to_ooni()``, and appends itself to a ``Trace`` when given one.
"""

from .dns import (
    SYSTEM_ENGINE,
    DNSAnswer,
    DNSReply,
    DNSResult,
    resolve,
    resolve_doh,
    resolve_system,
)
from .failures import NetFailure, failure_string
from .http import DEFAULT_HEADERS, HTTPResult, extract_title, fetch, round_trip
from .tcp import TCPResult, connect, format_address
from .tls import TLSResult, TLSStream, TrustStore, client_context, handshake, verify_chain
from .trace import NetworkEvent, Trace

__all__ = [
    "DEFAULT_HEADERS",
    "SYSTEM_ENGINE",
    "DNSAnswer",
    "DNSReply",
    "DNSResult",
    "HTTPResult",
    "NetFailure",
    "NetworkEvent",
    "TCPResult",
    "TLSResult",
    "TLSStream",
    "Trace",
    "TrustStore",
    "client_context",
    "connect",
    "extract_title",
    "failure_string",
    "fetch",
    "format_address",
    "handshake",
    "resolve",
    "resolve_doh",
    "resolve_system",
    "round_trip",
    "verify_chain",
]
