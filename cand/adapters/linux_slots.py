"""Slots: the numbers that tie a flow's conntrack mark to a route, and what each one installs.

A slot is one way out of this router for steered packets: towards a remote instance's SRv6 SID
(`Tunnel`, ingress) or to a local instance (`Delivery`, egress, also used by a local client).
Its number (`base | n`) is at once the fwmark and the ct mark.

- A delivery slot (few: one per local instance) is also a routing table id, with its own rule:
  `ip rule fwmark N lookup N`, table N `default via <D-BID>` (`DeliveryRoute`).
- A tunnel slot (many: one per remote instance of every steered service, 120k at 10k D-SIDs x
  12) is one entry of the tunnel map, N -> the outer header towards the instance's SID. One
  rule, `fwmark base/mask lookup base`, sends every tunnel mark to the tunnel table `base`,
  which holds one route per steered D-SID (`DsidRoute`) through the one program that looks
  the mark up (`srv6_bpf.map_program`). No rule and no table per tunnel: the kernel walks ip
  rules one by one for every packet, and a route table per tunnel stopped at 65,535.
- `TunnelRoute` is the layout before the tunnel map (a table, a rule and a program per
  tunnel); it is only read back, to convert it (see `linux`).

What a slot installs is described here as plain values, compared with what the kernel
reports, and only the difference is changed. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cand.adapters.linux_nft import Marks, hexname
from cand.engine.service_table import InstanceMode
from cand.model import InstanceKey, ServiceId

PROG_PREFIX = "cand-"  # the per-tunnel programs of the layout before the tunnel map
MAP_PROG_PREFIX = "cand_t"  # the one program of a tunnel map: + 9 hex digits, unique


@dataclass(frozen=True, slots=True)
class Tunnel:
    """Ingress: new flows of `service` given this slot are encapsulated towards `sid`."""

    service: ServiceId
    sid: ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Delivery:
    """Egress: packets that arrive for `sid` (or a local client's, for this instance) are
    handed to the instance, through ServiceNAT when the service's mode is `nat`."""

    key: InstanceKey
    sid: ipaddress.IPv6Address
    mode: InstanceMode


Purpose = Tunnel | Delivery
Identity = tuple[object, ...]


def identity(p: Purpose) -> Identity:
    """What makes two purposes the same slot: what the kernel can tell back after a restart."""
    if isinstance(p, Tunnel):
        return ("tunnel", p.service, p.sid)
    return ("delivery", p.sid)


@dataclass(frozen=True, slots=True)
class TunnelRoute:
    """The earlier layout's table N: `D-SID/128 encap bpf xmit cand-<SID> dev <dev>`."""

    service: ServiceId
    sid: ipaddress.IPv6Address
    dev: str


@dataclass(frozen=True, slots=True)
class DeliveryRoute:
    """Installed in table N: `default via <nh> dev <dev>` (End.DX6's next hop)."""

    nh: ipaddress.IPv6Address
    dev: str


@dataclass(frozen=True, slots=True)
class DsidRoute:
    """In the tunnel table: `D-SID/128 encap bpf xmit <the map's program> dev <dev>`."""

    prog: str
    dev: str


Route = TunnelRoute | DeliveryRoute


def map_prog_of(name: str) -> str | None:
    """The tunnel-map program's name from a route's `xmit` (`cand_t…:[*fsobj]`)."""
    name = name.split(":", 1)[0]
    return name if name.startswith(MAP_PROG_PREFIX) and len(name) <= 15 else None


def prog_name(sid: ipaddress.IPv6Address) -> str:
    """The name the kernel shows for a tunnel's program; it says where the tunnel goes."""
    return PROG_PREFIX + hexname(sid)


def sid_of_prog(name: str) -> ipaddress.IPv6Address | None:
    name = name.split(":", 1)[0]
    if not name.startswith(PROG_PREFIX):
        return None
    try:
        return ipaddress.IPv6Address(int(name[len(PROG_PREFIX) :], 16))
    except ValueError:
        return None


class SlotTable:
    """Which purpose holds which number. A number is reused only after release, and a slot
    found installed at start keeps its number (`adopt`), so the marks of established flows
    still lead to the same instance after a restart."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self.by_id: dict[Identity, int] = {}
        self.by_mark: dict[int, Identity] = {}
        self._next = 1

    def get(self, purpose: Purpose) -> int | None:
        return self.by_id.get(identity(purpose))

    def assign(self, purpose: Purpose) -> int:
        ident = identity(purpose)
        have = self.by_id.get(ident)
        if have is not None:
            return have
        size = self.marks.size
        if len(self.by_mark) < size:
            while True:
                mark = self.marks.base | self._next
                self._next = self._next % size + 1
                if mark not in self.by_mark:
                    self._bind(ident, mark)
                    return mark
        raise RuntimeError(f"dataplane: all {size} slots are in use (mark_bits)")

    def adopt(self, ident: Identity, mark: int) -> bool:
        if not self.marks.owns(mark) or mark in self.by_mark or ident in self.by_id:
            return False
        self._bind(ident, mark)
        return True

    def release(self, mark: int) -> None:
        ident = self.by_mark.pop(mark, None)
        if ident is not None:
            del self.by_id[ident]

    def _bind(self, ident: Identity, mark: int) -> None:
        self.by_id[ident] = mark
        self.by_mark[mark] = ident
