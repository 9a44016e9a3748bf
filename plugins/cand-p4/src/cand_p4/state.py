"""What the switch should hold, what it holds, and the Writes between them: pure functions.

`Tables` is every entry cand owns on the switch except the bindings, in cand's own terms
(addresses as compressed text, ids as ints). `desired` builds it from the engine's service
entries and local instances; `from_device` builds it from what a read-back returned;
`plan` turns the difference into phases of updates, each phase one P4Runtime Write:

1. the new_flow_t digest switched on, new selector members (unreferenced until phase 2, so
   harmless) and next hops;
2. selector groups: one update per service carries all of its members with their replicas,
   so a weight change, an instance added or removed, is one atomic change of the group for
   new flows; the flows already bound are in the binding table and never see it;
3. table entries: service, new_flow, local_sid, nat_out, router (inserts, modifies, deletes;
   a new_flow entry goes before its group);
4. groups no longer wanted;
5. members no longer wanted.

P4Runtime does not promise an order inside one Write, hence the phases.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import finsy as fy

from cand_p4 import entries as e
from cand_p4 import names as n
from cand_p4.weights import replicate


@dataclass(frozen=True, slots=True)
class ServiceRow:
    service_id: int
    three_tuple: bool
    default_route: bool


@dataclass(frozen=True, slots=True)
class Neighbour:
    port: int
    dst_mac: str
    src_mac: str


@dataclass(frozen=True, slots=True)
class LocalSid:
    dbid: str
    nat: bool


@dataclass
class Tables:
    services: dict[str, ServiceRow] = field(default_factory=dict)  # D-SID ->
    members: dict[int, e.Target] = field(default_factory=dict)  # member id ->
    groups: dict[int, tuple[int, ...]] = field(default_factory=dict)  # group id -> member ids
    new_flow: dict[int, int] = field(default_factory=dict)  # service id -> group id
    local_sids: dict[str, LocalSid] = field(default_factory=dict)  # SID ->
    nat_out: dict[str, str] = field(default_factory=dict)  # D-BID -> D-SID
    routes: dict[str, int] = field(default_factory=dict)  # prefix -> next hop id
    nexthops: dict[int, Neighbour] = field(default_factory=dict)
    digest: bool = False  # new_flow_t digests switched on


@dataclass(frozen=True, slots=True)
class Steered:
    """One service as the data plane takes it from the engine's entry."""

    dsid: str
    three_tuple: bool
    default_route: bool
    weights: tuple[tuple[e.Target, int], ...]  # the instances that may take new flows


@dataclass(frozen=True, slots=True)
class Static:
    """What the config gives: the switch's ports and their neighbours."""

    routes: Mapping[str, int]
    nexthops: Mapping[int, Neighbour]


class Ids:
    """Service ids (16 bits, also the group id) and member ids, kept stable: an id once given
    to a D-SID or to (service id, target, copy) stays with it while it is wanted, and ids read
    back from the switch are adopted, so a restarted cand rewrites nothing that is right."""

    def __init__(self) -> None:
        self.service: dict[str, int] = {}
        self.member: dict[tuple[int, e.Target, int], int] = {}

    def adopt(self, have: Tables) -> None:
        for dsid, row in have.services.items():
            if dsid not in self.service and row.service_id not in self.service.values():
                self.service[dsid] = row.service_id
        taken = set(self.member.values())
        for gid, mids in sorted(have.groups.items()):
            copies: dict[e.Target, int] = {}
            for mid in sorted(mids):
                target = have.members.get(mid)
                if target is None or mid in taken:
                    continue
                k = copies.get(target, 0)
                copies[target] = k + 1
                self.member.setdefault((gid, target, k), mid)
                taken.add(mid)

    def service_id(self, dsid: str) -> int:
        if dsid not in self.service:
            used = set(self.service.values())
            sid = next(i for i in range(1, 1 << 16) if i not in used)
            self.service[dsid] = sid
        return self.service[dsid]

    def member_id(self, key: tuple[int, e.Target, int], avoid: set[int]) -> int:
        if key not in self.member:
            used = set(self.member.values()) | avoid
            mid = 1
            while mid in used:
                mid += 1
            self.member[key] = mid
        return self.member[key]

    def retain(self, dsids: Iterable[str], members: Iterable[int]) -> None:
        """Forget what is no longer wanted (its ids may be given again)."""
        keep_s, keep_m = set(dsids), set(members)
        self.service = {d: i for d, i in self.service.items() if d in keep_s}
        self.member = {k: i for k, i in self.member.items() if i in keep_m}


