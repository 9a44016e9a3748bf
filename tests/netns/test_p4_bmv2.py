"""p4/cand.p4 on the real BMv2 switch: simple_switch_grpc on veth ports in a namespace, the
program pushed and the entries written over P4Runtime by the plugin's client (cand_p4.switch,
on finsy), packets sent with scapy on one port and captured with tcpdump on the other.

    h1 ──port 1── sw (BMv2) ──port 2── h2
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import finsy as fy
import pytest
from cand_p4 import entries as e
from cand_p4 import names as n
from cand_p4.switch import NotPrimary, P4Switch, Pipeline

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
    h1_mac: str
    h2_mac: str
    dir: Path
    loop: tuple[int, int] | None = None
    """With make_rig(loop=True): two more switch ports wired to each other (3 -> 4), so one
    BMv2 can be ingress and egress of a flow: what it sends out of one comes in on the other."""

    def send(self, *frames: Any, from_h2: bool = False) -> None:
        hexes = [bytes(f).hex() for f in frames]
        ns, ifname = (self.h2, self.h2_if) if from_h2 else (self.h1, self.h1_if)
        self.topo.exec(ns, sys.executable, "-c", SEND, ifname, *hexes)

    @asynccontextmanager
    async def switch(
        self, election_id: int = 10, pipeline: Pipeline | None = None
    ) -> AsyncIterator[P4Switch]:
        pipeline = pipeline or Pipeline(self.program.json, self.program.p4info)
        async with P4Switch(self.sw.address, pipeline, election_id=election_id) as sw:
            yield sw

    def capture(self, name: str, on_h1: bool = False) -> tuple[subprocess.Popen[bytes], Path]:
        pcap = self.dir / f"{name}.pcap"
        ns, ifname = (self.h1, self.h1_if) if on_h1 else (self.h2, self.h2_if)
        cap = self.topo.spawn(
            ns, "tcpdump", "--immediate-mode", "-U", "-i", ifname, "-w", str(pcap),
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
def rig(topo: Topology, tmp_path: Path) -> Rig:
    return make_rig(topo, tmp_path)


def make_rig(topo: Topology, tmp_path: Path, log_level: str = "info", *, loop: bool = False) -> Rig:
    need_p4("p4c-bm2-ss", "simple_switch_grpc")
    program = compile_program(tmp_path / "build")
    sw, h1, h2 = topo.ns("sw"), topo.ns("h1"), topo.ns("h2")
    h1_if, sw1 = topo.link(h1, f"{H1}/64", sw, "fc00:1::1/64")
    h2_if, sw2 = topo.link(h2, f"{H2}/64", sw, "fc00:2::1/64")
    ports = {1: sw1, 2: sw2}
    if loop:  # a veth with both ends in the switch's namespace: port 3 wired to port 4
        ports[3], ports[4] = topo.link(sw, "fc00:3::1/64", sw, "fc00:3::2/64")
    # the switch namespace's kernel must not forward (or answer) anything itself: only BMv2
    topo.exec(sw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
    for ifname in ports.values():
        topo.exec(sw, "sysctl", "-qw", f"net.ipv6.conf.{ifname}.disable_ipv6=1")
    bmv2 = Bmv2(sw, tmp_path, ports, log_level=log_level)
    bmv2.start(topo)
    macs = mac_of(topo, h1, h1_if), mac_of(topo, h2, h2_if)
    return Rig(topo, bmv2, program, h1, h2, h1_if, h2_if, *macs, tmp_path, (3, 4) if loop else None)
    # topo's fixture stops simple_switch_grpc (by PID) and removes the namespaces


def forward_to_h2(rig: Rig, prefix: str) -> list[Any]:
    return [+e.nexthop(2, 2, rig.h2_mac, SW_MAC), +e.route(prefix, 2)]


def test_plain_ipv6_forwarding(rig: Rig) -> None:
    """Plain forwarding, and transit SRv6 with more segments than the program looks into:
    forwarded on the outer destination like any IPv6 packet, not dropped by the parser."""
    from scapy.all import UDP, Ether, IPv6, IPv6ExtHdrSegmentRouting, Raw

    async def main() -> None:
        async with rig.switch() as sw:
            await sw.write(forward_to_h2(rig, "fc00:2::/64"))

    asyncio.run(main())
    cap, pcap = rig.capture("plain")
    sent = Ether(dst=SW_MAC) / IPv6(src=H1, dst=H2, hlim=64) / UDP(sport=4000, dport=53)
    sent = sent / Raw(b"plain forwarding")
    elsewhere = Ether(dst=SW_MAC) / IPv6(src=H1, dst="fc00:9::1") / UDP(sport=4001, dport=53)
    transit = []
    for count in (2, 6):  # within and past MAX_SEGMENTS (4)
        segs = [f"fc00:9::{i + 1}" for i in range(count - 1)] + [H2]  # H2 is the active one
        srh = IPv6ExtHdrSegmentRouting(addresses=segs, segleft=count - 1, nh=17)
        inner = UDP(sport=4100 + count, dport=53) / Raw(b"transit")
        transit.append(Ether(dst=SW_MAC) / IPv6(src=H1, dst=H2, hlim=64) / srh / inner)
    rig.send(sent, elsewhere, *transit)
    seen = rig.captured(cap, pcap)
    srv6 = [p for p in seen if IPv6ExtHdrSegmentRouting in p]
    assert sorted(len(p[IPv6ExtHdrSegmentRouting].addresses) for p in srv6) == [2, 6], seen
    for p in srv6:  # forwarded as they came, hop limit lowered, the SRH untouched
        assert p[IPv6].dst == H2 and p[IPv6].hlim == 63 and bytes(p[Raw]) == b"transit"
    got = [p for p in seen if UDP in p and p[UDP].sport in (4000, 4001)]
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
                    ~e.encap_settings(ENCAP_SRC, hop_limit=64),
                    +e.service(VIP, 7, three_tuple=False, default_route=False),
                    +e.new_flow_digest(),
                    +e.member(1, e.ToSid(SID_A)),
                    +e.group(7, [1]),
                ]
            )
            await sw.write([+e.new_flow(7, 7)])
            flows = sw.new_flows()
            rig.send(syn(40000))
            flow = await asyncio.wait_for(anext(flows), 5)
            # the control plane binds the flow to the other instance: the binding must win
            # over the selector from now on
            await sw.write([+e.binding(flow.key, e.ToSid(SID_B), idle_timeout_s=60)])
            rig.send(syn(40000))
            await asyncio.sleep(0.5)
            counted = await sw.read(fy.P4DirectCounterEntry(n.BINDING_COUNTER))
            return [flow, counted]

    flow, counted = asyncio.run(main())
    assert flow == e.NewFlow(e.FlowKey(H1, VIP, 6, 40000, 8080), 7, e.ToSid(SID_A))
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


def test_pipeline_is_pushed_only_when_the_device_runs_another_program(
    rig: Rig, tmp_path: Path
) -> None:
    """A SetForwardingPipelineConfig resets every table on BMv2, so an entry that survives a
    reconnect proves the program was not pushed again; a program with another cookie (the
    same JSON with one more byte) is pushed, and the entry is gone."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "cand.json").write_text(rig.program.json.read_text() + "\n")
    (other / "cand.p4info.txtpb").write_text(rig.program.p4info.read_text())

    async def main() -> list[int]:
        counts = []
        async with rig.switch() as sw:  # the device runs nothing (--no-p4): pushed
            await sw.write(forward_to_h2(rig, "fc00:2::/64"))
        for pipeline in (None, Pipeline.in_dir(other), None):
            async with rig.switch(pipeline=pipeline) as sw:
                counts.append(len(await sw.read(fy.P4TableEntry(n.ROUTER.name))))
                if counts[-1] == 0:
                    await sw.write(forward_to_h2(rig, "fc00:2::/64"))
        return counts

    # same program: kept; other program: pushed (empty); back to cand's: pushed again (empty)
    assert asyncio.run(main()) == [1, 0, 0]


