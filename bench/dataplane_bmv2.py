"""Data-plane cost through BMv2: bench.dataplane_cost's clients and measurement with cand's P4
data plane (cand.p4 on simple_switch_grpc, programmed by the cand-p4 plugin) as the ingress.

    h1 (client) --port 1-- sw (BMv2) --port 2-- h2 (egress: the kernel decapsulates; listeners)

The rig is the P4 tests' own (tests.netns.test_p4_bmv2.make_rig, the plugin set up as in
tests.netns.test_p4_dataplane), with BMv2's log off. Steered: h1 connects to the D-SID; the
binding misses, the selector encapsulates towards the instance's SID and digests the flow,
and the plugin installs its binding (so a connection's later packets hit it). h2 receives
through the kernel's RFC 8754 path (the SID a local address, seg6_enabled) and delivers to the
D-SID on its loopback. Baseline in the same run: h1 connecting to the instance's D-BID on h2,
forwarded by the same BMv2 with its IPv6 LPM only. Replies come back plain on both paths.
BMv2 is a software model: these figures say nothing about a hardware target such as Tofino.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from cand_p4 import state as st
from cand_p4 import toolchain

from bench.paths import connect_times, throughput
from cand.engine.effects import ProgramService
from cand.lab.netns import Topology

SW_IP1, SW_IP2 = "fc00:1::1", "fc00:2::1"  # the switch side of each link (make_rig's)
ENCAP_OVERHEAD = 40 + 24  # outer IPv6 and an SRH with one segment
MTU = 1500


def missing() -> str | None:
    """Why the BMv2 figures cannot be measured here, or None."""
    why = toolchain.missing("p4c-bm2-ss", "simple_switch_grpc")
    return f"BMv2 toolchain: {why}" if why else None


def _checksums_off(topo: Topology, ns: str, ifname: str) -> None:
    """BMv2 reads frames off the veth as the sender left them: with checksum offload, a TCP
    checksum still to be filled in. Off, the kernel completes it before the frame leaves."""
    topo.exec(ns, "ethtool", "-K", ifname, "tx", "off")


async def _measure(
    topo: Topology, tmp: Path, connects: int, seconds: float, reps: int
) -> dict[str, Any]:
    # the P4 tests' rig and plugin set-up, imported rather than copied
    from tests.netns.test_p4_bmv2 import SW_MAC, make_rig
    from tests.netns.test_p4_dataplane import INSTANCES, VIP, A, entry, make_dp, running

    rig = make_rig(topo, tmp, log_level="off")
    sid = INSTANCES[A]
    h1, h2 = rig.h1, rig.h2
    for ns, ifname, gw in ((h1, rig.h1_if, SW_IP1), (h2, rig.h2_if, SW_IP2)):
        _checksums_off(topo, ns, ifname)
        # the switch answers no neighbour discovery: its MAC is set by hand, as the plugin's is
        topo.exec(ns, "ip", "-6", "neigh", "replace", gw, "lladdr", SW_MAC, "dev", ifname,
                  "nud", "permanent")  # fmt: skip
    # the client sends segments that still fit a 1500-byte link once encapsulated, on both paths
    for dst in (VIP, A):
        topo.exec(h1, "ip", "-6", "route", "add", f"{dst}/128", "via", SW_IP1,
                  "mtu", str(MTU - ENCAP_OVERHEAD))  # fmt: skip
    for addr in (VIP, A, sid):
        topo.exec(h2, "ip", "-6", "addr", "add", f"{addr}/128", "dev", "lo")
    for conf in ("all", rig.h2_if):
        topo.exec(h2, "sysctl", "-qw", f"net.ipv6.conf.{conf}.seg6_enabled=1")
    topo.exec(h2, "ip", "-6", "route", "add", "fc00:1::/64", "via", SW_IP2)
    sink = topo.spawn(h2, sys.executable, "-m", "cand_testbed.fig2", "sink", "--port", "8080",
                      stdout=-1)  # fmt: skip
    if sink.stdout is None or sink.stdout.readline().strip() != b"listening":
        raise RuntimeError("the sink on h2 did not start")
    topo.spawn(h2, "iperf3", "-s")

    dp = make_dp(rig)
    # the baseline's route: the instance's own subnet, behind port 2
    dp.static = st.Static(routes={**dp.static.routes, f"{A}/128": 2}, nexthops=dp.static.nexthops)
    targets = {"steered": VIP, "plain": A}

    def run(*cmd: str) -> str:
        return topo.exec(h1, *cmd).stdout

    async with running(dp, ProgramService(entry({A: 1000}))):
        await asyncio.sleep(0.3)
        await asyncio.to_thread(connect_times, run, targets, min(20, connects))  # warm-up
        conn = await asyncio.to_thread(connect_times, run, targets, connects)
        bound, digests = await _settled(dp), dp.status()["digests"]
        bps = await asyncio.to_thread(throughput, run, targets, seconds, reps)
        status = dp.status()
    return {
        "connect_us": conn,
        "bits_per_s": bps,
        "bound_flows": bound,  # after the connects: one per steered connection
        "digests": digests,  # more: a flow's packets until its binding is written digest too
        "plugin": status,
    }


async def _settled(dp: Any) -> int:
    """The plugin's bound flows once the digests of the last connections are written."""
    last = -1
    while len(dp.bound) != last:
        last = len(dp.bound)
        await asyncio.sleep(0.5)
    return last


def measure(connects: int, seconds: float, reps: int) -> dict[str, Any]:
    """Builds the rig, measures, and removes every namespace and process it started."""
    with tempfile.TemporaryDirectory(prefix="cand-bmv2-bench-") as tmp:
        topo = Topology()
        try:
            return asyncio.run(_measure(topo, Path(tmp), connects, seconds, reps))
        finally:
            topo.close()
