"""OONI's classic engine (web_connectivity 0.5.27+) rule by rule, on hand-built measurements.

Each measurement is shaped like probe-cli's (transaction ids, ``depth=``/``fetch_body=`` tags,
getaddrinfo plus UDP and DoH lookups) and carries no verdict keys. Expected values are what
``webconnectivitylte/analysisclassic.go`` and ``internal/minipipeline`` decide (docs/verdict.md
§1): only observations derived from the system resolver (getaddrinfo) count.
"""

from __future__ import annotations

from typing import Any

import pytest

from netvigil.verdict import analyze
from netvigil.verdict.model import pair_allowed

REAL = "93.184.216.34"
OTHER = "203.0.113.77"  # where a lying resolver points
TAGS = ["classic", "depth=0", "fetch_body=true"]


class Lte:
    """A web_connectivity 0.5.28 measurement built event by event."""

    def __init__(self, url: str = "https://www.example.com/", version: str = "0.5.28") -> None:
        self.url = url
        self.host = url.split("/")[2]
        self.version = version
        self.txid = 0
        self.tk: dict[str, Any] = {
            "queries": [],
            "tcp_connect": [],
            "tls_handshakes": [],
            "requests": [],
            "control_failure": None,
            "control": None,
        }

    def _next(self) -> int:
        self.txid += 1
        return self.txid

    def lookup(
        self,
        engine: str,
        addrs: list[str],
        failure: str | None = None,
        host: str | None = None,
        depth: int = 0,
    ) -> Lte:
        answers = [
            {"answer_type": "AAAA" if ":" in a else "A", ("ipv6" if ":" in a else "ipv4"): a}
            for a in addrs
        ]
        self.tk["queries"].append(
            {
                "transaction_id": self._next(),
                "engine": engine,
                "hostname": host or self.host,
                "query_type": "ANY" if engine == "getaddrinfo" else "A",
                "failure": failure,
                "answers": answers or None,
                "tags": ["classic", f"depth={depth}"]
                if engine == "getaddrinfo"
                else [f"depth={depth}"],
            }
        )
        return self

    def fetch(
        self,
        ip: str,
        url: str | None = None,
        tcp: str | None = None,
        tls: str | None = None,
        http: str | None = None,
        status: int = 200,
        body: str = "<html><title>Example Domain</title>" + "x" * 1200 + "</html>",
        headers: dict[str, str] | None = None,
        depth: int = 0,
    ) -> Lte:
        url = url or self.url
        https = url.startswith("https")
        port = 443 if https else 80
        txid = self._next()
        tags = ["classic", f"depth={depth}", "fetch_body=true"]
        self.tk["tcp_connect"].append(
            {
                "transaction_id": txid,
                "ip": ip,
                "port": port,
                "status": {"success": tcp is None, "failure": tcp},
                "tags": tags,
            }
        )
        if tcp is not None:
            return self
        address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        if https:
            self.tk["tls_handshakes"].append(
                {
                    "transaction_id": txid,
                    "address": address,
                    "server_name": url.split("/")[2],
                    "failure": tls,
                    "tags": tags,
                }
            )
            if tls is not None:
                return self
        self.tk["requests"].insert(
            0,
            {
                "transaction_id": txid,
                "address": address,
                "failure": http,
                "request": {"url": url, "method": "GET", "headers": {}},
                "response": {
                    "code": 0 if http else status,
                    "body": "" if http else body,
                    "body_is_truncated": False,
                    "headers": headers if headers is not None else {"X-Site": "1"},
                },
                "tags": tags,
            },
        )
        return self

    def control(
        self,
        addrs: list[str] | None = None,
        dns_failure: str | None = None,
        tcp_ok: bool = True,
        tls_ok: bool = True,
        http_failure: str | None = None,
    ) -> Lte:
        addrs = [REAL] if addrs is None else addrs
        https = self.url.startswith("https")
        port = 443 if https else 80
        # the helper tests the input's own endpoints only, not a redirect's
        eps = [f"{a}:{port}" for a in addrs] + [
            f"{t['ip']}:{t['port']}"
            for t in self.tk["tcp_connect"]
            if t.get("port") == port and "depth=0" in t["tags"]
        ]
        self.tk["control"] = {
            "dns": {"failure": dns_failure, "addrs": addrs},
            "tcp_connect": {
                ep: {"status": tcp_ok, "failure": None if tcp_ok else "connection_refused"}
                for ep in eps
            },
            "tls_handshake": {
                ep: {
                    "server_name": self.host,
                    "status": tls_ok,
                    "failure": None if tls_ok else "ssl_invalid_certificate",
                }
                for ep in eps
            }
            if https
            else {},
            "http_request": {
                "failure": http_failure,
                "status_code": -1 if http_failure else 200,
                "body_length": -1 if http_failure else 1240,
                "title": "Example Domain",
                "headers": {"X-Site": "1"},
            },
            "ip_info": {},
        }
        return self

    def failed_control(self) -> Lte:
        self.tk["control"] = None
        self.tk["control_failure"] = "generic_timeout_error"
        return self

    def m(self) -> dict[str, Any]:
        return {
            "test_name": "web_connectivity",
            "test_version": self.version,
            "input": self.url,
            "test_keys": self.tk,
        }


