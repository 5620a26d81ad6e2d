"""Trigger discovery and localisation (IMC 2020's method) against the emulated 2019 censor.

All SNIs of the profile go to ONE live, uncensored site address (the sites server presents a
valid certificate for every profile domain there): exactly the profile's tls-intercept SNIs
must come back with a forged chain. The TTL-limited handshakes must put the censor at hop 2.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

import pytest

from conftest import RunningTestbed, needs_testbed
from netvigil import net
from netvigil.experiments import sni_triggers as st
from netvigil.net.tls import TrustStore
from netvigil.testbed.plan import Plan
from test_net_support import pki


def test_offender_parsing() -> None:
    ee = struct.pack("=IBBBBII", 113, 2, 11, 0, 0, 0, 0)
    offender = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton("198.18.2.2"))
    assert st._offender([(0, st.IP_RECVERR, ee + offender)]) == ("198.18.2.2", 11)
    assert st._offender([(0, st.IP_RECVERR, b"short")]) is None
    local = struct.pack("=IBBBBII", 90, 1, 0, 0, 0, 0, 0)  # SO_EE_ORIGIN_LOCAL: not a router
    assert st._offender([(0, st.IP_RECVERR, local + offender)]) is None


def test_classify_without_a_chain() -> None:
    trust = TrustStore.mozilla()
    assert st.classify((), "connection_reset", "x.test", trust)[0] == st.BLOCKED
    assert st.classify((), "generic_timeout_error", "x.test", trust)[0] == st.BLOCKED
    assert st.classify((), "ssl_failed_handshake", "x.test", trust)[0] == st.FAILED
    assert st.classify((b"garbage",), "ssl_invalid_certificate", "x.test", trust)[0] == st.FAILED


def test_classify_a_name_mismatch_by_who_issued_the_leaf() -> None:
    """ssl_invalid_hostname comes before any path check (Go's order): a trusted leaf for
    another name is the server's own certificate, an untrusted one a forgery."""
    p = pki()
    trusted = (p.leaf.der, p.intermediate.der)
    forged = (p.rogue_leaf.der, p.rogue_intermediate.der)
    assert net.verify_chain(forged, "other.test", p.trust)[0] == "ssl_invalid_hostname"
    assert st.classify(trusted, "ssl_invalid_hostname", "other.test", p.trust)[0] == st.NOT_SERVED
    assert st.classify(forged, "ssl_invalid_hostname", "other.test", p.trust)[0] == st.TRIGGERED
    assert st.classify(forged, "ssl_unknown_authority", "site.test", p.trust)[0] == st.TRIGGERED


def test_location_summary() -> None:
    found = st.Location("198.19.0.1", "vk.com", hop=2, hop_address="198.18.2.2")
    assert found.summary() == "the forged certificate first appears at hop 2 (address 198.18.2.2)"
    assert "no forged certificate" in st.Location("198.19.0.1", "vk.com").summary()


@needs_testbed
@pytest.mark.testbed
def test_discovery_finds_exactly_the_intercepted_snis_and_locates_the_censor(
    testbed: Callable[[str], RunningTestbed],
) -> None:
    bed = testbed("kz-2019-interception")
    plan = Plan.load(bed.info.public_dir)
    trust = TrustStore.from_pem_file(bed.info.trust_anchor)
    intercepted = {v for r in plan.rules if r.action == "tls-intercept" for v in r.values}
    snis = sorted(s.domain for s in plan.sites)
    live = next(s for s in plan.sites if s.domain == "tengrinews.kz")
    address = live.addresses[0]

    def job() -> tuple[list[st.SNIProbe], st.Location]:
        async def main() -> tuple[list[st.SNIProbe], st.Location]:
            probes = await st.discover(address, snis, trust, timeout=5.0)
            found = sorted(p.sni for p in probes if p.outcome == st.TRIGGERED)
            location = await st.locate(address, found[0], trust, max_ttl=8, timeout=3.0)
            return probes, location

        return asyncio.run(main())

    result = bed.in_client(job, timeout=90)
    assert isinstance(result, tuple)
    probes, location = result
    triggered = {p.sni for p in probes if p.outcome == st.TRIGGERED}
    assert triggered == intercepted & set(snis)
    others = [p for p in probes if p.sni not in triggered]
    assert others and all(p.outcome == st.NOT_TRIGGERED for p in others), [
        (p.sni, p.outcome, p.failure) for p in others if p.outcome != st.NOT_TRIGGERED
    ]
    assert all(p.issuer == "Qaznet Trust Network" for p in probes if p.sni in triggered)
    # Localisation: nothing at TTL 1 (dies at the access router), forged from TTL 2 on.
    assert location.hop == 2, [h.to_json() for h in location.hops]
    assert location.hops[0].outcome == "no answer"
    assert location.hop_address in ("198.18.2.2", "198.18.2.1"), location.to_json()
    assert "hop 2" in location.summary()
