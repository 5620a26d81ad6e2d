"""One parsed, type-checked view of a web_connectivity measurement, shared by both analyses."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netvigil.verdict import _read as r


@dataclass(slots=True)
class Query:
    hostname: str
    query_type: str
    engine: str
    failure: str | None
    addrs: list[str]
    late: list[Mapping[str, Any]]
    # netvigil asks a second, independent resolver too; its answers are evidence, not what the
    # user's browser got, so they do not take part in the user's DNS verdict.
    second_opinion: bool = False
    txid: int | None = None  # transaction_id: OONI links the events of one flow by it
    depth: int | None = None  # the "depth=<n>" tag (0.5.26+): the redirect step
    a_answers: int = 0  # answers whose answer_type is "A"
    answer_count: int = 0  # every answer (CNAMEs too)


@dataclass(slots=True)
class Connect:
    ip: str
    port: int
    failure: str | None
    success: bool
    txid: int | None = None
    depth: int | None = None
    fetch_body: bool | None = None  # the "fetch_body=<bool>" tag (0.5.26+)


@dataclass(slots=True)
class Handshake:
    address: str | None  # "ip:port" or None (old probes did not record it)
    server_name: str
    failure: str | None
    no_tls_verify: bool
    certs: list[Any]
    txid: int | None = None


@dataclass(slots=True)
class Exchange:
    url: str
    failure: str | None
    code: int  # 0 when no response
    body: str
    body_length: int
    truncated: bool
    headers: dict[str, str]
    raw: Mapping[str, Any]
    txid: int | None = None
    address: str | None = None  # "ip:port" the round trip used (OONI 0.5), when recorded
    # request.body_is_truncated: what OONI 0.5.27's minipipeline read, by mistake, as the
    # response's truncation (observation.go at b4d03b59d; fixed in bf471b3c2, 0.5.28)
    request_truncated: bool = False


@dataclass(slots=True)
class Control:
    present: bool
    failure: str | None  # control_failure
    dns_failure: str | None
    dns_addrs: list[str]
    dns_names: list[str]
    tcp: dict[str, tuple[bool, str | None]]
    tls: dict[str, tuple[bool, str | None]]
    http_failure: str | None
    http_present: bool
    http_status: int
    http_body_length: int
    http_title: str
    http_headers: dict[str, str]
    ip_info: dict[str, tuple[int, int]]  # ip -> (asn, flags)
    # netvigil's helper: the chain it saw per endpoint (x_peer_certificates, base64 items)
    tls_chains: dict[str, list[Any]] = field(default_factory=dict)
    tls_names: dict[str, str] = field(default_factory=dict)  # endpoint -> server_name

    @property
    def usable(self) -> bool:
        return self.present and self.failure is None

    @property
    def http_ok(self) -> bool:
        return self.http_present and self.http_failure is None and self.http_status > 0


@dataclass(slots=True)
class View:
    test_name: str | None
    test_version: str
    input: str | None
    host: str
    scheme: str
    port: int
    tk: Mapping[str, Any]
    queries: list[Query] = field(default_factory=list)
    connects: list[Connect] = field(default_factory=list)
    handshakes: list[Handshake] = field(default_factory=list)
    requests: list[Exchange] = field(default_factory=list)
    control: Control | None = None
    # OONI 0.5.26+ tags its events with depth=<n> and fetch_body=<bool>
    tagged: bool = False
    software: str = ""  # "<software_name> <software_version>": which probe measured
    # (queries, host, len(queries), tk) the memo was computed from, then the main queries,
    # the probe's addresses and the DNS failure (None until asked for): each is asked for
    # several times per verdict.
    _memo: tuple[Any, ...] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def version(self) -> tuple[int, ...]:
        if len(self.test_version) <= 64:
            return _version(self.test_version)  # a handful of versions, cached
        return _version.__wrapped__(self.test_version)

    # -- DNS ------------------------------------------------------------------------------

    def _remembered(self) -> list[Any]:
        """The memo, recomputed when ``queries``, ``host`` or ``tk`` are not the same objects."""
        memo = self._memo
        queries = self.queries
        if (
            memo is not None
            and memo[0] is queries
            and memo[1] is self.host
            and memo[2] == len(queries)
            and memo[3] is self.tk
        ):
            values: list[Any] = memo[4]
            return values
        host = self.host
        qs = [
            q
            for q in queries
            if (not q.hostname or q.hostname.rstrip(".") == host) and not q.second_opinion
        ]
        # The system resolver (getaddrinfo) is what the user's browser asked: OONI 0.5 also asks
        # UDP and DoH resolvers, whose answers are evidence, not what the user got.
        system = [q for q in qs if q.engine in SYSTEM_ENGINES]
        plain = system or [q for q in qs if q.engine != "doh"]
        picked = plain or qs
        seen: dict[str, None] = {}
        for q in picked:
            for a in q.addrs:
                seen.setdefault(a, None)
        values = [picked, list(seen), _UNSET]
        self._memo = (queries, host, len(queries), self.tk, values)
        return values

    def main_queries(self) -> list[Query]:
        """Queries for the input's host, by the system/UDP resolver (DoH only as a fallback)."""
        return list(self._remembered()[0])  # a fresh list: callers may change what they get

    def main_queries_view(self) -> list[Query]:
        """``main_queries()`` without the copy: the caller must not change it."""
        picked: list[Query] = self._remembered()[0]
        return picked

    def probe_addrs(self) -> list[str]:
        return list(self._remembered()[1])

    def probe_addrs_view(self) -> list[str]:
        """``probe_addrs()`` without the copy: the caller must not change it."""
        addrs: list[str] = self._remembered()[1]
        return addrs

    def dns_failure(self) -> str | None:
        values = self._remembered()
        found = values[2]
        if found is _UNSET:
            found = values[2] = self._dns_failure(values[0], values[1])
        return found  # type: ignore[no-any-return]

    def _dns_failure(self, qs: list[Query], addrs: list[str]) -> str | None:
        """The user's resolver's failure, from the queries; the measurement's own
        ``dns_experiment_failure`` (an analysis result in OONI 0.5.27+) only when no query
        for the host was recorded (old probes)."""
        if not qs:
            if self.version >= (0, 5):
                return None
            return r.failure(self.tk.get("dns_experiment_failure"))
        if addrs:
            return None
        failures = [q.failure for q in qs if q.failure]
        hard = [f for f in failures if f != "dns_no_answer"]
        picked = hard or failures
        return picked[0] if picked else None


