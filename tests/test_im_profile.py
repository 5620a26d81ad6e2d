"""Profiles with ``messaging_apps``: checking, the plan's endpoint sites, the override file, the
censor's nftables for them, and the messaging truth (no network: pure functions)."""

from __future__ import annotations

import tomllib

import pytest

from netvigil.testbed.messaging import UNSERVED, override_text
from netvigil.testbed.plan import Plan, make_plan, rule_plans
from netvigil.testbed.profile import ProfileError, parse_profile
from netvigil.testbed.topology import censor_ruleset
from netvigil.testbed.truth import app_truth, ground_truth, messaging_truth

BASE = 'name = "t"\ndomains = ["news.example"]\n'
ALL = 'messaging_apps = ["telegram", "whatsapp", "signal", "facebook_messenger"]\n'


def plan_of(text: str) -> Plan:
    return make_plan(parse_profile(text), state_dir="/nonexistent-state")


def rule(action: str, values: list[str], extra: str = "") -> str:
    return f'[[rule]]\naction = "{action}"\ndomain = {values!r}\n{extra}'


def test_messaging_apps_are_checked() -> None:
    with pytest.raises(ProfileError, match=r"unknown messaging app 'telegrm' \(did you mean"):
        parse_profile(BASE + 'messaging_apps = ["telegrm"]\n')
    with pytest.raises(ProfileError, match="must be a list"):
        parse_profile(BASE + 'messaging_apps = "telegram"\n')
    # a rule may name an endpoint only when its app is served
    with pytest.raises(ProfileError, match="names no site"):
        parse_profile(BASE + rule("tls-reset", ["web.telegram.org"]))
    with pytest.raises(ProfileError, match="no messaging endpoint"):
        parse_profile(BASE + rule("ip-drop", ["149.154.175.50"]))
    with pytest.raises(ProfileError, match="no messaging endpoint"):
        parse_profile(BASE + 'messaging_apps = ["telegram"]\n' + rule("ip-drop", ["1.2.3.4"]))
    profile = parse_profile(
        BASE + 'messaging_apps = ["telegram"]\n' + rule("ip-drop", ["149.154.175.50"])
    )
    assert profile.messaging_apps == ("telegram",)


def test_the_plan_serves_every_endpoint_host() -> None:
    plan = plan_of(BASE + ALL)
    im = {s.domain: s for s in plan.sites if s.im_app}
    assert len(im) == 6 + 1 + 18 + 5 + 7  # DCs, web.telegram, WhatsApp, Signal, Facebook
    assert im["e7.whatsapp.net"].extra_ports == (5222,)
    assert im["149.154.175.50"].plain_on_443 and not im["web.telegram.org"].plain_on_443
    assert all(s.urls == () for s in im.values())
    assert [r.url for r in ground_truth(plan)] == [r.url for r in ground_truth(plan_of(BASE))]
    again = Plan.from_json(plan.to_json())
    assert again.site("e7.whatsapp.net") == im["e7.whatsapp.net"]
    assert again.messaging_apps == plan.messaging_apps


def test_rules_on_ip_literals_map_to_testbed_addresses_at_every_port() -> None:
    plan = plan_of(BASE + ALL + rule("ip-drop", ["149.154.175.50", "e1.whatsapp.net"]))
    dc, e1 = plan.site("149.154.175.50"), plan.site("e1.whatsapp.net")
    assert dc is not None and e1 is not None
    assert plan.rules[0].ips == (dc.addresses[0], e1.addresses[0])
    nft = censor_ruleset(plan)
    # no port in the rule: 5222 is dropped as 443 and 80 are
    assert f"ip daddr {{ {dc.addresses[0]}, {e1.addresses[0]} }} drop" in nft


def test_plain_http_on_443_is_diverted_when_http_rules_exist() -> None:
    plan = plan_of(BASE + 'messaging_apps = ["telegram"]\n' + rule("http-reset", ["95.161.76.100"]))
    assert "tcp dport { 80, 443 }" in censor_ruleset(plan)
    plan = plan_of(BASE + rule("http-reset", ["news.example"]))
    assert "tcp dport { 80 }" in censor_ruleset(plan)


def test_override_file_maps_every_ip_literal() -> None:
    plan = plan_of(BASE + 'messaging_apps = ["whatsapp", "facebook_messenger"]\n')
    data = tomllib.loads(override_text(plan))
    # Telegram is not served here: its data centres go where nothing listens
    assert data["addresses"]["149.154.175.50"] == UNSERVED
    facebook = {s.addresses[0] for s in plan.sites if s.im_app == "facebook_messenger"}
    assert {p.removesuffix("/32") for p in data["facebook_messenger"]["asn_prefixes"]} == facebook
    served = plan_of(BASE + 'messaging_apps = ["telegram"]\n')
    mapped = tomllib.loads(override_text(served))["addresses"]["149.154.175.50"]
    site = served.site("149.154.175.50")
    assert site is not None and mapped == site.addresses[0]


def test_truth_per_endpoint_and_ooni_keys() -> None:
    text = BASE + ALL
    text += rule("ip-drop", ["149.154.175.50"])
    text += rule("dns-blockpage", ["web.whatsapp.com"])
    text += rule("tls-timeout", ["storage.signal.org"])
    text += rule("dns-nxdomain", ["stun.fbsbx.com"])
    text += rule("ip-reject", ["e3.whatsapp.net"], 'reject_with = "icmp-admin-prohibited"\n')
    plan = plan_of(text)
    truths = {t.app: t for t in messaging_truth(plan)}
    telegram = {e.endpoint: e for e in truths["telegram"].endpoints}
    assert telegram["149.154.175.50:443"].outcome == "tcp/timeout"
    assert telegram["149.154.175.50:443"].failure == "generic_timeout_error"
    assert truths["telegram"].ooni_keys["telegram_tcp_blocking"] is False  # other DCs answer
    whatsapp = {e.endpoint: e for e in truths["whatsapp"].endpoints}
    web = whatsapp["web.whatsapp.com:443"]
    assert (web.outcome, web.failure) == ("dns/blockpage", "ssl_invalid_hostname")
    assert whatsapp["e3.whatsapp.net:5222"].failure == "host_unreachable"
    assert truths["whatsapp"].ooni_keys["whatsapp_endpoints_blocked"] == ["e3.whatsapp.net"]
    assert truths["signal"].ooni_keys["signal_backend_failure"] == "generic_timeout_error"
    facebook = truths["facebook_messenger"].ooni_keys
    assert facebook["facebook_stun_dns_consistent"] is False
    assert facebook["facebook_dns_blocking"] is True and facebook["facebook_tcp_blocking"] is False
    assert all(t.anomaly for t in truths.values() if t.app != "telegram")
    # a rule set given (a phase's): only those rules count
    assert not app_truth(plan, "signal", rules=[]).anomaly
    phase = parse_profile(BASE + ALL + rule("ip-reject", ["149.154.175.50"])).rules
    only = app_truth(plan, "telegram", rules=rule_plans(phase, plan))
    assert {e.outcome for e in only.endpoints if e.endpoint.startswith("149.154.175.50")} == {
        "tcp/reset"
    }
    # an app the profile does not serve is down, not blocked
    bare = plan_of(BASE + 'messaging_apps = ["signal"]\n')
    assert {e.outcome for e in app_truth(bare, "telegram").endpoints} == {"down"}
