"""measurement → Verdict. Pure: no I/O, no clock, no globals mutated.

The precise outcome is decided stage by stage (DNS → TCP → TLS → HTTP) with the control as
referee: a failure the control also saw at the same step is ``down``, not censorship.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from netvigil.net.tls import TrustStore, reaches_trusted_root
from netvigil.verdict import _read as r
from netvigil.verdict import network
from netvigil.verdict._view import Control, Exchange, Handshake, View, late_addrs, parse
from netvigil.verdict.certs import describe_chain
from netvigil.verdict.fingerprints import Fingerprints, Match, load_fingerprints
from netvigil.verdict.im import analyze_im
from netvigil.verdict.interception import MAX_CHAIN, describe_interception
from netvigil.verdict.model import (
    IM_TEST_NAMES,
    NOT_BLOCKED,
    OONI_DIFFERS,
    TCP_FAILURE_OUTCOMES,
    Verdict,
    pair_allowed,
)
from netvigil.verdict.ooni import (
    CERT_FAILURES,
    NXDOMAIN_FAILURES,
    HopFailure,
    OONIResult,
    analyze_ooni,
    redirect_hop_failure,
)
from netvigil.verdict.roots import decode_peer_certificates

# Throttling (docs/verdict.md, `http/throttled`): judged on a body the time budget cut while
# bytes still arrived. With the control's rate: far below it (at most 1/8) and under 64 kB/s
# (512 kbit/s; a slower link than that is what a censor's shaper leaves, faster is usable).
# Without it: under 20 kB/s (160 kbit/s; Russia's 2021 Twitter slowdown was ~128 kbit/s).
THROTTLE_FLOOR = 20_000  # bytes/s
THROTTLE_CONTROL_RATIO = 8.0
THROTTLE_CEILING = 64_000  # bytes/s
# Still flowing: the last byte came at most this long (or half the transfer) before the budget
# ended it; longer is a stall, not a slow transfer. Generous on purpose: behind a shaper's deep
# queue a lone flow's losses wait for TCP's retransmission timer, seconds when the queue
# inflates the round trip (measured on the testbed: 4-5 s gaps in a 12 s transfer at 32 kbit/s).
# A censor that lets a first burst through and then drops everything leaves the budget silent.
STALL_SECONDS = 3.0
MIN_RATE_SECONDS = 2.0  # a rate measured over less is mostly latency
_TCP = TCP_FAILURE_OUTCOMES


class _Outcome(Exception):
    """Raised to end the stage walk with an outcome (keeps the stages flat and readable)."""

    def __init__(self, outcome: str, confidence: float, **evidence: Any) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.confidence = confidence
        self.evidence = evidence


def analyze(measurement: Mapping[str, Any], fingerprints: Fingerprints | None = None) -> Verdict:
    """The verdict for one OONI-format measurement (any web_connectivity version, or ours)."""
    m = measurement if isinstance(measurement, Mapping) else {}
    # Before any test's verdict: a probe that found its network offline blames no site.
    by_network = network.judge(m, lambda inner: analyze(inner, fingerprints))
    if by_network is not None:
        return by_network
    fps = fingerprints if fingerprints is not None else load_fingerprints()
    test_name = r.s(m.get("test_name"))
    envelope = {
        "input": r.s(m.get("input")),
        "report_id": r.s(m.get("report_id")),
        "measurement_uid": r.s(m.get("measurement_uid")),
        "test_name": test_name,
        "probe_cc": r.s(m.get("probe_cc")),
        "probe_asn": r.s(m.get("probe_asn")),
        "measurement_start_time": r.s(m.get("measurement_start_time")),
    }
    if test_name in IM_TEST_NAMES:
        return analyze_im(m, envelope)
    view = parse(m)
    if view.test_name != "web_connectivity":
        return Verdict(
            **envelope,
            blocking=None,
            accessible=None,
            dns_consistency=None,
            body_length_match=None,
            body_proportion=None,
            status_code_match=None,
            headers_match=None,
            title_match=None,
            outcome="unsupported",
            confidence=0.0,
            blocked=False,
            evidence={"reason": f"test_name {view.test_name!r} is not web_connectivity"},
        )
    ooni = analyze_ooni(view)
    try:
        _walk(view, ooni, _Scan(fps))
        raise _Outcome("unknown", 0.0, reason="no stage could be judged")
    except _Outcome as done:
        outcome, confidence, evidence = done.outcome, done.confidence, done.evidence
    evidence["ooni_engine"] = ooni.engine
    evidence["ooni_rule"] = ooni.rule
    outcome, confidence = _reconcile(view, ooni, outcome, confidence, evidence)
    if view.control is not None and not view.control.usable:
        evidence.setdefault("control", "missing" if not view.control.present else "failed")
    return Verdict(
        **envelope,
        blocking=ooni.blocking,
        accessible=ooni.accessible,
        dns_consistency=ooni.dns_consistency,
        body_length_match=ooni.diff.body_length_match,
        body_proportion=ooni.diff.body_proportion,
        status_code_match=ooni.diff.status_code_match,
        headers_match=ooni.diff.headers_match,
        title_match=ooni.diff.title_match,
        outcome=outcome,
        confidence=confidence,
        blocked=outcome.split(":", 1)[0] not in NOT_BLOCKED,
        evidence=evidence,
    )


# ---------------------------------------------------------------------------------------------


class _Scan:
    """The fingerprint database for one analysis: each response is scanned at most once.

    Scanning a body is the costliest step of a verdict (about 1 ms per 20 KiB), and several
    stages ask about the same response.
    """

    def __init__(self, fps: Fingerprints) -> None:
        self.fps = fps
        self._seen: dict[int, tuple[Match | None, Match | None]] = {}

    def response(self, x: Exchange) -> tuple[Match | None, Match | None]:
        key = id(x)
        if key not in self._seen:
            self._seen[key] = self.fps.match_response(x.body, x.headers)
        return self._seen[key]

    def match_dns(self, address: str) -> Match | None:
        return self.fps.match_dns(address)


def _walk(view: View, ooni: OONIResult, fps: _Scan) -> None:
    c = view.control if view.control is not None and view.control.usable else None
    if not view.tk:
        raise _Outcome("unknown", 0.0, reason="no test_keys")
    _dns_stage(view, ooni, c, fps)
    _tcp_stage(view, c)
    _tls_stage(view, c)
    _http_stage(view, ooni, c, fps)


def _blockpage(x: Exchange, fps: _Scan) -> tuple[Match | None, Match | None]:
    return fps.response(x)


def _chain_blockpage(view: View, fps: _Scan) -> tuple[Match | None, Exchange | None]:
    """A blockpage anywhere in the redirect chain (final body, or a hop's Location/headers)."""
    for x in view.requests:  # newest first: the final page, then the hops that led to it
        hit, _ = _blockpage(x, fps)
        if hit is not None:
            return hit, x
    return None, None


def _dns_stage(view: View, ooni: OONIResult, c: Control | None, fps: _Scan) -> None:
    # Injection: a first reply, then a different one for the same query.
    for q in view.main_queries_view():
        for late in q.late:
            late_set = set(late_addrs(late))
            late_fail = r.failure(late.get("failure"))
            if (late_set and late_set != set(q.addrs)) or (late_fail and not q.failure and q.addrs):
                raise _Outcome(
                    "dns/injected",
                    0.95,
                    query={"hostname": q.hostname, "type": q.query_type},
                    first_reply={"answers": q.addrs, "failure": q.failure},
                    late_replies=[
                        {"answers": late_addrs(x), "failure": r.failure(x.get("failure"))}
                        for x in q.late[:8]
                    ],
                    note="the first reply is the forged one",
                )
    if r.is_ip_literal(view.host):
        return
    addrs = view.probe_addrs()
    failure = view.dns_failure()
    ctrl_addrs = c.dns_addrs if c else []
    dns_ev: dict[str, Any] = {
        "probe_answers": addrs,
        "probe_failure": failure,
        "control_answers": ctrl_addrs,
        "control_failure": c.dns_failure if c else None,
    }
    if failure and not addrs:
        if c is None:
            raise _Outcome("unknown", 0.0, dns=dns_ev, reason="DNS failed; no control")
        if not ctrl_addrs:
            raise _Outcome("down", 0.8, dns=dns_ev, reason="the control did not resolve it either")
        if failure in ("dns_nxdomain_error", "dns_no_answer", "android_dns_cache_no_data"):
            raise _Outcome("dns/nxdomain", 0.9, dns=dns_ev)
        if failure == "generic_timeout_error":
            raise _Outcome("dns/timeout", 0.85, dns=dns_ev)
        raise _Outcome("dns/bogus", 0.6, dns=dns_ev, reason=f"resolver failed: {failure}")
    if not addrs:
        return
    bogons = [a for a in addrs if r.is_bogon(a) and a not in set(ctrl_addrs)]
    if bogons:
        if _https_page_fetched(view):
            raise _Outcome(
                "ok",
                0.6,
                dns=dns_ev,
                bogons=bogons,
                reason="a private address, but the page came over verified TLS for the host "
                "(split-horizon DNS)",
            )
        raise _Outcome("dns/bogon", 0.95, dns=dns_ev, bogons=bogons)
    dns_fp = next((hit for a in addrs if (hit := fps.match_dns(a)) is not None), None)
    if dns_fp is not None:
        dns_ev["fingerprint"] = dns_fp.to_dict()
    if ooni.dns_consistency != "inconsistent" and not (c is None and dns_fp is not None):
        return
    # The answers differ from the control's (or, with no control, a known censor address).
    pages = [p for p in r.lst(view.tk.get("x_dns_answer_pages"))[:16] if isinstance(p, Mapping)]
    for page in pages:
        x = parse({"test_keys": {"requests": [page]}}).requests[0]
        hit, _ = _blockpage(x, fps)
        if hit is not None:
            raise _Outcome(
                "dns/blockpage", 0.95, dns=dns_ev, fingerprint=hit.to_dict(), where=x.url
            )
    hit, hop = _chain_blockpage(view, fps)
    if hit is not None and hop is not None:
        raise _Outcome("dns/blockpage", 0.9, dns=dns_ev, fingerprint=hit.to_dict(), where=hop.url)
    if dns_fp is not None:
        raise _Outcome("dns/bogus", 0.85, dns=dns_ev)
    if c is None:
        return
    final = view.requests[0] if view.requests else None
    if final is not None and not final.failure and final.code > 0 and ooni.diff.same_page():
        raise _Outcome(
            "ok",
            0.6,
            dns=dns_ev,
            reason="answers differ from the control's but the page served matches (CDN/geo-DNS)",
        )
    if _https_page_fetched(view):
        raise _Outcome(
            "ok",
            0.7,
            dns=dns_ev,
            reason="answers differ from the control's but the page came over verified TLS "
            "for the host (CDN/geo-DNS, or a transparent proxy that could not read it)",
        )
    raise _Outcome("dns/bogus", 0.7, dns=dns_ev)


def _https_page_fetched(view: View) -> bool:
    """The chain ended in a final page (2xx/4xx/5xx) fetched over verified TLS, from an address
    the user's resolver gave (one only a UDP or DoH resolver gave is not what the user got)."""
    final = view.requests[0] if view.requests else None
    if (
        final is None
        or final.failure
        or final.code // 100 not in (2, 4, 5)
        or r.scheme_of(final.url) != "https"
    ):
        return False
    if not final.address or r.host_of(final.url) != view.host:
        return True
    ip = r.ip_or_none(final.address.rsplit(":", 1)[0])
    return ip is None or ip in view.probe_addrs_view() or r.is_ip_literal(view.host)


def _tcp_stage(view: View, c: Control | None) -> None:
    tried = [x for x in view.connects if x.port == view.port] or view.connects
    if not tried or any(x.success for x in tried):
        return
    ev: dict[str, Any] = {
        "probe": [{"endpoint": r.endpoint(x.ip, x.port), "failure": x.failure} for x in tried[:32]],
    }
    if c is None:
        raise _Outcome("unknown", 0.0, tcp=ev, reason="every connect failed; no control")
    ctrl = [c.tcp[ep] for x in tried if (ep := r.endpoint(x.ip, x.port)) in c.tcp]
    ev["control"] = {
        r.endpoint(x.ip, x.port): c.tcp.get(r.endpoint(x.ip, x.port)) for x in tried[:32]
    }
    failure = next((x.failure for x in tried if x.failure), "") or ""
    outcome = _TCP.get(failure, "tcp/timeout")
    if any(ok for ok, _ in ctrl):
        raise _Outcome(outcome, 0.9, tcp=ev, failure=failure)
    if ctrl:
        raise _Outcome("down", 0.8, tcp=ev, reason="the control could not connect either")
    if c.http_ok:
        raise _Outcome(outcome, 0.7, tcp=ev, failure=failure, note="control fetched the page")
    raise _Outcome("unknown", 0.0, tcp=ev, reason="the control did not test these endpoints")


def _tls_stage(view: View, c: Control | None) -> None:
    if view.scheme != "https":
        return
    mine = [h for h in view.handshakes if not h.server_name or h.server_name == view.host]
    if not mine or any(not h.failure for h in mine):
        return
    h = mine[0]
    failure = h.failure or ""
    ctrl = c.tls.get(h.address or "") if c else None
    ev: dict[str, Any] = {
        "address": h.address,
        "server_name": h.server_name,
        "failure": failure,
        "x_verify_failure": None,
    }
    for raw in r.lst(view.tk.get("tls_handshakes"))[:1]:
        ev["x_verify_failure"] = r.s(r.d(raw).get("x_verify_failure"))
    ev["control_tls"] = (
        {"status": ctrl[0], "failure": ctrl[1]} if ctrl is not None else "not measured"
    )
    if failure in CERT_FAILURES or failure.startswith("ssl_"):
        ev["chain"] = describe_chain(h.certs)
    found = _interception(view, h, c) if failure in CERT_FAILURES else None
    if c is None:
        if found is not None and _proven_root(found):
            raise _Outcome(
                "tls/interception",
                0.85,
                tls=ev,
                interception=found,
                reason="no control, but the chain presents a known interception root (or its key)",
            )
        raise _Outcome("unknown", 0.0, tls=ev, reason="TLS failed; no control")
    control_ok = ctrl[0] if ctrl is not None else c.http_ok
    confidence = 0.95 if ctrl is not None else 0.75
    if found is not None:
        _judge_certificate(found, ev, control_ok, confidence)
    if not control_ok:
        raise _Outcome("down", 0.8, tls=ev, reason="the control's handshake failed too")
    if failure in ("connection_reset", "eof_error"):
        raise _Outcome("tls/reset", confidence, tls=ev)
    if failure == "generic_timeout_error":
        raise _Outcome("tls/timeout", confidence, tls=ev)
    raise _Outcome("tls/failure", confidence * 0.8, tls=ev)


def _interception(view: View, h: Handshake, c: Control | None) -> dict[str, Any]:
    """describe_interception for a failed handshake, with the control's chain when it has one
    (the same endpoint's, else that of any endpoint whose handshake verified)."""
    real: list[bytes] | None = None
    real_from: dict[str, Any] | None = None
    if c is not None:
        key = h.address or ""
        if key not in c.tls_chains:
            key = next((k for k in c.tls_chains if c.tls.get(k, (False, None))[0]), "")
        if key in c.tls_chains:
            real = decode_peer_certificates(c.tls_chains[key])
            status = c.tls.get(key)
            real_from = {"endpoint": key, "status": status[0] if status else None}
    presented = decode_peer_certificates(h.certs, MAX_CHAIN)
    found = describe_interception(presented, real, view.host, count=len(h.certs))
    found["real_from"] = real_from
    if h.failure == "ssl_invalid_hostname":
        # Go's verifier (OONI's probes, and netvigil.net.tls) checks the name before it looks
        # for a path: the failure string alone does not say whether a public CA issued the leaf.
        trust = web_trust()
        found["reaches_web_root"] = (
            reaches_trusted_root(presented, trust) if trust is not None else None
        )
    return found


_WEB_TRUST: list[TrustStore | None] = []


def web_trust() -> TrustStore | None:
    """The public web's roots (certifi's Mozilla bundle), loaded once; None without it."""
    if not _WEB_TRUST:
        try:
            _WEB_TRUST.append(TrustStore.mozilla())
        except Exception:  # no bundle: the captive-portal rule cannot apply
            _WEB_TRUST.append(None)
    return _WEB_TRUST[0]


def _proven_root(found: Mapping[str, Any]) -> bool:
    known = found.get("known_root")
    return isinstance(known, Mapping) and known.get("proven") is True


def _judge_certificate(
    found: dict[str, Any], ev: dict[str, Any], control_ok: bool, confidence: float
) -> None:
    """The decision for a certificate failure (ssl_unknown_authority, ssl_invalid_hostname,
    ssl_invalid_certificate), now that the control's view of the certificate may be known.

    - the probe was shown the site's own key (the control saw the same): nobody in the middle;
      a site broken for everyone (control failed, or self-signed) is ``down``, else the probe's
      own trust store or clock is at fault: ``unknown``;
    - control fine: ``tls/interception``; but a publicly trusted leaf for another name
      (``ssl_invalid_hostname`` with a path to a public root) is a ``captive-portal``, and an
      untrusted leaf not even for this host lowers the confidence (a blockpage server with its
      own certificate looks the same);
    - control failed too: ``down``, unless the chain shows a known interception root, or a key
      and issuer other than those the control saw (a broken site, intercepted anyway).
    """
    copied = found.get("copied") or {}
    key_differs = copied.get("key_differs")
    leaf = (found.get("certificates") or [{}])[0]
    real = found.get("real") or {}
    proven = _proven_root(found)
    if key_differs is False:
        broken = not control_ok or leaf.get("self_signed") is True
        if broken:
            raise _Outcome(
                "down",
                0.8,
                tls=ev,
                certificates=found,
                reason="site misconfigured: the control was shown the same certificate key; "
                "not interception",
            )
        raise _Outcome(
            "unknown",
            0.0,
            tls=ev,
            certificates=found,
            reason="the probe was shown the site's own certificate key (as the control was) "
            "but could not verify it: its trust store, clock or an incomplete chain; "
            "not interception",
        )
    if not control_ok:
        if proven:
            raise _Outcome(
                "tls/interception",
                0.85,
                tls=ev,
                interception=found,
                reason="the control failed too, but the chain presents a known interception root",
            )
        if key_differs is True and leaf.get("issuer") != real.get("issuer"):
            raise _Outcome(
                "tls/interception",
                0.7,
                tls=ev,
                interception=found,
                reason="the control failed too, but the probe was shown another key from "
                "another issuer than the control",
            )
        return  # down, below
    if key_differs is True or proven:
        confidence = max(confidence, 0.9)
    extra: dict[str, Any] = {}
    if (
        found.get("leaf_covers_host") is False
        and not proven
        and ev.get("failure") == "ssl_invalid_hostname"
        and found.get("reaches_web_root") is True
    ):
        # A chain to a public root (by issuer name and signature) for another name: a
        # publicly trusted certificate. A forger cannot get one; a captive portal answering
        # every HTTPS connection has one. (ssl_invalid_hostname alone does not say it: the
        # name is checked before the path, so an untrusted leaf for another name says it too.)
        raise _Outcome(
            "captive-portal",
            0.6,
            tls=ev,
            certificates=found,
            reason="a publicly trusted certificate for another name: a captive portal (or a "
            "shared host answering for another site), not a forgery",
        )
    if found.get("leaf_covers_host") is False and not proven:
        confidence = min(confidence, 0.8)
        extra["note"] = (
            "the presented leaf is not for this host: a captive portal or a blockpage server "
            "with its own certificate looks like this too"
        )
    raise _Outcome("tls/interception", confidence, tls=ev, interception=found, **extra)


def _http_stage(view: View, ooni: OONIResult, c: Control | None, fps: _Scan) -> None:
    if not view.requests:
        if c is not None and c.http_present and c.http_failure:
            raise _Outcome("down", 0.6, reason="no HTTP exchange; the control failed too")
        raise _Outcome("unknown", 0.0, reason="no HTTP exchange recorded")
    final = view.requests[0]
    diff = ooni.diff
    if not final.failure and final.code // 100 == 3:
        hop = redirect_hop_failure(view)
        if hop is not None:
            hit, where = _chain_blockpage(view, fps)
            if hit is not None and where is not None:
                raise _Outcome(
                    f"http/blockpage:{hit.name}",
                    0.95,
                    fingerprint=hit.to_dict(),
                    where={"url": where.url, "status": where.code},
                    redirects=[x.url for x in reversed(view.requests)],
                )
            _judge_hop(view, hop, c)
    # The very page the control got (same status, length within 30 %, same title) is not a
    # blockpage: skip the scan, the costliest step of a verdict, for the common case.
    same_as_control = (
        c is not None
        and c.http_ok
        and not final.failure
        and diff.status_code_match is True
        and diff.body_length_match is True
        and diff.title_match is True
    )
    hit, where = (None, None) if same_as_control else _chain_blockpage(view, fps)
    if hit is not None and where is not None:
        raise _Outcome(
            f"http/blockpage:{hit.name}",
            0.95,
            fingerprint=hit.to_dict(),
            where={"url": where.url, "status": where.code},
            redirects=[x.url for x in reversed(view.requests)],
        )
    _, fp_hit = (None, None) if same_as_control else _blockpage(final, fps)
    http_ev: dict[str, Any] = {
        "url": final.url,
        "failure": final.failure,
        "status": final.code,
        "body_length": final.body_length,
        "control": (
            {
                "failure": c.http_failure,
                "status": c.http_status,
                "body_length": c.http_body_length,
            }
            if c is not None
            else None
        ),
    }
    if fp_hit is not None:
        http_ev["false_positive_signature"] = fp_hit.to_dict()
    if final.failure == "generic_timeout_error":
        _throttle_rule(final, c, view, http_ev)
    if final.failure:
        if c is None or not c.http_present:
            raise _Outcome("unknown", 0.0, http=http_ev, reason="HTTP failed; no control")
        if c.http_failure:
            raise _Outcome("down", 0.8, http=http_ev, reason="the control's fetch failed too")
        # The input may be http:// and redirect to https://, where the forgery shows up (an
        # http URL of an intercepted site): judge by the scheme of the request that failed.
        if r.scheme_of(final.url) == "https" and final.failure in CERT_FAILURES:
            failed = next((h for h in view.handshakes if h.failure), None)
            chain = failed.certs if failed is not None else []
            raise _Outcome(
                "tls/interception",
                0.75,
                http=http_ev,
                chain=describe_chain(chain),
                interception=_interception(view, failed, c) if failed is not None else None,
            )
        if final.failure == "connection_reset":
            raise _Outcome("http/reset", 0.9, http=http_ev)
        if final.failure == "generic_timeout_error":
            raise _Outcome("http/timeout", 0.8, http=http_ev)
        raise _Outcome("http/failure", 0.7, http=http_ev)
    if r.scheme_of(final.url) == "https":
        # A page fetched over verified TLS comes from the site itself (or a CA was compromised,
        # which a different key would have shown at the handshake): not censorship.
        raise _Outcome(
            "ok",
            0.9 if c is not None and c.http_ok else 0.6,
            http=http_ev,
            reason="HTTPS fetch verified"
            + ("" if c is not None and c.http_ok else "; no control")
            + ("" if diff.same_page() or c is None else "; the page differs from the control's"),
        )
    if c is None or not c.http_ok:
        raise _Outcome("unknown", 0.0, http=http_ev, reason="page fetched; no control to compare")
    if final.code in (403, 451) and c.http_status in (403, 451):
        raise _Outcome("ok", 0.7, http=http_ev, reason="the site answers everyone this way")
    if ooni.diff.same_page():
        raise _Outcome("ok", 0.9, http=http_ev)
    raise _Outcome(
        "http/diff",
        0.5,
        http=http_ev,
        diff={
            "status_code_match": ooni.diff.status_code_match,
            "body_proportion": ooni.diff.body_proportion,
            "headers_match": ooni.diff.headers_match,
            "title_match": ooni.diff.title_match,
        },
    )


def _throttle_rule(final: Exchange, c: Control | None, view: View, http_ev: dict[str, Any]) -> None:
    """A body the time budget cut while bytes still arrived: throttled, or slow for everyone.

    Returns (the timeout rules decide) when the body had stopped arriving (a stall), when no
    rate was recorded, or when the rate is not low enough to call it throttling.
    """
    transfer = _transfer(final)
    if transfer is None:
        return
    http_ev["transfer"] = transfer
    if not transfer["flowing"]:
        http_ev["transfer"]["note"] = "the body had stopped arriving: a stall, not throttling"
        return
    rate = transfer["rate"]
    control_rate = _control_rate(view) if c is not None else None
    if c is None or not c.http_present:
        raise _Outcome(
            "unknown",
            0.0,
            http=http_ev,
            reason="HTTP timed out while the body still arrived (a slow or throttled "
            "transfer); no control to tell which",
        )
    if c.http_failure and c.http_failure != "generic_timeout_error":
        return  # the control failed otherwise: down, below
    throttle: dict[str, Any] = {"rate": rate, "control_rate": control_rate}
    if c.http_failure or (
        control_rate is not None and rate * THROTTLE_CONTROL_RATIO > control_rate
    ):
        # The control's fetch was cut by its own budget too, or saw a comparable rate.
        # OONI counts the probe's timeout as http-failure: explained by _reconcile
        # (OONI_DIFFERS["slow-for-everyone"]).
        raise _Outcome(
            "ok",
            0.6,
            http=http_ev,
            throttle=throttle,
            reason="the site is slow for everyone: the control's fetch was as slow"
            + (" and timed out too" if c.http_failure else ""),
        )
    if control_rate is not None:
        if rate < THROTTLE_CEILING:
            throttle["rule"] = (
                f"rate at most 1/{THROTTLE_CONTROL_RATIO:g} of the control's and under "
                f"{THROTTLE_CEILING} B/s"
            )
            raise _Outcome("http/throttled", 0.85, http=http_ev, throttle=throttle)
        return
    if rate < THROTTLE_FLOOR:
        throttle["rule"] = f"under {THROTTLE_FLOOR} B/s; the control fetched the page"
        raise _Outcome("http/throttled", 0.8, http=http_ev, throttle=throttle)


def _transfer(x: Exchange) -> dict[str, Any] | None:
    """The probe's measured rate of a cut body and whether bytes still arrived at the cut.

    From ``x_body_transfer`` (sustained rate, else mean); older netvigil files have only
    ``x_body_rate``: then a partial body counts as still arriving, as it was judged then.
    """
    raw = r.d(x.raw.get("x_body_transfer"))
    if raw:
        received = r.integer(raw.get("bytes")) or 0
        duration = _finite(raw.get("duration")) or 0.0
        idle = _finite(raw.get("idle_at_end"))
        rate = _finite(raw.get("sustained_rate"))
        if rate is None:
            rate = _finite(raw.get("mean_rate"))
        if rate is None or received <= 0:
            return None
        flowing = (
            duration >= MIN_RATE_SECONDS
            and idle is not None
            and idle <= max(STALL_SECONDS, duration / 2)
        )
        return {
            "rate": round(rate, 1),
            "bytes": received,
            "duration": duration,
            "idle_at_end": idle,
            "flowing": flowing,
        }
    rate = _body_rate(x)
    if rate is None or x.body_length <= 0:
        return None
    return {"rate": round(rate, 1), "bytes": x.body_length, "flowing": True}


def _control_rate(view: View) -> float | None:
    """``x_body_rate`` of the control's fetch (netvigil's helper records it), if positive."""
    http = r.d(r.d(view.tk.get("control")).get("http_request"))
    rate = _finite(http.get("x_body_rate"))
    return rate if rate is not None and rate > 0 else None


def _finite(value: Any) -> float | None:
    """A finite number ≥ 0, else None (hostile files carry NaN, infinities, negatives)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and not 0 <= value <= 2**53:  # float() of 10**400 raises
        return None
    n = float(value)
    return n if math.isfinite(n) and n >= 0 else None


def _body_rate(x: Exchange) -> float | None:
    for source in (x.raw, r.d(x.raw.get("response"))):
        rate = _finite(source.get("x_body_rate"))
        if rate is not None:
            return rate
    return None


_HOP_TLS = {"connection_reset": "tls/reset", "eof_error": "tls/reset"}
_HOP_HTTP = {"connection_reset": "http/reset", "generic_timeout_error": "http/timeout"}


def _judge_hop(view: View, hop: HopFailure, c: Control | None) -> None:
    """A step failed after a successful redirect: the chain never reached its page."""
    ev: dict[str, Any] = {
        "redirect_hop": {
            "step": hop.step,
            "failure": hop.failure,
            "depth": hop.depth,
            "where": hop.where,
            "control": hop.control,
        },
        "redirects": [x.url for x in reversed(view.requests)],
    }
    if c is None:
        raise _Outcome("unknown", 0.0, reason="a redirect hop failed; no control", **ev)
    if hop.control:
        raise _Outcome("down", 0.7, reason="the control failed at the same step", **ev)
    if hop.step == "dns":
        if hop.failure in NXDOMAIN_FAILURES or hop.failure == "dns_no_answer":
            outcome = "dns/nxdomain"
        elif hop.failure == "generic_timeout_error":
            outcome = "dns/timeout"
        else:
            outcome = "dns/bogus"
    elif hop.step == "tcp":
        outcome = _TCP.get(hop.failure, "tcp/timeout")
    elif hop.step == "tls":
        outcome = _HOP_TLS.get(hop.failure) or (
            "tls/timeout" if hop.failure == "generic_timeout_error" else "tls/failure"
        )
    else:
        outcome = _HOP_HTTP.get(hop.failure, "http/failure")
    if not c.http_ok:
        # OONI's classic engine counts it as blocking all the same; say what we know
        ev["note"] = "the control's own fetch of the page failed too"
        raise _Outcome(outcome, 0.5, **ev)
    raise _Outcome(outcome, 0.8 if hop.control == "" else 0.7, **ev)


def _ooni_differs_case(ooni: OONIResult, outcome: str, evidence: dict[str, Any]) -> str | None:
    """Which of OONI's rules forces a pair ALLOWED_PAIRS does not list (None: none does)."""
    base = outcome.split(":", 1)[0]
    blocking = ooni.blocking
    if blocking is None:
        return "ooni-null"
    if blocking == "dns" and ooni.dns_consistency == "inconsistent":
        return "dns-overrides"
    if blocking is False and base in ("http/blockpage", "dns/blockpage"):
        return "fingerprint"
    if base == "tls/interception":
        found = evidence.get("interception")
        if isinstance(found, dict):
            known = found.get("known_root")
            copied = found.get("copied") or {}
            if (isinstance(known, dict) and known.get("proven") is True) or copied.get(
                "key_differs"
            ) is True:
                return "interception-evidence"
    if base == "captive-portal" and blocking == "http-failure":
        return "captive-portal"
    certificates = evidence.get("certificates")
    if (
        base in ("down", "unknown")
        and blocking == "http-failure"
        and isinstance(certificates, dict)
        and (certificates.get("copied") or {}).get("key_differs") is False
    ):
        return "site-certificate"
    if base == "unknown" and ooni.rule.startswith("HTTP failed") and "unknown_failure" in ooni.rule:
        return "probe-error"
    if base == "ok" and blocking == "http-failure" and isinstance(evidence.get("throttle"), dict):
        return "slow-for-everyone"
    if blocking is False and ooni.engine == "v0.5-orig" and "redirect_hop" in evidence:
        return "redirect-hop"
    return None


def _reconcile(
    view: View, ooni: OONIResult, outcome: str, confidence: float, evidence: dict[str, Any]
) -> tuple[str, float]:
    """Hold the outcome and OONI's blocking to one judgement: an allowed pair, a pair OONI's
    own logic forces (explained in ``evidence["ooni_differs"]``), or else OONI's decision."""
    if pair_allowed(outcome, ooni.blocking):
        return outcome, confidence
    case = _ooni_differs_case(ooni, outcome, evidence)
    if case is not None:
        evidence["ooni_differs"] = {
            "case": case,
            "reason": OONI_DIFFERS[case],
            "ooni_blocking": ooni.blocking,
            "ooni_rule": ooni.rule,
        }
        return outcome, confidence
    followed = _outcome_from_ooni(view, ooni)
    evidence["stage_outcome"] = outcome
    evidence["followed_ooni"] = (
        f"the stage walk said {outcome}, which OONI's rule ({ooni.rule}) contradicts with no "
        f"evidence of ours to outweigh it: {followed}"
    )
    return followed, min(confidence, 0.5)


def _outcome_from_ooni(view: View, ooni: OONIResult) -> str:
    blocking = ooni.blocking
    if blocking is None:
        return "unknown"
    if blocking is False:
        return "ok" if ooni.accessible is not False else "down"
    if blocking == "dns":
        failure = view.dns_failure()
        if failure in NXDOMAIN_FAILURES or failure == "dns_no_answer":
            return "dns/nxdomain"
        if failure == "generic_timeout_error":
            return "dns/timeout"
        if any(r.is_bogon(a) for a in view.probe_addrs_view()):
            return "dns/bogon"
        return "dns/bogus"
    if blocking == "tcp_ip":
        failure = next((x.failure for x in view.connects if x.failure), "") or ""
        return _TCP.get(failure, "tcp/timeout")
    if blocking == "http-failure":
        failed = next((h for h in view.handshakes if h.failure), None)
        final = view.requests[0] if view.requests else None
        if final is not None and final.failure:
            return _HOP_HTTP.get(final.failure, "http/failure")
        if failed is not None and failed.failure:
            return _HOP_TLS.get(failed.failure) or (
                "tls/timeout" if failed.failure == "generic_timeout_error" else "tls/failure"
            )
        return "http/failure"
    return "http/diff"
