"""The testbed's self-check: look at every URL of a profile from `client` with plain sockets.

This is not the probe (that is ``netvigil measure``): it uses what it knows of the testbed (the
two resolvers, the web PKI root, the shipped blockpages) to confirm that the censor does what the
ground truth says, and that nothing else is disturbed. ``netvigil testbed selftest`` runs it and
the demo prints it. Everything is bounded: each URL takes a few seconds at most, all run at once.

An observation is labelled in the ground truth's vocabulary, except that a refused connection is
``tcp/refused`` (a down site and an RST-rejecting censor look alike from the client alone; the
probe will tell them apart with its control measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import ssl
import sys
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from cryptography import x509

from netvigil.testbed.plan import ISP_RESOLVER, PUBLIC_RESOLVER, Plan
from netvigil.testbed.profile import blockpage_body, blockpage_names
from netvigil.testbed.truth import TruthRow, ground_truth

DNS_TIMEOUT = 2.5
LATE_REPLY_WINDOW = 0.4  # injected replies arrive first; the real one follows within this
CONNECT_TIMEOUT = 3.0
TLS_TIMEOUT = 10.0  # a cold interceptor forges on demand; probes wait this long too
HTTP_TIMEOUT = 8.0
THROTTLE_PROBE_SECONDS = 2.0
THROTTLED_BELOW_BYTES_PER_S = 100_000
MAX_BODY = 1_000_000
MAX_HEAD = 32_768
_ENCODING_DER = 2  # _ssl.ENCODING_DER, for Certificate.public_bytes of the unverified chain

# From the client alone, these truths look like these observations.
EQUIVALENT = {"down": "tcp/refused", "tcp/reset": "tcp/refused"}


@dataclass
class Observation:
    url: str
    expected: str
    observed: str
    detail: str
    seconds: float

    @property
    def agrees(self) -> bool:
        return EQUIVALENT.get(self.expected, self.expected) == self.observed


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.replies.full():
            self.replies.put_nowait(data)


async def dns_lookup(resolver: str, name: str) -> tuple[str, list[str], int]:
    """(status, addresses of the first reply, number of differing replies)."""
    loop = asyncio.get_running_loop()
    query = dns.message.make_query(name, dns.rdatatype.A)
    transport, proto = await loop.create_datagram_endpoint(_Collector, remote_addr=(resolver, 53))
    try:
        transport.sendto(query.to_wire())
        answers: list[list[str]] = []
        rcodes: list[int] = []
        deadline = loop.time() + DNS_TIMEOUT
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(proto.replies.get(), timeout=deadline - loop.time())
            except TimeoutError:
                break
            try:
                reply = dns.message.from_wire(data)
            except Exception:
                continue
            if reply.id != query.id:
                continue
            rcodes.append(reply.rcode())
            answers.append(
                sorted(
                    str(rr)
                    for rrset in reply.answer
                    if rrset.rdtype == dns.rdatatype.A
                    for rr in rrset
                )
            )
            deadline = min(deadline, loop.time() + LATE_REPLY_WINDOW)
        if not rcodes:
            return "timeout", [], 0
        distinct = len({tuple(a) for a in answers})
        if rcodes[0] == dns.rcode.NXDOMAIN:
            return "nxdomain", [], distinct
        return "ok", answers[0], distinct
    finally:
        transport.close()


def _errno_label(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "untrusted"
    if isinstance(exc, asyncio.IncompleteReadError | EOFError | ssl.SSLEOFError):
        return "eof"
    return type(exc).__name__


async def tcp_connect(address: str, port: int) -> str:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        return _errno_label(exc)
    writer.transport.abort()
    return "ok"


async def tls_handshake(address: str, host: str, trust: ssl.SSLContext) -> tuple[str, str]:
    """(label, issuer CN of the presented leaf)."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address, 443, ssl=trust, server_hostname=host), TLS_TIMEOUT
        )
        writer.transport.abort()
        return "ok", ""
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        label = _errno_label(exc)
    if label != "untrusted":
        return label, ""
    # Untrusted: look at what was presented (a second handshake, without verification).
    blind = ssl.create_default_context()
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address, 443, ssl=blind, server_hostname=host), TLS_TIMEOUT
        )
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        return "untrusted", ""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    writer.transport.abort()
    if not der:
        return "untrusted", ""
    issuer = x509.load_der_x509_certificate(der).issuer.rfc4514_string()
    return "untrusted", issuer


