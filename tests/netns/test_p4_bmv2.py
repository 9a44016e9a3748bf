"""p4/cand.p4 on the real BMv2 switch: simple_switch_grpc on veth ports in a namespace, the
program pushed and the entries written over P4Runtime (finsy), packets sent with scapy on one
port and captured on the other.

    h1 ──port 1── sw (BMv2) ──port 2── h2
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import finsy as fy
import pytest
from cand_p4 import names as n

from cand.lab.netns import Topology
from tests.p4util import Bmv2, Program, compile_program, need_p4

pytestmark = pytest.mark.netns

SW_MAC = "02:00:00:00:5e:01"
H1, H2 = "fc00:1::2", "fc00:2::2"
VIP = "2001:db8:5::1"
SID_A, SID_B = "fc00:0:3::11", "fc00:0:3::12"
ENCAP_SRC = "fc00:1e::1"
DBID = "2001:db8:a::10"

SEND = """
import sys
from scapy.all import Ether, sendp
for frame in sys.argv[2:]:
    sendp(Ether(bytes.fromhex(frame)), iface=sys.argv[1], verbose=False)
"""


@dataclass
class Rig:
    topo: Topology
    sw: Bmv2
    program: Program
    h1: str
    h2: str
    h1_if: str
    h2_if: str
    h2_mac: str
    dir: Path

    def send(self, *frames: Any) -> None:
        hexes = [bytes(f).hex() for f in frames]
        self.topo.exec(self.h1, sys.executable, "-c", SEND, self.h1_if, *hexes)

    @asynccontextmanager
    async def switch(self) -> AsyncIterator[fy.Switch]:
        opts = fy.SwitchOptions(p4info=self.program.p4info, p4blob=self.program.json)
        async with fy.Switch("sw", self.sw.address, opts) as sw:
            yield sw

    def capture(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        pcap = self.dir / f"{name}.pcap"
        cap = self.topo.spawn(
            self.h2, "tcpdump", "--immediate-mode", "-U", "-i", self.h2_if, "-w", str(pcap),
            "ip6 and not icmp6",
        )  # fmt: skip
        time.sleep(0.6)
        return cap, pcap

    def captured(self, cap: subprocess.Popen[bytes], pcap: Path) -> list[Any]:
        time.sleep(0.6)
        cap.terminate()
        cap.wait(5)
        from scapy.all import rdpcap

        return list(rdpcap(str(pcap))) if pcap.exists() else []


def mac_of(topo: Topology, ns: str, ifname: str) -> str:
    out = topo.exec(ns, "cat", f"/sys/class/net/{ifname}/address").stdout
    return out.strip()


@pytest.fixture
def rig(topo: Topology, tmp_path: Path) -> Iterator[Rig]:
    need_p4("p4c-bm2-ss", "simple_switch_grpc")
    program = compile_program(tmp_path / "build")
    sw, h1, h2 = topo.ns("sw"), topo.ns("h1"), topo.ns("h2")
    # Topology.link names veths after id(addr_a): keep both address strings alive so the
    # two links cannot get the same name
    addrs = (f"{H1}/64", f"{H2}/64")
    h1_if, sw1 = topo.link(h1, addrs[0], sw, "fc00:1::1/64")
    h2_if, sw2 = topo.link(h2, addrs[1], sw, "fc00:2::1/64")
    # the switch namespace's kernel must not forward (or answer) anything itself: only BMv2
    topo.exec(sw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
    for ifname in (sw1, sw2):
        topo.exec(sw, "sysctl", "-qw", f"net.ipv6.conf.{ifname}.disable_ipv6=1")
    bmv2 = Bmv2(sw, tmp_path, {1: sw1, 2: sw2})
    bmv2.start(topo)
    yield Rig(topo, bmv2, program, h1, h2, h1_if, h2_if, mac_of(topo, h2, h2_if), tmp_path)
    # topo's fixture stops simple_switch_grpc (by PID) and removes the namespaces


def forward_to_h2(rig: Rig, prefix: str) -> list[Any]:
    return [
        +fy.P4TableEntry(
            n.NEXTHOP.name,
            match=fy.P4TableMatch(id=2),
            action=fy.P4TableAction(
                n.NEIGHBOUR.name, port=2, dst_mac=rig.h2_mac, src_mac=SW_MAC
            ),
        ),
        +fy.P4TableEntry(
            n.ROUTER.name,
            match=fy.P4TableMatch(dst=prefix),
            action=fy.P4TableAction(n.ROUTE.name, nexthop_id=2),
        ),
    ]


def test_plain_ipv6_forwarding(rig: Rig) -> None:
    from scapy.all import UDP, Ether, IPv6, Raw

    async def main() -> None:
        async with rig.switch() as sw:
            await sw.write(forward_to_h2(rig, "fc00:2::/64"))

    asyncio.run(main())
    cap, pcap = rig.capture("plain")
    sent = Ether(dst=SW_MAC) / IPv6(src=H1, dst=H2, hlim=64) / UDP(sport=4000, dport=53)
    sent = sent / Raw(b"plain forwarding")
    elsewhere = Ether(dst=SW_MAC) / IPv6(src=H1, dst="fc00:9::1") / UDP(sport=4001, dport=53)
    rig.send(sent, elsewhere)
    got = [p for p in rig.captured(cap, pcap) if UDP in p and p[UDP].sport in (4000, 4001)]
    assert len(got) == 1, [p.summary() for p in got]  # no route: dropped
    p = got[0]
    assert p[Ether].src == SW_MAC and p[Ether].dst == rig.h2_mac
    assert p[IPv6].hlim == 63 and p[IPv6].dst == H2
    assert bytes(p[UDP].payload) == b"plain forwarding"
    assert p[UDP].chksum == IPv6(bytes(sent[IPv6]))[UDP].chksum  # untouched


def test_srv6_encap_of_a_new_flow_digest_and_binding(rig: Rig) -> None:
    from scapy.all import TCP, Ether, IPv6, IPv6ExtHdrSegmentRouting, Raw

    def syn(sport: int) -> Any:
        return (
            Ether(dst=SW_MAC)
            / IPv6(src=H1, dst=VIP, hlim=64, tc=0x28, fl=0x12345)
            / TCP(sport=sport, dport=8080, flags="S")
            / Raw(b"x" * 20)
        )

    cap, pcap = rig.capture("encap")

    async def main() -> list[Any]:
        async with rig.switch() as sw:
            await sw.write(
                [
                    *forward_to_h2(rig, "fc00:0:3::/48"),
                    ~fy.P4TableEntry(
                        n.ENCAP.name,
                        is_default_action=True,
                        action=fy.P4TableAction(
                            n.SET_ENCAP.name, source=ENCAP_SRC, hop_limit=64, reduced=0
                        ),
                    ),
                    +fy.P4TableEntry(
                        n.SERVICE.name,
                        match=fy.P4TableMatch(dsid=VIP),
                        action=fy.P4TableAction(
                            n.STEER.name, service_id=7, three_tuple=0, default_route=0
                        ),
                    ),
                    +fy.P4DigestEntry(n.NEW_FLOW_DIGEST, max_list_size=1, ack_timeout_ns=10**9),
                    +fy.P4ActionProfileMember(
                        n.INSTANCES,
                        member_id=1,
                        action=fy.P4TableAction(n.TO_SID.name, sid=SID_A),
                    ),
                    +fy.P4ActionProfileGroup(
                        n.INSTANCES, group_id=7, max_size=16, members=[fy.P4Member(1, weight=1)]
                    ),
                ]
            )
            await sw.write(
                [
                    +fy.P4TableEntry(
                        n.NEW_FLOW.name,
                        match=fy.P4TableMatch(service_id=7),
                        action=fy.P4IndirectAction(group_id=7),
                    )
                ]
            )
            digests = sw.read_digests(n.NEW_FLOW_DIGEST)
            rig.send(syn(40000))
            got = await asyncio.wait_for(anext(aiter(digests)), 5)
            await sw.write([got.ack()])
            flow = got.data[0]
            # the control plane binds the flow to the other instance: the binding must win
            # over the selector from now on
            await sw.write(
                [
                    +fy.P4TableEntry(
                        n.BINDING.name,
                        match=fy.P4TableMatch(
                            src=flow["src"], dst=flow["dst"], proto=flow["proto"],
                            sport=flow["sport"], dport=flow["dport"],
                        ),  # fmt: skip
                        action=fy.P4TableAction(n.TO_SID.name, sid=SID_B),
                        idle_timeout_ns=60 * 10**9,
                    )
                ]
            )
            rig.send(syn(40000))
            time.sleep(0.5)
            counted = [
                e
                async for e in sw.read(
                    fy.P4DirectCounterEntry(n.BINDING_COUNTER)
                )
            ]
            return [flow, counted]

    flow, counted = asyncio.run(main())
    import ipaddress

    assert ipaddress.IPv6Address(flow["src"]) == ipaddress.IPv6Address(H1)
    assert ipaddress.IPv6Address(flow["dst"]) == ipaddress.IPv6Address(VIP)
    assert (flow["proto"], flow["sport"], flow["dport"]) == (6, 40000, 8080)
    assert flow["service_id"] == 7 and flow["kind"] == n.TARGET_SID
    assert ipaddress.IPv6Address(flow["target"]) == ipaddress.IPv6Address(SID_A)
    assert [c.data.packet_count for c in counted if c.data is not None] == [1]

    pkts = [p for p in rig.captured(cap, pcap) if IPv6ExtHdrSegmentRouting in p]
    assert len(pkts) == 2, [p.summary() for p in pkts]
    inner_sent = IPv6(bytes(syn(40000)[IPv6]))
    for p, sid in zip(pkts, (SID_A, SID_B), strict=True):
        outer, srh = p[IPv6], p[IPv6ExtHdrSegmentRouting]
        assert (outer.src, outer.dst, outer.nh, outer.hlim) == (ENCAP_SRC, sid, 43, 64)
        assert outer.tc == 0x28 and outer.fl != 0  # flow label: a hash of the inner 5-tuple
        assert outer.plen == 40 + 24 + inner_sent.plen
        assert srh.nh == 41 and srh.type == 4 and srh.len == 2
        assert (srh.segleft, srh.lastentry, srh.addresses) == (0, 0, [sid])
        inner = srh.payload
        assert isinstance(inner, IPv6) and inner.dst == VIP and inner.hlim == 63
        assert inner.fl == 0x12345 and inner[TCP].chksum == inner_sent[TCP].chksum
    assert pkts[0][IPv6].fl == pkts[1][IPv6].fl  # one flow, one outer flow label