_UNSET: Any = object()
# What OONI calls the system resolver (minipipeline's utilsEngineIsGetaddrinfo).
SYSTEM_ENGINES = frozenset({"getaddrinfo", "golang_net_resolver"})


@functools.lru_cache(maxsize=1024)
def _version(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _tags(value: Any) -> tuple[int | None, bool | None, bool]:
    """(depth, fetch_body, tagged) from an OONI ``tags`` list (0.5.26+); the last tag wins."""
    if type(value) is not list or not value:
        return _NO_TAGS
    if len(value) <= 8 and all(type(tag) is str and len(tag) <= 32 for tag in value):
        return _tags_of(tuple(value))  # a handful of distinct lists: cached
    return _tags_of.__wrapped__(tuple(value[:32]))


_NO_TAGS: tuple[int | None, bool | None, bool] = (None, None, False)


@functools.lru_cache(maxsize=256)
def _tags_of(value: tuple[Any, ...]) -> tuple[int | None, bool | None, bool]:
    depth: int | None = None
    fetch_body: bool | None = None
    tagged = False
    for tag in value:
        if type(tag) is not str:
            continue
        if tag.startswith("depth="):
            digits = tag[6:]
            if digits.isascii() and digits.isdigit() and len(digits) < 10:
                depth = int(digits)
                tagged = True
        elif tag.startswith("fetch_body="):
            fetch_body = tag[11:] == "true"
    return depth, fetch_body, tagged


def _txid(value: Any) -> int | None:
    return value if type(value) is int and 0 < value < 2**53 else None


def _query(q: Mapping[str, Any]) -> Query:
    # r.* readers inlined where the value is a plain str/dict: one call per query, not ten
    ip_or_none = r.ip_or_none
    addrs = []
    a_answers = 0
    answer_count = 0
    answers = q.get("answers")
    if answers:
        listed = r.head(answers, 256)
        answer_count = len(listed)
        for a in listed:
            if type(a) is not dict:
                a = r.d(a)
            if a.get("answer_type") == "A":
                a_answers += 1
            ip = ip_or_none(a.get("ipv4")) or ip_or_none(a.get("ipv6"))
            if ip:
                addrs.append(ip)
    late_raw = q.get("x_late_replies")
    late = [r.d(x) for x in r.head(late_raw, 64)] if late_raw else []
    hostname = q.get("hostname")
    query_type = q.get("query_type")
    engine = q.get("engine")
    fail = q.get("failure")
    return Query(
        hostname=hostname.lower() if isinstance(hostname, str) else "",
        query_type=query_type if isinstance(query_type, str) and query_type else "",
        engine=engine if isinstance(engine, str) and engine else "",
        failure=fail if isinstance(fail, str) and fail else None,
        addrs=addrs,
        late=late,
        second_opinion=q.get("x_second_opinion") is True,
        txid=_txid(q.get("transaction_id")),
        depth=_tags(q.get("tags"))[0],
        a_answers=a_answers,
        answer_count=answer_count,
    )


def late_addrs(reply: Mapping[str, Any]) -> list[str]:
    out = []
    for a in r.head(reply.get("answers"), 256):
        a = r.d(a)
        ip = r.ip_or_none(a.get("ipv4")) or r.ip_or_none(a.get("ipv6"))
        if ip:
            out.append(ip)
    return out


def _connect(t: Mapping[str, Any]) -> Connect | None:
    ip = r.ip_or_none(t.get("ip"))
    port = r.integer(t.get("port"))
    if ip is None or port is None:
        return None
    status = t.get("status")
    if type(status) is not dict:
        status = r.d(status)
    fail = status.get("failure")
    fail = fail if isinstance(fail, str) and fail else None
    success = status.get("success")
    depth, fetch_body, _ = _tags(t.get("tags"))
    return Connect(
        ip,
        port,
        fail,
        bool(success) if isinstance(success, bool) else fail is None,
        _txid(t.get("transaction_id")),
        depth,
        fetch_body,
    )


def _handshake(t: Mapping[str, Any]) -> Handshake:
    address = t.get("address")
    server_name = t.get("server_name")
    fail = t.get("failure")
    return Handshake(
        address=address if isinstance(address, str) else None,
        server_name=server_name.lower() if isinstance(server_name, str) else "",
        failure=fail if isinstance(fail, str) and fail else None,
        no_tls_verify=t.get("no_tls_verify") is True,
        certs=r.lst(t.get("peer_certificates")),
        txid=_txid(t.get("transaction_id")),
    )


def _exchange(x: Mapping[str, Any]) -> Exchange:
    request = r.d(x.get("request"))
    response = r.d(x.get("response"))
    body, size = r.body_text(response)
    return Exchange(
        url=r.s(request.get("url")) or "",
        failure=r.failure(x.get("failure")),
        code=r.integer(response.get("code")) or 0,
        body=body,
        body_length=size,
        truncated=response.get("body_is_truncated") is True,
        headers=r.headers_of(response),
        raw=x,
        txid=_txid(x.get("transaction_id")),
        address=r.s(x.get("address")),
        request_truncated=request.get("body_is_truncated") is True,
    )


def _status_map(value: Any) -> dict[str, tuple[bool, str | None]]:
    out: dict[str, tuple[bool, str | None]] = {}
    for k, v in _items(value):
        if type(v) is not dict:
            v = r.d(v)
        out[str(k)] = _status(v)
    return out


def _status(v: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(status, failure) of a control entry. OONI reads the failure only; an entry that says
    ``status: false`` without one (no real helper sends that) counts as failed."""
    fail = v.get("failure")
    status = v.get("status")
    if isinstance(fail, str) and fail:
        return status is True, fail
    return status is True, ("unknown_failure" if status is False else None)


def _control(tk: Mapping[str, Any]) -> Control:
    # r.d() skipped for what orjson gives (a dict): the same value, one call fewer
    c = tk.get("control")
    if type(c) is not dict:
        c = r.d(c)
    dns = c.get("dns")
    if type(dns) is not dict:
        dns = r.d(dns)
    http = c.get("http_request")
    if type(http) is not dict:
        http = r.d(http)
    ip_or_none = r.ip_or_none
    addrs, names = [], []
    raw_addrs = dns.get("addrs")
    if raw_addrs:
        for a in r.head(raw_addrs, 1024):
            ip = ip_or_none(a)
            if ip:
                addrs.append(ip)
            elif isinstance(a, str):
                names.append(a)
    info: dict[str, tuple[int, int]] = {}
    raw_info = c.get("ip_info")
    if raw_info:
        integer = r.integer
        for ip, v in _items(raw_info):
            norm = ip_or_none(ip)
            if norm:
                if type(v) is not dict:
                    v = r.d(v)
                info[norm] = (integer(v.get("asn")) or 0, integer(v.get("flags")) or 0)
    tls, chains, tls_names = _tls_maps(c.get("tls_handshake"))
    return Control(
        present=bool(c) and (bool(dns) or bool(http) or bool(c.get("tcp_connect"))),
        failure=r.failure(tk.get("control_failure")),
        dns_failure=r.failure(dns.get("failure")),
        dns_addrs=addrs,
        dns_names=names,
        tcp=_status_map(c.get("tcp_connect")),
        tls=tls,
        http_failure=r.failure(http.get("failure")),
        http_present=bool(http),
        http_status=r.integer(http.get("status_code")) or 0,
        http_body_length=r.integer(http.get("body_length")) or 0,
        http_title=r.s(http.get("title")) or "",
        http_headers=r.headers_of({"headers": http.get("headers")}),
        ip_info=info,
        tls_chains=chains,
        tls_names=tls_names,
    )


def _tls_maps(
    value: Any,
) -> tuple[dict[str, tuple[bool, str | None]], dict[str, list[Any]], dict[str, str]]:
    """``_status_map(value)``, the chain per endpoint (x_peer_certificates) and the server
    name per endpoint, in one pass."""
    status: dict[str, tuple[bool, str | None]] = {}
    chains: dict[str, list[Any]] = {}
    names: dict[str, str] = {}
    for k, v in _items(value):
        if type(v) is not dict:
            v = r.d(v)
        key = str(k)
        status[key] = _status(v)
        chain = r.head(v.get("x_peer_certificates"), 32)
        if chain:
            chains[key] = chain
        name = v.get("server_name")
        if isinstance(name, str) and name:
            names[key] = name.lower()
    return status, chains, names


MAX_ITEMS = 4096


def _items(value: Any) -> Iterable[tuple[Any, Any]]:
    """``list(r.d(value).items())[:4096]`` without the copy for a dict of at most 4096."""
    if type(value) is dict and len(value) <= 4096:
        return value.items()
    return list(r.d(value).items())[:4096]


def _lookup_host(host: str, tk: Mapping[str, Any]) -> str:
    """The name the probe looked up for the input: its IDNA (punycode) form for an
    internationalised name. OONI compares query hostnames with the host of
    ``x_control_request.http_request`` (minipipeline ``IngestControlMessages``,
    webconnectivitylte ``analysisDNSUnexpectedFailure``), which the probe wrote in ASCII
    (probe-cli 924cc5535 ``idnax``): ``http://яндекс.рф/`` is looked up as
    ``xn--d1acpjx3f.xn--p1ai``."""
    if host.isascii():
        return host
    request = r.d(tk.get("x_control_request"))
    control_host = r.host_of(r.s(request.get("http_request")))
    if control_host:
        return control_host  # OONI's inputDomain, whichever form this probe build used
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return host


def parse(m: Mapping[str, Any]) -> View:
    inp = r.s(m.get("input"))
    tk = r.d(m.get("test_keys"))
    view = View(
        test_name=r.s(m.get("test_name")),
        test_version=r.s(m.get("test_version")) or "",
        input=inp,
        host=_lookup_host(r.host_of(inp), tk),
        scheme=r.scheme_of(inp),
        port=r.port_of(inp),
        tk=tk,
    )
    view.queries = [_query(r.d(q)) for q in r.head(tk.get("queries"), MAX_ITEMS)]
    view.connects = [
        c for c in (_connect(r.d(t)) for t in r.head(tk.get("tcp_connect"), MAX_ITEMS)) if c
    ]
    view.handshakes = [_handshake(r.d(t)) for t in r.head(tk.get("tls_handshakes"), MAX_ITEMS)]
    view.requests = [_exchange(r.d(x)) for x in r.head(tk.get("requests"), 64)]
    view.control = _control(tk)
    name, version = m.get("software_name"), m.get("software_version")
    if isinstance(name, str) and isinstance(version, str):
        view.software = f"{name[:64]} {version[:32]}"
    view.tagged = any(c.depth is not None for c in view.connects) or any(
        q.depth is not None for q in view.queries
    )
    return view
