"""The messaging-app experiments by name, and running them as ``measure --suite im`` does."""

from __future__ import annotations

import asyncio
from typing import Any

from netvigil.experiments.facebook_messenger import FacebookMessenger
from netvigil.experiments.im import MessagingExperiment
from netvigil.experiments.im_endpoints import APPS, Overrides
from netvigil.experiments.signal import Signal
from netvigil.experiments.telegram import Telegram
from netvigil.experiments.web_connectivity import ProbeConfig
from netvigil.experiments.whatsapp import WhatsApp

__all__ = ["EXPERIMENTS", "measure_app", "with_verdict"]

EXPERIMENTS: dict[str, type[MessagingExperiment]] = {
    "telegram": Telegram,
    "whatsapp": WhatsApp,
    "signal": Signal,
    "facebook_messenger": FacebookMessenger,
}
assert tuple(EXPERIMENTS) == APPS


async def with_verdict(measurement: dict[str, Any]) -> dict[str, Any]:
    """Add ``x_netvigil_verdict`` as web_connectivity does (the engine runs in a thread: it may
    load its databases on first use)."""
    from netvigil.verdict import analyze

    verdict = await asyncio.to_thread(analyze, measurement)
    measurement["test_keys"]["x_netvigil_verdict"] = verdict.to_dict()
    return measurement


async def measure_app(
    app: str,
    config: ProbeConfig,
    overrides: Overrides | None = None,
    *,
    report_id: str | None = None,
    verdict: bool = True,
) -> dict[str, Any]:
    """One app's measurement, with the verdict engine's verdict unless ``verdict=False``."""
    experiment = EXPERIMENTS[app](config, overrides, report_id=report_id)
    measurement = await experiment.measure()
    return await with_verdict(measurement) if verdict else measurement
