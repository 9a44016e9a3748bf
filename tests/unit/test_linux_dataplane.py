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


STACK, CTX, VALUE = 1 << 32, 1 << 40, 1 << 48  # where the interpreter below keeps its memory
MAP_FD = 7
MARK = 0xCA012345  # a slot number above 16 bits


def run_program(
    code: bytes,
    inner: bytes,
    table: dict[int, bytes],
    mark: int = MARK,
    fail: int | None = None,
) -> tuple[int, bytes, int, bytes]:
    """Runs the tunnel program the way the kernel would, for the instructions it uses, against
    the map `table` (mark -> value): returns (verdict, the packet afterwards, skb->mark, what
    `bpf_lwt_push_encap` was handed: the kernel's GSO check reads its byte 6). The helpers act
    on a packet held here; `fail` is the helper number that returns an error. Memory is
    bounds-checked: the stack, the skb's two fields, and the one map value looked up."""
    insns = [code[i : i + 8] for i in range(0, len(code), 8)]
    reg = dict.fromkeys(range(11), 0)
    reg[1], reg[10] = CTX, STACK
    stack = bytearray(512)
    skb = {srv6_bpf.SKB_LEN: len(inner), srv6_bpf.SKB_MARK: mark}
    value = b""
    packet = bytearray(inner)
    pushed = b""
    ones = (1 << 64) - 1

    def load(addr: int, n: int) -> bytes:
        if addr >= VALUE:
            assert addr - VALUE + n <= len(value), "read past the map value"
            return value[addr - VALUE : addr - VALUE + n]
        if addr >= CTX:
            assert n == 4 and addr - CTX in skb
            return skb[addr - CTX].to_bytes(4, "little")
        return bytes(stack[mem(addr, n)])

    def mem(addr: int, n: int) -> slice:
        assert addr >= STACK - 512 and addr + n <= STACK, "stack access out of range"
        return slice(addr - STACK + 512, addr - STACK + 512 + n)

    size = {0x61: 4, 0x71: 1, 0x63: 4, 0x6B: 2, 0x73: 1}
    pc = 0
    while True:
        op, regs, off, imm = struct.unpack("<BBhi", insns[pc])
        dst, src = regs & 0xF, regs >> 4
        pc += 1
        if op == 0x18:  # ld_imm64: a map by its fd
            assert src == srv6_bpf.BPF_PSEUDO_MAP_FD and imm == MAP_FD
            reg[dst] = ("map", imm)  # type: ignore[assignment]
            pc += 1
        elif op == 0xBF:
            reg[dst] = reg[src]
        elif op == 0xB7:
            reg[dst] = imm & ones
        elif op == 0x07:
            reg[dst] = (reg[dst] + imm) & ones
        elif op == 0x0F:
            reg[dst] = (reg[dst] + reg[src]) & ones
        elif op == 0xDC:
            assert imm == 16
            reg[dst] = int.from_bytes((reg[dst] & 0xFFFF).to_bytes(2, "big"), "little")
        elif op in (0x61, 0x71):  # ldx w / b
            reg[dst] = int.from_bytes(load(reg[src] + off, size[op]), "little")
        elif op == 0x63 and reg[dst] == CTX:  # stx w into the skb: only its mark
            assert off == srv6_bpf.SKB_MARK
            skb[srv6_bpf.SKB_MARK] = reg[src] & 0xFFFFFFFF
        elif op in (0x63, 0x6B, 0x73):  # stx w / h / b: else only to the stack
            n = size[op]
            stack[mem(reg[dst] + off, n)] = (reg[src] & ((1 << 8 * n) - 1)).to_bytes(n, "little")
        elif op == 0x85:
            if imm == srv6_bpf.BPF_FUNC_MAP_LOOKUP_ELEM:
                assert reg[1] == ("map", MAP_FD)  # type: ignore[comparison-overlap]
                key = int.from_bytes(load(reg[2], 4), "little")
                value = table.get(key, b"")
                reg[0] = VALUE if key in table else 0
            elif imm == fail:
                assert reg[1] == CTX
                reg[0] = -93 & ones  # -EPROTONOSUPPORT
            elif imm == srv6_bpf.BPF_FUNC_LWT_PUSH_ENCAP:
                assert reg[1] == CTX and reg[2] == srv6_bpf.BPF_LWT_ENCAP_IP
                pushed = load(reg[3], reg[4])
                packet[:0] = pushed
                reg[0] = 0
            elif imm == srv6_bpf.BPF_FUNC_SKB_STORE_BYTES:
                assert reg[1] == CTX and reg[5] == 0
                packet[reg[2] : reg[2] + reg[4]] = load(reg[3], reg[4])
                reg[0] = 0
            else:
                raise AssertionError(f"unexpected helper {imm}")
            for r in range(1, 6):
                reg[r] = 0xDEAD  # clobbered by a call
        elif op in (0x15, 0x55, 0x25, 0xA5):  # jeq, jne, jgt, jlt against an immediate
            a, b = reg[dst], imm & ones
            taken = {0x15: a == b, 0x55: a != b, 0x25: a > b, 0xA5: a < b}[op]
            pc += off if taken else 0
        elif op == 0x95:
            return reg[0], bytes(packet), skb[srv6_bpf.SKB_MARK], pushed
        else:
            raise AssertionError(f"opcode {op:#x} not modelled")


