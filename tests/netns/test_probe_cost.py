"""The probe cost source on the kernel: an ingress r1 and two egresses r2, r3, each egress
behind a delay relay (test tool `cand_testbed.delay_relay`, user space: this kernel has no
netem) in a namespace of its own. cand at r1 learns one instance behind each egress from BGP
(a raw peer) and probes each egress over its SRv6 SID; cand at r2 and r3 runs the responder,
as every egress does by default.

- the RTT cand measures matches the delay the relay adds within 1 ms;
- shifting the delays moves the new-flow weights towards the faster egress;
- a black-holed egress is unusable within the loss window (plus the probe timeout), and
  comes back when the black hole goes."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cand_testbed import raw_bgp_peer as raw
from cand_testbed.delay_relay import control
from cand_testbed.routers import CAND, cand_toml, start_cand, wait_api

from cand.api import request
from cand.lab.netns import Topology, sh
from cand.model import InstanceRoute
from tests.netns.test_igp_cost import instance as igp_instance
from tests.netns.test_igp_cost import until

pytestmark = pytest.mark.netns
R1, R2, R3 = "fc00:ff::1", "fc00:ff::2", "fc00:ff::3"
WINDOW, TIMEOUT = 2.0, 0.5


def instance(n: int) -> InstanceRoute:
    return igp_instance(f"fc00:ff::{n}", n)


def relayed_link(topo: Topology, r1: str, relay: str, egress: str, n: int, tmp: Path) -> Path:
    """r1 <-veth-> relay <-veth-> egress, the relay's ends without addresses or IPv6; the
    relay process between them. Returns its control socket."""
    topo.exec(relay, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    topo.exec(relay, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
    names = {}
    for side, ns, addr in (("i", r1, f"fe80::1{n}:1/64"), ("e", egress, f"fe80::1{n}:{n}/64")):
        a, b = f"p{topo.tag[:4]}{side}{n}", f"p{topo.tag[:4]}{side}{n}r"
        sh("ip", "link", "add", a, "netns", ns, "type", "veth", "peer", "name", b, "netns", relay)
        topo.exec(ns, "ip", "addr", "add", addr, "dev", a, "nodad")
        topo.exec(ns, "ip", "link", "set", a, "up")
        topo.exec(relay, "ip", "link", "set", b, "promisc", "on", "up")
        names[side] = (a, b)
    ctl = tmp / f"relay{n}.ctl"
    topo.spawn(
        relay, sys.executable, "-m", "cand_testbed.delay_relay",
        "--a", names["i"][1], "--b", names["e"][1], "--control", str(ctl),
        log=tmp / f"relay{n}.log",
    )  # fmt: skip
    ifi, ife = names["i"][0], names["e"][0]
    topo.exec(r1, "ip", "-6", "route", "add", f"fc00:ff::{n}/128", "via", f"fe80::1{n}:{n}",
              "dev", ifi)  # fmt: skip
    topo.exec(r1, "ip", "-6", "route", "add", f"fc00:0:{n}::/48", "via", f"fe80::1{n}:{n}",
              "dev", ifi)  # fmt: skip
    topo.exec(egress, "ip", "-6", "route", "add", f"{R1}/128", "via", f"fe80::1{n}:1", "dev", ife)
    for i in ("all", ife):
        topo.exec(egress, "sysctl", "-qw", f"net.ipv6.conf.{i}.seg6_enabled=1")
    # the SID is local at the egress, as the Linux data plane makes it
    topo.exec(egress, "ip", "-6", "route", "add", "local", f"fc00:0:{n}::10/128", "dev", "lo")
    deadline = time.monotonic() + 10
    while not ctl.exists():
        assert time.monotonic() < deadline, (tmp / f"relay{n}.log").read_text()
        time.sleep(0.05)
    return ctl


def responder_toml(tmp: Path, n: int) -> Path:
    path = tmp / f"r{n}.toml"
    path.write_text(f"""
