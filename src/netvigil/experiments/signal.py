"""The signal experiment (OONI ts-029-signal; probe-cli ``signal`` 0.2.5).

HTTPS GETs of four Signal services, the chains verified against the usual roots plus Signal's
own (pinned) CAs, and a DNS lookup of uptime.signal.org whose result OONI ignores. OONI's keys:
``signal_backend_status`` "blocked" with ``signal_backend_failure`` the failure of a failed
service (the last one, in the list's order) when any of the four failed, else "ok" and null.
"""

from __future__ import annotations

from typing import Any

from netvigil.experiments.im import MessagingExperiment, TargetResult


def signal_keys(results: list[TargetResult]) -> dict[str, Any]:
    failure: str | None = None
    for result in results:
        if result.endpoint.ignored:
            continue
        if result.failure is not None:
            failure = result.failure
    return {
        "signal_backend_failure": failure,
        "signal_backend_status": "blocked" if failure is not None else "ok",
    }


class Signal(MessagingExperiment):
    APP = "signal"

    def app_keys(self, results: list[TargetResult]) -> dict[str, Any]:
        return signal_keys(results)
