"""The Figure-2 lab end to end: real clients, real instances reporting over MQTT, gobgpd and
cand on three D-Routers, FRR reflecting, packets steered over SRv6 by the Linux data plane.

Every test runs twice: with dr1 (c1's ingress) on the Linux data plane, and with dr1's data
plane a BMv2 switch running p4/cand.p4 that dr1's cand programs (`[dataplane] kind = "p4"`;
the egresses dr2 and dr3 stay on Linux). One lab per data plane (it takes ~10 s to
converge); every test leaves it as it found it, and the instance kill runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cand_testbed.fig2 import APP, DATAPLANES, INSTANCES, ROUTERS, WEB, Fig2

from cand.api import ApiError
from cand.lab.netns import netns_available
from tests.conftest import need
from tests.p4util import need_p4

pytestmark = [pytest.mark.netns, pytest.mark.fig2]
D_BID = {name: b for name, (_, b, _) in INSTANCES.items()}


@pytest.fixture(scope="module", params=DATAPLANES)
def lab(request: pytest.FixtureRequest) -> Iterator[Fig2]:
    why = netns_available()
    need(why is None, why or "")
    if request.param == "p4":
        need_p4("p4c-bm2-ss", "simple_switch_grpc")
    f = Fig2(dataplane=request.param)
    f.up()
    try:
        took = asyncio.run(f.wait_ready())
        print(f"\nlab ({request.param} at dr1) converged {took:.1f} s after up")
        yield f
    finally:
        f.down()


def served(lab: Fig2, client: str, dsid: str, n: int) -> Counter[str | None]:
    return Counter(lab.once(client, dsid).get("served_by") for _ in range(n))


async def until(pred: Any, timeout: float = 15.0, every: float = 0.05) -> float:
    start = time.monotonic()
    while not await pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(every)
    return time.monotonic() - start


def rows(p: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, _ = p.communicate(timeout=60)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_clients_reach_both_services_over_srv6(lab: Fig2, tmp_path: Path) -> None:
    pcap = tmp_path / "dr1-core.pcap"
    cap = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("dr1"), "tcpdump", "--immediate-mode", "-U", "-i",
         "eth1", "-w", str(pcap), "ip6 proto 43"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        web = served(lab, "c1", WEB, 12)
        app = served(lab, "c1", APP, 4)
        time.sleep(0.3)
    finally:
        cap.terminate()
        cap.wait(5)
    assert None not in web and None not in app, (web, app)
    assert set(web) == {"web-2", "web-3"}  # both instances take new flows
    from scapy.all import IPv6, IPv6ExtHdrSegmentRouting, rdpcap

    sids = {i["sid"] for s in asyncio.run(lab.api("dr1", "services")) for i in s["instances"]}
    srh = [p for p in rdpcap(str(pcap)) if IPv6ExtHdrSegmentRouting in p]
    assert srh, "no SRv6 on the wire between dr1 and the core"
    assert {p[IPv6].dst for p in srh} <= sids
    assert {p[IPv6].src for p in srh} == {"fc00:1::1"}


# one probe in the cost source's form (sticky type-4 SRH: the instance's SID, then the
# responder at the egress's router id), sent from dr1's router address; prints the reply's
# responder field, or nothing when no reply came within a second
PROBE_ONCE = """
import socket, sys, time, ipaddress
from cand.wire import probe as wire
me, egress, sid = (ipaddress.IPv6Address(a) for a in sys.argv[1:4])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, wire.routing_header(sid, egress))
s.bind((str(me), 0))
s.connect((str(egress), int(sys.argv[4])))
s.settimeout(1.0)
for seq in range(3):
    s.send(wire.encode(wire.Probe(wire.Kind.PROBE, 7, seq, me, time.time_ns())))
    try:
        print(wire.decode(s.recv(wire.SIZE + 1)).responder)
        break
    except TimeoutError:
        pass
