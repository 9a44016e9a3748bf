"""The composed L1 score end to end: an instance gives it over MQTT, the egress (cand + gobgpd)
advertises it as large-community code 27, an FRR route reflector passes it on, and the ingress
(cand + gobgpd) shows it beside the other scores; the captured UPDATE carries the word."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from cand_testbed.agent_driver import AgentProcess
from cand_testbed.routers import (
    SERVICE,
    cand_toml,
    received,
    start_cand,
    start_frr_rr,
    start_mosquitto,
    wait_api,
)

from cand.lab.netns import Topology
from cand.wire import bgp
from tests.netns.test_bgp_gobgp import capture, updates_from_pcap

pytestmark = pytest.mark.netns
BINDING = "2001:db8:a::10"


def test_composed_score_crosses_a_reflector(topo: Topology, tmp_path: Path) -> None:
    e, rr, i = topo.ns("egress"), topo.ns("rr"), topo.ns("ingress")
    topo.link(e, "fc00:b::3/64", rr, "fc00:b::100/64")
    _rri, ii = topo.link(rr, "fc00:a::100/64", i, "fc00:a::1/64")
    topo.exec(e, "ip", "-6", "route", "add", "fc00:a::/64", "via", "fc00:b::100")
    topo.exec(i, "ip", "-6", "route", "add", "fc00:b::/64", "via", "fc00:a::100")
    start_frr_rr(topo, rr, tmp_path, "10.255.0.100", ["fc00:b::3", "fc00:a::1"])
    port = start_mosquitto(topo, e, tmp_path)
    econf = cand_toml(tmp_path, "e", "fc00:b::3", ["fc00:b::100"], ["egress"], mqtt_port=port)
    start_cand(topo, e, econf, tmp_path, "e")
    iconf = cand_toml(tmp_path, "i", "fc00:a::1", ["fc00:a::100"], ["ingress"])
    isock = start_cand(topo, i, iconf, tmp_path, "i")
    pcap = tmp_path / "i.pcap"
    dump = capture(topo, i, ii, pcap)
    want = {"computing": 7, "composed": 4}

    async def main() -> list[dict[str, Any]]:
        await wait_api(isock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await asyncio.to_thread(agent.say, "report cpu=0.3 l2=4 l1.computing=7 l1.composed=4")
        deadline = time.monotonic() + 30
        while True:
            got = [r for r in await received(isock) if r["binding"] == BINDING]
            if got and got[0]["l1"] == want:
                await asyncio.to_thread(agent.say, "exit")
                return got
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.1)

    routes = asyncio.run(main())
    assert (routes[0]["l2"], routes[0]["load_permille"]) == (4, 300)
    time.sleep(0.3)
    dump.terminate()  # flushes the capture file
    dump.wait(5)
    words = set()
    for u in updates_from_pcap(pcap):
        if u.announced:
            lc = u.attributes[bgp.LARGE_COMMUNITY].value
            words |= {lc[k : k + 12].hex() for k in range(0, len(lc), 12)}
    assert "0000fde80000001b00000004" in words  # code 27, composed 4, as it arrived
    assert "0000fde80000001700000007" in words  # code 23, computing 7
