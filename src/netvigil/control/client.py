"""The probe's side of the test-helper protocol: ``query_control``.

Works against a netvigil helper and against OONI's own helpers (same protocol). Whatever the
helper does — refuse, stall, answer garbage, 5xx, or an endless body — the caller gets
``(None, failure)``, never an exception: a measurement records ``control_failure`` and goes on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from netvigil import __version__
from netvigil.control.protocol import build_request
from netvigil.net import http as net_http
from netvigil.net import tcp as net_tcp
from netvigil.net import tls as net_tls
from netvigil.net.failures import failure_string, unknown_failure

MAX_RESPONSE = 1024 * 1024

# control_failure values for a helper that answered, but not usefully.
HTTP_FAILED = "http_request_failed"
TOO_LARGE = "x_control_response_too_large"
INVALID_JSON = "x_control_invalid_json"
INVALID_RESPONSE = "x_control_invalid_response"
TIMEOUT = "generic_timeout_error"


async def query_control(
    helper_url: str,
    url: str,
    tcp_connect: list[str],
    *,
    timeout: float = 20.0,
    headers: dict[str, list[str]] | None = None,
    trust: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """Ask the helper at `helper_url` to measure `url`; (response, None) or (None, failure).

    `tcp_connect` is the probe's ``ip:port`` list; `headers` the probe's request headers
    (OONI forwards User-Agent, Accept, Accept-Language); `trust` a PEM bundle to verify an
    https:// helper with (default: certifi's Mozilla bundle).
    """
    body = json.dumps(build_request(url, tcp_connect, headers)).encode()
    try:
        async with asyncio.timeout(timeout):
            return await _query(helper_url, body, timeout, trust)
    except TimeoutError:
        return None, TIMEOUT
    except Exception as exc:  # never raise: a failing helper is data, not a crash
        return None, failure_string(exc)


def _validate(data: object) -> str | None:
    if not isinstance(data, dict):
        return INVALID_RESPONSE
    for key in ("dns", "http_request"):
        if not isinstance(data.get(key), dict):
            return INVALID_RESPONSE
    for key in ("tcp_connect", "tls_handshake", "ip_info"):
        if data.get(key) is not None and not isinstance(data.get(key), dict):
            return INVALID_RESPONSE
    return None


async def _addresses(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    # A helper named by host name (OONI's are) is found with the system resolver, as OONI does.
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))[:4]


async def _query(
    helper_url: str, body: bytes, timeout: float, trust: str | os.PathLike[str] | None
) -> tuple[dict[str, Any] | None, str | None]:
    parts = urlsplit(helper_url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        return None, unknown_failure(f"unsupported helper URL {helper_url[:100]!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    failure: str | None = "dns_no_answer"
    sock: socket.socket | None = None
    for ip in await _addresses(host, port):
        connected, sock = await net_tcp.connect(ip, port, timeout=timeout)
        if sock is not None:
            break
        failure = connected.failure
    if sock is None:
        return None, failure
    if scheme == "https":
        store = net_tls.TrustStore.from_pem_file(trust) if trust else net_tls.TrustStore.mozilla()
        shake, stream = await net_tls.handshake(sock, host, trust=store, timeout=timeout)
        if stream is None:
            return None, shake.failure or "ssl_failed_handshake"
        reader, writer = stream.reader, stream.writer
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    try:
        # One byte more than allowed: a body that fills it is too large (post() truncates).
        status, data, failure = await net_http.post(
            reader,
            writer,
            helper_url,
            body,
            headers=[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
                ("User-Agent", f"netvigil/{__version__}"),
                ("Connection", "close"),
            ],
            max_body=MAX_RESPONSE + 1,
            timeout=timeout,
        )
    finally:
        writer.transport.abort()
    if len(data) > MAX_RESPONSE:
        return None, TOO_LARGE
    if failure is not None:
        return None, failure
    if status != 200:
        return None, HTTP_FAILED
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return None, INVALID_JSON
    invalid = _validate(parsed)
    if invalid is not None:
        return None, invalid
    return parsed, None
