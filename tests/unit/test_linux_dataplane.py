"""The Linux data plane's pure parts: the SRv6 header and program, the nftables text, slots."""

from __future__ import annotations

import ipaddress
import re
import struct

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


STACK, CTX = 1 << 32, 1 << 40  # where the little interpreter below puts r10 and the skb


def run_program(
    code: bytes, inner: bytes, fail: int | None = None
) -> tuple[int, bytes, int, bytes]:
    """Runs the LWT program the way the kernel would, for the instructions it uses: returns
    (verdict, the packet afterwards, skb->mark, what `bpf_lwt_push_encap` was handed: the
    kernel's GSO check reads its byte 6). The helpers act on a packet held here;
    `fail` is the helper number that returns an error."""
    insns = [code[i : i + 8] for i in range(0, len(code), 8)]
    reg = dict.fromkeys(range(11), 0)
    reg[1], reg[10] = CTX, STACK
    stack = bytearray(512)
    skb = {"len": len(inner), "mark": 0xCA000001}
    packet = bytearray(inner)
    pushed = b""

    def mem(addr: int, n: int) -> slice:
        assert addr >= STACK - 512 and addr + n <= STACK, "stack access out of range"
        return slice(addr - STACK + 512, addr - STACK + 512 + n)

    pc = 0
    while True:
        op, regs, off, imm = struct.unpack("<BBhi", insns[pc])
        dst, src = regs & 0xF, regs >> 4
        pc += 1
        if op == 0x18:  # ld_imm64: two slots
            hi = struct.unpack("<i", insns[pc][4:])[0]
            reg[dst] = (imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)
            pc += 1
        elif op == 0xBF:
            reg[dst] = reg[src]
        elif op == 0xB7:
            reg[dst] = imm & 0xFFFFFFFFFFFFFFFF
        elif op == 0x07:
            reg[dst] = (reg[dst] + imm) & 0xFFFFFFFFFFFFFFFF
        elif op == 0xDC:
            assert imm == 16
            reg[dst] = int.from_bytes((reg[dst] & 0xFFFF).to_bytes(2, "big"), "little")
        elif op in (0x7B, 0x6B):  # stx dw / h
            n = 8 if op == 0x7B else 2
            stack[mem(reg[dst] + off, n)] = (reg[src] & ((1 << 8 * n) - 1)).to_bytes(n, "little")
        elif op == 0x72:  # st b
            stack[mem(reg[dst] + off, 1)] = bytes([imm & 0xFF])
        elif op == 0x61:  # ldx w from the skb
            assert reg[src] == CTX and off == srv6_bpf.SKB_LEN
            reg[dst] = skb["len"]
        elif op == 0x62:  # st w into the skb
            assert reg[dst] == CTX and off == srv6_bpf.SKB_MARK
            skb["mark"] = imm
        elif op == 0x85:
            assert reg[1] == CTX
            if imm == fail:
                reg[0] = -93 & 0xFFFFFFFFFFFFFFFF  # -EPROTONOSUPPORT
            elif imm == srv6_bpf.BPF_FUNC_LWT_PUSH_ENCAP:
                assert reg[2] == srv6_bpf.BPF_LWT_ENCAP_IP
                pushed = bytes(stack[mem(reg[3], reg[4])])
                packet[:0] = pushed
                reg[0] = 0
            elif imm == srv6_bpf.BPF_FUNC_SKB_STORE_BYTES:
                assert reg[5] == 0
                packet[reg[2] : reg[2] + reg[4]] = stack[mem(reg[3], reg[4])]
                reg[0] = 0
            else:
                raise AssertionError(f"unexpected helper {imm}")
            for r in range(1, 6):
                reg[r] = 0xDEAD  # clobbered by a call
        elif op == 0x55:
            if reg[dst] != imm & 0xFFFFFFFFFFFFFFFF:
                pc += off
        elif op == 0x95:
            return reg[0], bytes(packet), skb["mark"], pushed
        else:
            raise AssertionError(f"opcode {op:#x} not modelled")


@pytest.mark.parametrize("segments", [1, 2, 3])
def test_program_puts_the_srh_on_the_wire_and_hides_it_from_the_gso_check(segments: int) -> None:
    path = [SID] + [ipaddress.IPv6Address(f"fc00:0:{4 + i}::1") for i in range(segments - 1)]
    header = srv6_bpf.srh_header(SRC, path)
    pushed = srv6_bpf.pushed_header(header)
    assert pushed[6] == 41 and header[6] == 43 and pushed[7:] == header[7:]
    code = srv6_bpf.encap_program(header)
    inner = bytes(range(200))
    verdict, packet, mark, handed = run_program(code, inner)
    assert verdict == srv6_bpf.BPF_LWT_REROUTE and mark == 0
    assert handed[6] == 41  # what the kernel's GSO check sees: IPv6 in IPv6
    want = header[:4] + (len(header) - 40 + len(inner)).to_bytes(2, "big") + header[6:]
    assert packet == want + inner  # byte-exact: next header 43 again, payload length filled
    for helper in (srv6_bpf.BPF_FUNC_LWT_PUSH_ENCAP, srv6_bpf.BPF_FUNC_SKB_STORE_BYTES):
        assert run_program(code, inner, fail=helper)[0] == srv6_bpf.BPF_DROP


def test_program_without_srh_pushes_once() -> None:
    plain = srv6_bpf.srh_header(SRC, [SID])[:40]  # an outer header whose next header is not 43
    plain = plain[:6] + bytes([41]) + plain[7:]
    assert srv6_bpf.pushed_header(plain) == plain
    code = srv6_bpf.encap_program(plain)
    verdict, packet, _, _ = run_program(code, b"x" * 60)
    assert verdict == srv6_bpf.BPF_LWT_REROUTE and packet[40:] == b"x" * 60
    assert 9 not in {int.from_bytes(code[i + 4 : i + 8], "little") for i in range(0, len(code), 8)
                     if code[i] == 0x85}  # fmt: skip
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
