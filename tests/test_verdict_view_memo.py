"""The view's memo (main queries, probe addresses, DNS failure) follows what it is computed from."""

from __future__ import annotations

from netvigil.verdict._view import Query, parse


def test_view_memo_follows_the_queries() -> None:
    view = parse(
        {
            "input": "http://example.org/",
            "test_keys": {
                "dns_experiment_failure": None,
                "queries": [
                    {"hostname": "example.org", "engine": "udp", "answers": [{"ipv4": "1.2.3.4"}]}
                ],
            },
        }
    )
    first = view.main_queries()
    first.clear()  # a copy: the view's own is unchanged
    assert [q.hostname for q in view.main_queries()] == ["example.org"]
    assert view.probe_addrs() == ["1.2.3.4"]
    assert view.dns_failure() is None
    view.queries.append(Query("example.org", "A", "udp", None, ["5.6.7.8"], []))
    assert view.probe_addrs() == ["1.2.3.4", "5.6.7.8"]
    view.queries = [Query("example.org", "A", "udp", "dns_nxdomain_error", [], [])]
    assert view.probe_addrs() == []
    assert view.dns_failure() == "dns_nxdomain_error"
    # the queries decide; the measurement's own dns_experiment_failure (an analysis result in
    # OONI 0.5.27+) only stands in when no query for the host was recorded (old probes)
    view.tk = {"dns_experiment_failure": "generic_timeout_error"}
    assert view.dns_failure() == "dns_nxdomain_error"
    view.queries = []
    assert view.dns_failure() == "generic_timeout_error"
    view.test_version = "0.5.28"  # from 0.5 on it is an analysis output: never read
    view.tk = {"dns_experiment_failure": "generic_timeout_error"}
    assert view.dns_failure() is None
