"""The whatsapp experiment (OONI ts-018-whatsapp; probe-cli ``whatsapp`` 0.11.0).

TCP connects to e1..e16.whatsapp.net on ports 443 and 5222, an HTTPS GET of the registration
service and of WhatsApp Web (any HTTP status counts as success). OONI's keys:

- ``whatsapp_endpoints_status``: "ok" when at least one endpoint connect succeeded, else
  "blocked"; ``whatsapp_endpoints_blocked``: the host names whose connects failed on both
  ports; ``whatsapp_endpoints_dns_inconsistent``: always empty (OONI no longer checks it).
- ``registration_server_status`` / ``registration_server_failure`` and ``whatsapp_web_status`` /
  ``whatsapp_web_failure``: "ok"/null, or "blocked" and the failure.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from netvigil.experiments.im import MessagingExperiment, TargetResult

REGISTRATION_ID = "registration"
WEB_ID = "web"
NOT_MEASURED = "unknown_failure"  # OONI's value before a target has a result


def whatsapp_keys(results: list[TargetResult]) -> dict[str, Any]:
    endpoints_ok = False
    failures: Counter[str] = Counter()
    blocked: list[str] = []
    registration: str | None = NOT_MEASURED
    web: str | None = NOT_MEASURED
    for result in results:
        endpoint = result.endpoint
        if endpoint.kind == "tcp":
            if result.failure is None:
                endpoints_ok = True
                continue
            failures[endpoint.host] += 1
            if failures[endpoint.host] == 2:  # both ports of the host failed
                blocked.append(endpoint.host)
        elif endpoint.id == REGISTRATION_ID:
            registration = result.failure
        elif endpoint.id == WEB_ID:
            web = result.failure
    return {
        "registration_server_failure": registration,
        "registration_server_status": "ok" if registration is None else "blocked",
        "whatsapp_endpoints_blocked": blocked,
        "whatsapp_endpoints_dns_inconsistent": [],
        "whatsapp_endpoints_status": "ok" if endpoints_ok else "blocked",
        "whatsapp_web_failure": web,
        "whatsapp_web_status": "ok" if web is None else "blocked",
    }


class WhatsApp(MessagingExperiment):
    APP = "whatsapp"

    def app_keys(self, results: list[TargetResult]) -> dict[str, Any]:
        return whatsapp_keys(results)
