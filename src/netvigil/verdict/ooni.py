"""OONI-compatible analysis: dns_consistency, the HTTP diff keys, blocking and accessible.

A reimplementation (not a copy) of what OONI's probes computed, per generation:

- ``< 0.4`` (Measurement Kit / ooni-probe legacy): the HTTP experiment failure decides when the
  control fetched the page; both failing is "site down" (blocking false);
- ``0.4.x`` (probe-cli ``webconnectivity`` summary): HTTPS success first, then DNS, TCP,
  the final request's failure, the HTTP diff;
- ``0.5.0``–``0.5.26`` (``webconnectivitylte`` original engine): blocking flags per stage, with
  the "null-null" remediations;
- ``0.5.27`` and later (``webconnectivitylte`` classic engine): the final response decides;
  only observations derived from the system resolver count, so an IP-address input has no
  verdict (blocking null).

We have no ASN database: ASNs come only from the control's ``ip_info``.
"""

from __future__ import annotations

from dataclasses import dataclass

from netvigil.verdict import _read as r
from netvigil.verdict._view import Control, View

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


@dataclass
class HTTPDiff:
    body_length_match: bool | None = None
    body_proportion: float | None = None
    status_code_match: bool | None = None
    headers_match: bool | None = None
    title_match: bool | None = None

    def same_page(self) -> bool:
        """FIELD-NOTES §2: status equal AND (body proportion, uncommon headers or title)."""
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


# ---------------------------------------------------------------------------------------------
# DNS consistency


def tls_valid_addrs(view: View) -> set[str]:
    """Addresses where a verified TLS handshake for the host succeeded (probe or control)."""
    valid: set[str] = set()
    ok443 = [c.ip for c in view.connects if c.success and c.port == view.port]
    for h in view.handshakes:
        if h.failure or h.no_tls_verify or (h.server_name and h.server_name != view.host):
            continue
        if h.address:
            ip = r.ip_or_none(h.address.rsplit(":", 1)[0])
            if ip:
                valid.add(ip)
        elif len(set(ok443)) == 1:  # old probes: the one address we connected to
            valid.add(ok443[0])
    if view.control:
        for ip, (_, flags) in view.control.ip_info.items():
            if flags & TLS_VALID_FLAG:
                valid.add(ip)
    return valid


def dns_consistency(view: View) -> str | None:
    c = view.control
    if c is None or not c.usable:
        return None
    if r.is_ip_literal(view.host):
        return "consistent"
    probe_fail = view.dns_failure()
    addrs = view.probe_addrs_view()
    if probe_fail and not addrs:
        nx_probe = probe_fail in ("dns_nxdomain_error", "android_dns_cache_no_data")
        nx_ctrl = c.dns_failure in ("dns_name_error", "dns_nxdomain_error")
        return "consistent" if nx_probe and nx_ctrl else "inconsistent"
    if not addrs:
        return None
    control = set(c.dns_addrs)
    if any(r.is_bogon(a) and a not in control for a in addrs):
        return "inconsistent"
    if control & set(addrs):
        return "consistent"
    probe_asns = {c.ip_info[a][0] for a in addrs if a in c.ip_info} - {0}
    control_asns = {c.ip_info[a][0] for a in control if a in c.ip_info} - {0}
    if probe_asns & control_asns:
        return "consistent"
    valid = tls_valid_addrs(view)
    reached = {x.ip for x in view.connects if x.success} & set(addrs)
    if set(addrs) <= valid or (reached and reached <= valid):
        return "consistent"  # CDN / geo-DNS: the addresses we used are TLS-valid for the host
    return "inconsistent"


# ---------------------------------------------------------------------------------------------
# HTTP diff


