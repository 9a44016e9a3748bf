"""P4Runtime entities for p4/cand.p4, built from cand's values, by the names in `names`.

Each function returns one finsy entity; the caller decides the update type (`+e` insert,
`~e` modify, `-e` delete) and batches them into one Write. Values are given as the program
takes them (IPv6 addresses as text, MACs as text, ids as ints); finsy encodes them by the
P4Info, so a bit width is checked at encoding time against the compiled program.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import finsy as fy

from cand_p4 import names as n


@dataclass(frozen=True, slots=True)
class ToSid:
    """An instance behind another router: H.Encaps towards its per-instance SRv6 SID."""

    sid: str


@dataclass(frozen=True, slots=True)
class ToLocal:
    """An instance attached to this router, at its D-BID; `nat` for ServiceNAT."""

    dbid: str
    nat: bool = False


Target = ToSid | ToLocal


def _action(target: Target) -> fy.P4TableAction:
    if isinstance(target, ToSid):
        return fy.P4TableAction(n.TO_SID.name, sid=target.sid)
    return fy.P4TableAction(n.TO_LOCAL.name, dbid=target.dbid, nat=int(target.nat))


# --- router ------------------------------------------------------------------------------


def nexthop(nexthop_id: int, port: int, dst_mac: str, src_mac: str) -> fy.P4TableEntry:
    """A neighbour the control plane resolved: out of `port`, with these MACs."""
    return fy.P4TableEntry(
        n.NEXTHOP.name,
        match=fy.P4TableMatch(id=nexthop_id),
        action=fy.P4TableAction(n.NEIGHBOUR.name, port=port, dst_mac=dst_mac, src_mac=src_mac),
    )


def route(prefix: str, nexthop_id: int) -> fy.P4TableEntry:
    """IPv6 LPM: `prefix` (text, e.g. "fc00:2::/64") via next hop `nexthop_id`."""
    net = ipaddress.IPv6Network(prefix)
    return fy.P4TableEntry(
        n.ROUTER.name,
        match=fy.P4TableMatch(dst=str(net)),
        action=fy.P4TableAction(n.ROUTE.name, nexthop_id=nexthop_id),
    )


# --- ingress: service, selector, binding, head-end ---------------------------------------


def service(
    dsid: str, service_id: int, *, three_tuple: bool, default_route: bool
) -> fy.P4TableEntry:
    """A D-SID steered by cand: its service id (the selector group's key), its flow key kind,
    and whether a new flow with no instance to take it is routed (True) or dropped."""
    return fy.P4TableEntry(
        n.SERVICE.name,
        match=fy.P4TableMatch(dsid=dsid),
        action=fy.P4TableAction(
            n.STEER.name,
            service_id=service_id,
            three_tuple=int(three_tuple),
            default_route=int(default_route),
        ),
    )


def encap_settings(source: str, *, hop_limit: int = 64, reduced: bool = False) -> fy.P4TableEntry:
    """The head-end's outer source address and hop limit, and H.Encaps.Red (no SRH) or not.
    It is the encap table's default action: write it as a modify (`~`)."""
    return fy.P4TableEntry(
        n.ENCAP.name,
        is_default_action=True,
        action=fy.P4TableAction(
            n.SET_ENCAP.name, source=source, hop_limit=hop_limit, reduced=int(reduced)
        ),
    )


def member(member_id: int, target: Target) -> fy.P4ActionProfileMember:
    """One instance as a member of the selector (`names.INSTANCES`)."""
    return fy.P4ActionProfileMember(n.INSTANCES, member_id=member_id, action=_action(target))


def group(group_id: int, members: Sequence[int], *, max_size: int = 16) -> fy.P4ActionProfileGroup:
    """A service's selector group over its instances' members, each with weight 1 (weights by
    replication are the data plane's job, slice 2 of issue 20)."""
    return fy.P4ActionProfileGroup(
        n.INSTANCES,
        group_id=group_id,
        max_size=max_size,
        members=[fy.P4Member(m, weight=1) for m in members],
    )


def new_flow(service_id: int, group_id: int) -> fy.P4TableEntry:
    """The service's new flows are hashed over group `group_id`."""
    return fy.P4TableEntry(
        n.NEW_FLOW.name,
        match=fy.P4TableMatch(service_id=service_id),
        action=fy.P4IndirectAction(group_id=group_id),
    )


def new_flow_digest(*, ack_timeout_ns: int = 10**9) -> fy.P4DigestEntry:
    """Switches new_flow_t digests on: one digest per message (no batching delay)."""
    return fy.P4DigestEntry(n.NEW_FLOW_DIGEST, max_list_size=1, ack_timeout_ns=ack_timeout_ns)


@dataclass(frozen=True, slots=True)
class FlowKey:
    """The binding table's key, as the program computes it (ports 0 for a 3-tuple service)."""

    src: str
    dst: str
    proto: int
    sport: int = 0
    dport: int = 0


@dataclass(frozen=True, slots=True)
class NewFlow:
    """One new_flow_t digest: a flow the selector placed, and where."""

    key: FlowKey
    service_id: int
    target: Target

    @classmethod
    def from_digest(cls, data: Mapping[str, Any]) -> NewFlow:
        missing = set(n.NEW_FLOW_FIELDS) - set(data)
        if missing:
            raise ValueError(f"new_flow_t digest without {sorted(missing)}")
        key = FlowKey(
            str(ipaddress.IPv6Address(data["src"])),
            str(ipaddress.IPv6Address(data["dst"])),
            int(data["proto"]),
            int(data["sport"]),
            int(data["dport"]),
        )
        addr = str(ipaddress.IPv6Address(data["target"]))
        kind = int(data["kind"])
        target: Target
        if kind == n.TARGET_SID:
            target = ToSid(addr)
        elif kind in (n.TARGET_LOCAL, n.TARGET_LOCAL_NAT):
            target = ToLocal(addr, nat=kind == n.TARGET_LOCAL_NAT)
        else:
            raise ValueError(f"new_flow_t digest with unknown kind {kind}")
        return cls(key, int(data["service_id"]), target)


def binding(key: FlowKey, target: Target, *, idle_timeout_s: float) -> fy.P4TableEntry:
    """A flow pinned to its instance; the switch reports it idle after `idle_timeout_s`."""
    return fy.P4TableEntry(
        n.BINDING.name,
        match=fy.P4TableMatch(
            src=key.src, dst=key.dst, proto=key.proto, sport=key.sport, dport=key.dport
        ),
        action=_action(target),
        idle_timeout_ns=int(idle_timeout_s * 1e9),
    )


# --- egress: End.DX6 and ServiceNAT ------------------------------------------------------


def local_sid(sid: str, dbid: str, *, nat: bool) -> fy.P4TableEntry:
    """An instance's SRv6 SID: End.DX6 to its D-BID, with ServiceNAT for a `nat` instance."""
    action = n.END_DX6_NAT if nat else n.END_DX6
    return fy.P4TableEntry(
        n.LOCAL_SID.name,
        match=fy.P4TableMatch(sid=sid),
        action=fy.P4TableAction(action.name, dbid=dbid),
    )


def nat_out(dbid: str, dsid: str) -> fy.P4TableEntry:
    """A `nat` instance's replies leave with the D-SID as their source."""
    return fy.P4TableEntry(
        n.NAT_OUT.name,
        match=fy.P4TableMatch(dbid=dbid),
        action=fy.P4TableAction(n.NAT_SOURCE.name, dsid=dsid),
    )
