"""SRv6 H.Encaps as a tiny eBPF program for the kernel's lightweight-tunnel hook (`encap bpf`).

Why: kernels built without `CONFIG_IPV6_SEG6_LWTUNNEL` (this project's CI kernel is one) have
no `encap seg6` route and no `seg6local`, but they do have `CONFIG_LWTUNNEL_BPF`, whose
`bpf_lwt_push_encap(BPF_LWT_ENCAP_IP)` pushes any outer IPv6 header chain, and they still run
the SRH receive path of RFC 8754 (`seg6_enabled`: a packet whose last segment is a local
address and whose next header is IPv6 is decapsulated and received again). A program that
pushes a tunnel's outer header does what `encap seg6 mode encap` does:

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

One program for every tunnel (`map_program`): a program per tunnel costs a load (~1 ms) and a
route table and an ip rule each, and ip rules are walked one by one per packet. The data plane
therefore keeps every tunnel's outer header in one BPF hash map keyed by the slot mark
(`BPF_F_NO_PREALLOC`: 120k entries cost only what they use), and one program, attached to one
route per D-SID, reads `skb->mark`, looks it up and pushes the header it finds (`tunnel_value`
is the value layout). A mark with no entry, or any helper failure, drops the packet. The
program's payload length and real next header go in after the push with one
`bpf_skb_store_bytes`, since the map value is shared by every CPU and must not be written.

Nothing needs to stay pinned: the routes hold the program and the program holds the map, so
the kernel keeps both as long as one route uses them; a restarted daemon finds the program by
the unique name its routes show (`find_prog`) and the map through the program's map ids.
Pins are made only for the moment iproute2 needs a path, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import resource
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_PROG_GET_NEXT_ID = 11
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27
BPF_MAP_TYPE_HASH = 1
BPF_F_NO_PREALLOC = 1
BPF_PSEUDO_MAP_FD = 1
BPF_FUNC_MAP_LOOKUP_ELEM = 1
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
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10

# The map's value: u32 header length, u8 the real outer next header, 3 bytes 0, the D-SID the
# tunnel serves (16 bytes: read back after a restart, never used per packet), then the header
# as the program pushes it (`pushed_header`), 0-padded to HEADER_MAX.
HEADER_MAX = 256
VALUE_LEN, VALUE_NH, VALUE_DSID, VALUE_HEADER = 0, 4, 8, 24
VALUE_SIZE = VALUE_HEADER + HEADER_MAX
KEY_SIZE = 4  # the slot mark, u32 in host order (as skb->mark reads)
DEFAULT_MAX_ENTRIES = 1 << 18  # as LinuxOptions.tunnel_map_entries
PROG_TYPE_OFF, PROG_NR_MAP_IDS_OFF, PROG_NAME_OFF, PROG_INFO_SIZE = 0, 52, 64, 88  # bpf_prog_info


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


def tunnel_value(dsid: ipaddress.IPv6Address, header: bytes) -> bytes:
    """The map value for one tunnel slot: `header` (from `srh_header`) as the program pushes
    it, its length and real next header, and the D-SID it serves (for the read-back)."""
    if len(header) % 8 or not 40 <= len(header) <= HEADER_MAX:
        raise ValueError(f"header must be a multiple of 8 bytes, 40..{HEADER_MAX}")
    pushed = pushed_header(header)
    value = struct.pack("<IB3x16s", len(header), header[NEXT_HEADER], dsid.packed)
    return value + pushed.ljust(HEADER_MAX, b"\0")


def parse_tunnel_value(value: bytes) -> tuple[ipaddress.IPv6Address, bytes] | None:
    """(D-SID, the header as it goes on the wire, payload length 0) from a map value; None if
    it is not one `tunnel_value` makes."""
    if len(value) != VALUE_SIZE:
        return None
    size, nh, dsid = struct.unpack_from("<IB3x16s", value)
    if size % 8 or not 40 <= size <= HEADER_MAX:
        return None
    pushed = value[VALUE_HEADER : VALUE_HEADER + size]
    header = pushed[:NEXT_HEADER] + bytes([nh]) + pushed[NEXT_HEADER + 1 :]
    return ipaddress.IPv6Address(dsid), header


def first_segment(header: bytes) -> ipaddress.IPv6Address:
    """Where a tunnel goes first: the outer destination."""
    return ipaddress.IPv6Address(header[24:40])


def map_program(map_fd: int) -> bytes:
    """LWT xmit bytecode for every tunnel: look `skb->mark` up in the map `map_fd`; on a miss
    (a flow whose slot is gone) clear the mark and let the kernel route the packet plainly, as
    if it had never been steered; else push the header found there (its length bounded to
    40..HEADER_MAX, which the verifier needs to accept a variable size into the map value);
    then write the payload length (from this packet's length) and the real next header into
    the new outer header in one store, clear the mark and let the kernel route the packet
    again by its new destination. Any helper failure drops the packet. The mark is cleared
    with a register store (`stx`): kernels before 6.3 refuse an immediate store (`st`) into
    the context."""
    drop: list[int] = []  # indexes of the jumps to patch to `drop`
    plain: list[int] = []  # ... and to `plain`
    code: list[bytes] = []

    def emit(*insns: bytes) -> None:
        code.extend(insns)

    def to_drop(op: int, reg: int, imm: int, to: list[int] = drop) -> None:
        to.append(len(code))
        emit(_insn(op, reg, imm=imm))

    def clear_mark() -> None:
        emit(_insn(0xB7, R1, imm=0), _insn(0x63, R6, R1, off=SKB_MARK))

    emit(_insn(0xBF, R6, R1))  # r6 = skb
    emit(_insn(0x61, R2, R6, off=SKB_MARK))  # r2 = skb->mark
    emit(_insn(0x63, R10, R2, off=-4))  # the key on the stack
    emit(*_ld_map_fd(R1, map_fd))
    emit(_insn(0xBF, R2, R10), _insn(0x07, R2, imm=-4))
    emit(_insn(0x85, imm=BPF_FUNC_MAP_LOOKUP_ELEM))
    to_drop(0x15, R0, 0, plain)  # no tunnel for this mark
    emit(_insn(0xBF, R7, R0))  # r7 = the value
    emit(_insn(0x61, R4, R7, off=VALUE_LEN))  # r4 = header length
    to_drop(0x25, R4, HEADER_MAX)  # if r4 > HEADER_MAX goto drop
    to_drop(0xA5, R4, 40)  # if r4 < 40 goto drop
    emit(_insn(0x61, R8, R6, off=SKB_LEN))  # r8 = skb->len (the inner packet)
    emit(_insn(0x0F, R8, R4))  # + the header
    emit(_insn(0x07, R8, imm=-40))  # - the outer IPv6 header: the payload length
    emit(_insn(0xDC, R8, imm=16))  # to network byte order
    emit(_insn(0x6B, R10, R8, off=-8))  # stack[-8..-7] = payload length
    emit(_insn(0x71, R9, R7, off=VALUE_NH))  # r9 = the real next header
    emit(_insn(0x73, R10, R9, off=-6))  # stack[-6] = it
    # The fwmark chose this route; cleared, the re-route after the push uses the main tables.
    clear_mark()
    emit(_insn(0xBF, R1, R6), _insn(0xB7, R2, imm=BPF_LWT_ENCAP_IP))
    emit(_insn(0xBF, R3, R7), _insn(0x07, R3, imm=VALUE_HEADER))
    emit(_insn(0x85, imm=BPF_FUNC_LWT_PUSH_ENCAP))  # r4 is still the length
    to_drop(0x55, R0, 0)
    emit(_insn(0xBF, R1, R6), _insn(0xB7, R2, imm=4))  # offset 4: payload length, next header
    emit(_insn(0xBF, R3, R10), _insn(0x07, R3, imm=-8))
    emit(_insn(0xB7, R4, imm=3), _insn(0xB7, R5, imm=0))
    emit(_insn(0x85, imm=BPF_FUNC_SKB_STORE_BYTES))
    to_drop(0x55, R0, 0)
    emit(_insn(0xB7, R0, imm=BPF_LWT_REROUTE), _insn(0x95))
    at = {"drop": len(code)}
    emit(_insn(0xB7, R0, imm=BPF_DROP), _insn(0x95))
    at["plain"] = len(code)
    clear_mark()
    emit(_insn(0xB7, R0, imm=BPF_LWT_REROUTE), _insn(0x95))
    slot = [sum(len(c) for c in code[:i]) // 8 for i in range(len(code) + 1)]  # in 8-byte units
    out = bytearray()
    for i, insn in enumerate(code):
        label = "drop" if i in drop else "plain" if i in plain else None
        if label is not None:
            op, regs, _, imm = struct.unpack("<BBhi", insn)
            insn = struct.pack("<BBhi", op, regs, slot[at[label]] - slot[i + 1], imm)
        out += insn
    return bytes(out)


def _ld_map_fd(dst: int, fd: int) -> tuple[bytes, bytes]:
    """`ld_imm64 dst, map` with the map named by its file descriptor (BPF_PSEUDO_MAP_FD)."""
    return _insn(0x18, dst, BPF_PSEUDO_MAP_FD, imm=fd), _insn(0)


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


def load(code: bytes, name: str) -> int:
    """Load an LWT xmit program; its file descriptor (the caller closes it)."""
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
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfError as e:
        verifier = log.value.decode(errors="replace").strip()
        raise BpfError(e.errno, f"loading {name}: {e.strerror}; verifier: {verifier}") from None


def pin(fd: int, path: Path) -> None:
    """Pin a program or map at `path` (a file in a bpffs mount)."""
    cpath = ctypes.create_string_buffer(str(path).encode())
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<QI", attr, 0, ctypes.addressof(cpath), fd)
    _bpf(BPF_OBJ_PIN, attr)


def load_and_pin(code: bytes, name: str, path: Path) -> None:
    """Load an LWT xmit program and pin it at `path` (a file in a bpffs mount)."""
    fd = load(code, name)
    try:
        pin(fd, path)
    finally:
        os.close(fd)


def create_map(max_entries: int = DEFAULT_MAX_ENTRIES, name: str = "cand_tunnels") -> int:
    """A hash map mark -> `tunnel_value`, allocated per entry (BPF_F_NO_PREALLOC). Kernels
    before 5.11 charge the whole map to RLIMIT_MEMLOCK (about 88 MB at 2^18 entries), so
    that limit is lifted first, as far as this process may."""
    raise_memlock()
    attr = ctypes.create_string_buffer(128)
    struct.pack_into(
        "<IIIIIII16s",
        attr,
        0,
        BPF_MAP_TYPE_HASH,
        KEY_SIZE,
        VALUE_SIZE,
        max_entries,
        BPF_F_NO_PREALLOC,
        0,
        0,
        name.encode()[:15],
    )
    return _bpf(BPF_MAP_CREATE, attr)


def raise_memlock() -> None:
    """RLIMIT_MEMLOCK to its hard limit (to infinity where allowed: root)."""
    _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    for want in (resource.RLIM_INFINITY, hard):
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (want, want))
            return
        except (ValueError, OSError):
            continue


def _info(fd: int, size: int, map_ids: bool = False) -> bytes:
    """The object's info (its first `size` bytes), and after it the map ids of a program."""
    buf = ctypes.create_string_buffer(size)
    ids = ctypes.create_string_buffer(4 * 8)
    if map_ids:  # room for up to 8
        struct.pack_into("<IQ", buf, PROG_NR_MAP_IDS_OFF, 8, ctypes.addressof(ids))
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, fd, size, ctypes.addressof(buf))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return buf.raw + ids.raw


