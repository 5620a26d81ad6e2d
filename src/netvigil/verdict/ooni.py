"""OONI-compatible analysis: ``blocking``, ``accessible``, ``dns_consistency`` and the HTTP diff.

A reimplementation (never a copy) of the rules each generation of OONI's probe applied, so that
our keys equal what OONI recorded for the same raw observations. Nothing here reads OONI's own
verdict keys (``blocking``, ``accessible``, ``dns_consistency``, ``x_*_flags``, the diff keys,
``http_experiment_failure``): the verdict comes from the raw events only. docs/verdict.md §1
gives every rule with its source (file, function, commit).

- ``< 0.4``: Measurement Kit / ooni-probe legacy (``_legacy``);
- ``0.4.x``: probe-cli ``internal/engine/experiment/webconnectivity`` ``Summarize`` (``_v04``);
- ``0.5.0``–``0.5.26``: ``webconnectivitylte``'s original engine, blocking flags per step and
  the "null-null" remedies (``_v05_orig``);
- ``0.5.27`` and later: ``webconnectivitylte``'s classic engine over ``minipipeline``: only
  observations derived from the system resolver (getaddrinfo), walked from the last redirect
  back to the first, the most complex operation first (``_Classic``).

We have no GeoIP database: an address's ASN comes only from the control's ``ip_info``.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from netvigil.verdict import _read as r
from netvigil.verdict._view import SYSTEM_ENGINES, Control, Exchange, View

COMMON_HEADERS = frozenset(
    {
        "date",
        "content-type",
        "server",
        "cache-control",
        "vary",
        "set-cookie",
        "location",
        "expires",
        "x-powered-by",
        "content-encoding",
        "last-modified",
        "accept-ranges",
        "pragma",
        "x-frame-options",
        "etag",
        "x-content-type-options",
        "age",
        "via",
        "p3p",
        "x-xss-protection",
        "content-language",
        "cf-ray",
        "strict-transport-security",
        "link",
        "x-varnish",
    }
)
TLS_VALID_FLAG = 8
CERT_FAILURES = frozenset(
    {"ssl_unknown_authority", "ssl_invalid_hostname", "ssl_invalid_certificate"}
)
NXDOMAIN_FAILURES = frozenset({"dns_nxdomain_error", "android_dns_cache_no_data"})
_UNREACHABLE = frozenset({"network_unreachable", "host_unreachable"})

# OONI's bogons (netxlite/bogon.go ``IsBogon``, the same list at P-0.5.26 and P-HEAD):
# unlike netvigil's own r.is_bogon, 198.18.0.0/15 is one, and so are 6to4/Teredo forms.
_OONI_BOGONS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "::/96",
        "100::/64",
        "2001:10::/28",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
        "2002::/24",
        "2002:a00::/24",
        "2002:7f00::/24",
        "2002:a9fe::/32",
        "2002:ac10::/28",
        "2002:c000::/40",
        "2002:c000:200::/40",
        "2002:c0a8::/32",
        "2002:c612::/31",
        "2002:c633:6400::/40",
        "2002:cb00:7100::/40",
        "2002:e000::/20",
        "2002:f000::/20",
        "2002:ffff:ffff::/48",
        # Teredo bogons
        "2001::/40",
        "2001:0:a00::/40",
        "2001:0:7f00::/40",
        "2001:0:a9fe::/48",
        "2001:0:ac10::/44",
        "2001:0:c000::/56",
        "2001:0:c000:200::/56",
        "2001:0:c0a8::/48",
        "2001:0:c612::/47",
        "2001:0:c633:6400::/56",
        "2001:0:cb00:7100::/56",
        "2001:0:e000::/36",
        "2001:0:f000::/36",
        "2001:0:ffff:ffff::/64",
    )
)


@functools.lru_cache(maxsize=4096)
def ooni_bogon(address: str) -> bool:
    """OONI's ``netxlite.IsBogon`` for an address string (unparseable: true, as in OONI)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    if ip.is_loopback or ip.is_link_local:
        return True
    return any(ip in net for net in _OONI_BOGONS if net.version == ip.version)


_FINAL_CLASSES = frozenset({2, 4, 5})  # a final response: 2xx, 4xx, 5xx (no redirect)


@dataclass
class HTTPDiff:
    body_length_match: bool | None = None
    body_proportion: float | None = None
    status_code_match: bool | None = None
    headers_match: bool | None = None
    title_match: bool | None = None

    def same_page(self) -> bool:
        """Status equal AND (body proportion, an uncommon header or the title) match."""
        return bool(self.status_code_match) and bool(
            self.body_length_match or self.headers_match or self.title_match
        )


@dataclass
class OONIResult:
    blocking: bool | str | None
    accessible: bool | None
    dns_consistency: str | None
    diff: HTTPDiff
    engine: str
    rule: str = ""  # which of OONI's rules decided, for the evidence


@dataclass(frozen=True)
class HopFailure:
    """A step that failed after a successful redirect: the chain never reached its page."""

    step: str  # "dns", "tcp", "tls" or "http"
    failure: str
    depth: int
    where: str  # the host (DNS) or the endpoint ip:port
    control: str | None  # the control's result for that very step ("" = success), if any