def path_of(segments: int) -> list[ipaddress.IPv6Address]:
    return [SID] + [ipaddress.IPv6Address(f"fc00:0:{4 + i}::1") for i in range(segments - 1)]


@pytest.mark.parametrize("segments", [1, 2, 3, 7])
def test_tunnel_value_round_trips(segments: int) -> None:
    header = srv6_bpf.srh_header(SRC, path_of(segments))
    value = srv6_bpf.tunnel_value(SVC.address, header)  # type: ignore[arg-type]
    assert len(value) == srv6_bpf.VALUE_SIZE
    length, nh = struct.unpack_from("<IB", value)
    assert (length, nh) == (len(header), 43)
    pushed = value[srv6_bpf.VALUE_HEADER : srv6_bpf.VALUE_HEADER + length]
    assert pushed == srv6_bpf.pushed_header(header) and pushed[6] == 41
    assert value[srv6_bpf.VALUE_HEADER + length :] == bytes(srv6_bpf.HEADER_MAX - length)
    assert srv6_bpf.parse_tunnel_value(value) == (SVC.address, header)
    assert srv6_bpf.first_segment(header) == SID
    assert srv6_bpf.parse_tunnel_value(value[:-1]) is None
    bad = struct.pack("<I", 300) + value[4:]
    assert srv6_bpf.parse_tunnel_value(bad) is None
    with pytest.raises(ValueError, match="multiple of 8"):
        srv6_bpf.tunnel_value(SVC.address, header[:-4])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of 8"):
        srv6_bpf.tunnel_value(SVC.address, header + bytes(256))  # type: ignore[arg-type]


@pytest.mark.parametrize("segments", [1, 2, 3])
def test_program_puts_the_srh_on_the_wire_and_hides_it_from_the_gso_check(segments: int) -> None:
    header = srv6_bpf.srh_header(SRC, path_of(segments))
    table = {MARK: srv6_bpf.tunnel_value(SVC.address, header)}  # type: ignore[arg-type]
    code = srv6_bpf.map_program(MAP_FD)
    for inner in (bytes(range(200)), b"y" * 1400):
        verdict, packet, mark, handed = run_program(code, inner, table)
        assert verdict == srv6_bpf.BPF_LWT_REROUTE and mark == 0
        assert handed[6] == 41  # what the kernel's GSO check sees: IPv6 in IPv6
        want = header[:4] + (len(header) - 40 + len(inner)).to_bytes(2, "big") + header[6:]
        assert packet == want + inner  # byte-exact: next header 43, payload length per packet