@dataclass
class HttpResult:
    label: str  # ok, reset, timeout, eof, throttled
    status: int = 0
    location: str = ""
    body: bytes = b""
    rate: float = 0.0


async def http_get(address: str, url: str, trust: ssl.SSLContext) -> HttpResult:
    parts = urlsplit(url)
    host = parts.hostname or ""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    https = parts.scheme == "https"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address,
                443 if https else 80,
                ssl=trust if https else None,
                server_hostname=host if https else None,
            ),
            CONNECT_TIMEOUT + TLS_TIMEOUT,
        )
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        return HttpResult(_errno_label(exc))
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: netvigil-testbed-selftest\r\n"
            f"Accept: */*\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HTTP_TIMEOUT)
        if len(head) > MAX_HEAD:
            return HttpResult("oversized")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        length = int(headers.get("content-length", "-1"))
        body = b""
        started = time.monotonic()
        throttle_deadline = started + THROTTLE_PROBE_SECONDS
        while len(body) < MAX_BODY and (length < 0 or len(body) < length):
            remaining = throttle_deadline - time.monotonic()
            if remaining <= 0:
                rate = len(body) / THROTTLE_PROBE_SECONDS
                if rate < THROTTLED_BELOW_BYTES_PER_S:
                    return HttpResult("throttled", status, headers.get("location", ""), body, rate)
                throttle_deadline = time.monotonic() + HTTP_TIMEOUT
                continue
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except TimeoutError:
                continue
            if not chunk:
                break
            body += chunk
        elapsed = max(time.monotonic() - started, 1e-6)
        return HttpResult("ok", status, headers.get("location", ""), body, len(body) / elapsed)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        return HttpResult(_errno_label(exc))
    finally:
        writer.transport.abort()


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_blockpage(body: bytes, pages: list[bytes]) -> bool:
    return any(page in body for page in pages)


class Observer:
    def __init__(self, plan: Plan, trust_anchor: str) -> None:
        self.plan = plan
        self.trust = ssl.create_default_context(cafile=trust_anchor)
        self.pages = [blockpage_body(name) for name in blockpage_names()]

    async def observe(self, row: TruthRow) -> Observation:
        started = time.monotonic()
        label, detail = await self._observe(row.url)
        return Observation(
            row.url, row.outcome, label, detail, round(time.monotonic() - started, 3)
        )

    async def _observe(self, url: str) -> tuple[str, str]:
        for _ in range(10):
            parts = urlsplit(url)
            host = parts.hostname or ""
            if _is_ip_literal(host):
                # e.g. a redirect to http://198.18.10.80/warning: nothing to resolve.
                return await self._fetch(url, host, host)
            status, addrs, distinct = await dns_lookup(ISP_RESOLVER, host)
            if status == "timeout":
                return "dns/timeout", "no reply from the ISP resolver"
            if distinct > 1:
                return "dns/injected", f"{distinct} different replies; first: {addrs}"
            if status == "nxdomain":
                pub_status, _, _ = await dns_lookup(PUBLIC_RESOLVER, host)
                return (
                    ("down", "NXDOMAIN everywhere")
                    if pub_status == "nxdomain"
                    else ("dns/nxdomain", "")
                )
            if not addrs:
                return "dns/empty", ""
            address = addrs[0]
            if address.startswith("127.") or address == "0.0.0.0":
                return "dns/bogon", address
            _, public, _ = await dns_lookup(PUBLIC_RESOLVER, host)
            if address not in public:
                # Different answers: a CDN edge is fine if it proves itself with a valid cert.
                tls_label, _ = await tls_handshake(address, host, self.trust)
                if tls_label != "ok":
                    page = await http_get(address, f"http://{host}/", self.trust)
                    if page.label == "ok" and _is_blockpage(page.body, self.pages):
                        return "dns/blockpage", address
                    return "dns/bogus", f"{address} (public resolver: {public})"
            label, detail = await self._fetch(url, host, address)
            if label != "redirect":
                return label, detail
            url = detail
        return "ok", "redirect loop"

    async def _fetch(self, url: str, host: str, address: str) -> tuple[str, str]:
        """TCP, TLS and HTTP to one address; ("redirect", location) to go on."""
        https = urlsplit(url).scheme == "https"
        tcp = await tcp_connect(address, 443 if https else 80)
        if tcp != "ok":
            return f"tcp/{tcp}", address
        if https:
            tls_label, issuer = await tls_handshake(address, host, self.trust)
            if tls_label == "untrusted":
                return "tls/interception", f"issuer {issuer}"
            if tls_label != "ok":
                return f"tls/{tls_label}", address
        page = await http_get(address, url, self.trust)
        site = self.plan.site(host)
        # A site slow for everyone (serve_rate) is not throttled by the censor, as long as its
        # bytes come about as fast as it sends them (TCP's start makes it a bit slower).
        if (
            page.label == "throttled"
            and site is not None
            and 0 < site.serve_rate_bps <= 2 * page.rate
        ):
            return "ok", f"slow at the server: {page.rate:.0f} B/s"
        if page.label == "throttled":
            return "http/throttled", f"{page.rate:.0f} B/s"
        if page.label != "ok":
            return f"http/{page.label}", address
        if _is_blockpage(page.body, self.pages):
            return "http/blockpage", f"status {page.status} from {address}"
        if page.status in (301, 302, 303, 307, 308) and page.location:
            return "redirect", page.location
        return "ok", f"status {page.status}, {len(page.body)} bytes"


