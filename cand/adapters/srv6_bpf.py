"""SRv6 H.Encaps as a tiny eBPF program for the kernel's lightweight-tunnel hook (`encap bpf`).

Why: kernels built without `CONFIG_IPV6_SEG6_LWTUNNEL` (this project's CI kernel is one) have
no `encap seg6` route and no `seg6local`, but they do have `CONFIG_LWTUNNEL_BPF`, whose
`bpf_lwt_push_encap(BPF_LWT_ENCAP_IP)` pushes any outer IPv6 header chain, and they still run
the SRH receive path of RFC 8754 (`seg6_enabled`: a packet whose last segment is a local
address and whose next header is IPv6 is decapsulated and received again). One program per
tunnel, with the outer header built in as constants, does what `encap seg6 mode encap` does:

    outer IPv6 (src, dst = first segment, next header 43)
    SRH (next header 41, type 4, segments left n-1, last entry n-1, segments in wire order)
    the original packet, untouched

The bytecode is assembled here (no compiler needed at install time), loaded with the bpf(2)
system call and pinned in a bpffs directory, so `ip route ... encap bpf xmit pinned PATH`
attaches it and a restarted daemon finds it again by name.

GSO packets (TCP bulk data: up to 64 KB that the kernel cuts into wire-sized segments only at
the last device) need their GSO type to say that an IPv6 header has been pushed in front,
or they cannot be segmented and are dropped. `bpf_lwt_push_encap` sets that type
(`SKB_GSO_IPXIP6`) only when the pushed outer header's next header is IPv4, IPv6, GRE or UDP;
for 43 (an SRH) it fails with EPROTONOSUPPORT, after the header is already in place, and the
program dropped the packet: bulk TCP through the tunnel collapsed to 0.0001 Gbit/s. So the
program pushes the header with next header 41 and then writes the real 43 into the packet
(`bpf_skb_store_bytes`): the packet is marked `SKB_GSO_IPXIP6` exactly as the kernel's own
`encap seg6` marks it, and the kernel's IPv6 segmentation walks the SRH (a routing header is a
GSO extension header) to the inner IPv6 header. The wire bytes are the same as before.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import struct
from collections.abc import Sequence
from pathlib import Path

BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_PROG_TYPE_LWT_XMIT = 12
BPF_FUNC_LWT_PUSH_ENCAP = 73
BPF_FUNC_SKB_STORE_BYTES = 9
BPF_LWT_ENCAP_IP = 2
BPF_DROP = 2
BPF_LWT_REROUTE = 128
SYS_BPF = {"x86_64": 321, "aarch64": 280}

SKB_LEN, SKB_MARK = 0, 8  # offsets in struct __sk_buff
NEXT_HEADER = 6  # offset of the next-header byte in an IPv6 header
IPPROTO_IPV6, IPPROTO_ROUTING = 41, 43
R0, R1, R2, R3, R4, R5, R6, R7, R10 = 0, 1, 2, 3, 4, 5, 6, 7, 10


class BpfError(OSError):
    pass


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _ld_imm64(dst: int, value: int) -> bytes:
    lo, hi = value & 0xFFFFFFFF, value >> 32
    as_signed = [x - (1 << 32) if x & 0x80000000 else x for x in (lo, hi)]
    return _insn(0x18, dst, imm=as_signed[0]) + _insn(0, imm=as_signed[1])


def srh_header(
    source: ipaddress.IPv6Address, segments: Sequence[ipaddress.IPv6Address], hop_limit: int = 64
) -> bytes:
    """The outer IPv6 header and SRH, `segments` in travel order (the first is visited first).

    The payload length is left 0: the program fills it in per packet."""
    if not 1 <= len(segments) <= 7:
        raise ValueError("an SRv6 path has 1..7 segments here (header room is 256 bytes)")
    n = len(segments)
    srh = struct.pack("!BBBBBBH", 41, 2 * n, 4, n - 1, n - 1, 0, 0)
    srh += b"".join(s.packed for s in reversed(segments))  # Segment List[0] is the last
    outer = struct.pack("!IHBB", 6 << 28, 0, 43, hop_limit) + source.packed + segments[0].packed
    return outer + srh


def pushed_header(header: bytes) -> bytes:
    """The bytes the program hands to `bpf_lwt_push_encap`: `header`, except that an outer next
    header of 43 (SRH) reads 41 (IPv6), the one value for which the helper marks a GSO packet
    `SKB_GSO_IPXIP6` instead of refusing it; the program writes the 43 back right after."""
    if len(header) > NEXT_HEADER and header[NEXT_HEADER] == IPPROTO_ROUTING:
        return header[:NEXT_HEADER] + bytes([IPPROTO_IPV6]) + header[NEXT_HEADER + 1 :]
    return header


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


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    nr = SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise BpfError(f"bpf(2): unknown system call number on {os.uname().machine}")
    ret = int(libc.syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf({cmd}): {os.strerror(err)}")
    return ret


def load_and_pin(code: bytes, name: str, path: Path) -> None:
    """Load an LWT xmit program and pin it at `path` (a file in a bpffs mount)."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into(
        "<IIQQIIQII16s",
        attr,
        0,
        BPF_PROG_TYPE_LWT_XMIT,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(lic),
        1,
        len(log),
        ctypes.addressof(log),
        0,
        0,
        name.encode()[:15],
    )
    try:
        fd = _bpf(BPF_PROG_LOAD, attr)
    except BpfError as e:
        verifier = log.value.decode(errors="replace").strip()
        raise BpfError(e.errno, f"loading {name}: {e.strerror}; verifier: {verifier}") from None
    try:
        cpath = ctypes.create_string_buffer(str(path).encode())
        pin = ctypes.create_string_buffer(16)
        struct.pack_into("<QI", pin, 0, ctypes.addressof(cpath), fd)
        _bpf(BPF_OBJ_PIN, pin)
    finally:
        os.close(fd)


def ensure_bpffs(directory: Path) -> None:
    """A bpffs mounted at `directory` (made if missing); pins live there, not in the netns."""
    directory.mkdir(parents=True, exist_ok=True)
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[1] == str(directory) and parts[2] == "bpf":
                return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", str(directory).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"mount bpffs at {directory}: {os.strerror(err)}")
