"""The telegram experiment (OONI ts-020-telegram; probe-cli ``telegram`` 0.3.1).

Telegram Web over HTTPS, and each data centre (DC) address by a plain-HTTP POST on ports 80 and
443. OONI's keys:

- ``telegram_tcp_blocking``: no DC POST succeeded and every one failed at TCP connect.
- ``telegram_http_blocking``: no DC POST succeeded (any HTTP response counts as success).
- ``telegram_web_status`` / ``telegram_web_failure``: "blocked" and the failure when the web
  front-end's fetch failed (at any step), else "ok" and null.
"""

from __future__ import annotations

from typing import Any

from netvigil.experiments.im import CONNECT, MessagingExperiment, TargetResult


def telegram_keys(results: list[TargetResult]) -> dict[str, Any]:
    tcp_blocking = http_blocking = True
    web_failure: str | None = None
    for result in results:
        if result.endpoint.method != "GET":  # a data centre
            if result.failure is None:
                tcp_blocking = http_blocking = False
            elif result.failed_operation != CONNECT:
                tcp_blocking = False
        elif result.failure is not None:
            web_failure = result.failure
    return {
        "telegram_http_blocking": http_blocking,
        "telegram_tcp_blocking": tcp_blocking,
        "telegram_web_failure": web_failure,
        "telegram_web_status": "blocked" if web_failure is not None else "ok",
    }


class Telegram(MessagingExperiment):
    APP = "telegram"

    def app_keys(self, results: list[TargetResult]) -> dict[str, Any]:
        return telegram_keys(results)
