"""The P4 data plane (cand_p4.dataplane.P4Dataplane, `[dataplane] kind = "p4"`) driving BMv2
in namespaces with the engine's effects: new flows are placed by the switch's selector and
bound by digest; bindings survive weight changes, an instance's removal and a restart of the
plugin; 3-tuple affinity; idle timeout removes a binding.

    h1 (clients) ──port 1── sw (BMv2, cand.p4) ──port 2── h2 (captures the SRv6 packets)

Every test starts and ends its own BMv2 (by PID, in the topology fixture) and namespaces.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import finsy as fy
import pytest
from cand_p4 import entries as e
from cand_p4 import names as n
from cand_p4 import state as st
from cand_p4.dataplane import P4Dataplane, P4Options, Port, already_exists
from cand_p4.switch import P4Switch, Pipeline

from cand.engine.effects import (
    Effect,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RemoveService,
)
from cand.engine.service_table import Choice, InstanceMode, ServiceEntry, ServiceSpec
from cand.lab.netns import Topology
from cand.model import (
    BindingId,
    FlowKeyKind,
    InstanceKey,
    InstanceState,
    RouterId,
    ServiceId,
)
from tests.netns.test_p4_bmv2 import H1, SW_MAC, Rig, make_rig
from tests.srv6wire import check_h_encaps, decode, need_tshark

pytestmark = pytest.mark.netns

VIP = "2001:db8:5::1"
EGRESS = "fc00:1e::3"
INSTANCES = {  # D-BID -> its per-instance SID at the egress
    "2001:db8:a::10": "fc00:0:3::11",
    "2001:db8:b::10": "fc00:0:3::12",
}
A, B = "2001:db8:a::10", "2001:db8:b::10"
ROUTER = "fc00:1e::1"


@pytest.fixture
def rig(topo: Topology, tmp_path: Path) -> Rig:
    return make_rig(topo, tmp_path)


def entry(
    weights: dict[str, int], *, three_tuple: bool = False, timeout: float = 300.0
) -> ServiceEntry:
    service = ServiceId.parse(VIP)
    spec = ServiceSpec(
        service,
        flow_key=FlowKeyKind.THREE_TUPLE if three_tuple else FlowKeyKind.FIVE_TUPLE,
        affinity_timeout=timeout,
    )
    choices = tuple(
        Choice(
            InstanceKey(service, BindingId.parse(dbid)),
            RouterId.parse(EGRESS),
            ipaddress.IPv6Address(INSTANCES[dbid]),
            w,
            InstanceState.UP,
            load_permille=0,
            l2=10,
            network_cost=1.0,
            local=False,
        )
        for dbid, w in weights.items()
    )
    return ServiceEntry(spec, choices)


def make_dp(rig: Rig, **options: Any) -> P4Dataplane:
    opts = P4Options(address=rig.sw.address, **{"adopt_hold": 0.0, **options})
    ports = [
        Port(1, SW_MAC, rig.h1_mac, ("fc00:1::/64",)),
        Port(2, SW_MAC, rig.h2_mac, ("fc00:0:3::/48", "fc00:2::/64")),
    ]
    pipeline = Pipeline(rig.program.json, rig.program.p4info)
    return P4Dataplane(opts, ports, RouterId.parse(ROUTER), pipeline=pipeline)


async def _no_events(_: Any) -> None:
    return None


@asynccontextmanager
async def running(dp: P4Dataplane, *effects: Effect) -> AsyncIterator[P4Dataplane]:
    """The plugin's run loop as the daemon runs it, connected; cancelled on the way out."""
    if effects:
        await dp.apply(effects)
    task = asyncio.create_task(dp.run(_no_events))
    try:
        for _ in range(200):
            if dp.status()["connected"] and dp.status()["reconciled"] >= 1:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the plugin never connected: {dp.status()}")
        yield dp
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def syn(sport: int, src: str = H1) -> Any:
    from scapy.all import TCP, Ether, IPv6

    return Ether(dst=SW_MAC) / IPv6(src=src, dst=VIP, hlim=64) / TCP(sport=sport, dport=80)


