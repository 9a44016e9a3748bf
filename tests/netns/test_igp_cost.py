"""The igp cost source against real FRR OSPFv3: three routers (ingress r1, egresses r2, r3,
in a triangle), cand at r1 learning one instance behind each egress from BGP. cand's cost
per egress is zebra's OSPF metric times the scale; changing a link cost in FRR moves it and
the service weights without a restart; losing the direct link reroutes (the cost rises);
losing the last link makes the egresses unusable."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cand_testbed import raw_bgp_peer as raw
from cand_testbed.routers import SERVICE, cand_toml, start_cand, wait_api

from cand.api import request
from cand.lab.netns import Topology
from cand.model import BindingId, InstanceKey, InstanceRoute, Metrics, RouterId, ServiceId
from tests.conftest import need
from tests.netns.frr import Ospf6Router, frr_available, frr_base, start_ospf6

pytestmark = pytest.mark.netns
R2, R3 = "fc00:ff::2", "fc00:ff::3"
SCALE = 0.5


@pytest.fixture
def base() -> Iterator[Path]:
    need(frr_available() is None, frr_available() or "")
    b = frr_base()
    try:
        yield b
    finally:
        shutil.rmtree(b, ignore_errors=True)


def instance(egress: str, n: int) -> InstanceRoute:
    return InstanceRoute(
        key=InstanceKey(ServiceId.parse(SERVICE), BindingId.parse(f"2001:db8:a::{n}")),
        egress=RouterId.parse(egress),
        sid=ipaddress.IPv6Address(f"fc00:0:{n}::10"),
        metrics=Metrics(cpu=0.3, capacity=100),
        seq=int(time.time() * 1000),
    )


async def until(what: str, probe: Callable[[], Any], check: Callable[[Any], bool]) -> Any:
    """Poll until `check(probe())` holds; a generous bound, never a timed assertion."""
    deadline = time.monotonic() + 60
    while True:
        got = await probe()
        if check(got):
            return got
        assert time.monotonic() < deadline, f"{what}: last seen {got}"
        await asyncio.sleep(0.1)


def test_cost_follows_the_ospf_metric_live(topo: Topology, tmp_path: Path, base: Path) -> None:
    r1, r2, r3, peer = topo.ns("r1"), topo.ns("r2"), topo.ns("r3"), topo.ns("peer")
    i12, i21 = topo.link(r1, "fe80::12:1/64", r2, "fe80::12:2/64")
    i13, i31 = topo.link(r1, "fe80::13:1/64", r3, "fe80::13:3/64")
    i23, i32 = topo.link(r2, "fe80::23:2/64", r3, "fe80::23:3/64")
    topo.link(peer, "fc00:a::9/64", r1, "fc00:a::1/64")  # BGP only, not in the IGP
    frr: dict[str, Ospf6Router] = {}
    for n, (ns, ifs) in enumerate(((r1, [i12, i13]), (r2, [i21, i23]), (r3, [i31, i32])), 1):
        topo.exec(ns, "ip", "-6", "addr", "add", f"fc00:ff::{n}/128", "dev", "lo")
        frr[f"r{n}"] = start_ospf6(topo, ns, f"r{n}", f"10.0.0.{n}", ifs, base)
    # cost_scale 10 ms: a 2.5 ms step (metric 20 -> 25 at 0.5 ms each) moves the weights
    # by more than the hysteresis (at the default 100 ms it is worth 1 % of the flows)
    extra = f"""
[decision]
hysteresis = 0.01
cost_scale = 10
[network_cost]
source = "igp"
[network_cost.igp]
scale = {SCALE}
follow = "router_id"
vty_socket = "{base / "r1"}"
[network_cost.smoothing]
method = "ewma"
tau = 0.3
min_interval = 0.2
"""
    conf = cand_toml(tmp_path, "r1", "fc00:a::1", ["fc00:a::9"], ["ingress"], extra=extra)
    sock = start_cand(topo, r1, conf, tmp_path, "r1")
    msgs = tmp_path / "paths.msgs"
    msgs.write_text(
        "\n".join(raw.update_template(instance(e, n), 65000) for n, e in ((2, R2), (3, R3)))
    )
    topo.spawn(
        peer, sys.executable, "-m", "cand_testbed.raw_bgp_peer", "--connect", "fc00:a::1",
        "--source", "fc00:a::9", "--messages", str(msgs), log=tmp_path / "peer.jsonl",
    )  # fmt: skip

    async def costs() -> dict[str, dict[str, Any]]:
        data = await request(sock, "routes")
        return {e["egress"]: e for e in data["egresses"]}

    async def weights() -> dict[str, tuple[int, bool]]:
        data = await request(sock, "services")
        return {i["egress"]: (i["weight"], i["reachable"]) for i in data[0]["instances"]}

    def at(expected: dict[str, float | None]) -> Callable[[dict[str, Any]], bool]:
        def ok(c: dict[str, Any]) -> bool:
            for e, want in expected.items():
                row = c.get(e)
                if row is None or row["source"] != "igp":
                    return False
                if want is None and row["reachable"]:
                    return False
                if want is not None and (not row["reachable"] or row["cost"] != want):
                    return False
            return True

        return ok

    async def scenario() -> None:
        await wait_api(sock)
        # both egresses: link 10 + their loopback 10 = OSPF metric 20
        for e in (R2, R3):
            await until(f"ospf route to {e}", lambda e=e: asyncio.to_thread(frr["r1"].metric, e),
                        lambda m: m == 20)  # fmt: skip
        await until("initial costs", costs, at({R2: 20 * SCALE, R3: 20 * SCALE}))
        w = await until("equal weights", weights, lambda w: len(w) == 2)
        assert w[R2] == w[R3] and w[R2][0] > 0

        # a dearer direct link: same path, metric 25; the kernel route says 20 throughout
        frr["r1"].set_cost(i12, 15)
        await until("metric 25", lambda: asyncio.to_thread(frr["r1"].metric, R2),
                    lambda m: m == 25)  # fmt: skip
        c = await until("cost follows", costs, at({R2: 25 * SCALE, R3: 20 * SCALE}))
        assert c[R2]["samples"][0]["value"] == 25 * SCALE
        await until("weights follow", weights, lambda w: 0 < w[R2][0] < w[R3][0])

        # the direct link goes: rerouted through r3, metric 30
        topo.exec(r1, "ip", "link", "set", i12, "down")
        await until("rerouted", costs, at({R2: 30 * SCALE, R3: 20 * SCALE}))
        assert frr["r1"].metric(R2) == 30

        # the last link goes: nothing reachable, no instance takes new flows
        topo.exec(r1, "ip", "link", "set", i13, "down")
        await until("unreachable", costs, at({R2: None, R3: None}))
        await until("no weight", weights,
                    lambda w: w == {R2: (0, False), R3: (0, False)})  # fmt: skip

        # and back: the link returns, so does the egress, with its metric
        topo.exec(r1, "ip", "link", "set", i13, "up")
        await until("back", costs, at({R2: 30 * SCALE, R3: 20 * SCALE}))
        await until("weights back", weights, lambda w: w[R2][0] > 0 and w[R3][0] > 0)

    try:
        asyncio.run(scenario())
    except BaseException:
        print((tmp_path / "r1.log").read_text()[-4000:])
        raise
