"""The messaging-app experiments inside the testbed: a profile with ``messaging_apps`` and rules
naming endpoints (host names, real IP literals); what the probe measures equals the truth.

The probe runs from `client` with the testbed's endpoint override file (published with the
plan): the apps' IP literals are dialled at their testbed addresses, never at the real ones.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningTestbed, needs_testbed
from netvigil.experiments.im_endpoints import load_overrides
from netvigil.experiments.im_suite import measure_app
from netvigil.measure import probe_config
from netvigil.testbed import control
from netvigil.testbed.messaging import OVERRIDE_FILE
from netvigil.testbed.plan import ISP_RESOLVER, Plan
from netvigil.testbed.truth import messaging_truth

pytestmark = [needs_testbed, pytest.mark.testbed]

DCS = ["149.154.175.50", "149.154.167.51", "149.154.175.100", "149.154.167.91", "149.154.171.5"]
PROFILE = f"""
name = "im-test"
description = "messaging apps, each blocked a different way"
domains = ["news.example"]
messaging_apps = ["telegram", "whatsapp", "signal", "facebook_messenger"]

# Telegram: five data centres refused at TCP, the sixth reset by the DPI on its HTTP
# (on port 80 and on plain-HTTP 443): HTTP blocking without TCP blocking; the web app's TLS reset.
[[rule]]
action = "ip-reject"
domain = {DCS!r}

[[rule]]
action = "http-reset"
domain = ["95.161.76.100"]

[[rule]]
action = "tls-reset"
domain = ["web.telegram.org", "chat.signal.org"]

# WhatsApp: registration by DNS, e1 on both of its ports (443 and 5222) at TCP.
[[rule]]
action = "dns-nxdomain"
domain = ["v.whatsapp.net"]

[[rule]]
action = "ip-reject"
domain = ["e1.whatsapp.net", "edge-mqtt.facebook.com"]

# Facebook: a lying resolver for b-api (answers outside Facebook's network).
[[rule]]
action = "dns-bogus"
domain = ["b-api.facebook.com"]

# The ISP's blockpage address for WhatsApp Web (its self-signed certificate) and for e2 (which
# then accepts on 443 but refuses 5222: one port only, e2 is not "blocked" by OONI's rule).
[[rule]]
action = "dns-blockpage"
domain = ["web.whatsapp.com", "e2.whatsapp.net"]

# Interception: Signal's storage (a chain the probe does not trust, whatever it pins), and a
# TCP-only Facebook endpoint (nothing to intercept: OONI only connects).
[[national_root]]
id = "qaznet"
subject = {{ C = "KZ", CN = "Qaznet Trust Network" }}
intermediate = {{ C = "KZ", CN = "Security Certificate" }}
root_key = "ec-p256"

[[rule]]
action = "tls-intercept"
domain = ["storage.signal.org", "star.c10r.facebook.com"]
root = "qaznet"
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("im-profile") / "im-test.toml"
    path.write_text(PROFILE)
    info = control.up(str(path), name=f"pytest-{os.getpid()}-im")
    running = RunningTestbed(info)
    yield running
    running.close()


def test_messaging_measurements_equal_the_truth(bed: RunningTestbed) -> None:
    public = Path(bed.info.public_dir)
    plan = Plan.load(public)
    overrides = load_overrides(public / OVERRIDE_FILE)
    for dc in DCS:  # every IP literal goes to its testbed address
        assert overrides.dial(dc, 80)[0].startswith("198.19.")
    config = probe_config(
        ca_bundle=str(bed.info.trust_anchor), resolver=ISP_RESOLVER, no_doh=True, timeout=4.0
    )

    def job() -> list[dict[str, Any]]:
        async def all_apps() -> list[dict[str, Any]]:
            return list(
                await asyncio.gather(
                    *(
                        measure_app(app, config, overrides, verdict=False)
                        for app in plan.messaging_apps
                    )
                )
            )

        return asyncio.run(all_apps())

    measurements = bed.in_client(job, timeout=240)
    assert isinstance(measurements, list)
    by_app = {m["test_name"]: m for m in measurements}
    problems: list[str] = []
    for truth in messaging_truth(plan):
        test_keys = by_app[truth.app]["test_keys"]
        for key, expected in truth.ooni_keys.items():
            if test_keys.get(key) != expected:
                problems.append(f"{truth.app}: {key} = {test_keys.get(key)!r}, truth {expected!r}")
        measured = {e["endpoint"]: e for e in test_keys["x_endpoints"]}
        for row in truth.endpoints:
            got = measured[row.endpoint]
            if (got["failure"], got["failed_operation"]) != (row.failure, row.failed_operation):
                problems.append(
                    f"{truth.app} {row.endpoint}: measured {got['failure']}/"
                    f"{got['failed_operation']}, truth {row.failure}/{row.failed_operation} "
                    f"({row.outcome})"
                )
        for entry in test_keys["tcp_connect"]:  # never a real address
            assert entry["ip"].startswith(("198.18.", "198.19.", "127.")), entry
    assert not problems, "\n".join(problems)
    # the truth itself says what the profile meant
    truths = {t.app: t for t in messaging_truth(plan)}
    assert truths["telegram"].ooni_keys["telegram_tcp_blocking"] is False
    assert truths["telegram"].ooni_keys["telegram_http_blocking"] is True
    assert truths["whatsapp"].ooni_keys["whatsapp_endpoints_blocked"] == ["e1.whatsapp.net"]
    assert truths["signal"].ooni_keys["signal_backend_failure"] == "ssl_unknown_authority"
    assert truths["whatsapp"].ooni_keys["whatsapp_web_failure"] == "ssl_invalid_hostname"
    assert truths["facebook_messenger"].ooni_keys["facebook_star_reachable"] is True
    assert truths["facebook_messenger"].ooni_keys["facebook_dns_blocking"] is True
    assert truths["facebook_messenger"].ooni_keys["facebook_tcp_blocking"] is True


def test_measure_suite_im_inside_testbed_run(tmp_path: Path) -> None:
    """As a user runs it: `testbed run -- netvigil measure --suite im -o FILE` finds the
    testbed's endpoint map by itself, and the file's keys equal the truth."""
    import json
    import subprocess
    import sys

    profile = tmp_path / "im-test.toml"
    profile.write_text(PROFILE)
    out = tmp_path / "im.jsonl"
    netvigil = str(Path(sys.executable).parent / "netvigil")
    measure = ["netvigil", "measure", "--suite", "im", "--no-progress", "--timeout", "4"]
    done = subprocess.run(
        [netvigil, "testbed", "run", "-p", str(profile), "--", *measure, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 messaging apps measured" in done.stdout
    measurements = [json.loads(line) for line in out.read_text().splitlines()]
    from netvigil.testbed.plan import make_plan
    from netvigil.testbed.profile import load_profile

    # the plan is deterministic: the same profile gives the same addresses and truth
    truths = {t.app: t for t in messaging_truth(make_plan(load_profile(str(profile))))}
    for m in measurements:
        truth = truths[m["test_name"]]
        got = {k: m["test_keys"].get(k) for k in truth.ooni_keys}
        assert got == truth.ooni_keys, m["test_name"]
        assert m["annotations"]["netvigil_testbed"] == "im-test"