def desired(
    services: Sequence[Steered],
    local: Mapping[str, LocalSid],
    nat_out: Mapping[str, str],
    static: Static,
    ids: Ids,
    *,
    have: Tables,
    budget: int,
) -> Tables:
    """The tables for these services and local instances; ids come from (and go to) `ids`,
    never one that `have` holds for something else."""
    want = Tables(
        digest=True,
        local_sids=dict(local),
        nat_out=dict(nat_out),
        routes=dict(static.routes),
        nexthops=dict(static.nexthops),
    )
    avoid = set(have.members)
    for s in services:
        sid = ids.service_id(s.dsid)
        want.services[s.dsid] = ServiceRow(sid, s.three_tuple, s.default_route)
        copies = replicate(s.weights, budget)
        mids: list[int] = []
        for target, count in copies.items():
            for k in range(count):
                mid = ids.member_id((sid, target, k), avoid)
                want.members[mid] = target
                mids.append(mid)
        if mids:
            want.groups[sid] = tuple(sorted(mids))
            want.new_flow[sid] = sid
    return want


def keep_unknown(want: Tables, have: Tables) -> Tables:
    """`want` plus everything `have` holds that `want` does not mention: while cand has just
    started and the engine has not yet said what it wants, nothing an earlier run left is
    deleted, so the flows through it keep going."""
    out = replace(
        want,
        services=dict(want.services),
        members=dict(want.members),
        groups=dict(want.groups),
        new_flow=dict(want.new_flow),
        local_sids=dict(want.local_sids),
        nat_out=dict(want.nat_out),
    )
    wanted_ids = {r.service_id for r in want.services.values()}
    for dsid, row in have.services.items():
        if dsid in out.services or row.service_id in wanted_ids:
            continue
        out.services[dsid] = row
        gid = have.new_flow.get(row.service_id)
        if gid is not None and gid in have.groups and gid not in out.groups:
            out.new_flow[row.service_id] = gid
            out.groups[gid] = have.groups[gid]
            for mid in have.groups[gid]:
                if mid in have.members and mid not in out.members:
                    out.members[mid] = have.members[mid]
    for sid, ls in have.local_sids.items():
        out.local_sids.setdefault(sid, ls)
    for dbid, dsid in have.nat_out.items():
        out.nat_out.setdefault(dbid, dsid)
    return out