def _by_id(cmd: int, ident: int) -> int:
    attr = ctypes.create_string_buffer(16)
    struct.pack_into("<I", attr, 0, ident)
    return _bpf(cmd, attr)


def _prog_ids() -> Iterable[int]:
    attr = ctypes.create_string_buffer(16)
    start = 0
    while True:
        struct.pack_into("<I", attr, 0, start)
        try:
            _bpf(BPF_PROG_GET_NEXT_ID, attr)
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return
            raise
        start = struct.unpack_from("<I", attr, 4)[0]
        yield start


def find_prog(name: str) -> tuple[int, list[int]] | None:
    """The LWT xmit program named `name` (an open fd) and the ids of the maps it uses."""
    for ident in _prog_ids():
        try:
            fd = _by_id(BPF_PROG_GET_FD_BY_ID, ident)
        except BpfError as e:
            if e.errno == errno.ENOENT:  # gone since it was listed
                continue
            raise
        try:
            info = _info(fd, PROG_INFO_SIZE, map_ids=True)
        except BaseException:
            os.close(fd)
            raise
        ptype = struct.unpack_from("<I", info, PROG_TYPE_OFF)[0]
        pname = info[PROG_NAME_OFF : PROG_NAME_OFF + 16].split(b"\0", 1)[0].decode()
        if ptype == BPF_PROG_TYPE_LWT_XMIT and pname == name:
            n = min(8, struct.unpack_from("<I", info, PROG_NR_MAP_IDS_OFF)[0])
            return fd, list(struct.unpack_from(f"<{n}I", info, PROG_INFO_SIZE))
        os.close(fd)
    return None


