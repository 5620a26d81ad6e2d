"""The messaging-app experiments against a loopback world (tests/im_world.py): OONI's keys for
each kind of blocking, hostile servers, and the shape of OONI's real measurements."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from im_world import World, assert_loopback
from netvigil.experiments.im_endpoints import (
    APPS,
    EndpointError,
    Overrides,
    load_app,
    load_overrides,
)
from netvigil.experiments.im_suite import EXPERIMENTS, measure_app

DATA = Path(__file__).parent / "data"
DCS = [e for e in load_app("telegram").endpoints if e.method == "POST"]


def run(app: str, world: World, *, verdict: bool = False) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        await world.start()
        try:
            assert world.config is not None
            return await measure_app(app, world.config, world.overrides(), verdict=verdict)
        finally:
            await world.stop()

    measurement = asyncio.run(go())
    assert_loopback(measurement)
    json.dumps(measurement)  # serialisable as it is written
    return measurement


def keys(measurement: dict[str, Any]) -> dict[str, Any]:
    lists = ("queries", "tcp_connect", "tls_handshakes", "requests", "network_events")
    return {
        k: v
        for k, v in measurement["test_keys"].items()
        if k not in lists and not k.startswith("x_")
    }


# -- data files -----------------------------------------------------------------------------------


def test_every_data_file_names_its_source_and_date() -> None:
    for app in APPS:
        endpoints = load_app(app)
        assert endpoints.source.startswith("https://github.com/ooni/probe-cli/blob/")
        assert endpoints.retrieved == "2026-12-07"
        assert endpoints.endpoints
    assert len(load_app("whatsapp").endpoints) == 34  # 16 hosts x 2 ports + 2 HTTPS
    assert len(DCS) == 12  # 6 DCs x ports 80 and 443
    assert load_app("signal").pinned_ca.count(b"BEGIN CERTIFICATE") == 2
    facebook = load_app("facebook_messenger")
    assert facebook.asn == 32934 and facebook.in_network("157.240.1.35")
    assert not facebook.in_network("198.18.0.1")


def test_override_file(tmp_path: Path) -> None:
    path = tmp_path / "o.toml"
    path.write_text(
        '[addresses]\n"149.154.175.50" = "198.18.40.1"\n"1.2.3.4:443" = "127.0.0.1:9"\n'
        '[facebook_messenger]\nasn_prefixes = ["198.19.0.0/16"]\n'
        '[signal]\npinned_ca = "PEM"\n'
    )
    overrides = load_overrides(path)
    assert overrides.dial("149.154.175.50", 443) == ("198.18.40.1", 443)
    assert overrides.dial("1.2.3.4", 443) == ("127.0.0.1", 9)
    assert overrides.dial("1.2.3.4", 80) == ("1.2.3.4", 80)
    assert load_app("facebook_messenger", overrides).in_network("198.19.3.4")
    assert load_app("signal", overrides).pinned_ca == b"PEM"
    for bad in ("[nope]\nx = 1\n", '[addresses]\n"a" = "b"\n', "not toml ["):
        path.write_text(bad)
        with pytest.raises(EndpointError):
            load_overrides(path)
    with pytest.raises(EndpointError):
        load_overrides(tmp_path / "missing.toml")


# -- all reachable --------------------------------------------------------------------------------


def test_telegram_all_reachable() -> None:
    m = run("telegram", World())
    assert keys(m) == {
        "agent": "redirect",
        "failed_operation": None,
        "failure": None,
        "telegram_http_blocking": False,
        "telegram_tcp_blocking": False,
        "telegram_web_failure": None,
        "telegram_web_status": "ok",
    }
    posts = [r for r in m["test_keys"]["requests"] if r["request"]["method"] == "POST"]
    assert len(posts) == 12 and all(r["response"]["code"] == 404 for r in posts)
    # the request names the real DC; the connect says where the probe really went
    assert {r["request"]["url"] for r in posts} == {e.url for e in DCS}
    assert m["test_name"] == "telegram" and m["test_version"] == "0.3.1"
    assert m["report_id"].split("_")[1] == "telegram"


def test_whatsapp_all_reachable() -> None:
    m = run("whatsapp", World())
    assert keys(m) == {
        "agent": "redirect",
        "failed_operation": None,
        "failure": None,
        "registration_server_failure": None,
        "registration_server_status": "ok",
        "whatsapp_endpoints_blocked": [],
        "whatsapp_endpoints_dns_inconsistent": [],
        "whatsapp_endpoints_status": "ok",
        "whatsapp_web_failure": None,
        "whatsapp_web_status": "ok",
    }
    assert len(m["test_keys"]["tcp_connect"]) == 34


def test_signal_all_reachable_needs_the_pinned_ca() -> None:
    m = run("signal", World())
    assert keys(m)["signal_backend_status"] == "ok"
    assert keys(m)["signal_backend_failure"] is None
    # uptime.signal.org is looked up (and ignored)
    assert "uptime.signal.org" in {q["hostname"] for q in m["test_keys"]["queries"]}
    # Without Signal's own CA the chains do not verify: what a wrong pin looks like.
    m = run("signal", World(pinned_override=False))
    assert keys(m)["signal_backend_status"] == "blocked"
    assert keys(m)["signal_backend_failure"] == "ssl_unknown_authority"


def test_facebook_all_reachable() -> None:
    m = run("facebook_messenger", World())
    k = keys(m)
    assert k["facebook_dns_blocking"] is False and k["facebook_tcp_blocking"] is False
    for key in ("b_api", "b_graph", "edge", "external_cdn", "scontent_cdn", "star"):
        assert k[f"facebook_{key}_dns_consistent"] is True
        assert k[f"facebook_{key}_reachable"] is True
    assert k["facebook_stun_dns_consistent"] is True and k["facebook_stun_reachable"] is None
    answers = [a for q in m["test_keys"]["queries"] for a in q["answers"] or ()]
    assert answers and all(a["asn"] == 32934 for a in answers)


# -- blocking -------------------------------------------------------------------------------------


def _engine_agrees(m: dict[str, Any], dc_outcome: str) -> None:
    """The verdict engine, reading the measurement as a stored file, recomputes the probe's own
    keys and puts every data centre at ``dc_outcome``'s stage — although the override made the
    probe dial loopback, not the literal its requests name (``x_endpoints`` says where)."""
    from netvigil.verdict import analyze

    verdict = analyze(m)
    for key in ("telegram_tcp_blocking", "telegram_http_blocking"):
        assert verdict.evidence["ooni"][key] == m["test_keys"][key], key
    dcs = [e for e in verdict.evidence["endpoints"] if e["kind"] == "http"]
    assert dcs and all(e["outcome"].startswith(dc_outcome) for e in dcs), dcs


def test_telegram_tcp_blocking_of_every_dc() -> None:
    world = World(behaviour={(e.host, e.port): "refused" for e in DCS})
    m = run("telegram", world)
    k = keys(m)
    assert k["telegram_tcp_blocking"] is True and k["telegram_http_blocking"] is True
    assert k["telegram_web_status"] == "ok"
    _engine_agrees(m, "tcp/")


def test_telegram_http_blocking_of_every_dc() -> None:
    world = World(behaviour={(e.host, e.port): "http-reset" for e in DCS})
    m = run("telegram", world)
    k = keys(m)
    assert k["telegram_tcp_blocking"] is False and k["telegram_http_blocking"] is True
    _engine_agrees(m, "http/")


def test_telegram_one_dc_left_is_no_blocking() -> None:
    world = World(behaviour={(e.host, e.port): "refused" for e in DCS[1:]})
    k = keys(run("telegram", world))
    assert k["telegram_tcp_blocking"] is False and k["telegram_http_blocking"] is False


def test_telegram_web_dns_and_tls_blocking() -> None:
    k = keys(run("telegram", World(dns={"web.telegram.org": "nxdomain"})))
    assert k["telegram_web_status"] == "blocked"
    assert k["telegram_web_failure"] == "dns_nxdomain_error"
    k = keys(run("telegram", World(behaviour={("web.telegram.org", 443): "reset"})))
    assert k["telegram_web_failure"] == "connection_reset"


def test_whatsapp_endpoint_blocking() -> None:
    hosts = [f"e{n}.whatsapp.net" for n in range(1, 17)]
    # e1 blocked on both ports, e2 on one: only e1 is listed; the others connect
    world = World(
        behaviour={
            ("e1.whatsapp.net", 443): "refused",
            ("e1.whatsapp.net", 5222): "refused",
            ("e2.whatsapp.net", 5222): "refused",
        }
    )
    k = keys(run("whatsapp", world))
    assert k["whatsapp_endpoints_blocked"] == ["e1.whatsapp.net"]
    assert k["whatsapp_endpoints_status"] == "ok"
    # every endpoint blocked (DNS for some, TCP for the rest)
    behaviour = {(h, p): "refused" for h in hosts[8:] for p in (443, 5222)}
    world = World(dns=dict.fromkeys(hosts[:8], "nxdomain"), behaviour=behaviour)
    k = keys(run("whatsapp", world))
    assert k["whatsapp_endpoints_status"] == "blocked"
    assert k["whatsapp_endpoints_blocked"] == hosts


def test_whatsapp_registration_and_web_blocking() -> None:
    world = World(
        behaviour={("v.whatsapp.net", 443): "garbage", ("web.whatsapp.com", 443): "http-reset"}
    )
    k = keys(run("whatsapp", world))
    assert k["registration_server_status"] == "blocked"
    assert k["registration_server_failure"] in ("ssl_failed_handshake", "connection_reset")
    assert k["whatsapp_web_status"] == "blocked"
    assert k["whatsapp_web_failure"] in ("connection_reset", "eof_error")


def test_signal_dns_blocking() -> None:
    m = run("signal", World(dns={"chat.signal.org": "nxdomain"}))
    assert keys(m)["signal_backend_status"] == "blocked"
    assert keys(m)["signal_backend_failure"] == "dns_nxdomain_error"
    ends = {e["endpoint"]: e for e in m["test_keys"]["x_endpoints"]}
    assert ends["chat.signal.org:443"]["failed_operation"] == "resolve"
    # the uptime lookup failing is not blocking
    k = keys(run("signal", World(dns={"uptime.signal.org": "nxdomain"})))
    assert k["signal_backend_status"] == "ok"


def test_facebook_dns_and_tcp_blocking() -> None:
    world = World(
        dns={"b-api.facebook.com": "bogus", "stun.fbsbx.com": "nxdomain"},
        behaviour={("edge-mqtt.facebook.com", 443): "refused"},
    )
    k = keys(run("facebook_messenger", world))
    assert k["facebook_dns_blocking"] is True and k["facebook_tcp_blocking"] is True
    assert k["facebook_b_api_dns_consistent"] is False and k["facebook_b_api_reachable"] is None
    assert k["facebook_stun_dns_consistent"] is False
    assert k["facebook_edge_dns_consistent"] is True and k["facebook_edge_reachable"] is False
    assert k["facebook_star_reachable"] is True


# -- hostile servers ------------------------------------------------------------------------------


def test_hostile_servers_are_recorded_failures_without_a_hang() -> None:
    world = World(
        behaviour={
            ("web.telegram.org", 443): "huge-body",
            ("149.154.175.50", 80): "silent",
            ("149.154.175.50", 443): "garbage",
            ("149.154.167.51", 80): "redirect-loop",
        },
        timeout=1.0,
    )
    started = time.monotonic()
    m = run("telegram", world)
    assert time.monotonic() - started < 25
    ends = {e["endpoint"]: e for e in m["test_keys"]["x_endpoints"]}
    web = ends["web.telegram.org:443"]
    # a huge body is cut at max_body: recorded, truncated, not a failure
    requests = [r for r in m["test_keys"]["requests"] if "telegram.org" in r["request"]["url"]]
    assert web["failure"] is None and requests[0]["response"]["body_is_truncated"] is True
    assert ends["149.154.175.50:80"]["failure"] == "generic_timeout_error"
    assert ends["149.154.175.50:80"]["failed_operation"] == "http_round_trip"
    assert ends["149.154.175.50:443"]["failure"] is not None
    assert ends["149.154.167.51:80"]["failure"] == "x_too_many_redirects"
    assert keys(m)["telegram_http_blocking"] is False  # the other DCs answered


def test_budget_cuts_a_run_short() -> None:
    world = World(dns=dict.fromkeys(["web.telegram.org"], "timeout"), timeout=5.0)

    async def go() -> dict[str, Any]:
        await world.start()
        try:
            assert world.config is not None
            experiment = EXPERIMENTS["telegram"](world.config, world.overrides(), budget=1.0)
            return await experiment.measure()
        finally:
            await world.stop()

    started = time.monotonic()
    m = asyncio.run(go())
    assert time.monotonic() - started < 5
    k = keys(m)
    assert k["telegram_web_failure"] == "generic_timeout_error"


# -- OONI's shape ---------------------------------------------------------------------------------


def _real_samples() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for line in (DATA / "ooni_samples.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m.get("test_name") in APPS:
            found.setdefault(m["test_name"], []).append(m)
    return found


@pytest.mark.parametrize("app", APPS)
def test_shape_matches_ooni_current_measurements(app: str) -> None:
    """Every key OONI's current probes write (the newest real sample of each test) is there,
    nothing else is but netvigil's x_ keys; the event lists have OONI's entry keys."""
    samples = _real_samples()[app]
    newest = max(samples, key=lambda m: [int(p) for p in m["test_version"].split(".")])
    ours = run(app, World())
    real_tk, our_tk = newest["test_keys"], ours["test_keys"]
    ignore = {"socksproxy", "client_resolver"}  # 2016-2020 generations only
    assert set(real_tk) - ignore <= set(our_tk)
    # Besides x_ keys, only urlgetter's (what probe-cli writes for all four today; the newest
    # facebook_messenger sample is from the older Measurement Kit generation, without them).
    urlgetter = {"agent", "failed_operation", "failure", "network_events", "queries"}
    urlgetter |= {"requests", "tcp_connect", "tls_handshakes"}
    assert {k for k in set(our_tk) - set(real_tk) if not k.startswith("x_")} <= urlgetter
    old_envelope = {"options", "input_hashes", "probe_city", "id"}  # Measurement Kit's
    assert set(newest) - {"measurement_uid"} - old_envelope <= set(ours)
    for name in ("queries", "tcp_connect", "requests", "tls_handshakes", "network_events"):
        if real_tk.get(name) and our_tk.get(name):
            real_entry_keys = set(real_tk[name][0])
            assert real_entry_keys - {"tags"} <= set(our_tk[name][0]), name
    for query in our_tk["queries"]:
        for answer in query["answers"] or ():
            assert {"asn", "as_org_name", "answer_type"} <= set(answer)


def test_overrides_never_needed_for_names_but_always_for_ip_literals() -> None:
    """The hermetic guard itself: the loopback world maps every IP literal endpoint."""
    world = World()

    async def go() -> Overrides:
        await world.start()
        try:
            return world.overrides()
        finally:
            await world.stop()

    overrides = asyncio.run(go())
    for app in APPS:
        for endpoint in load_app(app).endpoints:
            if endpoint.is_ip_literal:
                ip, _ = overrides.dial(endpoint.host, endpoint.port)
                assert ip == "127.0.0.1"


OONIDATA = Path(__file__).resolve().parent.parent / ".venv-oonidata" / "bin" / "python"


@pytest.mark.skipif(not OONIDATA.exists(), reason="run ./scripts/setup.sh to create .venv-oonidata")
def test_every_app_loads_with_oonidata(tmp_path: Path) -> None:
    """OONI's own parser reads each app's measurement as its typed model, keys included."""
    import subprocess

    world = World(dns={"chat.signal.org": "nxdomain", "b-api.facebook.com": "bogus"})

    async def go() -> list[dict[str, Any]]:
        await world.start()
        try:
            assert world.config is not None
            overrides = world.overrides()
            return [await measure_app(app, world.config, overrides) for app in APPS]
        finally:
            await world.stop()

    measurements = asyncio.run(go())
    path = tmp_path / "im.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in measurements))
    script = (
        "import json, sys\n"
        "from oonidata.dataclient import load_measurement\n"
        "for line in open(sys.argv[1]):\n"
        "    m = load_measurement(msmt=json.loads(line))\n"
        "    tk = m.test_keys\n"
        "    print(type(m).__name__, getattr(tk, 'signal_backend_status', ''),"
        " getattr(tk, 'facebook_dns_blocking', ''), len(tk.tcp_connect or []))\n"
    )
    done = subprocess.run(
        [str(OONIDATA), "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [r[0] for r in rows] == ["Telegram", "Whatsapp", "Signal", "FacebookMessenger"]
    assert rows[2][1] == "blocked" and rows[3][1] == "True"
    assert all(int(r[-1]) > 0 for r in rows)