def plan(have: Tables, want: Tables, *, max_group_size: int) -> list[list[Any]]:
    """The Writes that make `have` into `want`, in phases (empty phases left out)."""
    p1: list[Any] = []
    p2: list[Any] = []
    p3: list[Any] = []
    p4: list[Any] = []
    p5: list[Any] = []
    if want.digest and not have.digest:
        p1.append(+e.new_flow_digest())
    for mid, target in sorted(want.members.items()):
        if mid not in have.members:
            p1.append(+e.member(mid, target))
        elif have.members[mid] != target:
            p1.append(~e.member(mid, target))
    for nid, nb in sorted(want.nexthops.items()):
        upd = e.nexthop(nid, nb.port, nb.dst_mac, nb.src_mac)
        if nid not in have.nexthops:
            p1.append(+upd)
        elif have.nexthops[nid] != nb:
            p1.append(~upd)
    for gid, mids in sorted(want.groups.items()):
        grp = e.group(gid, mids, max_size=max_group_size)
        if gid not in have.groups:
            p2.append(+grp)
        elif tuple(sorted(have.groups[gid])) != mids:
            p2.append(~grp)
    # phase 3: deletes first (a D-SID's new service id must not meet its old entry)
    for sid in sorted(set(have.new_flow) - set(want.new_flow)):
        p3.append(-fy.P4TableEntry(n.NEW_FLOW.name, match=fy.P4TableMatch(service_id=sid)))
    for dsid in sorted(set(have.services) - set(want.services)):
        p3.append(-fy.P4TableEntry(n.SERVICE.name, match=fy.P4TableMatch(dsid=dsid)))
    for local in sorted(set(have.local_sids) - set(want.local_sids)):
        p3.append(-fy.P4TableEntry(n.LOCAL_SID.name, match=fy.P4TableMatch(sid=local)))
    for dbid in sorted(set(have.nat_out) - set(want.nat_out)):
        p3.append(-fy.P4TableEntry(n.NAT_OUT.name, match=fy.P4TableMatch(dbid=dbid)))
    for prefix in sorted(set(have.routes) - set(want.routes)):
        p3.append(-fy.P4TableEntry(n.ROUTER.name, match=fy.P4TableMatch(dst=prefix)))
    _upserts(p3, have.routes, want.routes, lambda k, v: e.route(k, v))
    _upserts(p3, have.local_sids, want.local_sids, lambda k, v: e.local_sid(k, v.dbid, nat=v.nat))
    _upserts(p3, have.nat_out, want.nat_out, e.nat_out)
    _upserts(
        p3,
        have.services,
        want.services,
        lambda k, v: e.service(
            k, v.service_id, three_tuple=v.three_tuple, default_route=v.default_route
        ),
    )
    _upserts(p3, have.new_flow, want.new_flow, e.new_flow)
    for nid in sorted(set(have.nexthops) - set(want.nexthops)):
        p4.append(-fy.P4TableEntry(n.NEXTHOP.name, match=fy.P4TableMatch(id=nid)))
    for gid in sorted(set(have.groups) - set(want.groups)):
        p4.append(-fy.P4ActionProfileGroup(n.INSTANCES, group_id=gid))
    for mid in sorted(set(have.members) - set(want.members)):
        p5.append(-fy.P4ActionProfileMember(n.INSTANCES, member_id=mid))
    return [p for p in (p1, p2, p3, p4, p5) if p]


def _upserts(out: list[Any], have: Mapping[Any, Any], want: Mapping[Any, Any], build: Any) -> None:
    for key in sorted(want):
        if key not in have:
            out.append(+build(key, want[key]))
        elif have[key] != want[key]:
            out.append(~build(key, want[key]))


def after(have: Tables, want: Tables) -> Tables:
    """What the switch holds once `plan(have, want)` was written without an error."""
    return replace(
        want,
        services=dict(want.services),
        members=dict(want.members),
        groups=dict(want.groups),
        new_flow=dict(want.new_flow),
        local_sids=dict(want.local_sids),
        nat_out=dict(want.nat_out),
        routes=dict(want.routes),
        nexthops=dict(want.nexthops),
    )


# --- reading back ----------------------------------------------------------------------------


def addr(value: Any) -> str:
    """An address as P4Runtime decoding gives it (int, bytes or text) as compressed text."""
    if isinstance(value, bytes):
        value = int.from_bytes(value, "big")
    return str(ipaddress.IPv6Address(value))


def mac(value: Any) -> str:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, bytes):
        value = int.from_bytes(value, "big")
    raw = int(value).to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def target_of(action: Any) -> e.Target:
    """The to_sid / to_local action of a member or binding entry as a Target."""
    name = _short(action.name)
    args = action.args
    if name == _short(n.TO_SID.name):
        return e.ToSid(addr(args["sid"]))
    if name == _short(n.TO_LOCAL.name):
        return e.ToLocal(addr(args["dbid"]), nat=int(args["nat"]) == 1)
    raise ValueError(f"unexpected action {action.name!r}")


