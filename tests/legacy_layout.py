"""The data plane's layout before the tunnel map, rebuilt for the upgrade test: one H.Encaps
program per tunnel with its outer header as constants, a table and an ip rule per slot. cand no
longer installs this (see `cand.adapters.srv6_bpf`); the test makes it the way an earlier cand
did and checks that the current one converts it without breaking an established flow."""

from __future__ import annotations

from cand.adapters.srv6_bpf import (
    BPF_DROP,
    BPF_FUNC_LWT_PUSH_ENCAP,
    BPF_FUNC_SKB_STORE_BYTES,
    BPF_LWT_ENCAP_IP,
    BPF_LWT_REROUTE,
    NEXT_HEADER,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R10,
    SKB_LEN,
    SKB_MARK,
    _insn,
    _ld_imm64,
    pushed_header,
)


def encap_program(header: bytes) -> bytes:
    """LWT xmit bytecode: clear the mark, push `header` with the right payload length (GSO
    packets included, see the module doc), and let the kernel route the packet again by its
    new destination (the first segment). Any helper failure drops the packet."""
    size = len(header)
    if size % 8 or size > 256:
        raise ValueError("header must be a multiple of 8 bytes, at most 256")
    pushed = pushed_header(header)
    code = bytearray()
    code += _insn(0xBF, R6, R1)  # r6 = skb
    for i in range(0, size, 8):  # the header on the stack at r10 - size
        code += _ld_imm64(R2, int.from_bytes(pushed[i : i + 8], "little"))
        code += _insn(0x7B, R10, R2, off=-size + i)
    code += _insn(0x61, R7, R6, off=SKB_LEN)  # r7 = skb->len (the inner packet)
    code += _insn(0x07, R7, imm=size - 40)  # + the SRH: the outer payload length
    code += _insn(0xDC, R7, imm=16)  # to network byte order
    code += _insn(0x6B, R10, R7, off=-size + 4)
    # The fwmark chose this route; cleared, the re-route after the push uses the main tables.
    code += _insn(0x62, R6, off=SKB_MARK, imm=0)
    code += _insn(0xBF, R1, R6)
    code += _insn(0xB7, R2, imm=BPF_LWT_ENCAP_IP)
    code += _insn(0xBF, R3, R10)
    code += _insn(0x07, R3, imm=-size)
    code += _insn(0xB7, R4, imm=size)
    code += _insn(0x85, imm=BPF_FUNC_LWT_PUSH_ENCAP)
    steps: list[bytes] = []  # after a successful push; each one may fail too
    if pushed != header:  # the real next header into the packet (offset 6 of the new data)
        steps.append(
            _insn(0x72, R10, off=-size + NEXT_HEADER, imm=header[NEXT_HEADER])
            + _insn(0xBF, R1, R6)
            + _insn(0xB7, R2, imm=NEXT_HEADER)
            + _insn(0xBF, R3, R10)
            + _insn(0x07, R3, imm=-size + NEXT_HEADER)
            + _insn(0xB7, R4, imm=1)
            + _insn(0xB7, R5, imm=0)
            + _insn(0x85, imm=BPF_FUNC_SKB_STORE_BYTES)
        )
    tail = _insn(0xB7, R0, imm=BPF_LWT_REROUTE) + _insn(0x95)
    for i, step in enumerate([b"", *steps]):  # `if r0 != 0 goto drop` after every helper
        code += step
        later = steps[i:]  # what lies between this jump and `drop`: the later steps and
        skip = sum(len(s) for s in later) // 8 + len(later) + len(tail) // 8  # their jumps
        code += _insn(0x55, R0, off=skip, imm=0)
    code += tail
    code += _insn(0xB7, R0, imm=BPF_DROP)
    code += _insn(0x95)
    return bytes(code)