def test_program_routes_a_miss_plainly_and_drops_a_bad_length_or_a_failed_helper() -> None:
    header = srv6_bpf.srh_header(SRC, [SID])
    value = srv6_bpf.tunnel_value(SVC.address, header)  # type: ignore[arg-type]
    code = srv6_bpf.map_program(MAP_FD)
    inner = b"x" * 60
    plain = (srv6_bpf.BPF_LWT_REROUTE, inner, 0, b"")  # unchanged, unmarked: the main tables
    assert run_program(code, inner, {MARK: value}, mark=MARK + 1) == plain
    assert run_program(code, inner, {}, mark=MARK) == plain
    for length in (0, 32, 257, 1 << 31):  # what the verifier's bounds are for
        bad = {MARK: struct.pack("<I", length) + value[4:]}
        assert run_program(code, inner, bad)[0] == srv6_bpf.BPF_DROP
    for helper in (srv6_bpf.BPF_FUNC_LWT_PUSH_ENCAP, srv6_bpf.BPF_FUNC_SKB_STORE_BYTES):
        assert run_program(code, inner, {MARK: value}, fail=helper)[0] == srv6_bpf.BPF_DROP


def test_program_shape() -> None:
    """One map reference, one lookup; the push's length is bounded (both ways) before the push;
    every error path jumps to the final drop; nothing writes into the map value."""
    code = srv6_bpf.map_program(MAP_FD)
    insns = [struct.unpack("<BBhi", code[i : i + 8]) for i in range(0, len(code), 8)]
    loads = [i for i, (op, *_) in enumerate(insns) if op == 0x18]
    assert len(loads) == 1 and insns[loads[0]][1] >> 4 == srv6_bpf.BPF_PSEUDO_MAP_FD
    calls = [imm for op, _, _, imm in insns if op == 0x85]
    assert calls == [
        srv6_bpf.BPF_FUNC_MAP_LOOKUP_ELEM,
        srv6_bpf.BPF_FUNC_LWT_PUSH_ENCAP,
        srv6_bpf.BPF_FUNC_SKB_STORE_BYTES,
    ]
    push = next(i for i, (op, _, _, imm) in enumerate(insns) if op == 0x85 and imm == 73)
    bounds = {(op, imm) for op, _, _, imm in insns[:push] if op in (0x25, 0xA5)}
    assert bounds == {(0x25, srv6_bpf.HEADER_MAX), (0xA5, 40)}
    drop = next(i for i, x in enumerate(insns) if x == (0xB7, 0, 0, srv6_bpf.BPF_DROP))
    assert insns[drop + 1][0] == 0x95
    targets = [
        i + 1 + off for i, (op, _, off, _) in enumerate(insns) if op in (0x15, 0x55, 0x25, 0xA5)
    ]
    plain = drop + 2  # the miss: mark cleared, re-routed unchanged
    assert targets[0] == plain and set(targets[1:]) == {drop}
    assert insns[plain + 2 :] == [(0xB7, 0, 0, srv6_bpf.BPF_LWT_REROUTE), (0x95, 0, 0, 0)]
    stores = [(op, regs & 0xF, off) for op, regs, off, _ in insns if op in (0x63, 0x6B, 0x73, 0x7B)]
    ctx = [(op, off) for op, dst, off in stores if dst == srv6_bpf.R6]
    assert ctx == [(0x63, srv6_bpf.SKB_MARK)] * 2  # the skb: only its mark, by register
    assert all(dst in (srv6_bpf.R6, srv6_bpf.R10) for _, dst, _ in stores)  # else the stack
    # no immediate store (st) at all: kernels before 6.3 refuse one into the context
    assert not [op for op, *_ in insns if op & 0x07 == 0x02]


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
    with pytest.raises(ValueError, match="low 24 bits"):
        nft.Marks(0xCA010000)  # fine under the 16 bits of earlier versions, not under 24
    assert nft.Marks(0xCA010000, bits=16).size == 0xFFFF
    with pytest.raises(ValueError, match="mark_bits"):
        nft.Marks(0xC0000000, bits=30)
    m = nft.Marks()
    assert m.mask == 0xFF000000 and m.size == (1 << 24) - 1
    assert m.owns(0xCA000005) and m.owns(0xCAFFFFFF) and not m.owns(0xCA000000)
    assert not m.owns(0x1) and not m.owns(0xCB000001)
    assert m.match == "and 0xff000000 == 0xca000000"