[router]
id = "fc00:ff::{n}"
asn = 65000
roles = ["egress"]
locator = "fc00:0:{n}::/48"
[api]
socket = "{tmp}/r{n}.sock"
[prometheus]
listen = ""
[dataplane]
kind = "none"
""")  # the responder runs at an egress by default (responder = "auto")
    return path


def test_probe_rtt_weights_and_black_hole(topo: Topology, tmp_path: Path) -> None:
    r1, r2, r3, peer = topo.ns("r1"), topo.ns("r2"), topo.ns("r3"), topo.ns("peer")
    d2, d3 = topo.ns("d2"), topo.ns("d3")
    for n, ns in ((1, r1), (2, r2), (3, r3)):
        topo.exec(ns, "ip", "-6", "addr", "add", f"fc00:ff::{n}/128", "dev", "lo")
    ctl = {R2: relayed_link(topo, r1, d2, r2, 2, tmp_path),
           R3: relayed_link(topo, r1, d3, r3, 3, tmp_path)}  # fmt: skip
    topo.link(peer, "fc00:a::9/64", r1, "fc00:a::1/64")  # BGP only
    for n, ns in ((2, r2), (3, r3)):
        topo.spawn(ns, *CAND, "run", "-c", str(responder_toml(tmp_path, n)),
                   log=tmp_path / f"r{n}.log")  # fmt: skip
    extra = f"""