"""


def test_egresses_answer_probes_sent_through_their_instances_sids(lab: Fig2) -> None:
    """The probe cost source's path through an egress running the Linux data plane: the
    probe's outer destination is an instance's SID, which that egress's nftables marks for
    delivery to the instance. Only tunnelled packets may get that mark; a probe must reach
    the responder (on by default at every egress) at the router id, not the instance."""
    targets = {
        (i["egress"], i["sid"])
        for s in asyncio.run(lab.api("dr1", "services"))
        for i in s["instances"]
        if i["egress"] != "fc00:1::1"
    }
    assert {e for e, _ in targets} == {"fc00:2::1", "fc00:3::1"}, targets
    for egress, sid in sorted(targets):
        out = subprocess.run(
            ["ip", "netns", "exec", lab.ns("dr1"), sys.executable, "-c", PROBE_ONCE,
             "fc00:1::1", egress, sid, "8620"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == egress, f"no answer from {egress} via {sid}: {out}"


def test_service_nat_and_three_tuple_affinity(lab: Fig2) -> None:
    answers = [lab.once("c1", APP) for _ in range(6)]
    assert len({a["served_by"] for a in answers}) == 1, answers  # 3-tuple: one instance
    for a in answers:
        assert a["peer"] == APP  # the client's socket only ever sees the D-SID
        assert a["local"] == D_BID[a["served_by"]]  # the unmodified server, its own address
        assert a["client"] == "fc00:c1::2"  # and it sees the real client
    b = subprocess.run(
        ["ip", "netns", "exec", lab.ns("dr1"), sys.executable, "-m", "cand.cli", "bindings",
         "--json", "--socket", str(lab.run / "dr1.sock")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    three = [r for r in json.loads(b) if r["flow_key"] == "3-tuple"]
    assert any(r["flow"].startswith("fc00:c1::2 ") for r in three), three


def test_overloaded_instance_gets_no_new_flows_and_keeps_its_connections(lab: Fig2) -> None:
    keep = lab.load("c1", [WEB], rate=0, keep=8, duration=14, every=0.25)
    time.sleep(1.5)  # the long-lived connections are open, about half of them on web-3
    assert lab.control("web-3", "cpu 0.97") == "ok"

    async def overloaded() -> bool:
        return (await lab.weights("dr1"))[WEB].get(D_BID["web-3"]) == 0

    took = asyncio.run(until(overloaded))
    print(f"\nweb-3 overloaded -> weight 0 at dr1 after {took * 1000:.0f} ms")
    try:
        new = served(lab, "c1", WEB, 12)
        assert new == Counter({"web-2": 12}), new
    finally:
        assert lab.control("web-3", "cpu 0.1") == "ok"
    got = rows(keep)
    on3 = {r["conn"] for r in got if r["served_by"] == "web-3"}
    assert on3, "no long-lived connection landed on web-3"
    broken = [r for r in got if r["served_by"] is None]
    assert broken == []  # every long-lived connection answered throughout
    late = [r for r in got if r["conn"] in on3 and r["t"] > 10]
    assert late and all(r["served_by"] == "web-3" for r in late)  # and stayed on web-3

    async def recovered() -> bool:
        return (await lab.weights("dr1"))[WEB].get(D_BID["web-3"], 0) > 0

    asyncio.run(until(recovered))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill9"])
def test_ingress_restart_breaks_no_connection(lab: Fig2, sig: signal.Signals) -> None:
    """dr1's cand stopped (SIGTERM) or killed (kill -9) and started again while c1's live
    connections send a request every 200 ms: the data plane (kernel, or BMv2) forwards
    them all along, and the new daemon adopts what the old one left."""
    keep = lab.load("c1", [WEB, APP], rate=0, keep=3, duration=12, every=0.2)
    time.sleep(1.5)
    lab.stop_cand("dr1", sig)
    lab.start_cand("dr1")
    asyncio.run(lab.wait_ready())
    got = rows(keep)
    assert got and [r for r in got if r["served_by"] is None] == []
    conns = {r["conn"] for r in got}
    assert len(conns) == 6  # not one connection was reopened
    for c in conns:  # each stayed on its first instance
        assert len({r["served_by"] for r in got if r["conn"] == c}) == 1
    dp = asyncio.run(lab.api("dr1", "status"))["dataplane"]
    # the new daemon took over the old state: the kernel's slots, or the switch's bindings,
    # read back (the 3 web flows and c1's one 3-tuple app binding), none of them made anew
    if lab.dataplane == "linux":
        assert dp["adopted"] > 0, dp
    else:
        assert dp["bindings"] >= 4 and dp["bound"] == 0 and dp["reconciled"] >= 1, dp
    assert None not in served(lab, "c1", WEB, 4)


def test_restart_under_load_moves_no_flow_and_withdraws_nothing(lab: Fig2) -> None:
    restart_under_load(lab)


def restart_under_load(lab: Fig2) -> None:
    """`cand restart` of the egress behind web-3/app-3, then of the ingress, while clients
    hold connections: dr1 keeps every instance in its tables all along, gobgpd is the same
    process afterwards, and no connection breaks or moves."""
    keep = lab.load("c1", [WEB, APP], rate=0, keep=3, duration=12, every=0.2)
    time.sleep(1.5)
    gobgpd = {r: asyncio.run(lab.api(r, "status"))["speaker"].get("gobgpd_pid") for r in ROUTERS}
    tables: list[dict[str, set[str]]] = []

    async def restarts() -> None:
        async def watch() -> None:
            while True:
                w = await lab.weights("dr1")
                tables.append({s: set(b) for s, b in w.items()})
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            await lab.restart_cand("dr3")
            await asyncio.sleep(2.0)
            await lab.restart_cand("dr1")
            await asyncio.sleep(2.0)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiError):
                await watcher

    asyncio.run(restarts())
    got = rows(keep)
    assert got and [r for r in got if r["served_by"] is None] == []
    conns = {r["conn"] for r in got}
    assert len(conns) == 6  # not one connection was reopened
    for c in conns:
        assert len({r["served_by"] for r in got if r["conn"] == c}) == 1
    everyone = {WEB: {D_BID["web-2"], D_BID["web-3"]}, APP: {D_BID["app-2"], D_BID["app-3"]}}
    assert tables and all(t == everyone for t in tables), [t for t in tables if t != everyone][:3]
    if lab.speaker == "gobgp":
        after = {r: asyncio.run(lab.api(r, "status"))["speaker"].get("gobgpd_pid") for r in ROUTERS}
        assert after == gobgpd and None not in after.values()


def test_killed_instance_stops_getting_new_flows(lab: Fig2) -> None:
    lab.kill_instance("web-3")
    t0 = time.monotonic()

    async def gone() -> bool:
        return D_BID["web-3"] not in (await lab.weights("dr1"))[WEB]

    asyncio.run(until(gone, every=0.01))
    ms = (time.monotonic() - t0) * 1000
    print(f"\nweb-3 killed -> gone from dr1's service table after {ms:.0f} ms")
    assert served(lab, "c1", WEB, 10) == Counter({"web-2": 10})
    lab.start_instance("web-3")
    asyncio.run(lab.wait_ready())