def test_slots_go_past_16_bits() -> None:
    t = SlotTable(nft.Marks())
    marks = {t.assign(Tunnel(SVC, ipaddress.IPv6Address(int(SID) + i))) for i in range(70_000)}
    assert len(marks) == 70_000 and max(marks) > 0xCA00FFFF
    assert all(t.marks.owns(m) for m in marks)
    small = SlotTable(nft.Marks(bits=8))
    for i in range(255):
        small.assign(Tunnel(SVC, ipaddress.IPv6Address(int(SID) + i)))
    with pytest.raises(RuntimeError, match="all 255 slots"):
        small.assign(Tunnel(SVC, ipaddress.IPv6Address(int(SID) + 999)))


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


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"mark_base": 0xCA010000}, "mark_base: must be a non-zero 32-bit value with its low 24"),
        ({"mark_bits": 30}, "mark_bits"),
        ({"tunnel_map_entries": 0}, "tunnel_map_entries"),
        ({"tunnel_map_entries": 1 << 29}, "tunnel_map_entries: must be 1..268435456"),
        ({"rule_priority": 32765}, "rule_priority"),
    ],
)  # fmt: skip
def test_options_name_the_bad_field(options: dict[str, int], field: str) -> None:
    from cand.adapters.linux import LinuxDataplane, LinuxOptions

    with pytest.raises(ValueError, match=re.escape(f"dataplane.options.{field}")):
        LinuxDataplane(LinuxOptions(**options), RouterId.parse("fc00:1::1"))  # type: ignore[arg-type]
    ok = LinuxDataplane(
        LinuxOptions(mark_bits=16, mark_base=0xCA010000), RouterId.parse("fc00:1::1")
    )
    assert ok.marks.mask == 0xFFFF0000 and ok.map_entries == 0xFFFF  # no more than slots


def test_parse_nat_rule_reads_back_what_base_wrote() -> None:
    """As `nft -j list table ip6 cand` (nft 1.0.6) shows the rule `base` writes for one NAT
    instance; anything else in the chain is not a translation of cand's."""
    rule = {
        "family": "ip6", "table": "cand", "chain": "servicenat", "handle": 2,
        "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 0xCA000002}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                       "right": "2001:db8:5::2"}},
            {"dnat": {"addr": "2001:db8:3b::10"}},
        ],
    }  # fmt: skip
    want = nft.NatRule(
        0xCA000002, ipaddress.IPv6Address("2001:db8:5::2"), ipaddress.IPv6Address("2001:db8:3b::10")
    )
    assert nft.parse_nat_rule(rule) == want
    text = nft.base("cand", nft.Marks(), {}, {}, [want], None)
    rule_text = "meta mark 0xca000002 ip6 daddr 2001:db8:5::2 dnat to 2001:db8:3b::10"
    assert f"add rule ip6 cand servicenat {rule_text}" in text
    assert nft.parse_nat_rule({**rule, "expr": rule["expr"][:2]}) is None
    assert nft.parse_nat_rule({"expr": [{"counter": {}}]}) is None


def test_an_unanswered_flow_keeps_its_mark_only_while_its_instance_is_live() -> None:
    """bench.failure: a SYN reusing the 5-tuple of an old unanswered one matched that old
    conntrack entry, and the mark restore sent it to the instance the old SYN had (dead)."""
    base = nft.base("cand", nft.Marks(), {}, {SVC: nft.chain_name(SVC)}, [], None)
    restore = [x for x in base if "meta mark set ct mark" in x]
    assert len(restore) == 1 and "ct state != new" in restore[0]
    svc = nft.SteeredService(
        SVC,
        FlowKeyKind.FIVE_TUPLE,
        30,
        DefaultAction.DROP,
        (nft.SteeredSlot(0xCA000001, 0, False), nft.SteeredSlot(0xCA000002, 10, True)),
    )
    lines = nft.service("cand", svc)
    assert lines[2].endswith("ct mark { 0xca000002 } meta mark set ct mark return"), lines