def test_a_lower_election_id_is_a_backup_and_is_refused(rig: Rig) -> None:
    async def main() -> str:
        async with rig.switch(election_id=20) as primary:
            assert primary.is_primary and primary.election_id == 20
            with pytest.raises(NotPrimary) as refused:
                async with rig.switch(election_id=5):
                    pass
            # the primary still writes after the backup came and went
            await primary.write(forward_to_h2(rig, "fc00:2::/64"))
            return str(refused.value)

    assert "the primary holds 20" in asyncio.run(main())


CLIENT = "fc00:1::2"
SID_LOCAL = "fc00:0:2::11"


def test_end_dx6_with_servicenat_both_ways_keeps_checksums_good_and_bad(rig: Rig) -> None:
    """Egress role: an SRv6 packet to a `nat` instance's SID is decapsulated (End.DX6) and its
    D-SID rewritten to the D-BID; the instance's reply leaves with the D-SID. The transport
    checksum is patched incrementally (RFC 1624): a good one stays good, a bad one stays bad
    by the same amount, for TCP and UDP, in both directions."""
    from scapy.all import TCP, UDP, Ether, IPv6, IPv6ExtHdrSegmentRouting, Raw

    def valid(pkt: Any, l4: Any) -> bool:
        ip = IPv6(bytes(pkt[IPv6]))
        fresh = ip.copy()
        del fresh[l4].chksum
        return bool(IPv6(bytes(fresh))[l4].chksum == ip[l4].chksum)

    def towards(inner: Any) -> Any:
        srh = IPv6ExtHdrSegmentRouting(addresses=[SID_LOCAL], segleft=0, nh=41)
        return Ether(dst=SW_MAC) / IPv6(src=ENCAP_SRC, dst=SID_LOCAL) / srh / inner

    def with_bad_checksum(inner: Any, l4: Any) -> Any:
        good = IPv6(bytes(inner))
        good[l4].chksum ^= 0x0F0F
        return good

    def four(tcp: Any, udp: Any) -> list[Any]:
        """good TCP, good UDP, bad TCP, bad UDP, with their checksums filled in"""
        good = [IPv6(bytes(tcp)), IPv6(bytes(udp))]
        return [*good, with_bad_checksum(tcp, TCP), with_bad_checksum(udp, UDP)]

    inbound = four(
        IPv6(src=CLIENT, dst=VIP) / TCP(sport=41000, dport=80, flags="S") / Raw(b"in"),
        IPv6(src=CLIENT, dst=VIP) / UDP(sport=41001, dport=53) / Raw(b"in"),
    )
    outbound = four(
        IPv6(src=DBID, dst=CLIENT) / TCP(sport=80, dport=41000, flags="SA") / Raw(b"o"),
        IPv6(src=DBID, dst=CLIENT) / UDP(sport=53, dport=41001) / Raw(b"out"),
    )

    async def program() -> None:
        async with rig.switch() as sw:
            await sw.write(
                [
                    +e.nexthop(1, 1, rig.h1_mac, SW_MAC),
                    +e.nexthop(2, 2, rig.h2_mac, SW_MAC),
                    +e.route("2001:db8:a::/64", 2),  # the instance's D-BID, behind port 2
                    +e.route("fc00:1::/64", 1),  # the client, behind port 1
                    +e.local_sid(SID_LOCAL, DBID, nat=True),
                    +e.nat_out(DBID, VIP),
                ]
            )

    asyncio.run(program())
    cap, pcap = rig.capture("nat-in")
    rig.send(*(towards(p) for p in inbound))
    got_in = [p for p in rig.captured(cap, pcap) if TCP in p or UDP in p]  # not MLD
    cap, pcap = rig.capture("nat-out", on_h1=True)
    rig.send(*(Ether(dst=SW_MAC) / p for p in outbound), from_h2=True)
    got_out = [p for p in rig.captured(cap, pcap) if TCP in p or UDP in p]

    assert len(got_in) == 4, [p.summary() for p in got_in]
    for p in got_in:
        assert IPv6ExtHdrSegmentRouting not in p and p[IPv6].nh in (6, 17)  # decapsulated
        assert (p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == (CLIENT, DBID, 63)
    assert len(got_out) == 4, [p.summary() for p in got_out]
    for p in got_out:
        assert (p[IPv6].src, p[IPv6].dst) == (VIP, CLIENT)
    for got, sent in ((got_in, inbound), (got_out, outbound)):
        for i, l4 in enumerate((TCP, UDP, TCP, UDP)):
            assert bytes(got[i][l4].payload) == bytes(sent[i][l4].payload)
            assert valid(got[i], l4) == (i < 2), (i, got[i].summary())
        for (good, bad), (sent_good, sent_bad), l4 in (
            ((got[0], got[2]), (sent[0], sent[2]), TCP),
            ((got[1], got[3]), (sent[1], sent[3]), UDP),
        ):
            # the error rides through unchanged: bad - good is what it was when sent
            assert ones_diff(bad[l4].chksum, good[l4].chksum) == ones_diff(
                sent_bad[l4].chksum, sent_good[l4].chksum
            )


def ones_diff(a: int, b: int) -> int:
    """a - b in 16-bit one's complement arithmetic (a + ~b, end-around carry)."""
    s = a + (~b & 0xFFFF)
    return (s & 0xFFFF) + (s >> 16)