def verdict(b: Lte) -> Any:
    v = analyze(b.m())
    assert pair_allowed(v.outcome, v.blocking) or "ooni_differs" in v.evidence, v
    return v


@pytest.mark.parametrize("failure", ["dns_nxdomain_error", "android_dns_cache_no_data"])
def test_system_resolver_failure_is_not_rescued_by_udp_or_doh(failure: str) -> None:
    b = Lte().lookup("getaddrinfo", [], failure).lookup("udp", [REAL]).lookup("doh", [REAL])
    v = verdict(b.fetch(REAL).control())
    assert (v.blocking, v.accessible, v.dns_consistency) == ("dns", False, "inconsistent")
    assert v.outcome == "dns/nxdomain"


@pytest.mark.parametrize("lie", ["10.10.34.36", "127.0.0.1"])
def test_bogon_or_loopback_answer_is_dns_blocking(lie: str) -> None:
    b = Lte().lookup("getaddrinfo", [lie]).lookup("udp", [REAL])
    if lie != "127.0.0.1":  # the probe tries every address but loopback ones
        b.fetch(lie, tcp="generic_timeout_error")
    b.fetch(REAL).control()
    v = verdict(b)
    assert (v.blocking, v.accessible) == ("dns", False)
    assert v.outcome == "dns/bogon"


def test_answer_to_a_server_without_a_valid_certificate() -> None:
    b = (
        Lte()
        .lookup("getaddrinfo", [OTHER])
        .lookup("udp", [REAL])
        .fetch(OTHER, tls="ssl_unknown_authority")
        .fetch(REAL)
        .control()
    )
    v = verdict(b)
    assert (v.blocking, v.accessible, v.dns_consistency) == ("dns", False, "inconsistent")


def test_inconsistent_dns_then_refused_connection() -> None:
    b = Lte().lookup("getaddrinfo", [OTHER]).fetch(OTHER, tcp="connection_refused").control()
    v = verdict(b)
    assert (v.blocking, v.accessible) == ("dns", False)


@pytest.mark.parametrize(("answer", "blocking"), [(REAL, "http-failure"), (OTHER, "dns")])
def test_tls_reset(answer: str, blocking: str) -> None:
    b = Lte().lookup("getaddrinfo", [answer]).fetch(answer, tls="connection_reset").control()
    v = verdict(b)
    assert (v.blocking, v.accessible) == (blocking, False)
    if blocking == "http-failure":
        assert v.outcome == "tls/reset"


@pytest.mark.parametrize(("answer", "blocking"), [(REAL, "http-diff"), (OTHER, "dns")])
def test_http_diff(answer: str, blocking: str) -> None:
    page = "<html><title>Access denied by order</title>blocked</html>"
    b = Lte("http://www.example.com/").lookup("getaddrinfo", [answer])
    v = verdict(b.fetch(answer, body=page, status=403, headers={}).control())
    assert (v.blocking, v.accessible) == (blocking, False)