async def where(rig: Rig, name: str, frames: Iterable[Any]) -> dict[int, list[str]]:
    """Sends `frames` from h1; for each TCP source port, the instances (by D-BID) its packets
    were encapsulated towards, in order, as captured on h2."""
    from scapy.all import TCP, IPv6, IPv6ExtHdrSegmentRouting

    frames = list(frames)
    cap, pcap = await asyncio.to_thread(rig.capture, name)
    await asyncio.to_thread(rig.send, *frames)
    got = await asyncio.to_thread(rig.captured, cap, pcap)
    by_sid = {sid: dbid for dbid, sid in INSTANCES.items()}
    out: dict[int, list[str]] = {}
    for p in got:
        if IPv6ExtHdrSegmentRouting in p and TCP in p:
            out.setdefault(p[TCP].sport, []).append(by_sid[p[IPv6].dst])
    return out


async def bound(dp: P4Dataplane, count: int, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if len(dp.bound) >= count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{len(dp.bound)} bindings, waited for {count}: {dp.status()}")


async def device_bindings(dp: P4Dataplane) -> dict[e.FlowKey, e.Target]:
    """The binding table as the switch holds it, read over the plugin's session."""
    from cand_p4 import state as st

    assert dp.sw is not None
    rows = await dp.sw.read(fy.P4TableEntry(n.BINDING.name))
    return {st.flow_key_of(r.match): st.target_of(r.action) for r in rows}


def test_a_new_flow_is_bound_by_digest_and_stays_across_a_weight_change(rig: Rig) -> None:
    async def main() -> None:
        dp = make_dp(rig)
        async with running(dp, ProgramService(entry({A: 500, B: 500}))):
            first = await where(rig, "first", [syn(40000)])
            await bound(dp, 1)
            (instance,) = first[40000]
            other = B if instance == A else A
            key = e.FlowKey(H1, VIP, 6, 40000, 80)
            assert dp.bound == {key: e.ToSid(INSTANCES[instance])}
            # a repeated digest's insert is refused as ALREADY_EXISTS, which is no error
            assert dp.sw is not None
            with pytest.raises(fy.P4ClientError) as twice:
                await dp.sw.write([+e.binding(key, e.ToSid(INSTANCES[A]), idle_timeout_s=60)])
            assert already_exists(twice.value)
            # all new flows to the other instance now: the bound flow stays where it is
            await dp.apply([ProgramService(entry({instance: 0, other: 1000}))])
            after = await where(
                rig, "after", [syn(40000), syn(40000), *map(syn, range(41000, 41008))]
            )
            assert after[40000] == [instance, instance]
            assert all(after[p] == [other] for p in range(41000, 41008)), after
            rows = {str(b.flow): b for b in await dp.bindings()}
            mine = next(b for b in rows.values() if b.flow.client_port == 40000)
            assert str(mine.binding) == instance and str(mine.egress) == EGRESS
            assert mine.packets == 2 and mine.bytes is not None and mine.bytes > 0
            assert dp.status()["errors"] == 0, dp.status()

    asyncio.run(main())


def test_three_tuple_affinity_keeps_a_clients_flows_together(rig: Rig) -> None:
    async def main() -> None:
        dp = make_dp(rig)
        async with running(dp, ProgramService(entry({A: 500, B: 500}, three_tuple=True))):
            got = await where(rig, "c1", [syn(p) for p in range(42000, 42016)])
            await bound(dp, 1)
            used = {i for hops in got.values() for i in hops}
            assert len(got) == 16 and len(used) == 1, got
            assert list(dp.bound) == [e.FlowKey(H1, VIP, 6, 0, 0)]
            # another client, many ports: one instance for all of them too
            got2 = await where(rig, "c2", [syn(p, src="fc00:1::3") for p in range(42000, 42016)])
            assert len({i for hops in got2.values() for i in hops}) == 1, got2
        # a 5-tuple service spreads the same ports over both instances
        dp5 = make_dp(rig)
        async with running(dp5, ProgramService(entry({A: 500, B: 500}))):
            got5 = await where(rig, "five", [syn(p, src="fc00:1::4") for p in range(43000, 43016)])
            assert {i for hops in got5.values() for i in hops} == {A, B}, got5

    asyncio.run(main())


def test_a_removed_instance_gets_no_new_flow_but_keeps_its_bound_ones(rig: Rig) -> None:
    async def main() -> None:
        dp = make_dp(rig)
        async with running(dp, ProgramService(entry({A: 500, B: 500}))):
            # bind flows until one is on B
            got = await where(rig, "spread", [syn(p) for p in range(44000, 44016)])
            on_b = [p for p, hops in got.items() if hops == [B]]
            assert on_b, got
            await bound(dp, 16)
            await dp.apply([ProgramService(entry({A: 1000}))])  # B withdrawn
            new = await where(rig, "new", [syn(p) for p in range(45000, 45032)])
            assert len(new) == 32 and all(hops == [A] for hops in new.values()), new
            old = await where(rig, "old", [syn(on_b[0])])
            assert old[on_b[0]] == [B]  # bound: its flow goes on
            # the service removed altogether: its bindings go too
            await dp.apply([RemoveService(ServiceId.parse(VIP))])
            assert await device_bindings(dp) == {}

    asyncio.run(main())


def test_restarting_the_plugin_keeps_established_bindings_and_reconciles(rig: Rig) -> None:
    async def main() -> None:
        effect = ProgramService(entry({A: 500, B: 500}))
        dp = make_dp(rig)
        async with running(dp, effect):
            first = await where(rig, "before", [syn(46000), syn(46001)])
            await bound(dp, 2)
        # no controller: the switch forwards the bound flows as they were
        away = await where(rig, "away", [syn(46000), syn(46001)])
        assert away == first
        pipeline = Pipeline(rig.program.json, rig.program.p4info)
        async with P4Switch(rig.sw.address, pipeline, election_id=30) as sw:
            # damage while cand is away: a stray service entry, a deleted route
            await sw.write(
                [
                    +e.service("2001:db8:6::1", 99, three_tuple=False, default_route=True),
                    -fy.P4TableEntry(n.ROUTER.name, match=fy.P4TableMatch(dst="fc00:1::/64")),
                ]
            )
        # a new cand that has not heard from the engine yet holds on to everything
        held = make_dp(rig, adopt_hold=60.0)
        async with running(held):
            assert set(await device_bindings(held)) == set(dp.bound)
            assert held.have is not None and "2001:db8:6::1" in held.have.services
        # the next one knows the engine's entry and reconciles at once
        again = make_dp(rig)
        async with running(again, effect):
            assert again.have is not None
            assert set(again.have.services) == {VIP}
            assert "fc00:1::/64" in again.have.routes
            assert set(await device_bindings(again)) == set(dp.bound)
            after = await where(rig, "after", [syn(46000), syn(46001)])
            assert after == first  # established flows stay on their instances
            assert again.status()["writes"] >= 1

    asyncio.run(main())


def test_idle_timeout_deletes_a_binding(rig: Rig) -> None:
    async def main() -> None:
        dp = make_dp(rig, idle_timeout=2.0)
        async with running(dp, ProgramService(entry({A: 500, B: 500}))):
            await where(rig, "once", [syn(47000)])
            await bound(dp, 1)
            assert len(await device_bindings(dp)) == 1
            for _ in range(100):
                if dp.status()["expired"] >= 1:
                    break
                await asyncio.sleep(0.1)
            assert dp.status()["expired"] == 1, dp.status()
            assert dp.bound == {}
            assert await device_bindings(dp) == {}
            assert await dp.bindings() == []

    asyncio.run(main())


def test_a_switch_that_goes_away_is_reconnected_and_reprogrammed(rig: Rig) -> None:
    """BMv2 stopped under a running plugin: the plugin counts the loss and keeps running (the
    daemon never sees an exception), takes effects meanwhile, and once a new BMv2 (empty, no
    program) listens again it reconnects with backoff, pushes the program and writes every
    entry: new flows follow the weights set while the switch was away."""

    async def main() -> None:
        dp = make_dp(rig, reconnect_max=0.5)
        async with running(dp, ProgramService(entry({A: 500, B: 500}))):
            await where(rig, "up", [syn(48000)])
            await bound(dp, 1)
            assert rig.sw.proc is not None
            rig.sw.proc.terminate()
            await asyncio.to_thread(rig.sw.proc.wait, 10)
            for _ in range(100):
                if not dp.status()["connected"]:
                    break
                await asyncio.sleep(0.05)
            assert not dp.status()["connected"], dp.status()
            await dp.apply([ProgramService(entry({A: 0, B: 1000}))])  # no switch: kept
            await asyncio.sleep(1.0)  # a few failed tries
            failed = dp.status()["errors"]
            assert failed >= 1 and dp.status()["disconnects"] == 1, dp.status()
            assert await dp.bindings() == []
            rig.sw.socket.unlink(missing_ok=True)
            await asyncio.to_thread(rig.sw.start, rig.topo)
            for _ in range(200):
                if dp.status()["connected"] and dp.status()["connects"] == 2:
                    break
                await asyncio.sleep(0.05)
            assert dp.status()["connects"] == 2, dp.status()
            got = await where(rig, "back", [syn(p) for p in range(48100, 48108)])
            assert len(got) == 8 and all(h == [B] for h in got.values()), got

    asyncio.run(main())


def test_a_local_nat_instance_is_delivered_by_end_dx6_until_it_is_removed(rig: Rig) -> None:
    """Egress role through the plugin: ProgramLocalInstance of a `nat` service writes End.DX6
    with ServiceNAT (the D-SID becomes the D-BID) and nat_out; RemoveLocalInstance takes both
    away, and the instance's SID is no longer received."""
    from scapy.all import TCP, Ether, IPv6, IPv6ExtHdrSegmentRouting

    sid = "fc00:0:2::11"
    key = InstanceKey(ServiceId.parse(VIP), BindingId.parse(A))

    def towards() -> Any:
        srh = IPv6ExtHdrSegmentRouting(addresses=[sid], segleft=0, nh=41)
        inner = IPv6(src=H1, dst=VIP) / TCP(sport=49000, dport=80, flags="S")
        return Ether(dst=SW_MAC) / IPv6(src=ROUTER, dst=sid) / srh / inner

    async def delivered(name: str) -> list[Any]:
        cap, pcap = await asyncio.to_thread(rig.capture, name)
        await asyncio.to_thread(rig.send, towards())
        got = await asyncio.to_thread(rig.captured, cap, pcap)
        return [p for p in got if TCP in p and p[TCP].sport == 49000]

    async def main() -> None:
        dp = make_dp(rig)
        dp.modes[ServiceId.parse(VIP)] = InstanceMode.NAT
        dp.static = st.Static(
            routes={**dp.static.routes, "2001:db8:a::/64": 2}, nexthops=dp.static.nexthops
        )
        async with running(dp, ProgramLocalInstance(key, ipaddress.IPv6Address(sid))):
            assert dp.have is not None
            assert dp.have.local_sids == {sid: st.LocalSid(A, True)}
            assert dp.have.nat_out == {A: VIP}
            (p,) = await delivered("in")
            assert IPv6ExtHdrSegmentRouting not in p
            assert (p[IPv6].src, p[IPv6].dst) == (H1, A)
            await dp.apply([RemoveLocalInstance(key, ipaddress.IPv6Address(sid))])
            assert dp.have.local_sids == {} and dp.have.nat_out == {}
            assert await delivered("gone") == []

    asyncio.run(main())


@pytest.mark.parametrize("reduced", [False, True], ids=["srh", "reduced"])
def test_srv6_of_a_new_flow_decodes_in_tshark(rig: Rig, reduced: bool) -> None:
    """The packets of one new flow, the first placed by the selector (and digested) and the
    rest by its binding, captured on the egress side and decoded by Wireshark's dissectors:
    H.Encaps towards the instance's per-instance SID, the configured hop limit, the inner
    packet intact (hop limit lowered once, flow label, traffic class and checksum kept)."""
    from scapy.all import TCP, Ether, IPv6

    need_tshark()

    def packet(flags: str, seq: int, data: bytes) -> Any:
        ip = IPv6(src=H1, dst=VIP, hlim=64, tc=0x28, fl=0x12345)
        return Ether(dst=SW_MAC) / ip / TCP(sport=40500, dport=80, flags=flags, seq=seq) / data

    first = packet("S", 1000, b"")
    rest = [packet("A", 1001 + 100 * i, bytes([65 + i]) * (100 * i + 1)) for i in range(3)]

    async def main() -> Path:
        dp = make_dp(rig, hop_limit=40, reduced_encap=reduced)
        async with running(dp, ProgramService(entry({A: 1000}))):
            cap, pcap = await asyncio.to_thread(rig.capture, "wire")
            await asyncio.to_thread(rig.send, first)
            await bound(dp, 1)
            await asyncio.to_thread(rig.send, *rest)
            await asyncio.to_thread(rig.captured, cap, pcap)
            assert dp.status()["errors"] == 0, dp.status()
            return pcap

    pcap = asyncio.run(main())
    got = [p for p in decode(pcap) if p.sport == 40500]
    assert len(got) == 4, got
    for p, sent in zip(got, [first, *rest], strict=True):
        check_h_encaps(
            p,
            source=ROUTER,
            segments=None if reduced else [INSTANCES[A]],
            hop_limit=40,
            inner_dst=VIP,
            inner_hop_limit=63,
        )
        outer, inner = p.ip6
        assert inner.plen == len(sent[IPv6].payload), (inner, sent.summary())
        assert (inner.src, inner.flow, inner.tclass) == (H1, 0x12345, 0x28)
        assert outer.tclass == 0x28 and outer.flow != 0, outer
        assert p.checksum_ok is True  # scapy's checksum, carried through untouched
    assert len({p.ip6[0].flow for p in got}) == 1  # one flow, one outer flow label


FEED = """
import sys, time
from scapy.all import Ether, conf, sendp
frame, count, gap = Ether(bytes.fromhex(sys.argv[2])), int(sys.argv[3]), float(sys.argv[4])
sock = conf.L2socket(iface=sys.argv[1])
for _ in range(count):
    sock.send(frame)
    last = time.time()
    time.sleep(gap)
print(last)
"""


def test_bindings_show_their_age_and_time_left_past_bmv2s_wrap(rig: Rig) -> None:
    """A flow fed for 6 s, then idle for 5 s: `cand bindings` (the daemon's age is last_seen -
    created) shows it at least 5 s old, last seen at its last packet and with the timeout less
    its idle time left. BMv2 wraps the time left at 2**32 ns (4.29 s): read as it stands, every
    binding looked 0 to 4.3 s from its end (cand_p4.ageing undoes it)."""
    timeout = 30.0
    count, gap = 31, 0.2

    async def main() -> None:
        dp = make_dp(rig, idle_timeout=timeout)
        async with running(dp, ProgramService(entry({A: 1000}))):
            frame = bytes(syn(47500)).hex()
            out = await asyncio.to_thread(
                rig.topo.exec, rig.h1, sys.executable, "-c", FEED, rig.h1_if, frame,
                str(count), str(gap),
            )  # fmt: skip
            last = float(out.stdout.split()[-1])
            await asyncio.sleep(5.0)
            before = time.time()
            (b,) = [b for b in await dp.bindings() if b.flow.client_port == 47500]
            after = time.time()
            assert str(b.binding) == A
            # the first packet (or two, while its binding was written) met no binding
            assert b.packets is not None and count - 3 <= b.packets <= count - 1, b
            assert b.last_seen - b.created >= 5.0, b  # fed for 6 s
            assert abs(b.last_seen - last) <= 0.25, (b.last_seen - last, b)
            # the time left is the timeout less the time since the last packet
            for now in (before, after):
                assert abs(b.timeout - (timeout - (now - last))) <= 0.25, (b, now - last)
            assert b.timeout > 20.0  # past the 4.29-s wrap
            assert dp.status()["errors"] == 0, dp.status()

    asyncio.run(main())


SERVER = """
import json, socket, sys
srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
srv.settimeout(30)
print("listening", flush=True)
conn, peer = srv.accept()
conn.settimeout(15)
conn.sendall(b"hello from the instance\\n")
echoed = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    conn.sendall(data)
    echoed += len(data)
local = conn.getsockname()[0]
conn.close()
print(json.dumps({"peer": peer[0], "local": local, "echoed": echoed}), flush=True)
"""

CLIENT = """
import json, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
peer, port = s.getpeername()[0], s.getsockname()[1]  # asked while connected
payload = bytes(range(256)) * int(sys.argv[3])
got = b""
while not got.endswith(b"\\n"):
    got += s.recv(4096)
banner, rest = got.split(b"\\n", 1)
def send():
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
back = bytearray(rest)
while True:
    data = s.recv(65536)
    if not data:
        break
    back += data
t.join()
print(json.dumps({"peer": peer, "port": port,
                  "banner": banner.decode(), "echo_ok": bytes(back) == payload,
                  "sent": len(payload), "back": len(back)}))
"""


def test_nat_mode_serves_an_unmodified_server_over_real_tcp(topo: Topology, tmp_path: Path) -> None:
    """One BMv2 as ingress and egress (ports 3 and 4 wired to each other): a real TCP client on
    h1 connects to the D-SID; the switch places the new flow on the instance's SID and
    encapsulates it out of port 3; it comes back in on port 4, where End.DX6 with ServiceNAT
    delivers it to the D-BID on h2. The server there is an ordinary socket bound only to the
    D-BID (h2 does not have the D-SID at all); its replies leave with the D-SID (nat_out).
    Data go both ways, the client's socket peer is the D-SID and the server's is the client."""
    import json

    rig = make_rig(topo, tmp_path, loop=True)
    assert rig.loop == (3, 4)
    sid = INSTANCES[A]
    h1, h2 = rig.h1, rig.h2
    for ns, ifname, gw in ((h1, rig.h1_if, "fc00:1::1"), (h2, rig.h2_if, "fc00:2::1")):
        # BMv2 forwards frames as the sender left them: complete checksums, no super-segments
        topo.exec(ns, sys.executable, "-m", "cand_testbed.offload", ifname)
        # the switch answers no neighbour discovery: its MAC is set by hand
        topo.exec(ns, "ip", "-6", "neigh", "replace", gw, "lladdr", SW_MAC, "dev", ifname,
                  "nud", "permanent")  # fmt: skip
    # segments that still fit the 1500-byte loop once encapsulated (40 + 24 bytes)
    topo.exec(h1, "ip", "-6", "route", "add", f"{VIP}/128", "via", "fc00:1::1", "mtu", "1436")
    topo.exec(h2, "ip", "-6", "addr", "add", f"{A}/128", "dev", "lo")
    topo.exec(h2, "ip", "-6", "route", "add", "fc00:1::/64", "via", "fc00:2::1")
    assert VIP not in topo.exec(h2, "ip", "-6", "addr", "show").stdout
    server = topo.spawn(h2, sys.executable, "-c", SERVER, A, "80", stdout=-1)
    assert server.stdout is not None and server.stdout.readline().strip() == b"listening"

    opts = P4Options(address=rig.sw.address, adopt_hold=0.0)
    ports = [
        Port(1, SW_MAC, rig.h1_mac, ("fc00:1::/64",)),
        Port(2, SW_MAC, rig.h2_mac, ("fc00:2::/64", "2001:db8:a::/64")),
        Port(3, SW_MAC, SW_MAC, ("fc00:0:3::/48",)),  # the loop: back in on port 4
    ]
    pipeline = Pipeline(rig.program.json, rig.program.p4info)
    dp = P4Dataplane(opts, ports, RouterId.parse(ROUTER), pipeline=pipeline)
    dp.modes[ServiceId.parse(VIP)] = InstanceMode.NAT
    key = InstanceKey(ServiceId.parse(VIP), BindingId.parse(A))
    repeats = 400  # 100 KiB each way

    async def main() -> tuple[dict[str, Any], list[Any]]:
        effects = (
            ProgramService(entry({A: 1000})),
            ProgramLocalInstance(key, ipaddress.IPv6Address(sid)),
        )
        async with running(dp, *effects):
            assert dp.have is not None and dp.have.local_sids == {sid: st.LocalSid(A, True)}
            out = await asyncio.to_thread(
                topo.exec, h1, sys.executable, "-c", CLIENT, VIP, "80", str(repeats), check=False
            )
            assert out.returncode == 0, (out.stderr[-2000:], dp.status())
            rows = await dp.bindings()
            assert dp.status()["errors"] == 0, dp.status()
            return json.loads(out.stdout), rows

    client, rows = asyncio.run(main())
    served, _ = server.communicate(timeout=15)
    seen = json.loads(served.decode().strip().splitlines()[-1])
    assert client["peer"] == VIP, client  # the client sees the D-SID
    assert client["banner"] == "hello from the instance"
    assert client["echo_ok"] and client["back"] == client["sent"] == 256 * repeats, client
    assert seen == {"peer": H1, "local": A, "echoed": 256 * repeats}, seen
    # the flow was bound to the instance's SID by digest, and its later packets hit the binding
    flow = e.FlowKey(H1, VIP, 6, client["port"], 80)
    assert dp.bound.get(flow) == e.ToSid(sid), dp.bound
    (row,) = [r for r in rows if r.flow.client_port == client["port"]]
    assert str(row.binding) == A and row.packets is not None and row.packets > 50, row
