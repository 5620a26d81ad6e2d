"""An ASGI middleware that gives each request its TLS verdict.

Fed by the netvigil front (``X-Netvigil-TLS-ClientHello``, re-judged here with the request's
User-Agent) or by a proxy that passes a JA4 / JA4_r header (``ja4_header``, e.g. ``x-ja4`` from
nginx or HAProxy). Headers are trusted only from ``trusted_peers`` (the front or the proxy;
loopback by default): from anyone else they are ignored, since a visitor could forge them.

The verdict (``Verdict.to_json()``) goes to ``scope["state"]["netvigil_tls"]`` (Starlette's
``request.state.netvigil_tls``); requests without usable headers get none. Counts per verdict
are kept in ``counts`` for metrics.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from netvigil.sitecheck.clienthello import ClientHello, parse_client_hello
from netvigil.sitecheck.ja4check import judge_ja4
from netvigil.sitecheck.reference import ReferenceDB
from netvigil.sitecheck.verdict import Verdict, judge

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CLIENT_HELLO_HEADER = b"x-netvigil-tls-clienthello"
MAX_HEADER = 1 << 16
DEFAULT_TRUSTED = ("127.0.0.0/8", "::1/128")


class SitecheckMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        trusted_peers: Iterable[str] = DEFAULT_TRUSTED,
        ja4_header: str | None = "x-ja4",
        db: ReferenceDB | None = None,
    ) -> None:
        self.app = app
        self.trusted = [ipaddress.ip_network(net) for net in trusted_peers]
        self.ja4_header = ja4_header.lower().encode("latin-1") if ja4_header else None
        self.db = db
        self.counts: Counter[str] = Counter()

    def _trusted(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        try:
            address = ipaddress.ip_address(str(client[0]))
        except ValueError:
            return False
        return any(address in net for net in self.trusted)

    def verdict_for(self, headers: Iterable[tuple[bytes, bytes]]) -> Verdict | None:
        found: dict[bytes, bytes] = {}
        for name, value in headers:
            lowered = name.lower()
            if lowered in (CLIENT_HELLO_HEADER, b"user-agent", self.ja4_header):
                found.setdefault(lowered, value[:MAX_HEADER])
        user_agent = found.get(b"user-agent", b"").decode("latin-1")
        db = self.db if self.db is not None else ReferenceDB.shipped()
        if CLIENT_HELLO_HEADER in found:
            try:
                data = base64.b64decode(found[CLIENT_HELLO_HEADER], validate=True)
            except (binascii.Error, ValueError):
                return None
            hello = parse_client_hello(data)
            return judge(hello, user_agent, db) if isinstance(hello, ClientHello) else None
        if self.ja4_header is not None and self.ja4_header in found:
            verdict, _ = judge_ja4(found[self.ja4_header].decode("latin-1"), user_agent, db)
            return verdict
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http" and self._trusted(scope):
            verdict = self.verdict_for(scope.get("headers", []))
            if verdict is not None:
                self.counts[verdict.verdict] += 1
                scope.setdefault("state", {})["netvigil_tls"] = verdict.to_json()
        await self.app(scope, receive, send)