_STEP_NAMES = {0: "dns", 1: "tcp", 2: "tls", 3: "http"}


def redirect_hop_failure(view: View) -> HopFailure | None:
    """The failure that ended a redirect chain whose last recorded response is a redirect.

    OONI 0.5 records no HTTP exchange for a hop that failed before HTTP (DNS, connect, TLS): the
    newest request is then the 3xx that led there. This finds the failing step the way
    minipipeline's linear analysis orders them (deepest redirect first, the most complex step
    first). Only computed when the newest request is a successful redirect.
    """
    if not view.requests:
        return None
    newest = view.requests[0]
    if newest.failure or newest.code // 100 != 3:
        return None
    c = view.control if view.control is not None and view.control.usable else None
    dns_obs, endpoints = _Classic(view, c)._observations()
    for ob in sorted(dns_obs + endpoints, key=_Obs.sort_key):
        if ob.final():
            return None
        if ob.kind == _HTTP and not ob.failure:
            return None  # the redirect itself: nothing failed after it
        if not ob.failure:
            continue
        if ob.kind == _DNS and ob.query_type == "AAAA" and ob.failure == "dns_no_answer":
            continue
        control = {_DNS: ob.ctrl_dns, _TCP: ob.ctrl_tcp, _TLS: ob.ctrl_tls}.get(ob.kind)
        where = ob.hostname if ob.kind == _DNS else ob.ip
        return HopFailure(_STEP_NAMES[ob.kind], ob.failure, ob.depth or 0, where, control)
    return None


def engine_for(version: tuple[int, ...]) -> str:
    if version < (0, 4):
        return "legacy"
    if version < (0, 5):
        return "v0.4"
    if version < (0, 5, 27):
        return "v0.5-orig"
    return "v0.5-classic"


def analyze_ooni(view: View) -> OONIResult:
    engine = engine_for(view.version)
    c = view.control
    if not view.tk:
        return OONIResult(None, None, None, HTTPDiff(), engine, "no test_keys")
    if engine == "v0.5-classic":
        return _Classic(view, c if c is not None and c.usable else None).run()
    if engine == "v0.5-orig":
        return _v05_orig(view, c if c is not None and c.usable else None)
    if engine == "v0.4":
        return _v04(view, c)
    return _legacy(view, c)


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _go_len(word: str) -> int:
    """Go's ``len(word)``: UTF-8 bytes, not characters (a 3-letter Cyrillic word counts 6)."""
    return len(word) if word.isascii() else len(word.encode("utf-8", "surrogatepass"))


def _title_words_differ(probe_title: str, control_title: str) -> bool:
    """True when some ≥5-byte word (lower-cased, split on spaces) is in only one title."""
    words: dict[str, int] = {}
    for word in probe_title.split(" "):
        if _go_len(word) >= 5:
            key = word.lower()
            words[key] = words.get(key, 0) | 1
    for word in control_title.split(" "):
        if _go_len(word) >= 5:
            key = word.lower()
            words[key] = words.get(key, 0) | 2
    return any(v != 3 for v in words.values())


def _uncommon_shared(probe: dict[str, str], control: dict[str, str]) -> bool:
    ours = {k.lower() for k in probe} - COMMON_HEADERS
    return bool(ours & ({k.lower() for k in control} - COMMON_HEADERS))


def _proportion(final: Exchange, c: Control, out: HTTPDiff, truncated: bool | None = None) -> None:
    """Body proportion unless the body is truncated (``truncated``: the flag to trust, by
    default the response's)."""
    if truncated is None:
        truncated = final.truncated
    if c.http_body_length > 0 and not truncated and final.body_length > 0:
        small, big = sorted((final.body_length, c.http_body_length))
        out.body_proportion = small / big
        out.body_length_match = out.body_proportion > 0.7


def _ip_info_asns(c: Control | None, addrs: object) -> set[int]:
    if c is None:
        return set()
    info = c.ip_info
    return {info[a][0] for a in addrs if a in info and info[a][0] > 0}  # type: ignore[attr-defined]


