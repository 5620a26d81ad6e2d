"""netguard: refuse any traffic from this process to addresses outside the testbed.

``install(report_path)`` adds a ``sys.addaudithook`` that looks at the socket audit events and
raises ``PermissionError`` *before* the system call when a socket would connect or send to an
address outside loopback (127.0.0.0/8, ::1) and the testbed range 198.18.0.0/15, or when a host
name would be looked up with the system resolver. Each refusal is also appended as one line to
``report_path`` (if given), so a refusal that the code under test catches and swallows still
shows up (the pytest plugin fails the test that caused it).

A process carrying ``NETVIGIL_NETGUARD=<report file>`` in its environment installs the guard when
it imports ``netvigil`` (see ``netvigil/__init__.py``), so the guard follows into the testbed's
agents and the CLI, which all run as ``python -m netvigil…``.

Host-name look-ups are allowed only when ``NETVIGIL_TESTBED_RESOLV=1``: the testbed sets it in
its namespaces, where /etc/resolv.conf names the testbed's own resolver. ``localhost`` and IP
literals never need a resolver and are always fine. AF_UNIX and AF_NETLINK sockets are fine.
"""

from __future__ import annotations

import _socket
import ipaddress
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "ALLOWED_NETWORKS",
    "ENV_REPORT",
    "ENV_TESTBED_RESOLV",
    "install",
    "installed",
    "is_allowed",
    "report_path",
]

ENV_REPORT = "NETVIGIL_NETGUARD"
ENV_TESTBED_RESOLV = "NETVIGIL_TESTBED_RESOLV"

ALLOWED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("198.18.0.0/15"),
    ipaddress.ip_network("::1/128"),
)
_V4_NETS = tuple(n for n in ALLOWED_NETWORKS if isinstance(n, ipaddress.IPv4Network))
_V6_NETS = tuple(n for n in ALLOWED_NETWORKS if isinstance(n, ipaddress.IPv6Network))
# Connecting to the unspecified address reaches this host; it never leaves the machine.
_LOCAL_ONLY = frozenset({"", "0.0.0.0", "::", "localhost", "localhost."})
_OUTSIDE = "is outside loopback and 198.18.0.0/15"

_FAMILY_UNIX = getattr(socket, "AF_UNIX", -1)
_FAMILY_NETLINK = getattr(socket, "AF_NETLINK", -1)
_FAMILY_INET = (socket.AF_INET, socket.AF_INET6)

# The raw integer family, without socket.socket.family's enum conversion (5x faster).
_raw_family: Callable[[object], int] = _socket.socket.__dict__["family"].__get__


def _family(sock: object) -> object:
    try:
        return _raw_family(sock)
    except TypeError:  # not a socket object
        return getattr(sock, "family", None)


_state: dict[str, str | None] = {"report": None}
_installed = False
# Verdicts per host string: the same few addresses come back on every call.
_cache: dict[str, bool] = {}
_CACHE_MAX = 4096


def _host_allowed(host: str) -> bool:
    """True when `host` (an IP literal, possibly v4-mapped or scoped) lies in an allowed network."""
    verdict = _cache.get(host)
    if verdict is not None:
        return verdict
    if host.lower() in _LOCAL_ONLY:
        verdict = True
    else:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            verdict = False
        else:
            if isinstance(addr, ipaddress.IPv6Address):
                mapped = addr.ipv4_mapped
                verdict = (
                    any(mapped in n for n in _V4_NETS)
                    if mapped is not None
                    else any(addr in n for n in _V6_NETS)
                )
            else:
                verdict = any(addr in n for n in _V4_NETS)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[host] = verdict
    return verdict


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _text(host: object) -> str | None:
    if isinstance(host, str):
        return host
    if isinstance(host, bytes | bytearray):
        return bytes(host).decode("ascii", "replace")
    return None


def is_allowed(address: object) -> bool:
    """May traffic go to `address`? An IP string or a socket address tuple ``(host, port, …)``.

    Allowed: 127.0.0.0/8, ::1, 198.18.0.0/15 (also as v4-mapped IPv6), the unspecified address
    and ``localhost`` (both stay on this machine). A host name is not an address: False.
    """
    host = address[0] if isinstance(address, tuple) and address else address
    text = _text(host)
    return text is not None and _host_allowed(text.split("%", 1)[0])


def _lookups_allowed() -> bool:
    return os.environ.get(ENV_TESTBED_RESOLV) == "1"


def report_path() -> str | None:
    """Where refusals are recorded (None: nowhere, they only raise)."""
    return _state["report"]


def installed() -> bool:
    return _installed


def _stack_summary(limit: int = 6) -> str:
    frame = sys._getframe(1)
    own = __file__
    parts: list[str] = []
    while frame is not None and len(parts) < limit:
        code = frame.f_code
        if code.co_filename != own:
            parts.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back  # type: ignore[assignment]
    return " < ".join(parts)


def _refuse(event: str, what: str, why: str) -> None:
    path = _state["report"]
    if path:
        line = f"pid={os.getpid()} event={event} address={what} {why} stack: {_stack_summary()}\n"
        line = line.replace("\r", " ")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError:
            pass  # the refusal below still stops the traffic
    raise PermissionError(f"netguard: {what} {why}")


