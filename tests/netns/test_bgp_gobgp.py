"""Instance routes between real cand + gobgpd routers in namespaces, direct and through an FRR
route reflector; the UPDATE bytes captured off the wire decode to the same routes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
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
from cand.model import InstanceState
from cand.wire import bgp, bgp_update

pytestmark = pytest.mark.netns
BINDING = "2001:db8:a::10"


def view(routes: list[dict[str, Any]]) -> tuple[tuple[str, int, int, str], ...]:
    return tuple(sorted((r["state"], r["load_permille"], r["l2"], r["binding"]) for r in routes))


async def follow(sock: Path, steps: list[tuple[str, Any]], agent: AgentProcess) -> list[Any]:
    """Drive the agent step by step; after each step wait until the ingress shows the
    expected view. Returns every distinct view the ingress showed, in order."""
    seen: list[Any] = []
    for command, expected in steps:
        await asyncio.to_thread(agent.say, command)
        deadline = time.monotonic() + 30
        while True:
            v = view(await received(sock))
            if not seen or seen[-1] != v:
                seen.append(v)
            if v == expected:
                break
            assert time.monotonic() < deadline, f"after {command!r}: {v} != {expected}"
            await asyncio.sleep(0.05)
    return seen


STEPS = [
    ("report cpu=0.3", (("up", 300, 7, BINDING),)),
    ("report cpu=0.7", (("up", 700, 3, BINDING),)),
    ("draining", (("draining", 700, 3, BINDING),)),
    ("exit", ()),
]


def capture(topo: Topology, ns: str, ifname: str, path: Path) -> subprocess.Popen[bytes]:
    p = topo.spawn(
        ns,
        "tcpdump",
        "--immediate-mode",
        "-i",
        ifname,
        "-U",
        "-s0",
        "-w",
        str(path),
        "tcp port 179",
        log=path.with_suffix(".tcpdump.log"),
    )
    time.sleep(0.5)
    return p


def updates_from_pcap(path: Path) -> list[bgp_update.Update]:
    from scapy.all import TCP, IPv6, rdpcap

    streams: dict[tuple[str, int, str, int], dict[int, bytes]] = {}
    for pkt in rdpcap(str(path)):
        if IPv6 in pkt and TCP in pkt and bytes(pkt[TCP].payload):
            k = (pkt[IPv6].src, pkt[TCP].sport, pkt[IPv6].dst, pkt[TCP].dport)
            streams.setdefault(k, {})[pkt[TCP].seq] = bytes(pkt[TCP].payload)
    out = []
    marker = b"\xff" * 16
    for segs in streams.values():
        data = b"".join(segs[s] for s in sorted(segs))
        i = data.find(marker)
        while i >= 0 and i + 19 <= len(data):
            length = int.from_bytes(data[i + 16 : i + 18], "big")
            msg = data[i : i + length]
            if 19 <= length <= 65535 and len(msg) == length and msg[18] == 2:
                out.append(bgp_update.decode_update(msg, addpath=True))  # bad bytes fail the test
            nxt = data.find(marker, i + max(length, 19)) if length >= 19 else -1
            i = nxt if nxt >= 0 else data.find(marker, i + 16)
    return out


def check_wire(updates: list[bgp_update.Update], sock_routes_seen: list[Any]) -> None:
    routes = []
    for u in updates:
        for _pid, svc, egress in u.announced:
            routes.append(bgp.decode_route(svc, egress, u.attributes, 65000))
    states = [
        (r.state.value, r.metrics.load_permille, r.metrics.l2)
        for r in routes
        if str(r.binding) == BINDING
    ]
    # every state the ingress showed was on the wire, in the same order
    shown = [v[0][:3] for v in sock_routes_seen if v]
    it = iter(states)
    assert all(any(s == w for w in it) for s in shown), (shown, states)
    assert any(u.withdrawn for u in updates), "the final withdrawal was not on the wire"
    assert all(r.sid is not None and r.state is not InstanceState.DOWN for r in routes)


def instance_lifecycle(
    topo: Topology,
    tmp: Path,
    e: str,
    e_addr: str,
    e_peer: str,
    i: str,
    i_addr: str,
    i_peer: str,
    i_ifname: str,
    e_speaker: str = "gobgp",
    i_speaker: str = "gobgp",
) -> list[bgp_update.Update]:
    """Egress and ingress cand on their namespaces; the instance goes up, changes load,
    drains and exits; the ingress shows each step in order, and the captured UPDATEs decode
    to the same routes."""
    port = start_mosquitto(topo, e, tmp)
    econf = cand_toml(tmp, "e", e_addr, [e_peer], ["egress"], mqtt_port=port, speaker=e_speaker)
    start_cand(topo, e, econf, tmp, "e")
    iconf = cand_toml(tmp, "i", i_addr, [i_peer], ["ingress"], speaker=i_speaker)
    isock = start_cand(topo, i, iconf, tmp, "i")
    pcap = tmp / "i.pcap"
    dump = capture(topo, i, i_ifname, pcap)

    async def main() -> list[Any]:
        await wait_api(isock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        return await follow(isock, STEPS, agent)

    seen = asyncio.run(main())
    assert seen[-1] == ()
    time.sleep(0.3)
    dump.terminate()  # flushes the capture file
    dump.wait(5)
    updates = updates_from_pcap(pcap)
    check_wire(updates, seen)
    return updates


def owned_attributes(updates: list[bgp_update.Update]) -> list[dict[int, bytes]]:
    """What cand puts in every announcement, as sent: D-BID, metrics, Prefix-SID; the
    sequence-number words (codes 11, 12: wall-clock based) are blanked for comparison."""
    out = []
    for u in updates:
        if not u.announced:
            continue
        attrs = {t: a.value for t, a in u.attributes.items() if t in (25, 32, 40)}
        lc = attrs[32]
        words = [lc[i : i + 12] for i in range(0, len(lc), 12)]
        attrs[32] = b"".join(
            w[:8] + b"\0\0\0\0" if int.from_bytes(w[4:8], "big") in (11, 12) else w for w in words
        )
        out.append(attrs)
    return out


@pytest.mark.parametrize(("e_speaker", "i_speaker"), [("exabgp", "gobgp"), ("gobgp", "exabgp")])
def test_exabgp_and_gobgp_interoperate_byte_for_byte(
    topo: Topology, tmp_path: Path, e_speaker: str, i_speaker: str
) -> None:
    """Each speaker as egress towards the other; the same script gives the same routes at the
    ingress, and the attributes cand owns are the same bytes whichever speaker sent them."""
    e, i = topo.ns("egress"), topo.ns("ingress")
    _ie, ii = topo.link(e, "fc00:a::3/64", i, "fc00:a::1/64")
    mixed = instance_lifecycle(
        topo,
        tmp_path,
        e,
        "fc00:a::3",
        "fc00:a::1",
        i,
        "fc00:a::1",
        "fc00:a::3",
        ii,
        e_speaker,
        i_speaker,
    )
    e2, i2 = topo.ns("egress2"), topo.ns("ingress2")
    _ie2, ii2 = topo.link(e2, "fc00:a::3/64", i2, "fc00:a::1/64")
    sub = tmp_path / "reference"
    sub.mkdir()
    reference = instance_lifecycle(
        topo, sub, e2, "fc00:a::3", "fc00:a::1", i2, "fc00:a::1", "fc00:a::3", ii2
    )
    assert owned_attributes(mixed) == owned_attributes(reference)


def test_direct_gobgp_to_gobgp(topo: Topology, tmp_path: Path) -> None:
    e, i = topo.ns("egress"), topo.ns("ingress")
    _ie, ii = topo.link(e, "fc00:a::3/64", i, "fc00:a::1/64")
    instance_lifecycle(topo, tmp_path, e, "fc00:a::3", "fc00:a::1", i, "fc00:a::1", "fc00:a::3", ii)


def test_through_frr_route_reflector(topo: Topology, tmp_path: Path) -> None:
    e, rr, i = topo.ns("egress"), topo.ns("rr"), topo.ns("ingress")
    topo.link(e, "fc00:b::3/64", rr, "fc00:b::100/64")
    _rri, ii = topo.link(rr, "fc00:a::100/64", i, "fc00:a::1/64")
    topo.exec(e, "ip", "-6", "route", "add", "fc00:a::/64", "via", "fc00:b::100")
    topo.exec(i, "ip", "-6", "route", "add", "fc00:b::/64", "via", "fc00:a::100")
    start_frr_rr(topo, rr, tmp_path, "10.255.0.100", ["fc00:b::3", "fc00:a::1"])
    instance_lifecycle(
        topo, tmp_path, e, "fc00:b::3", "fc00:b::100", i, "fc00:a::1", "fc00:a::100", ii
    )


def test_flapping_instance_is_damped_on_the_wire(topo: Topology, tmp_path: Path) -> None:
    """20 state flaps in a few seconds: the egress sends a bounded number of UPDATEs (the flap
    penalty suppresses the instance after 3), and `cand routes` at both ends says so."""
    e, i = topo.ns("egress"), topo.ns("ingress")
    _ie, ii = topo.link(e, "fc00:a::3/64", i, "fc00:a::1/64")
    port = start_mosquitto(topo, e, tmp_path)
    econf = cand_toml(tmp_path, "e", "fc00:a::3", ["fc00:a::1"], ["egress"], mqtt_port=port)
    esock = start_cand(topo, e, econf, tmp_path, "e")
    isock = start_cand(
        topo, i, cand_toml(tmp_path, "i", "fc00:a::1", ["fc00:a::3"], ["ingress"]), tmp_path, "i"
    )
    pcap = tmp_path / "i.pcap"
    dump = capture(topo, i, ii, pcap)
    flaps = 20

    async def main() -> None:
        await wait_api(isock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await follow(isock, STEPS[:1], agent)
        for n in range(flaps):
            await asyncio.to_thread(agent.say, "draining" if n % 2 == 0 else "up")
        await asyncio.sleep(2)
        status = await request(esock, "status")
        assert status["speaker"]["withdrawn"] >= 1  # held down: withdrawn while suppressed

    from cand.api import request

    asyncio.run(main())
    out = subprocess.run(
        [sys.executable, "-m", "cand.cli", "routes", "-s", str(isock)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Received paths:" in out
    dump.terminate()
    dump.wait(5)
    updates = updates_from_pcap(pcap)
    announcements = sum(len(u.announced) for u in updates)
    withdrawals = sum(len(u.withdrawn) for u in updates)
    print(f"{flaps} flaps -> {announcements} announcements, {withdrawals} withdrawals on the wire")
    # first announcement + 3 flaps before the penalty (3000) is exceeded, then one withdrawal
    assert announcements <= 5
    assert withdrawals == 1


def test_cand_crash_keeps_routes_and_restart_adopts_them(topo: Topology, tmp_path: Path) -> None:
    """kill -9 of cand on the egress: gobgpd (its own session) keeps the path up; the restarted
    cand attaches to it, and the ingress never sees the path go away."""
    e, i = topo.ns("egress"), topo.ns("ingress")
    topo.link(e, "fc00:a::3/64", i, "fc00:a::1/64")
    port = start_mosquitto(topo, e, tmp_path)
    econf = cand_toml(tmp_path, "e", "fc00:a::3", ["fc00:a::1"], ["egress"], mqtt_port=port)
    start_cand(topo, e, econf, tmp_path, "e")
    egress_cand = topo.procs[-1]
    isock = start_cand(
        topo, i, cand_toml(tmp_path, "i", "fc00:a::1", ["fc00:a::3"], ["ingress"]), tmp_path, "i"
    )
    views: list[Any] = []

    async def watch(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            views.append(view(await received(isock)))
            await asyncio.sleep(0.05)

    async def main() -> None:
        await wait_api(isock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await follow(isock, STEPS[:1], agent)
        esock = tmp_path / "e.sock"
        before = (await request(esock, "status"))["speaker"]["gobgpd_pid"]
        egress_cand.kill()
        egress_cand.wait(5)
        await watch(2.0)
        start_cand(topo, e, econf, tmp_path, "e2")  # same config, log e2.log
        await wait_api(esock)
        await watch(3.0)
        st = await request(esock, "status")
        # The new cand adopted the gobgpd that kept running (found by its pid file) as its own.
        assert st["speaker"]["managed"] is True
        assert st["speaker"]["gobgpd_pid"] == before
        await asyncio.to_thread(agent.say, "report cpu=0.5")
        await follow(isock, [("report cpu=0.5", (("up", 500, 5, BINDING),))], agent)

    from cand.api import request

    asyncio.run(main())
    assert views
    assert all(v == (("up", 300, 7, BINDING),) for v in views), set(views)


def test_gobgpd_killed_is_restarted_and_reannounces(topo: Topology, tmp_path: Path) -> None:
    """kill -9 of the egress's gobgpd: cand starts a new one and announces again; the ingress,
    through graceful restart, keeps the path meanwhile (stale) and then has it fresh."""
    e, i = topo.ns("egress"), topo.ns("ingress")
    topo.link(e, "fc00:a::3/64", i, "fc00:a::1/64")
    port = start_mosquitto(topo, e, tmp_path)
    econf = cand_toml(tmp_path, "e", "fc00:a::3", ["fc00:a::1"], ["egress"], mqtt_port=port)
    esock = start_cand(topo, e, econf, tmp_path, "e")
    isock = start_cand(
        topo, i, cand_toml(tmp_path, "i", "fc00:a::1", ["fc00:a::3"], ["ingress"]), tmp_path, "i"
    )
    views: list[Any] = []

    def gobgpd_pids(ns: str) -> list[str]:
        in_ns = set(
            subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True
            ).stdout.split()
        )
        named = subprocess.run(
            ["pgrep", "-x", "gobgpd"], capture_output=True, text=True
        ).stdout.split()
        return [p for p in named if p in in_ns]

    async def main() -> None:
        from cand.api import request

        await wait_api(isock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await follow(isock, STEPS[:1], agent)
        pids = gobgpd_pids(e)
        assert len(pids) == 1
        topo.exec(e, "kill", "-9", pids[0])
        end = time.monotonic() + 12
        while time.monotonic() < end:
            views.append(view(await received(isock)))
            new = gobgpd_pids(e)
            if (
                new
                and new != pids
                and (await request(esock, "status"))["speaker"]["advertised"] >= 2
            ):
                break
            await asyncio.sleep(0.1)
        assert (await request(esock, "status"))["speaker"]["advertised"] >= 2  # announced again
        await asyncio.to_thread(agent.say, "report cpu=0.6")
        await follow(isock, [("report cpu=0.6", (("up", 600, 4, BINDING),))], agent)

    asyncio.run(main())
    assert all(v == (("up", 300, 7, BINDING),) for v in views), set(views)