def http_diff(view: View) -> HTTPDiff:
    out = HTTPDiff()
    c = view.control
    if c is None or not view.requests:
        return out
    final = view.requests[0]
    if c.http_body_length > 0 and not final.truncated and final.body_length > 0:
        small, big = sorted((final.body_length, c.http_body_length))
        out.body_proportion = small / big
        out.body_length_match = out.body_proportion > 0.7
    if c.http_status > 0 and final.code > 0:
        if c.http_status == final.code:
            out.status_code_match = True
        elif c.http_status // 100 != 5:
            out.status_code_match = False
    if final.code > 0 and c.http_status > 0:
        ours = {k.lower() for k in final.headers}
        theirs = {k.lower() for k in c.http_headers}
        out.headers_match = ours == theirs or bool((ours & theirs) - COMMON_HEADERS)
    if final.code > 0 and not final.truncated and c.http_status > 0:
        title = r.title_of(final.body)
        if title:
            words: dict[str, int] = {}
            for word in title.split(" "):
                if len(word) >= 5:
                    words[word.lower()] = words.get(word.lower(), 0) | 1
            for word in c.http_title.split(" "):
                if len(word) >= 5:
                    words[word.lower()] = words.get(word.lower(), 0) | 2
            out.title_match = all(v == 3 for v in words.values())
    return out


# ---------------------------------------------------------------------------------------------
# blocking


def _all_connects_failed(view: View) -> bool:
    return bool(view.connects) and not any(c.success for c in view.connects)


def _legacy(view: View, c: Control, dns: str | None, diff: HTTPDiff) -> bool | str | None:
    """Measurement Kit / ooni-probe legacy (test_version < 0.4)."""
    if dns == "inconsistent":
        return "dns"
    if _all_connects_failed(view):
        return "tcp_ip"
    exp_fail = (view.requests[0].failure if view.requests else None) or r.failure(
        view.tk.get("http_experiment_failure")
    )
    if exp_fail and c.http_failure:
        return False  # both failed: the site is down
    if exp_fail:
        return "dns" if exp_fail in ("dns_lookup_error", "dns_nxdomain_error") else "http-failure"
    if c.http_failure or not view.requests or view.requests[0].code <= 0:
        return None
    return False if diff.same_page() else "http-diff"


_V04_HTTP_FAILURES = frozenset(
    {"connection_refused", "connection_reset", "eof_error", "generic_timeout_error"} | CERT_FAILURES
)


def _v04(view: View, c: Control, dns: str | None, diff: HTTPDiff) -> bool | str | None:
    """probe-cli webconnectivity 0.4 summary."""
    if dns == "inconsistent":
        return "dns"
    if view.connects and not any(x.success for x in view.connects) and dns is not None:
        return "tcp_ip"
    if c.http_failure or not view.requests:
        return None
    fail = view.requests[0].failure
    if fail:
        if fail == "dns_nxdomain_error":
            return "dns"
        return "http-failure" if fail in _V04_HTTP_FAILURES else None
    return False if diff.same_page() else "http-diff"


def _https_chain_ok(view: View) -> bool:
    return bool(view.requests) and all(
        r.scheme_of(x.url) == "https" and not x.failure and x.code in (200, 301, 302, 307, 308)
        for x in view.requests
    )


def _v05_orig(view: View, c: Control, dns: str | None, diff: HTTPDiff) -> bool | str | None:
    """webconnectivitylte's original engine: flags per stage, then the null-null remedies."""
    flags: set[str] = set()
    if dns == "inconsistent":
        flags.add("dns")
    for x in view.connects:
        if not x.failure:
            continue
        if ":" in x.ip and x.failure in ("network_unreachable", "host_unreachable"):
            continue  # the probe has no IPv6
        ctrl = c.tcp.get(r.endpoint(x.ip, x.port))
        if ctrl is not None and ctrl[0]:
            flags.add("tcp_ip")
    for h in view.handshakes:
        ctrl = c.tls.get(h.address or "")
        if h.failure and ctrl is not None and ctrl[0]:
            flags.add("http-failure")
    success = False
    if view.requests and c.http_failure is None and c.http_present:
        final = view.requests[0]
        if final.failure in ("connection_reset", "generic_timeout_error", "eof_error"):
            flags.add("http-failure")
        elif not final.failure:
            if r.scheme_of(final.url) == "https" or diff.same_page():
                success = True
            else:
                flags.add("http-diff")
    for name in ("dns", "tcp_ip", "http-failure", "http-diff"):
        if name in flags:
            return name
    if success:
        return False
    # null-null remedies
    cleartext_ok = [q for q in view.main_queries_view() if q.engine != "doh"]
    if (
        c.dns_failure == "dns_name_error"
        and cleartext_ok
        and all(not q.failure or q.failure == "dns_no_answer" for q in cleartext_ok)
    ):
        return "dns"
    if not view.probe_addrs_view() and not c.dns_addrs and view.queries:
        return False
    if view.connects and all(
        x.failure and c.tcp.get(r.endpoint(x.ip, x.port), (True, None))[1] for x in view.connects
    ):
        return False
    if _https_chain_ok(view):
        return False
    return None