async def presented_chain(address: str, host: str) -> list[x509.Certificate]:
    """Every certificate the server (or the censor) presents, without verifying any of them."""
    blind = ssl.create_default_context()
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(address, 443, ssl=blind, server_hostname=host), TLS_TIMEOUT
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        # CPython 3.11 keeps the unverified chain behind a private method (public in 3.13).
        chain = ssl_object._sslobj.get_unverified_chain() or []
        return [x509.load_der_x509_certificate(c.public_bytes(_ENCODING_DER)) for c in chain]
    finally:
        writer.transport.abort()


async def observe_all(
    plan: Plan, trust_anchor: str, rows: list[TruthRow] | None = None
) -> list[Observation]:
    observer = Observer(plan, trust_anchor)
    rows = rows if rows is not None else ground_truth(plan)
    semaphore = asyncio.Semaphore(64)
    # One URL per site at a time, as the probe measures: a throttled site's URLs would share
    # one shaper (this kernel has no fair queueing) and slow each other past the timeouts.
    per_site: dict[str, asyncio.Lock] = {}

    async def one(row: TruthRow) -> Observation:
        site_lock = per_site.setdefault(row.domain, asyncio.Lock())
        async with site_lock, semaphore:
            try:
                return await asyncio.wait_for(observer.observe(row), 40)
            except TimeoutError:
                return Observation(
                    row.url, row.outcome, "selftest/timeout", "gave up after 40 s", 40.0
                )

    return list(await asyncio.gather(*(one(r) for r in rows)))


def main(argv: list[str] | None = None) -> int:
    """Run inside `client` (``netvigil testbed run -- python -m netvigil.testbed.observe``)."""
    import os

    parser = argparse.ArgumentParser(prog="netvigil.testbed.observe")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    state = os.environ.get("NETVIGIL_TESTBED_STATE")
    if not state:
        print("run this inside the testbed: netvigil testbed selftest --profile P", file=sys.stderr)
        return 2
    plan = Plan.load(state)
    # With phases: the censor in force now (a self-check that spans a boundary may disagree).
    rows = ground_truth(plan, at=plan.offset()) if plan.phases else None
    observations = asyncio.run(observe_all(plan, os.environ["NETVIGIL_CA_BUNDLE"], rows))
    if args.json:
        for obs in observations:
            print(json.dumps({**asdict(obs), "agrees": obs.agrees}))
    else:
        from netvigil.testbed.report import print_observations

        print_observations(plan, observations)
        intercepted = [o for o in observations if o.observed == "tls/interception"]
        if intercepted:
            from netvigil.testbed.report import print_interception_closeup

            host = urlsplit(intercepted[0].url).hostname or ""
            site = plan.site(host)
            if site is not None:
                forged = asyncio.run(presented_chain(site.isp_answer[0], host))
                real_pem = (plan.pki_dir / "sites" / f"{site.domain}.pem").read_bytes()
                print_interception_closeup(host, forged, x509.load_pem_x509_certificates(real_pem))
    return 0 if all(o.agrees for o in observations) else 1


if __name__ == "__main__":
    sys.exit(main())
