"""The GoBGP speaker's adj-RIB-out check on real gobgpd: a path of cand's deleted behind its
back with the gobgp CLI comes back at the peer, a Dyncast path added behind its back goes."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cand_testbed.agent_driver import AgentProcess
from cand_testbed.routers import SERVICE, cand_toml, received, start_cand, start_mosquitto, wait_api

from cand.api import request
from cand.lab.netns import Topology
from cand.model import BindingId, InstanceKey, InstanceRoute, Metrics, RouterId, ServiceId
from cand.wire import bgp
from tests.netns.test_bgp_gobgp import BINDING, STEPS, follow, view

pytestmark = pytest.mark.netns
E_ADDR, I_ADDR = "fc00:a::3", "fc00:a::1"
CHECK = 2  # seconds between checks (the test waits far longer, never for a speed)
INTRUDER = "2001:db8:a::99"


def with_check(conf: Path) -> Path:
    text = conf.read_text()
    conf.write_text(text.replace("[bgp.options]\n", f"[bgp.options]\nrib_out_check = {CHECK}\n"))
    return conf


def gobgp(sock: Path, *args: str) -> str:
    return subprocess.run(
        ["gobgp", "--target", f"unix://{sock}", *args], capture_output=True, text=True, check=True
    ).stdout


async def until(what: str, timeout: float, probe: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.05)


def add_behind_cands_back(sock: Path) -> None:
    """A Dyncast path cand does not want, added to gobgpd through gRPC (cand's own codec)."""
    import grpc
    from cand_gobgp.api import pb, pb_grpc

    route = InstanceRoute(
        InstanceKey(ServiceId.parse(SERVICE), BindingId.parse(INTRUDER)),
        RouterId.parse(E_ADDR),
        ipaddress.IPv6Address("fc00:0:4::99"),
        Metrics(cpu=0.1),
    )
    attrs = [bgp.mp_reach(route, addpath=False), *bgp.encode_attributes(route, 65000, 48)]
    path = pb.Path(
        family=pb.Family(afi=pb.Family.AFI_IP6, safi=pb.Family.SAFI_UNICAST),
        nlri_binary=bgp.host_prefix(route.service),
        pattrs_binary=[a.to_bytes() for a in attrs],
        identifier=bgp.path_id(route.key),
    )
    with grpc.insecure_channel(f"unix://{sock}") as ch:
        pb_grpc.GobgpApiStub(ch).AddPath(pb.AddPathRequest(table_type=pb.GLOBAL, path=path))


def test_gobgp_puts_rib_out_drift_right(topo: Topology, tmp_path: Path) -> None:
    if shutil.which("gobgp") is None:
        pytest.skip("the gobgp CLI is not installed (apt-get install gobgp)")
    e, i = topo.ns("egress"), topo.ns("ingress")
    topo.link(e, f"{E_ADDR}/64", i, f"{I_ADDR}/64")
    port = start_mosquitto(topo, e, tmp_path)
    econf = with_check(cand_toml(tmp_path, "e", E_ADDR, [I_ADDR], ["egress"], mqtt_port=port))
    esock = start_cand(topo, e, econf, tmp_path, "e")
    isock = start_cand(
        topo, i, cand_toml(tmp_path, "i", I_ADDR, [E_ADDR], ["ingress"]), tmp_path, "i"
    )
    gsock = tmp_path / "e-gobgpd.sock"
    ours = InstanceKey(ServiceId.parse(SERVICE), BindingId.parse(BINDING))
    views: list[Any] = []

    async def ingress_shows(expected: Any) -> bool:
        v = view(await received(isock))
        if not views or views[-1] != v:
            views.append(v)
        return bool(v == expected)

    async def speaker() -> dict[str, Any]:
        st: dict[str, Any] = (await request(esock, "status"))["speaker"]
        return st

    async def main() -> None:
        await wait_api(isock)
        await wait_api(esock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await follow(isock, STEPS[:1], agent)
        wanted = STEPS[0][1]

        # 1. deleted behind cand's back: gone from gobgpd, then back at the peer. The engine
        # re-advertises now and then too (metric refresh): an attempt that such a refresh
        # repaired first proves nothing, and is made again
        for _attempt in range(3):
            before = await speaker()
            gobgp(
                gsock,
                "global",
                "rib",
                "-a",
                "ipv6",
                "del",
                f"{SERVICE}/128",
                "identifier",
                str(bgp.path_id(ours)),
            )

            async def gone_or_repaired(before: dict[str, Any] = before) -> bool:
                # on a busy machine the check can re-add the path before gobgpd has sent the
                # withdrawal, and the peer never sees it go: then the repair counter shows it
                moved = (await speaker())["drift_announced"] > before["drift_announced"]
                return await ingress_shows(()) or moved

            await until("the deletion reaches the ingress or is repaired", 30, gone_or_repaired)
            await until("the path is back at the ingress", 60, lambda: ingress_shows(wanted))
            st = await speaker()
            if st["drift_announced"] > before["drift_announced"]:
                break
            assert st["advertised"] > before["advertised"], f"back, but not by cand: {st}"
        assert st["drift_announced"] >= 1, st
        assert BINDING in gobgp(gsock, "global", "rib", "-a", "ipv6")

        # 2. added behind cand's back: the peer may see it for a moment, then it goes
        add_behind_cands_back(gsock)
        assert INTRUDER in gobgp(gsock, "global", "rib", "-a", "ipv6")

        async def removed() -> bool:
            st = await speaker()
            return st["drift_withdrawn"] >= 1 and await ingress_shows(wanted)

        await until("the unwanted path is deleted", 60, removed)
        rib = gobgp(gsock, "global", "rib", "-a", "ipv6")
        assert INTRUDER not in rib and BINDING in rib, rib

    asyncio.run(main())
    print("ingress views:", views)
    log = (tmp_path / "e.log").read_text()
    assert "event=gobgp_rib_out_drift" in log