def _http_diff_v04(view: View, c: Control, orig: bool = False) -> HTTPDiff:
    """0.4 ``HTTPBodyLengthChecks``/``HTTPStatusCodeMatch``/``HTTPHeadersMatch``/``HTTPTitleMatch``
    (P-0.4 ``httpanalysis.go``) and, with ``orig``, 0.5-orig ``analysisHTTPDiff``
    (P-0.5.26 ``analysishttpdiff.go``), on the final response. The original engine differs in
    three places: a differing status code is null unless the control's is 2xx (0.4: unless it
    is 5xx); headers are null when either side has none; the title is null when the control's
    is empty."""
    out = HTTPDiff()
    if not view.requests:
        return out
    final = view.requests[0]
    _proportion(final, c, out)
    if c.http_status > 0 and final.code > 0:
        if c.http_status == final.code:
            out.status_code_match = True
        elif (c.http_status // 100 == 2) if orig else (c.http_status // 100 != 5):
            out.status_code_match = False
    if (
        final.code > 0
        and c.http_status > 0
        and not (orig and (not final.headers or not c.http_headers))
    ):
        ours = {k.lower() for k in final.headers}
        theirs = {k.lower() for k in c.http_headers}
        out.headers_match = ours == theirs or _uncommon_shared(final.headers, c.http_headers)
    if final.code > 0 and not final.truncated and c.http_status > 0:
        title = r.title_of(final.body)
        if title and not (orig and not c.http_title):
            out.title_match = not _title_words_differ(title, c.http_title)
    return out


# ---------------------------------------------------------------------------------------------
# Measurement Kit / ooni-probe legacy (test_version < 0.4)


def _dns_consistency_old(view: View, c: Control) -> str | None:
    """0.4 ``DNSAnalysis`` (and MK's): an IP input is consistent; both failing is consistent
    only for NXDOMAIN on both sides; otherwise a shared address or non-zero ASN. Lacking OONI's
    GeoIP database, an address where a verified handshake for the host succeeded stands in for
    a shared ASN (docs/verdict.md: approximation)."""
    if r.is_ip_literal(view.host):
        return "consistent"
    probe_fail = view.dns_failure()
    addrs = view.probe_addrs_view()
    if probe_fail and not addrs:
        if c.dns_failure in ("dns_name_error", "dns_nxdomain_error"):
            return "consistent" if probe_fail in NXDOMAIN_FAILURES else "inconsistent"
        return "inconsistent"
    control = set(c.dns_addrs)
    if control & set(addrs):
        return "consistent"
    probe_asns = _ip_info_asns(c, addrs)
    if probe_asns & _ip_info_asns(c, control):
        return "consistent"
    if addrs and not c.ip_info:
        valid = _tls_valid_addrs(view)
        if set(addrs) <= valid:
            return "consistent"
    return "inconsistent"


def _tls_valid_addrs(view: View) -> set[str]:
    """Addresses where the probe's verified TLS handshake for the host succeeded."""
    valid: set[str] = set()
    ok = [c.ip for c in view.connects if c.success and c.port == view.port]
    for h in view.handshakes:
        if h.failure or h.no_tls_verify or (h.server_name and h.server_name != view.host):
            continue
        if h.address:
            ip = r.ip_or_none(h.address.rsplit(":", 1)[0])
            if ip:
                valid.add(ip)
        elif len(set(ok)) == 1:  # old probes did not record the address
            valid.add(ok[0])
    return valid


def _public_ipv4_false(address: str) -> bool:
    """PY's ``is_public_ipv4_address(a) is False`` / MK's ``is_private_ipv4_addr``: an IPv4
    address that is private or loopback (IPv6 and non-addresses do not count)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.version == 4 and (ip.is_private or ip.is_loopback)


def _legacy_title_match(probe_title: str, control_title: str, mk: bool) -> bool | None:
    """MK/PY: the first ≥5-byte word of the probe's title against the control's word at the
    same position (PY lower-cases both; MK starts from "the titles are equal")."""
    control_words = control_title.split(" ")
    result: bool | None = (probe_title == control_title) if mk else None
    for index, word in enumerate(probe_title.split(" ")):
        # a word's length in bytes: MK's std::string::length(), and PY's Python 2 byte
        # strings (the body is bytes), so "Сайт" (4 letters, 8 bytes) counts as long
        if _go_len(word) < 5:
            continue
        if index >= len(control_words):
            return result if mk else False
        if mk:
            return word == control_words[index]
        return word.lower() == control_words[index].lower()
    return result


def _legacy(view: View, c: Control | None) -> OONIResult:
    """Measurement Kit (0.0.x: ``compare_control_experiment``) and ooni-probe legacy (0.1.0 –
    0.3.x: ``determine_blocking``). ``http_experiment_failure`` and ``dns_experiment_failure`` are
    the measured failures of those steps in this generation."""
    # ooni-probe legacy (Python) called itself "ooniprobe" 1.x/2.x; every other client of this
    # generation (the mobile and desktop apps, miniooni) ran Measurement Kit.
    software = view.software.split(" ")
    mk = not (software[0] == "ooniprobe" and software[-1][:2] in ("1.", "2."))
    if c is None or not c.usable:
        return OONIResult(None, None, None, HTTPDiff(), "legacy", "no usable control")
    tk = view.tk
    final = view.requests[0] if view.requests else None
    exp_raw = r.failure(tk.get("http_experiment_failure"))
    if exp_raw is None and final is not None and "http_experiment_failure" not in tk:
        exp_raw = final.failure
    exp_fail = exp_raw.split(" ")[0] if exp_raw else None
    ctrl_fail = c.http_failure.split(" ")[0] if c.http_failure else None
    dns_fail = r.failure(tk.get("dns_experiment_failure"))
    diff = HTTPDiff()
    if exp_fail is None and ctrl_fail is None and final is not None:
        exp_len, ctrl_len = final.body_length, c.http_body_length
        if exp_len == ctrl_len:
            proportion = 1.0
        elif exp_len <= 0 or ctrl_len <= 0:
            proportion = 0.0
        else:
            proportion = min(exp_len, ctrl_len) / max(exp_len, ctrl_len)
        diff.body_proportion = proportion
        diff.body_length_match = proportion > 0.7
        ours = {k.lower() for k in final.headers}
        theirs = {k.lower() for k in c.http_headers}
        diff.headers_match = ours == theirs or bool((ours & theirs) - COMMON_HEADERS)
        if not str(c.http_status).startswith("5"):
            diff.status_code_match = c.http_status == final.code
        elif mk:
            diff.status_code_match = True
        diff.title_match = _legacy_title_match(
            r.title_of(final.body).strip() if not mk else r.title_of(final.body),
            c.http_title.strip() if not mk else c.http_title,
            mk,
        )
    # DNS (PY compare_dns_experiments, MK compare_dns_queries)
    probe: set[str] = set()
    for q in view.main_queries_view():
        probe.update(q.addrs)
    control = set(c.dns_addrs) | set(c.dns_names)  # the helper lists CNAMEs too
    consistent: bool
    if mk and dns_fail is not None:
        consistent = dns_fail == c.dns_failure
    elif (not mk and c.dns_failure is not None and c.dns_failure == dns_fail) or probe == control:
        consistent = True  # PY: the same failure on both sides; both: the same answers
    elif any(_public_ipv4_false(a) for a in probe):
        consistent = False
    elif probe & control:
        consistent = True
    else:
        asns = _ip_info_asns(c, probe)
        consistent = bool(asns & _ip_info_asns(c, control))
        if not consistent and probe and not c.ip_info:
            consistent = probe <= _tls_valid_addrs(view)  # no ASN data: TLS vouches
    dns = "consistent" if consistent else "inconsistent"
    tcp_ok = not any(
        not x.success and c.tcp.get(r.endpoint(x.ip, x.port), (False, None))[0]
        for x in view.connects
    )
    got_page: bool | None = None
    if exp_fail is None and ctrl_fail is None:
        got_page = bool(diff.body_length_match or diff.headers_match or diff.title_match) and (
            diff.status_code_match is not False
        )
    blocking: bool | str = False
    rule = "no rule: not blocked"
    if consistent and not tcp_ok and exp_fail is not None:
        blocking, rule = "tcp_ip", "DNS consistent, a connect failed, HTTP failed"
    elif consistent and tcp_ok and got_page is False:
        blocking, rule = "http-diff", "HTTP diff: different page"
    elif consistent and tcp_ok and exp_fail is not None and ctrl_fail is None:
        blocking = "dns" if exp_fail == "dns_lookup_error" else "http-failure"
        rule = f"HTTP failed, control fetched: {exp_raw[:80] if exp_raw else ''}"
    elif not consistent and (got_page is not True if mk else (got_page is False or exp_fail)):
        blocking, rule = "dns", "DNS inconsistent"
    elif (
        not consistent
        and got_page is False
        and (c.dns_failure is not None or ctrl_fail != exp_fail)
    ):
        blocking, rule = "dns", "DNS inconsistent, unexpected page"
    # MK: accessible iff not blocked; PY: also no HTTP or DNS failure of the probe's own
    accessible = blocking is False and (mk or (exp_raw is None and dns_fail is None))
    return OONIResult(blocking, accessible, dns, diff, "legacy", rule)


# ---------------------------------------------------------------------------------------------
# probe-cli webconnectivity 0.4 (Summarize)

_V04_REASONS = {
    "connection_refused": "http-failure",
    "connection_reset": "http-failure",
    "dns_nxdomain_error": "dns",
    "eof_error": "http-failure",
    "generic_timeout_error": "http-failure",
    "ssl_invalid_hostname": "http-failure",
    "ssl_invalid_certificate": "http-failure",
    "ssl_unknown_authority": "http-failure",
}


def _v04(view: View, c: Control | None) -> OONIResult:
    usable = c is not None and c.usable
    dns = _dns_consistency_old(view, c) if c is not None and usable else None
    diff = _http_diff_v04(view, c) if c is not None and usable else HTTPDiff()

    def done(blocking: bool | str | None, rule: str) -> OONIResult:
        accessible = True if blocking is False else (None if blocking is None else False)
        return OONIResult(blocking, accessible, dns, diff, "v0.4", rule)

    final = view.requests[0] if view.requests else None
    if final is not None and not final.failure and final.url.startswith("https://"):
        return done(False, "final HTTPS response succeeded")
    if c is None or not usable:
        return done(None, "control failed")
    dns_fail = view.dns_failure()
    if dns_fail in NXDOMAIN_FAILURES and dns == "consistent":
        return done(False, "NXDOMAIN for the probe and the control")
    if dns_fail == "dns_nxdomain_error":
        return done("dns", "probe NXDOMAIN")
    if view.connects and not any(x.success for x in view.connects) and dns is not None:
        if dns == "consistent":
            return done("tcp_ip", "every connect failed, DNS consistent")
        return done("dns", "every connect failed, DNS inconsistent")
    if c.http_failure:
        return done(None, "control HTTP failed")
    if final is None:
        return done(None, "no request")
    if final.failure:
        reason = _V04_REASONS.get(final.failure)
        if reason is None:
            return done(None, f"HTTP failure {final.failure} not classified")
        if len(view.requests) == 1 and dns == "inconsistent":
            return done("dns", "HTTP failed, DNS inconsistent")
        return done(reason, f"HTTP failed: {final.failure}")
    if diff.same_page():
        return done(False, "HTTP diff: same page")
    if dns == "inconsistent":
        return done("dns", "HTTP diff with DNS inconsistent")
    return done("http-diff", "HTTP diff: different page")


# ---------------------------------------------------------------------------------------------
# webconnectivitylte original engine (0.5.0 – 0.5.26)


def _v05_orig(view: View, c: Control | None) -> OONIResult:
    host = view.host
    host_is_ip = r.is_ip_literal(host)
    # DNS (analysisDNSToplevel): a bogon in any answer; with control addresses, an unexpected
    # failure or unexpected addresses for the input's host.
    dns_flag = False
    why = ""
    for q in view.queries:
        if any(ooni_bogon(a) for a in q.addrs):
            dns_flag, why = True, "a bogon answer"
            break
    if c is not None and not host_is_ip and c.dns_addrs and not dns_flag:
        mine = [q for q in view.queries if q.hostname == host]
        for q in mine:
            if q.engine == "doh" or q.a_answers or not q.failure:
                continue
            if q.query_type == "AAAA" and q.failure == "dns_no_answer":
                continue
            dns_flag, why = True, "unexpected DNS failure"
            break
        if not dns_flag:
            probe_addrs = [a for q in mine for a in q.addrs]
            if not probe_addrs:
                dns_flag, why = True, "no address while the control resolved"
            elif _orig_unexpected_addrs(view, c, probe_addrs):
                dns_flag, why = True, "unexpected addresses"
    dns_consistency = "inconsistent" if dns_flag else "consistent"
    diff = HTTPDiff()
    tcp_flag = tls_flag = http_flag = diff_flag = success = False
    if c is not None and c.tcp:
        for x in view.connects:
            if not x.failure or (":" in x.ip and x.failure in _UNREACHABLE):
                continue
            ctrl = c.tcp.get(r.endpoint(x.ip, x.port))
            if ctrl is not None and ctrl[1] is None:
                tcp_flag = True
    if c is not None and c.tls:
        for h in view.handshakes:
            ctrl = c.tls.get(h.address or "")
            if h.failure and ctrl is not None and ctrl[1] is None:
                tls_flag = True
    if view.requests and c is not None and c.http_failure is None:
        final = view.requests[0]
        if final.failure:
            http_flag = final.failure in ("connection_reset", "generic_timeout_error", "eof_error")
        elif r.scheme_of(final.url) == "https":
            success = True
        else:
            diff = _http_diff_v04(view, c, orig=True)
            success = diff.same_page()
            diff_flag = not success

    def done(blocking: bool | str | None, accessible: bool | None, rule: str) -> OONIResult:
        return OONIResult(blocking, accessible, dns_consistency, diff, "v0.5-orig", rule)

    if dns_flag:
        return done("dns", False, f"DNS: {why}")
    if tcp_flag:
        return done("tcp_ip", False, "TCP connect failed where the control's succeeded")
    if tls_flag or http_flag:
        return done("http-failure", False, "TLS handshake or HTTP failed, control fine")
    if diff_flag:
        return done("http-diff", False, "HTTP diff: different page")
    if success:
        return done(False, True, "final response matches (or HTTPS)")
    # the "null-null" remedies, in OONI's order
    if c is not None:
        cleartext = [q for q in view.queries if q.engine != "doh"]
        if (
            c.dns_failure == "dns_name_error"
            and any(not q.failure for q in cleartext)
            and all(not q.failure or q.failure == "dns_no_answer" for q in cleartext)
        ):
            return done("dns", False, "local DNS success with the control's NXDOMAIN")
        if (
            not any(q.answer_count for q in view.queries)
            and not view.connects
            and not view.handshakes
            and not c.dns_addrs
            and not c.tcp
        ):
            return done(False, False, "no address for the probe or the control: site down")
        if (
            view.connects
            and c.tcp
            and all(
                x.failure and c.tcp.get(r.endpoint(x.ip, x.port), (True, None))[1]
                for x in view.connects
            )
        ):
            return done(False, False, "every connect failed for the probe and the control")
        if (
            view.handshakes
            and c.tls
            and all(
                h.failure
                and (ctrl := c.tls.get(h.address or "")) is not None
                and ctrl[1] == h.failure
                for h in view.handshakes
            )
        ):
            return done(False, False, "every handshake failed alike for the probe and the control")
    if view.requests and all(
        r.scheme_of(x.url) == "https" and not x.failure and x.code in (200, 301, 302, 307, 308)
        for x in view.requests
    ):
        return done(False, True, "a successful chain of HTTPS transactions")
    return done(None, None, "no rule applies")


def _orig_unexpected_addrs(view: View, c: Control, probe_addrs: list[str]) -> bool:
    """analysisDNSUnexpectedAddrs: addresses the control did not see, without a verified
    handshake for the host, in an ASN the control's addresses are not in (ASN 0 = unknown
    counts as a value, as in OONI)."""
    control = set(c.dns_addrs)
    different = {a for a in probe_addrs if not ooni_bogon(a) and a not in control}
    if not different:
        return False
    host = view.host
    handshake_ok: set[str] = set()
    for h in view.handshakes:
        if h.failure or h.server_name != host or not h.address:
            continue
        ip = r.ip_or_none(h.address.rsplit(":", 1)[0])
        if ip:
            handshake_ok.add(ip)
    ipv6_broken = {
        x.ip for x in view.connects if ":" in x.ip and x.failure and x.failure in _UNREACHABLE
    }
    suspicious = different - handshake_ok - ipv6_broken
    if not suspicious:
        return False
    info = c.ip_info
    control_asns = {info.get(a, (0, 0))[0] for a in control}
    return any(info.get(a, (0, 0))[0] not in control_asns for a in suspicious)


# ---------------------------------------------------------------------------------------------
# webconnectivitylte classic engine (0.5.27+): minipipeline's observations, ClassicFilter,
# the linear analysis.

_DNS, _TCP, _TLS, _HTTP = 0, 1, 2, 3


class _Obs:
    """One flow as minipipeline sees it: a DNS lookup, or an endpoint (TCP → TLS → HTTP).

    Class-level defaults, no ``__slots__``: an observation sets only the few fields its kind
    has (a measurement makes dozens of them)."""

    hostname = ""
    query_type = ""
    addrs: tuple[str, ...] = ()
    ip = ""
    origin: str | None = None  # "dns", "th" or unknown
    fetch_body: bool | None = None
    tls_failure: str | None = None  # None: no handshake
    server_name: str | None = None
    exchange: Exchange | None = None
    ctrl_dns: str | None = None  # None: no control info for this step
    ctrl_dns_addrs: set[str] | None = None
    ctrl_tcp: str | None = None
    ctrl_tls: str | None = None

    def __init__(self, kind: int, depth: int | None, failure: str, txid: int) -> None:
        self.kind = kind
        self.depth = depth
        self.failure = failure  # "" = success
        self.txid = txid

    def final(self) -> bool:
        x = self.exchange
        return (
            self.kind == _HTTP
            and self.failure == ""
            and x is not None
            and x.code // 100 in _FINAL_CLASSES
        )

    def sort_key(self) -> tuple[int, int, str, int]:
        depth = self.depth if self.depth is not None else -1
        return (-depth, -self.kind, self.failure, -self.txid)


class _Classic:
    """webconnectivitylte ``analysisClassic`` (probe-cli 0.5.27/0.5.28)."""

    def __init__(self, view: View, c: Control | None) -> None:
        self.view = view
        self.c = c
        self.v28 = view.version >= (0, 5, 28)
        self.host = view.host

    # -- observations ------------------------------------------------------------------------

    def _observations(self) -> tuple[list[_Obs], list[_Obs]]:
        """(DNS observations, endpoint observations) after ClassicFilter."""
        view, c, host = self.view, self.c, self.host
        tagged = view.tagged
        # Which resolver is "the system's": getaddrinfo in OONI; in a measurement that has none
        # (netvigil's own, or built by hand) the user's resolver: neither DoH nor a second opinion.
        has_system = tagged or any(q.engine in SYSTEM_ENGINES for q in view.queries)
        chain_hosts = [r.host_of(x.url) for x in reversed(view.requests)]
        if not tagged and view.requests and view.requests[0].code // 100 == 3:
            # the hop the newest redirect pointed to, which may have failed before HTTP
            location = next(
                (v for k, v in view.requests[0].headers.items() if k.lower() == "location"), ""
            )
            chain_hosts.append(r.host_of(location))
        known_any: dict[str, _Obs] = {}
        known_system: set[str] = set()
        dns_obs: list[_Obs] = []
        fake_txid = 1 << 60
        for q in view.queries:
            system = (
                q.engine in SYSTEM_ENGINES
                if has_system
                else (q.engine != "doh" and not q.second_opinion)
            )
            name = q.hostname.rstrip(".")
            depth = q.depth
            if not tagged:
                depth = 0 if name == host else _chain_depth(chain_hosts, name)
            txid = q.txid if q.txid is not None else fake_txid
            fake_txid += 1
            if q.failure is not None:
                if (
                    not has_system
                    and q.query_type == "AAAA"
                    and q.failure == "dns_no_answer"
                    and any(o.addrs and o.hostname.rstrip(".") == name for o in view.queries)
                ):
                    continue  # getaddrinfo merges A and AAAA: an empty AAAA is no failure
                if system:
                    ob = _Obs(_DNS, depth, q.failure, txid)
                    ob.hostname, ob.query_type = name, q.query_type
                    dns_obs.append(ob)
                continue
            if not q.addrs:
                continue
            ob = _Obs(_DNS, depth, "", txid)
            ob.hostname, ob.query_type, ob.addrs = name, q.query_type, tuple(q.addrs)
            for a in q.addrs:
                known_any.setdefault(a, ob)
                if system:
                    known_system.add(a)
            if system:
                dns_obs.append(ob)
        if c is not None:
            ctrl_addrs = set(c.dns_addrs) | set(c.dns_names)
            for ob in dns_obs:
                if ob.hostname == host:
                    ob.ctrl_dns = c.dns_failure or ""
                    if c.dns_failure is None:
                        ob.ctrl_dns_addrs = ctrl_addrs
        endpoints: dict[int, _Obs] = {}
        by_address: dict[str, _Obs] = {}
        th_addrs = set(c.dns_addrs) if c is not None else set()
        for x in view.connects:
            if tagged and x.fetch_body is not True:
                continue  # a connectivity check: ClassicFilter drops it (and its TLS) anyway
            txid = x.txid if x.txid is not None else fake_txid
            fake_txid += 1
            resolved = known_any.get(x.ip)
            depth = x.depth
            if not tagged:
                depth = resolved.depth if resolved is not None and resolved.depth is not None else 0
            ob = _Obs(_TCP, depth, x.failure or "", txid)
            ob.ip = x.ip
            ob.fetch_body = x.fetch_body if tagged else True
            if resolved is not None:
                ob.origin = "dns"
            elif x.ip in th_addrs:
                ob.origin = "th"
            if c is not None:
                ctrl = c.tcp.get(r.endpoint(x.ip, x.port))
                if ctrl is not None:
                    ob.ctrl_tcp = ctrl[1] or ""
            endpoints[txid] = ob
            by_address.setdefault(r.endpoint(x.ip, x.port), ob)
        for h in view.handshakes:
            ob_or_none = endpoints.get(h.txid) if h.txid is not None else None
            if ob_or_none is None and not tagged:
                ob_or_none = by_address.get(h.address or "")
            if ob_or_none is None:
                continue
            ob = ob_or_none
            ob.kind, ob.failure, ob.tls_failure = _TLS, h.failure or "", h.failure or ""
            ob.server_name = h.server_name
            if c is not None:
                ctrl_tls = c.tls.get(h.address or "")
                ctrl_name = c.tls_names.get(h.address or "", h.server_name)
                if ctrl_tls is not None and ctrl_name == h.server_name:
                    ob.ctrl_tls = ctrl_tls[1] or ""
        extra: list[_Obs] = []
        for depth_from_end, ex in enumerate(view.requests):
            ob_or_none = endpoints.get(ex.txid) if ex.txid is not None else None
            if ob_or_none is None:
                if tagged:
                    continue  # OONI ignores a round trip it cannot link to an endpoint
                # untagged: the round trip is its own observation, at its place in the chain
                ob_or_none = _Obs(_HTTP, len(view.requests) - 1 - depth_from_end, "", fake_txid)
                fake_txid += 1
                ob_or_none.fetch_body = True
                if r.scheme_of(ex.url) == "https" and (
                    not ex.failure or ex.failure not in CERT_FAILURES
                ):
                    ob_or_none.tls_failure = ""
                extra.append(ob_or_none)
            ob = ob_or_none
            ob.kind, ob.failure, ob.exchange = _HTTP, ex.failure or "", ex
            if not tagged and ex.txid is not None and ob.depth == 0:
                ob.depth = len(view.requests) - 1 - depth_from_end
        kept: list[_Obs] = []
        for ob in list(endpoints.values()) + extra:
            if ob.origin == "th":
                continue
            if ob.origin == "dns" and ob.ip not in known_system:
                continue  # reached through an address only DoH/UDP gave: not classic
            if not self.v28 and ob.ip not in known_system and tagged:
                continue  # before 2cc9231b9 (0.5.28) an address not from getaddrinfo is dropped
            if not ob.fetch_body:
                continue
            kept.append(ob)
        return dns_obs, kept

    # -- the analysis ------------------------------------------------------------------------

    def run(self) -> OONIResult:
        c = self.c
        dns_obs, endpoints = self._observations()
        consistency = self._dns_consistency(dns_obs)
        linear = sorted(dns_obs + endpoints, key=_Obs.sort_key)
        diff = HTTPDiff()
        final = next((ob for ob in linear if ob.final()), None)
        if final is not None and c is not None and final.exchange is not None:
            diff = self._diff(final.exchange, c, self.v28)
        blocking, accessible, rule = self._walk(linear, consistency, diff)
        return OONIResult(blocking, accessible, consistency, diff, "v0.5-classic", rule)

    def _dns_consistency(self, dns_obs: list[_Obs]) -> str | None:
        c = self.c
        success = valid = invalid = expected = unexpected = 0
        seen_ok: set[int] = set()
        seen_fail: set[int] = set()
        for ob in dns_obs:
            if ob.depth != 0:
                continue
            if ob.failure:
                if ob.txid in seen_fail:
                    continue
                seen_fail.add(ob.txid)
                if ob.query_type == "AAAA" and ob.failure == "dns_no_answer":
                    continue
                if ob.ctrl_dns is None:
                    continue
                if ob.ctrl_dns or (
                    self.v28 and ob.failure == "dns_no_answer" and not ob.ctrl_dns_addrs
                ):
                    # both failed; or (0.5.28, 2d9d7ba8b) no answer, and the control has none
                    # either: P-0.5.27 dnsComputeFailureMetrics counts that one unexpected
                    expected += 1
                else:
                    unexpected += 1
                continue
            if ob.txid in seen_ok:
                continue
            seen_ok.add(ob.txid)
            success += 1
            if ob.ctrl_dns_addrs is None:
                continue
            if set(ob.addrs) & ob.ctrl_dns_addrs or (
                _ip_info_asns(c, ob.addrs) & _ip_info_asns(c, ob.ctrl_dns_addrs)
            ):
                valid += 1
            else:
                invalid += 1
        if not unexpected and not invalid and (valid or expected):
            return "consistent"
        control_empty = c is not None and not c.dns_addrs and not c.dns_names
        if invalid or unexpected or (self.v28 and success and control_empty):
            return "inconsistent"
        return None

    @staticmethod
    def _diff(final: Exchange, c: Control, v28: bool = True) -> HTTPDiff:
        """minipipeline httpHandleFinalResponse + newAnalysisHTTPDiffStatus.

        0.5.27 read the *request's* ``body_is_truncated`` as the response's (P-0.5.27
        ``minipipeline/observation.go`` ``IngestHTTPRoundTripEvents``; fixed by bf471b3c2 for
        0.5.28), so a truncated body still gets a body proportion there."""
        out = HTTPDiff()
        if c.http_failure is not None:
            return out
        _proportion(final, c, out, None if v28 else final.request_truncated)
        if final.code > 0 and c.http_status > 0:
            good = final.code == c.http_status
            if good or c.http_status // 100 == 2:
                out.status_code_match = good
        if c.http_status > 0:
            out.headers_match = _uncommon_shared(final.headers, c.http_headers)
            out.title_match = not _title_words_differ(r.title_of(final.body), c.http_title)
        return out

    def _walk(
        self, linear: list[_Obs], consistency: str | None, diff: HTTPDiff
    ) -> tuple[bool | str | None, bool | None, str]:
        """analysisClassicComputeBlockingAccessible: the first observation a rule applies to."""
        c = self.c
        ctrl_http = None if c is None else (c.http_failure or "")
        inconsistent = consistency == "inconsistent"
        v28 = self.v28

        def string(value: str, rule: str) -> tuple[bool | str | None, bool | None, str]:
            if inconsistent:
                return "dns", False, f"{rule}; DNS inconsistent"
            return value, False, rule

        def null(rule: str) -> tuple[bool | str | None, bool | None, str]:
            if inconsistent:
                return "dns", False, f"{rule}; DNS inconsistent"
            return None, None, rule

        def down(rule: str) -> tuple[bool | str | None, bool | None, str]:
            if not v28:
                return False, True, rule  # 0.5.27: setBlockingFalse
            if inconsistent:
                return "dns", False, f"{rule}; DNS inconsistent"
            return False, False, rule

        for ob in linear:
            if ob.final():
                if ob.tls_failure == "":
                    return False, True, "final response over TLS"
                if ctrl_http is None:
                    return null("final response, no control")
                if diff.same_page():
                    return False, True, "final response matches the control's"
                return string("http-diff", "final response differs from the control's")
            if ob.kind == _HTTP and ob.failure:
                if ctrl_http is None:
                    return null(f"HTTP {ob.failure}, no control")
                if ctrl_http:
                    return down(f"HTTP {ob.failure}, the control failed too")
                return string("http-failure", f"HTTP {ob.failure}")
            if ob.kind == _TLS and ob.failure:
                if ob.ctrl_tls is None:
                    if ctrl_http is None:
                        return null(f"TLS {ob.failure}, no control")
                    return string("http-failure", f"TLS {ob.failure}, no control for this step")
                if ob.ctrl_tls:
                    if not v28:
                        return null(f"TLS {ob.failure}, the control failed too")
                    return down(f"TLS {ob.failure}, the control failed too")
                return string("http-failure", f"TLS {ob.failure}")
            if ob.kind == _TCP and ob.failure:
                if ob.ctrl_tcp is None:
                    if ctrl_http is None:
                        return null(f"TCP {ob.failure}, no control")
                    return string("http-failure", f"TCP {ob.failure}, no control for this step")
                if ob.ctrl_tcp:
                    return down(f"TCP {ob.failure}, the control failed too")
                return string("tcp_ip", f"TCP {ob.failure}")
            if ob.kind == _DNS and ob.failure:
                if ob.ctrl_dns is None:
                    if ctrl_http is None:
                        return False, True, f"DNS {ob.failure}, no control"
                    return string("dns", f"DNS {ob.failure} (depth {ob.depth})")
                if ob.ctrl_dns:
                    return down(f"DNS {ob.failure}, the control failed too")
                if v28 and ob.failure == "dns_no_answer" and not ob.ctrl_dns_addrs:
                    if inconsistent:
                        return "dns", False, "DNS no answer; DNS inconsistent"
                    return False, False, "DNS no answer, the control has no address either"
                return string("dns", f"DNS {ob.failure}")
            if (
                v28
                and ob.kind == _DNS
                and not ob.failure
                and ob.ctrl_dns == ""
                and ob.ctrl_dns_addrs is not None
                and _only_loopback(ob.addrs)
            ):
                if not _only_loopback(ob.ctrl_dns_addrs):
                    return string("dns", "only loopback addresses, the control has others")
                return down("only loopback addresses, for the control too")
        return None, None, "no observation decides"


def _chain_depth(chain_hosts: list[str], name: str) -> int | None:
    for i, h in enumerate(chain_hosts):
        if h == name:
            return i
    return None


def _only_loopback(addrs: object) -> bool:
    count = 0
    for a in addrs:  # type: ignore[attr-defined]
        ip = r.ip_or_none(a)
        if ip is None:
            continue
        if not (ip.startswith("127.") or ip == "::1"):
            return False
        count += 1
    return count > 0