def _check_send(event: str, args: tuple[Any, ...]) -> None:
    # socket.connect / socket.sendto / socket.sendmsg: (socket, address)
    if len(args) < 2:
        return
    sock, address = args[0], args[1]
    if address is None:  # sendmsg on a connected socket: its connect was checked
        return
    family = _family(sock)
    if family in _FAMILY_INET:
        if not isinstance(address, tuple) or not address:
            _refuse(event, repr(address), "is not an address netguard understands")
            return
        host = _text(address[0])
        if host is None:
            _refuse(event, repr(address), "is not an address netguard understands")
            return
        bare = host.split("%", 1)[0]
        if _host_allowed(bare):
            return
        if not _is_ip_literal(bare):
            # A host name here is resolved inside the call, by the system resolver.
            if _lookups_allowed():
                return
            _refuse(
                event,
                f"{host}:{address[1] if len(address) > 1 else ''}",
                "is a host name for the system resolver, and the system resolver " + _OUTSIDE,
            )
            return
        _refuse(event, f"{host}:{address[1] if len(address) > 1 else ''}", _OUTSIDE)
    elif family in (_FAMILY_UNIX, _FAMILY_NETLINK):
        return
    else:
        _refuse(event, repr(address), f"uses socket family {family!r}, not allowed by netguard")


def _check_lookup(event: str, args: tuple[Any, ...]) -> None:
    # socket.getaddrinfo: (host, port, family, type, proto); gethostbyname(_ex): (name,)
    if not args:
        return
    host = _text(args[0])
    if host is None:  # getaddrinfo(None, port): the local wildcard or loopback
        return
    bare = host.split("%", 1)[0]
    if bare.lower() in _LOCAL_ONLY or _is_ip_literal(bare) or _lookups_allowed():
        return
    _refuse(
        event,
        host,
        "needs the system resolver, which "
        + _OUTSIDE
        + f" (set {ENV_TESTBED_RESOLV}=1 only inside the testbed)",
    )


def _check_reverse(event: str, args: tuple[Any, ...]) -> None:
    # socket.gethostbyaddr: (ip,); socket.getnameinfo: (sockaddr,) — a PTR query unless loopback.
    if not args:
        return
    target = args[0]
    host = _text(target[0] if isinstance(target, tuple) and target else target)
    if host is None:
        return
    bare = host.split("%", 1)[0]
    if bare.lower() in _LOCAL_ONLY or _lookups_allowed():
        return
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        _refuse(event, host, "needs the system resolver, which " + _OUTSIDE)
        return
    if addr.is_loopback:
        return
    _refuse(event, host, "needs a reverse look-up by the system resolver, which " + _OUTSIDE)


def _check_name_before_call(event: str, sock: socket.socket, address: object) -> None:
    """Refuse a host name in an address *before* the C call: CPython resolves it (with the
    system resolver) before it raises the audit event, so the audit hook alone would be late."""
    if _family(sock) not in _FAMILY_INET or not isinstance(address, tuple) or not address:
        return
    host = _text(address[0])
    if host is None:
        return
    bare = host.split("%", 1)[0]
    if _host_allowed(bare) or _is_ip_literal(bare) or _lookups_allowed():
        return  # (an address outside is refused by the audit hook, with the same message)
    _refuse(
        event,
        f"{host}:{address[1] if len(address) > 1 else ''}",
        "is a host name for the system resolver, and the system resolver " + _OUTSIDE,
    )


def _patch_socket_class() -> None:
    cls = socket.socket
    original_connect = cls.connect
    original_connect_ex = cls.connect_ex
    original_sendto = cls.sendto
    original_sendmsg = cls.sendmsg

    def connect(self: socket.socket, address: Any, /) -> None:
        _check_name_before_call("socket.connect", self, address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any, /) -> int:
        _check_name_before_call("socket.connect", self, address)
        return original_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        _check_name_before_call("socket.sendto", self, args[-1] if args else None)
        return original_sendto(self, data, *args)

    def sendmsg(self: socket.socket, *args: Any) -> int:
        _check_name_before_call("socket.sendmsg", self, args[3] if len(args) > 3 else None)
        return original_sendmsg(self, *args)

    for name, func in (
        ("connect", connect),
        ("connect_ex", connect_ex),
        ("sendto", sendto),
        ("sendmsg", sendmsg),
    ):
        func.__name__ = func.__qualname__ = name
        setattr(cls, name, func)


_HANDLERS: dict[str, Callable[[str, tuple[Any, ...]], None]] = {
    "socket.connect": _check_send,
    "socket.sendto": _check_send,
    "socket.sendmsg": _check_send,
    "socket.getaddrinfo": _check_lookup,
    "socket.gethostbyname": _check_lookup,
    "socket.gethostbyname_ex": _check_lookup,
    "socket.gethostbyaddr": _check_reverse,
    "socket.getnameinfo": _check_reverse,
}


def _hook(event: str, args: tuple[Any, ...]) -> None:
    handler = _HANDLERS.get(event)
    if handler is not None:
        handler(event, args)


def install(report_path: str | None) -> None:
    """Install the guard in this process (once; a later call only changes the report file).

    The hook cannot be removed: audit hooks live as long as the interpreter. Besides the audit
    hook, ``socket.socket.connect``/``connect_ex``/``sendto``/``sendmsg`` are wrapped so that a
    host name in the address is refused before CPython resolves it inside the call.
    """
    global _installed
    _state["report"] = report_path or None
    if not _installed:
        sys.addaudithook(_hook)
        _patch_socket_class()
        _installed = True
