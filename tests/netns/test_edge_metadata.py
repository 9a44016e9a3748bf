"""The Edge Metadata attribute (42) on the wire: sent to a direct draft-aware neighbour with
the documented bytes, gone behind an FRR route reflector, where the large communities still
arrive intact and the ingress steers exactly as the directly connected one does.

    e (cand + ExaBGP, egress; router id fc00:e::3 on lo)
    |-- i1 (cand + ExaBGP, ingress)           direct, edge_metadata = true
    `-- rr (FRR route reflector) -- i2 (cand + GoBGP, ingress)   edge_metadata = true towards
                                                                  rr too: it drops it
"""

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
    start_cand,
    start_frr_rr,
    start_mosquitto,
    wait_api,
)

from cand.api import request
from cand.lab.netns import Topology
from cand.wire import bgp, bgp_update
from tests.netns.test_bgp_gobgp import capture, updates_from_pcap

pytestmark = pytest.mark.netns
BINDINGS = {"2001:db8:a::10": "report cpu=0.2", "2001:db8:a::11": "report cpu=0.65"}
E_ID = "fc00:e::3"


def steering(services: list[dict[str, Any]]) -> tuple[tuple[str, int, int, int], ...]:
    """What an ingress does with the service: per instance its weight, L2 score and load."""
    return tuple(
        sorted(
            (i["binding"], i["weight"], i["l2"], i["load_permille"])
            for s in services
            if s["service"] == SERVICE
            for i in s["instances"]
        )
    )


def announced(updates: list[bgp_update.Update]) -> list[bgp_update.Update]:
    return [u for u in updates if u.announced]


def test_edge_metadata_direct_and_through_a_reflector(topo: Topology, tmp_path: Path) -> None:
    e, i1, rr, i2 = topo.ns("egress"), topo.ns("ingress1"), topo.ns("rr"), topo.ns("ingress2")
    topo.exec(e, "ip", "-6", "addr", "add", f"{E_ID}/128", "dev", "lo")
    _e1, if1 = topo.link(e, "fc00:a::3/64", i1, "fc00:a::1/64")
    topo.link(e, "fc00:b::3/64", rr, "fc00:b::100/64")
    _r2, if2 = topo.link(rr, "fc00:c::100/64", i2, "fc00:c::1/64")
    topo.exec(i1, "ip", "-6", "route", "add", f"{E_ID}/128", "via", "fc00:a::3")
    topo.exec(rr, "ip", "-6", "route", "add", f"{E_ID}/128", "via", "fc00:b::3")
    topo.exec(i2, "ip", "-6", "route", "add", f"{E_ID}/128", "via", "fc00:c::100")
    start_frr_rr(topo, rr, tmp_path, "10.255.0.100", [E_ID, "fc00:c::1"])

    port = start_mosquitto(topo, e, tmp_path)
    peers = ["fc00:a::1", "fc00:b::100"]
    econf = cand_toml(
        tmp_path, "e", E_ID, peers, ["egress"], mqtt_port=port, speaker="exabgp",
        edge_metadata=tuple(peers),
    )  # fmt: skip
    start_cand(topo, e, econf, tmp_path, "e")
    c1 = cand_toml(tmp_path, "i1", "fc00:a::1", [E_ID], ["ingress"], speaker="exabgp")
    s1 = start_cand(topo, i1, c1, tmp_path, "i1")
    c2 = cand_toml(tmp_path, "i2", "fc00:c::1", ["fc00:c::100"], ["ingress"])
    s2 = start_cand(topo, i2, c2, tmp_path, "i2")
    dumps = [
        capture(topo, i1, if1, tmp_path / "i1.pcap"),
        capture(topo, i2, if2, tmp_path / "i2.pcap"),
    ]

    async def main() -> tuple[Any, Any]:
        await wait_api(s1)
        await wait_api(s2)
        agents = [AgentProcess(topo, e, port, SERVICE, b) for b in BINDINGS]
        for agent, line in zip(agents, BINDINGS.values(), strict=True):
            await asyncio.to_thread(agent.say, line)
        deadline = time.monotonic() + 60
        while True:
            v1 = steering(await request(s1, "services"))
            v2 = steering(await request(s2, "services"))
            if len(v1) == 2 and v1 == v2 and all(w > 0 for _, w, _, _ in v1):
                break
            assert time.monotonic() < deadline, (v1, v2)
            await asyncio.sleep(0.1)
        return v1, v2

    v1, v2 = asyncio.run(main())
    # cpu 0.2 -> L2 8 (preferred), cpu 0.65 -> L2 4 (medium, 3.5 rounds up)
    assert [(b, l2, load) for b, _, l2, load in v1] == [
        ("2001:db8:a::10", 8, 200),
        ("2001:db8:a::11", 4, 650),
    ]
    assert v1 == v2  # the reflected ingress steers exactly as the direct one
    time.sleep(0.5)
    for d in dumps:
        d.terminate()  # flushes the capture file
        d.wait(5)
    direct = announced(updates_from_pcap(tmp_path / "i1.pcap"))
    reflected = announced(updates_from_pcap(tmp_path / "i2.pcap"))
    assert direct and reflected

    # direct: every announcement carries attribute 42, flags 0x80, with the documented bytes
    for u in direct:
        edge = u.attributes.get(bgp.EDGE_METADATA)
        assert edge is not None and edge.flags == 0x80, u.attributes.keys()
        (_pid, svc, egress) = u.announced[0]
        route = bgp.decode_route(svc, egress, u.attributes, 65000)
        assert edge.value == bgp.edge_metadata(route, bgp.DEFAULT_CAPABILITY).value
        assert edge.value[:6].hex() == "00010003ff01"  # capability sub-TLV under 0xFF01
        assert bgp.decode_edge_metadata(edge.value) == (
            route.metrics.l2,
            1000 - route.metrics.load_permille,
        )

    # and byte for byte in the layout docs/wire-formats.md gives, for these two instances
    seen = {
        (str(bgp.decode_route(s, eg, u.attributes, 65000).binding), u.attributes[42].to_bytes())
        for u in direct
        for _p, s, eg in u.announced
    }
    # fmt: off
    documented = {
        # flags 0x80, type 42, 13 bytes; capability 0xFF01 with L2; available = 1000 - load
        ("2001:db8:a::10", bytes.fromhex("802a0d" "00010003" "ff01" "08" "00020002" "0320")),
        ("2001:db8:a::11", bytes.fromhex("802a0d" "00010003" "ff01" "04" "00020002" "015e")),
    }
    # fmt: on
    assert documented <= seen, seen

    # through the reflector: 42 is gone, the large communities are the same bytes
    assert all(bgp.EDGE_METADATA not in u.attributes for u in reflected)
    lc_direct = {u.attributes[bgp.LARGE_COMMUNITY].value for u in direct}
    lc_reflected = {u.attributes[bgp.LARGE_COMMUNITY].value for u in reflected}
    assert lc_reflected <= lc_direct and lc_reflected
    last = {
        str(bgp.decode_route(s, eg, u.attributes, 65000).binding): u.attributes[32].value
        for u in reflected
        for _p, s, eg in u.announced
    }
    assert len(last) == 2
