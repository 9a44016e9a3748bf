"""The Linux data plane's pure parts: the SRv6 header and program, the nftables text, slots."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cand.adapters import linux_nft as nft
from cand.adapters import srv6_bpf
from cand.adapters.linux import parse_conntrack
from cand.adapters.linux_slots import Delivery, SlotTable, Tunnel, prog_name, sid_of_prog
from cand.engine.service_table import DefaultAction, InstanceMode
from cand.model import BindingId, FlowKeyKind, InstanceKey, RouterId, ServiceId

SRC, SID = ipaddress.IPv6Address("fc00:1e::1"), ipaddress.IPv6Address("fc00:0:3::11")
SVC = ServiceId.parse("2001:db8:5::1")


def test_srh_header_matches_an_independent_encoder() -> None:
    from scapy.all import IPv6, IPv6ExtHdrSegmentRouting, raw

    second = ipaddress.IPv6Address("fc00:0:4::1")
    ours = srv6_bpf.srh_header(SRC, [SID, second])
    ref = IPv6(src=str(SRC), dst=str(SID), nh=43, plen=0, hlim=64) / IPv6ExtHdrSegmentRouting(
        nh=41, addresses=[str(second), str(SID)], segleft=1, lastentry=1
    )
    assert ours == raw(ref)
    assert len(ours) == 40 + 8 + 32


def test_program_shape() -> None:
    code = srv6_bpf.encap_program(srv6_bpf.srh_header(SRC, [SID]))
    assert len(code) % 8 == 0
    insns = [code[i : i + 8] for i in range(0, len(code), 8)]
    assert insns[-1][0] == 0x95 and insns[-3][0] == 0x95  # both paths exit
    assert any(i[0] == 0x85 and int.from_bytes(i[4:], "little") == 73 for i in insns)
    with pytest.raises(ValueError, match="multiple of 8"):
        srv6_bpf.encap_program(b"\0" * 60)  # not a multiple of 8


def test_prog_name_round_trips() -> None:
    assert sid_of_prog(prog_name(SID) + ":[*fsobj]") == SID
    assert sid_of_prog("someone-else:[*fsobj]") is None


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=12))
def test_weighted_map_gives_each_slot_its_weight(weights: list[int]) -> None:
    slots = [nft.SteeredSlot(0xCA000001 + i, w, True) for i, w in enumerate(weights)]
    text = nft.weighted(slots)
    if sum(weights) == 0:
        assert text is None
        return
    assert text is not None
    total = int(re.search(r"mod (\d+)", text).group(1))  # type: ignore[union-attr]
    assert total == sum(weights)
    share: dict[int, int] = {}
    covered = []
    for lo, hi, mark in re.findall(r"(\d+)(?:-(\d+))? : (0x[0-9a-f]+)", text.split("map", 1)[1]):
        a, b = int(lo), int(hi or lo)
        covered += list(range(a, b + 1))
        share[int(mark, 16)] = share.get(int(mark, 16), 0) + b - a + 1
    assert covered == list(range(total))  # contiguous, no overlap
    assert share == {s.mark: s.weight for s in slots if s.weight > 0}


def test_service_chain_three_tuple_and_default() -> None:
    svc = nft.SteeredService(SVC, FlowKeyKind.THREE_TUPLE, 30, DefaultAction.DROP, ())
    lines = nft.service("cand", svc)
    assert lines[-1].endswith("drop")
    assert sum("add map" in x for x in lines) == 3
    five = nft.SteeredService(
        SVC,
        FlowKeyKind.FIVE_TUPLE,
        30,
        DefaultAction.ROUTE,
        (nft.SteeredSlot(0xCA000002, 0, True),),
    )
    assert nft.service("cand", five)[-1].endswith("return")  # no instance: plain routing


def test_marks_validate() -> None:
    with pytest.raises(ValueError, match="mark_base"):
        nft.Marks(0xCA000001)
    m = nft.Marks()
    assert m.owns(0xCA000005) and not m.owns(0xCA000000) and not m.owns(0x1)


def test_slots_adopt_assign_release() -> None:
    t = SlotTable(nft.Marks())
    key = InstanceKey(SVC, BindingId.parse("2001:db8:a::10"))
    assert t.adopt(("tunnel", SVC, SID), 0xCA000001)
    assert t.assign(Tunnel(SVC, SID)) == 0xCA000001  # the adopted number is kept
    other = t.assign(Delivery(key, ipaddress.IPv6Address("fc00:0:3::12"), InstanceMode.NAT))
    assert other != 0xCA000001
    assert not t.adopt(("tunnel", SVC, ipaddress.IPv6Address("fc00::9")), other)  # taken
    t.release(0xCA000001)
    assert t.get(Tunnel(SVC, SID)) is None


def test_parse_conntrack_row() -> None:
    row = (
        "tcp      6 431999 ESTABLISHED src=fc00:c1::2 dst=2001:db8:5::1 sport=40000 dport=8080 "
        "src=2001:db8:5::1 dst=fc00:c1::2 sport=8080 dport=40000 [ASSURED] mark=3388997633 use=1"
    )
    where = {0xCA000001: (BindingId.parse("2001:db8:a::10"), RouterId.parse("fc00:1e::3"))}
    b = parse_conntrack(row, where, 100.0)
    assert b is not None
    assert (b.flow.client_port, b.flow.service_port, b.flow.proto) == (40000, 8080, 6)
    assert str(b.binding) == "2001:db8:a::10" and b.timeout == 431999
    assert parse_conntrack(row.replace("3388997633", "7"), where, 100.0) is None
    assert parse_conntrack("garbage", where, 100.0) is None
