"""Delay probes between cand routers, wire format version 1 (docs/wire-formats.md, byte-exact).

A TWAMP-Light-like exchange of our own: the ingress sends a probe over the SRv6 path to an
egress's responder, which returns the same 72 bytes with its receive and transmit times and
its own address filled in. The reply is never longer than the probe (no amplification).

    offset size  field
     0      4    magic "CNDP"
     4      1    version (1)
     5      1    kind: 1 probe, 2 reply
     6      2    flags (0; anything else is refused)
     8      4    session: the sender's random id for this run of it
    12      4    seq: the sender's probe number towards this egress
    16     16    sender: the ingress's IPv6 address (its router id)
    32      8    t1: sender's transmit time, ns since the Unix epoch
    40      8    t2: responder's receive time (0 in a probe)
    48      8    t3: responder's transmit time (0 in a probe)
    56     16    responder: the egress's IPv6 address (:: in a probe)

All integers big-endian (network order). Pure: no I/O, no clock.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, replace
from enum import IntEnum

MAGIC = b"CNDP"
VERSION = 1
SIZE = 72
_LAYOUT = struct.Struct("!4sBBHII16sQQQ16s")
assert _LAYOUT.size == SIZE
MAX_U32 = (1 << 32) - 1
MAX_U64 = (1 << 64) - 1
_ZERO = ipaddress.IPv6Address(0)


class Kind(IntEnum):
    PROBE = 1
    REPLY = 2


class ProbeError(ValueError):
    """A datagram that is not a well-formed probe or reply; `reason` is a short stable word
    used as a counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Probe:
    kind: Kind
    session: int
    seq: int
    sender: ipaddress.IPv6Address
    t1: int
    t2: int = 0
    t3: int = 0
    responder: ipaddress.IPv6Address = _ZERO

    def __post_init__(self) -> None:
        for name in ("session", "seq"):
            if not 0 <= getattr(self, name) <= MAX_U32:
                raise ProbeError("range", f"{name} {getattr(self, name)} is not a u32")
        for name in ("t1", "t2", "t3"):
            if not 0 <= getattr(self, name) <= MAX_U64:
                raise ProbeError("range", f"{name} {getattr(self, name)} is not a u64")

    def answer(self, responder: ipaddress.IPv6Address, received: int, sent: int) -> Probe:
        """The reply a responder sends for this probe."""
        return replace(self, kind=Kind.REPLY, t2=received, t3=sent, responder=responder)


def encode(p: Probe) -> bytes:
    return _LAYOUT.pack(
        MAGIC,
        VERSION,
        int(p.kind),
        0,
        p.session,
        p.seq,
        p.sender.packed,
        p.t1,
        p.t2,
        p.t3,
        p.responder.packed,
    )


def decode(data: bytes) -> Probe:
    """One datagram; raises ProbeError for anything but a well-formed probe or reply."""
    if len(data) != SIZE:
        raise ProbeError("length", f"{len(data)} bytes, not {SIZE}")
    magic, version, kind, flags, session, seq, sender, t1, t2, t3, responder = _LAYOUT.unpack(data)
    if magic != MAGIC:
        raise ProbeError("magic", repr(magic))
    if version != VERSION:
        raise ProbeError("version", str(version))
    if kind not in (Kind.PROBE, Kind.REPLY):
        raise ProbeError("kind", str(kind))
    if flags != 0:
        raise ProbeError("flags", f"{flags:#06x}")
    snd, rsp = ipaddress.IPv6Address(sender), ipaddress.IPv6Address(responder)
    if snd.is_unspecified or snd.is_multicast:
        raise ProbeError("sender", str(snd))
    if t1 == 0:
        raise ProbeError("timestamp", "t1 is 0")
    if kind == Kind.PROBE:
        if t2 or t3 or not rsp.is_unspecified:
            raise ProbeError("probe_fields", "a probe carries no responder fields")
    else:
        if rsp.is_unspecified or rsp.is_multicast:
            raise ProbeError("responder", str(rsp))
        if t2 == 0 or t3 < t2:
            raise ProbeError("timestamp", f"t2 {t2} t3 {t3}")
    return Probe(Kind(kind), session, seq, snd, t1, t2, t3, rsp)


SRH_TYPE = 4


def routing_header(sid: ipaddress.IPv6Address, final: ipaddress.IPv6Address) -> bytes:
    """The SRH a probe socket carries (Linux `IPV6_RTHDR`, type 4): the packet goes to `sid`
    first, the egress's SRv6 SID, then on to `final`, the responder's address at the same
    egress. 40 bytes: next header (0: the kernel fills it in), header length 4 (in 8-octet
    units after the first 8), routing type 4, segments left 1, last entry 1, flags 0, tag 0,
    then the segment list in reverse order of visit: [0] `final`, [1] `sid`."""
    return struct.pack("!BBBBBBH", 0, 4, SRH_TYPE, 1, 1, 0, 0) + final.packed + sid.packed
