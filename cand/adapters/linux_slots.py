"""Slots: the numbers that tie a flow's conntrack mark to a route, and what each one installs.

A slot is one way out of this router for steered packets: towards a remote instance's SRv6 SID
(`Tunnel`, ingress) or to a local instance (`Delivery`, egress, also used by a local client).
Its number is at once the fwmark, the ct mark and the routing table id (`base | n`), so the
kernel needs no map between them: `ip rule fwmark N lookup N`. What a slot installs is
described here as plain values, compared with what the kernel reports, and only the
difference is changed. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cand.adapters.linux_nft import Marks, hexname
from cand.engine.service_table import InstanceMode
from cand.model import InstanceKey, ServiceId

PROG_PREFIX = "cand-"


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
    """Installed in table N: `D-SID/128 encap bpf xmit <prog> dev <dev>`."""

    service: ServiceId
    sid: ipaddress.IPv6Address
    dev: str


@dataclass(frozen=True, slots=True)
class DeliveryRoute:
    """Installed in table N: `default via <nh> dev <dev>` (End.DX6's next hop)."""

    nh: ipaddress.IPv6Address
    dev: str


Route = TunnelRoute | DeliveryRoute


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
        for _ in range(0xFFFF):
            mark = self.marks.base | self._next
            self._next = self._next % 0xFFFF + 1
            if mark not in self.by_mark:
                self._bind(ident, mark)
                return mark
        raise RuntimeError("dataplane: all 65535 slots are in use")

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