def flow_key_of(match: Mapping[str, Any]) -> e.FlowKey:
    return e.FlowKey(
        addr(match["src"]),
        addr(match["dst"]),
        int(match["proto"]),
        int(match.get("sport", 0)),
        int(match.get("dport", 0)),
    )


def from_device(entities: Iterable[Any]) -> tuple[Tables, dict[e.FlowKey, e.Target], int]:
    """Read-back entities -> (tables, bindings, how many were not understood). An entity this
    module cannot read is counted and left out (so reconciliation writes it anew)."""
    have = Tables()
    bindings: dict[e.FlowKey, e.Target] = {}
    bad = 0
    for ent in entities:
        try:
            _take(have, bindings, ent)
        except (KeyError, ValueError, TypeError, AttributeError):
            bad += 1
    return have, bindings, bad


def _take(have: Tables, bindings: dict[e.FlowKey, e.Target], ent: Any) -> None:
    if isinstance(ent, fy.P4DigestEntry):
        have.digest = True
        return
    if isinstance(ent, fy.P4ActionProfileMember):
        have.members[int(ent.member_id)] = target_of(ent.action)
        return
    if isinstance(ent, fy.P4ActionProfileGroup):
        have.groups[int(ent.group_id)] = tuple(sorted(int(m.member_id) for m in ent.members or ()))
        return
    if not isinstance(ent, fy.P4TableEntry):
        raise TypeError(type(ent).__name__)
    if ent.is_default_action:
        return
    table = _short(ent.table_id)
    m = ent.match or fy.P4TableMatch()
    a = ent.action
    if table == _short(n.BINDING.name):
        bindings[flow_key_of(m)] = target_of(a)
    elif table == _short(n.SERVICE.name):
        args = a.args  # type: ignore[union-attr]
        have.services[addr(m["dsid"])] = ServiceRow(
            int(args["service_id"]), int(args["three_tuple"]) == 1, int(args["default_route"]) == 1
        )
    elif table == _short(n.NEW_FLOW.name):
        if not isinstance(a, fy.P4IndirectAction) or a.group_id is None:
            raise ValueError("new_flow entry without a group")
        have.new_flow[int(m["service_id"])] = int(a.group_id)
    elif table == _short(n.LOCAL_SID.name):
        nat = _short(a.name) == _short(n.END_DX6_NAT.name)  # type: ignore[union-attr]
        have.local_sids[addr(m["sid"])] = LocalSid(addr(a.args["dbid"]), nat)  # type: ignore[union-attr]
    elif table == _short(n.NAT_OUT.name):
        have.nat_out[addr(m["dbid"])] = addr(a.args["dsid"])  # type: ignore[union-attr]
    elif table == _short(n.ROUTER.name):
        dst = m.get("dst")
        if dst is None:
            prefix = "::/0"
        elif isinstance(dst, tuple):
            prefix = str(ipaddress.IPv6Network((int(dst[0]), int(dst[1]))))
        else:
            prefix = str(ipaddress.IPv6Network(dst))
        have.routes[prefix] = int(a.args["nexthop_id"])  # type: ignore[union-attr]
    elif table == _short(n.NEXTHOP.name):
        args = a.args  # type: ignore[union-attr]
        have.nexthops[int(m["id"])] = Neighbour(
            int(args["port"]), mac(args["dst_mac"]), mac(args["src_mac"])
        )
    else:
        raise ValueError(f"unexpected table {ent.table_id!r}")


READ_TABLES = (n.SERVICE, n.NEW_FLOW, n.LOCAL_SID, n.NAT_OUT, n.ROUTER, n.NEXTHOP, n.BINDING)
