"""``netvigil measure --suite im|all``: the messaging-app experiments, as ``measure`` runs them.

Each app is one measurement (OONI's telegram, whatsapp, signal, facebook_messenger), written to
the output file the moment it is done and counted in the same progress bar and summary as the
websites. Inside the testbed the endpoint override file is mandatory: the apps' IP literals are
real addresses, and the probe must never dial them from there.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import IO, Any

from rich.progress import Progress

from netvigil.experiments.im_endpoints import APPS, EndpointError, Overrides, load_overrides
from netvigil.experiments.web_connectivity import ProbeConfig

SUITES = ("web", "im", "all")
OVERRIDE_ENV = "NETVIGIL_IM_ENDPOINTS"  # set by the testbed: <state>/im-endpoints.toml


class SuiteError(ValueError):
    """Why the messaging suite cannot run here, as one line."""


def im_overrides(config: ProbeConfig, path: str | None = None) -> Overrides:
    """The override file to use: ``path`` (``--im-endpoints``), else the config's, else the
    testbed's; none on a real network. Inside the testbed one is required."""
    chosen = path or config.im_endpoints or None
    if chosen is None and os.environ.get("NETVIGIL_TESTBED") == "1":
        chosen = os.environ.get(OVERRIDE_ENV)
        if not chosen:
            raise SuiteError(
                f"inside the testbed the messaging suite needs the testbed's endpoint map "
                f"(${OVERRIDE_ENV}): the apps' real addresses must never be dialled from here"
            )
    if chosen is None:
        return Overrides()
    try:
        return load_overrides(chosen)
    except EndpointError as exc:
        raise SuiteError(str(exc)) from None


async def run_im(
    config: ProbeConfig,
    overrides: Overrides,
    *,
    apps: tuple[str, ...] = APPS,
    output: IO[str] | None = None,
    progress: Progress | None = None,
    collected: list[dict[str, Any]] | None = None,
    verdicts: list[dict[str, Any]] | None = None,
    network: list[dict[str, Any] | None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every app (concurrently), writing each measurement when it is done; returns the
    verdicts (``x_netvigil_verdict``), also appended to ``verdicts`` when given, and each
    one's ``x_network_status`` (None: not checked) to ``network``.

    With the config's ``network_check`` the apps go through the same network watch as the
    websites (``measure.run_measurements``): an app that failed is written only once a check
    after it says whether the network itself was up, so a shutdown blames no app."""
    from netvigil.experiments.im_suite import measure_app
    from netvigil.measure import reverdict_after_check, watched_run
    from netvigil.netstatus import ONLINE, NetworkStatus

    found: list[dict[str, Any]] = [] if verdicts is None else verdicts
    task_id = (
        progress.add_task("messaging apps", total=len(apps), outcomes="") if progress else None
    )

    async def emit(measurement: dict[str, Any], status: NetworkStatus | None) -> None:
        if status is not None:
            measurement["test_keys"]["x_network_status"] = status.to_dict()
            if status.status != ONLINE:
                await reverdict_after_check(None, measurement)
        found.append(measurement["test_keys"]["x_netvigil_verdict"])
        if network is not None:
            network.append(status.to_dict() if status is not None else None)
        if output is not None:
            output.write(json.dumps(measurement, separators=(",", ":")) + "\n")
            output.flush()
        if collected is not None:
            collected.append(measurement)
        if progress is not None and task_id is not None:
            progress.update(task_id, advance=1, outcomes=measurement.get("test_name", ""))

    async with watched_run(config, emit) as run:

        async def one(app: str) -> None:
            before = run.begin()
            await run.done(await measure_app(app, config, overrides), before)

        await asyncio.gather(*(one(app) for app in apps))
    return found