[decision]
hysteresis = 0.01
[network_cost]
source = "probe"
[network_cost.probe]
rate = 20
jitter = 0.2
timeout = {TIMEOUT}
window = {WINDOW}
min_probes = 5
report_interval = 0.2
[network_cost.smoothing]
method = "none"
min_change = 0.5
min_interval = 0.2
"""
    conf = cand_toml(tmp_path, "r1", R1, ["fc00:a::9"], ["ingress"], extra=extra)
    sock = start_cand(topo, r1, conf, tmp_path, "r1")
    msgs = tmp_path / "paths.msgs"
    msgs.write_text("\n".join(raw.update_template(instance(n), 65000) for n in (2, 3)))
    topo.spawn(
        peer, sys.executable, "-m", "cand_testbed.raw_bgp_peer", "--connect", "fc00:a::1",
        "--source", "fc00:a::9", "--messages", str(msgs), log=tmp_path / "peer.jsonl",
    )  # fmt: skip

    async def costs() -> dict[str, dict[str, Any]]:
        data = await request(sock, "routes")
        return {e["egress"]: e for e in data["egresses"]}

    async def weights() -> dict[str, tuple[int, bool]]:
        data = await request(sock, "services")
        if not data:
            return {}
        return {i["egress"]: (i["weight"], i["reachable"]) for i in data[0]["instances"]}

    def delays(d2_ms: float, d3_ms: float) -> None:
        # the whole delay on the way out: the RTT is the added delay plus the path's own
        control(str(ctl[R2]), f"delay {d2_ms} 0")
        control(str(ctl[R3]), f"delay {d3_ms} 0")

    async def settled(want: dict[str, float]) -> dict[str, dict[str, Any]]:
        """A full window measured at these delays (results from before have left it)."""
        await asyncio.sleep(WINDOW + TIMEOUT)

        def ok(c: dict[str, Any]) -> bool:
            for e, ms in want.items():
                m = (c.get(e) or {}).get("measured") or {}
                if m.get("p50") is None or abs(m["p50"] - ms) > 3 or m.get("loss") != 0.0:
                    return False
                if m.get("results", 0) < 20:  # most of a window (40 at 20/s), not a first probe
                    return False
            return True

        return await until(f"p50 near {want}", costs, ok)

    def report(label: str, c: dict[str, Any], want: dict[str, float]) -> None:
        for e, ms in want.items():
            m = c[e]["measured"]
            print(
                f"{label} {e}: added {ms} ms, measured p50 {m['p50']} p90 {m['p90']} "
                f"p99 {m['p99']} jitter {m['jitter']} loss {m['loss']} "
                f"(results {m['results']}), cost {c[e]['cost']}"
            )

    async def scenario() -> None:
        await wait_api(sock)
        # the relays' own time: no delay added
        delays(0, 0)
        c0 = await settled({R2: 0, R3: 0})
        report("baseline", c0, {R2: 0, R3: 0})
        base = {e: c0[e]["measured"]["p50"] for e in (R2, R3)}
        for e in (R2, R3):
            assert c0[e]["source"] == "probe"
            assert base[e] < 1.0, f"the path itself takes {base[e]} ms"

        # 1. the measured RTT is the added delay, within 1 ms: what the path took with no
        # delay added (the relay's own copying, slower on a loaded machine) is not the delay
        delays(10, 3)
        c = await settled({R2: 10, R3: 3})
        report("delayed", c, {R2: 10, R3: 3})
        for e, ms in ((R2, 10.0), (R3, 3.0)):
            m = c[e]["measured"]
            added = m["p50"] - base[e]
            assert abs(added - ms) < 1.0, f"{e}: p50 {m['p50']} - path {base[e]} vs {ms} added"
            assert c[e]["reachable"] and abs(c[e]["cost"] - base[e] - ms) < 1.0
            assert c[e]["samples"] and c[e]["age"] is not None
        w = await until("weights favour r3", weights,
                        lambda w: len(w) == 2 and w[R3][0] > w[R2][0] > 0)  # fmt: skip
        print(f"weights at 10/3 ms: r2 {w[R2][0]} r3 {w[R3][0]}")

        # 2. shifting the delay moves new flows towards the faster egress
        delays(3, 10)
        c = await settled({R2: 3, R3: 10})
        report("shifted", c, {R2: 3, R3: 10})
        w = await until("weights favour r2", weights,
                        lambda w: w[R2][0] > w[R3][0] > 0)  # fmt: skip
        print(f"weights at 3/10 ms: r2 {w[R2][0]} r3 {w[R3][0]}")

        # 3. a black hole towards r3: unusable within the loss window
        control(str(ctl[R3]), "drop 1")
        t0 = time.monotonic()
        await until("r3 unusable", costs, lambda c: not c[R3]["reachable"])
        took = time.monotonic() - t0
        print(f"black hole: r3 unusable after {took:.2f} s (window {WINDOW} + timeout {TIMEOUT})")
        assert took <= WINDOW + TIMEOUT + 0.5
        w = await until("no weight to r3", weights, lambda w: w[R3] == (0, False))
        assert w[R2][0] > 0 and w[R2][1]
        c = await costs()
        assert c[R2]["reachable"] and c[R3]["measured"]["loss"] >= 0.5

        # and back
        control(str(ctl[R3]), "drop 0")
        await until("r3 back", weights, lambda w: w[R3][0] > 0 and w[R3][1])

        st = await request(sock, "status")
        (src,) = st["cost_sources"]
        assert src["kind"] == "probe" and src["refused"] == 0 and src["send_errors"] >= 0
        assert src["sent"] <= (time.monotonic() - t0 + 60) * 2 * 20  # bounded by the rate
        assert st["responders"] == []  # an ingress only: `auto` runs no responder
        for n in (2, 3):  # the egresses answered with no setting of their own
            (resp,) = (await request(tmp_path / f"r{n}.sock", "status"))["responders"]
            assert resp["bound"] and resp["answered"] > 0 and resp["bind_failures"] == 0

    try:
        asyncio.run(scenario())
    except BaseException:
        for name in ("r1", "r2", "r3", "relay2", "relay3"):
            p = tmp_path / f"{name}.log"
            if p.exists():
                print(f"--- {name}\n" + p.read_text()[-3000:])
        raise