def test_fetch_through_an_udp_only_address_does_not_rescue_an_http_diff() -> None:
    page = "<html><title>Access denied by order</title>blocked</html>"
    b = (
        Lte("http://www.example.com/")
        .lookup("getaddrinfo", [OTHER])
        .lookup("udp", [REAL])
        .fetch(REAL)  # the real page, through the UDP answer: not what the user got
        .control()
    )
    b.tk["requests"].pop(0)
    b.fetch(OTHER, body=page, status=403, headers={})
    v = verdict(b)
    assert (v.blocking, v.accessible) == ("dns", False)


def test_redirect_whose_later_hop_fails_in_dns() -> None:
    b = (
        Lte("https://bit.example/x")
        .lookup("getaddrinfo", [REAL])
        .fetch(REAL, status=302, headers={"Location": "https://www.example.com/"})
        .lookup("getaddrinfo", [], "dns_nxdomain_error", host="www.example.com", depth=1)
        .control()
    )
    v = verdict(b)
    assert (v.blocking, v.accessible) == ("dns", False)
    assert v.outcome == "dns/nxdomain" and v.evidence["redirect_hop"]["depth"] == 1


def test_redirect_whose_later_hop_is_refused() -> None:
    b = (
        Lte("https://bit.example/x")
        .lookup("getaddrinfo", [REAL])
        .fetch(REAL, status=302, headers={"Location": "https://www.example.com/"})
        .lookup("getaddrinfo", [OTHER], host="www.example.com", depth=1)
        .fetch(OTHER, url="https://www.example.com/", tcp="connection_refused", depth=1)
        .control()
    )
    v = verdict(b)
    # no TCP control for a redirect's endpoint: OONI says http-failure
    assert (v.blocking, v.accessible) == ("http-failure", False)
    assert v.outcome == "tcp/reset"


def test_control_failure_while_the_https_fetch_succeeded() -> None:
    v = verdict(Lte().lookup("getaddrinfo", [REAL]).fetch(REAL).failed_control())
    assert (v.blocking, v.accessible) == (False, True)
    assert v.outcome == "ok"


def test_control_failure_with_plain_http_is_no_verdict() -> None:
    b = Lte("http://www.example.com/").lookup("getaddrinfo", [REAL]).fetch(REAL)
    v = verdict(b.failed_control())
    assert (v.blocking, v.accessible) == (None, None)


def test_input_on_localhost() -> None:
    b = Lte("http://localhost/").lookup("getaddrinfo", ["127.0.0.1"])
    v = verdict(b.control(addrs=["127.0.0.1"]))
    assert (v.blocking, v.accessible) == (False, False)
    assert v.outcome == "down"


@pytest.mark.parametrize(
    ("failure", "control_failure"),
    [("dns_no_answer", None), ("dns_nxdomain_error", "dns_name_error")],
)
def test_a_name_with_no_address_anywhere(failure: str, control_failure: str | None) -> None:
    b = Lte().lookup("getaddrinfo", [], failure)
    v = verdict(b.control(addrs=[], dns_failure=control_failure))
    assert (v.blocking, v.accessible) == (False, False)
    assert v.outcome == "down"


def test_both_failing_the_same_step_is_a_site_down() -> None:
    b = Lte().lookup("getaddrinfo", [REAL]).fetch(REAL, tls="ssl_invalid_certificate")
    v = verdict(b.control(tls_ok=False))
    assert (v.blocking, v.accessible) == (False, False)
    # 0.5.27 said null for a TLS failure the control saw too
    b.version = "0.5.27"
    v = verdict(b)
    assert (v.blocking, v.accessible) == (None, None)


def test_an_unlinked_round_trip_does_not_count() -> None:
    """minipipeline links a round trip to its endpoint by transaction id; OONI ignores one it
    cannot link, and so do we (the verdict does not come from keys the probe did not tie)."""
    b = Lte().lookup("getaddrinfo", [REAL]).fetch(REAL).control()
    b.tk["requests"][0]["transaction_id"] = 999
    v = verdict(b)
    # the handshake succeeded and nothing failed: no observation decides
    assert v.blocking is None