def open_map(map_id: int) -> int | None:
    """The map with this id if it has the tunnel map's shape (an open fd), else None."""
    try:
        fd = _by_id(BPF_MAP_GET_FD_BY_ID, map_id)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    try:
        mtype, _, key, value = struct.unpack_from("<IIII", _info(fd, 40))
    except BaseException:
        os.close(fd)
        raise
    if (mtype, key, value) == (BPF_MAP_TYPE_HASH, KEY_SIZE, VALUE_SIZE):
        return fd
    os.close(fd)
    return None


def _batch_attr(fd: int, keys: ctypes.Array[ctypes.c_char], values: int, count: int) -> Any:
    attr = ctypes.create_string_buffer(56)
    struct.pack_into("<QQQQII", attr, 0, 0, 0, ctypes.addressof(keys), values, count, fd)
    return attr


def map_update(fd: int, entries: Mapping[int, bytes], chunk: int = 8192) -> None:
    """Write many entries (BPF_MAP_UPDATE_BATCH), created or replaced."""
    items = sorted(entries.items())
    for i in range(0, len(items), chunk):
        part = items[i : i + chunk]
        keys = ctypes.create_string_buffer(struct.pack(f"<{len(part)}I", *(k for k, _ in part)))
        values = ctypes.create_string_buffer(b"".join(v for _, v in part))
        _bpf(BPF_MAP_UPDATE_BATCH, _batch_attr(fd, keys, ctypes.addressof(values), len(part)))