def _v05_classic(view: View, c: Control, dns: str | None, diff: HTTPDiff) -> bool | str | None:
    """webconnectivitylte's classic engine: the final response first, then failures."""
    if r.is_ip_literal(view.host):
        return None  # only system-resolver observations count: an IP input has none

    def blocked(value: str) -> str:
        return "dns" if dns == "inconsistent" else value

    def down() -> bool | str:
        return "dns" if dns == "inconsistent" else False

    if view.requests:
        final = view.requests[0]
        if not final.failure and final.code > 0 and final.code // 100 != 3:
            if r.scheme_of(final.url) == "https":
                return False
            if not c.http_present:
                return "dns" if dns == "inconsistent" else None
            return False if diff.same_page() else blocked("http-diff")
        if final.failure:
            if not c.http_present:
                return "dns" if dns == "inconsistent" else None
            return down() if c.http_failure else blocked("http-failure")
    for h in sorted(view.handshakes, key=lambda h: h.failure or ""):
        if h.failure:
            ctrl = c.tls.get(h.address or "")
            if ctrl is None:
                return blocked("http-failure") if c.http_ok else None
            return down() if ctrl[1] else blocked("http-failure")
    for x in sorted(view.connects, key=lambda x: x.failure or ""):
        if x.failure:
            ctrl = c.tcp.get(r.endpoint(x.ip, x.port))
            if ctrl is None:
                return blocked("http-failure") if c.http_ok else None
            return down() if ctrl[1] else blocked("tcp_ip")
    if view.dns_failure():
        return down() if c.dns_failure else "dns"
    return "dns" if dns == "inconsistent" else None


def analyze_ooni(view: View) -> OONIResult:
    c = view.control
    dns = dns_consistency(view)
    diff = http_diff(view)
    version = view.version
    engine = (
        "legacy"
        if version < (0, 4)
        else "v0.4"
        if version < (0, 5)
        else "v0.5-orig"
        if version < (0, 5, 27)
        else "v0.5-classic"
    )
    if engine == "v0.5-classic" and r.is_ip_literal(view.host):
        dns = None
    blocking: bool | str | None
    if c is None or not view.tk:
        blocking = None
    elif (
        engine in ("legacy", "v0.4")
        and view.requests
        and not view.requests[0].failure
        and r.scheme_of(view.requests[0].url) == "https"
    ):
        blocking = False  # HTTPS success: either the real server or a compromised CA
    elif not c.usable:
        blocking = None
    elif (
        engine in ("legacy", "v0.4")
        and view.dns_failure() in ("dns_nxdomain_error", "android_dns_cache_no_data")
        and dns == "consistent"
    ):
        blocking = False
    elif engine == "legacy":
        blocking = _legacy(view, c, dns, diff)
    elif engine == "v0.4":
        blocking = _v04(view, c, dns, diff)
    elif engine == "v0.5-orig":
        blocking = _v05_orig(view, c, dns, diff)
    else:
        blocking = _v05_classic(view, c, dns, diff)
    accessible: bool | None
    if blocking is None:
        accessible = None
    elif blocking is False:
        accessible = _accessible_when_false(view, c)
    else:
        accessible = False
    return OONIResult(blocking, accessible, dns, diff, engine)


def _accessible_when_false(view: View, c: Control | None) -> bool:
    """Blocking false means accessible, except when the site is down for everyone."""
    if view.requests and view.requests[0].failure:
        return False
    return not (not view.requests and c is not None and c.http_failure)
