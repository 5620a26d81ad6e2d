"""The facebook_messenger experiment (OONI ts-019-facebook-messenger; probe-cli 0.2.1).

A DNS lookup of stun.fbsbx.com and TCP connects on port 443 to six service names. For each
service ``<key>``, OONI's keys:

- ``facebook_<key>_dns_consistent``: false when the lookup failed or an answer lies outside
  Facebook's network (AS32934: the prefix list of the endpoints' data file), else true.
- ``facebook_<key>_reachable``: null when the DNS was not consistent (nothing to judge), false
  when the connect failed, else true; always null for ``stun`` (a UDP service).
- ``facebook_dns_blocking`` / ``facebook_tcp_blocking``: true when any service's DNS was
  inconsistent / any consistent service's connect failed.
"""

from __future__ import annotations

from typing import Any

from netvigil.experiments.im import CONNECT, RESOLVE, MessagingExperiment, TargetResult
from netvigil.experiments.im_endpoints import AppEndpoints

# The order OONI's struct writes its keys in.
SERVICE_KEYS = ("b_api", "b_graph", "edge", "external_cdn", "scontent_cdn", "star", "stun")


def facebook_keys(results: list[TargetResult], network: AppEndpoints) -> dict[str, Any]:
    consistent: dict[str, bool | None] = dict.fromkeys(SERVICE_KEYS)
    reachable: dict[str, bool | None] = dict.fromkeys(SERVICE_KEYS)
    dns_blocking: bool | None = None
    tcp_blocking: bool | None = None
    for result in results:
        key = result.endpoint.key
        if key not in consistent:
            continue
        answers = [a for q in result.queries for a in q.addresses]
        if result.failed_operation == RESOLVE or not all(network.in_network(a) for a in answers):
            consistent[key] = False
            dns_blocking = True
            continue
        consistent[key] = True
        if result.endpoint.kind != "tcp":
            continue  # STUN: only its DNS is judged
        if result.failed_operation == CONNECT:
            reachable[key] = False
            tcp_blocking = True
        else:
            reachable[key] = True
    keys: dict[str, Any] = {}
    for key in SERVICE_KEYS:
        keys[f"facebook_{key}_dns_consistent"] = consistent[key]
        keys[f"facebook_{key}_reachable"] = reachable[key]
    keys["facebook_dns_blocking"] = bool(dns_blocking)
    keys["facebook_tcp_blocking"] = bool(tcp_blocking)
    return keys


class FacebookMessenger(MessagingExperiment):
    APP = "facebook_messenger"

    def app_keys(self, results: list[TargetResult]) -> dict[str, Any]:
        return facebook_keys(results, self.endpoints)