def map_delete(fd: int, marks: Iterable[int], chunk: int = 8192) -> None:
    """Delete many entries (BPF_MAP_DELETE_BATCH); every one must be there."""
    todo = sorted(marks)
    for i in range(0, len(todo), chunk):
        part = todo[i : i + chunk]
        keys = ctypes.create_string_buffer(struct.pack(f"<{len(part)}I", *part))
        _bpf(BPF_MAP_DELETE_BATCH, _batch_attr(fd, keys, 0, len(part)))


def map_dump(fd: int, chunk: int = 8192) -> dict[int, bytes]:
    """Every entry (BPF_MAP_LOOKUP_BATCH, bucket by bucket)."""
    out: dict[int, bytes] = {}
    keys = ctypes.create_string_buffer(KEY_SIZE * chunk)
    values = ctypes.create_string_buffer(VALUE_SIZE * chunk)
    tokens = ctypes.create_string_buffer(16)  # in_batch at 0, out_batch at 8 (a bucket index)
    first = True
    while True:
        attr = _batch_attr(fd, keys, ctypes.addressof(values), chunk)
        in_batch = 0 if first else ctypes.addressof(tokens)
        struct.pack_into("<QQ", attr, 0, in_batch, ctypes.addressof(tokens) + 8)
        done = False
        try:
            _bpf(BPF_MAP_LOOKUP_BATCH, attr)
        except BpfError as e:
            if e.errno != errno.ENOENT:
                raise
            done = True
        n = struct.unpack_from("<I", attr, 32)[0]
        got = ctypes.string_at(values, n * VALUE_SIZE)  # one copy per chunk (`.raw` copies all)
        for j, mark in enumerate(struct.unpack_from(f"<{n}I", keys)):
            out[mark] = got[j * VALUE_SIZE : (j + 1) * VALUE_SIZE]
        if done:
            return out
        ctypes.memmove(tokens, ctypes.addressof(tokens) + 8, 8)
        first = False


@dataclass
class TunnelMap:
    """The map of every tunnel's header and the one program that pushes it, both held open
    by this process; `name` is the program's name, unique per map, which the routes show."""

    map_fd: int
    prog_fd: int
    name: str

    @classmethod
    def create(cls, name: str, max_entries: int = DEFAULT_MAX_ENTRIES) -> TunnelMap:
        map_fd = create_map(max_entries)
        try:
            prog_fd = load(map_program(map_fd), name)
        except BaseException:
            os.close(map_fd)
            raise
        return cls(map_fd, prog_fd, name)

    @classmethod
    def find(cls, name: str) -> TunnelMap | None:
        """The program an earlier run left (named `name`, held by its routes) and its map."""
        found = find_prog(name)
        if found is None:
            return None
        prog_fd, map_ids = found
        try:
            for map_id in map_ids:
                map_fd = open_map(map_id)
                if map_fd is not None:
                    return cls(map_fd, prog_fd, name)
        except BaseException:
            os.close(prog_fd)
            raise
        os.close(prog_fd)
        return None

    def close(self) -> None:
        for fd in (self.map_fd, self.prog_fd):
            with contextlib.suppress(OSError):
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
