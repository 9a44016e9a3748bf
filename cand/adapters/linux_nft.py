"""The nftables half of the Linux data plane, as text: pure functions, no I/O.

cand owns one table (`ip6 cand` by default) and nothing outside it. Every transaction rewrites
the table's base chains, its maps of SIDs and D-SIDs and its NAT rules, plus the chains of the
services that changed, in one `nft -f` run, which the kernel applies atomically: a weight
change is never half applied. The per-service affinity maps (3-tuple bindings learned from the
packet path) are created once and never rewritten, so a reprogram keeps every binding.

Per packet, in `prerouting` at the mangle priority:

1. outer packets to one of this egress's SIDs that carry an IPv6 packet (behind an SRH or
   not) get the SID's slot mark (the kernel's SRH receive path then decapsulates them, and the
   mark routes the inner packet to its instance); other packets to a SID, such as a cost
   probe on its way to the responder, are this router's own and get no mark;
2. packets that already carry a cand mark (decapsulated here) are left alone;
3. packets of a flow that was steered (ct mark in cand's range) and has been answered, in the
   client-to-service direction, get that mark back: an established flow follows its first
   choice whatever the weights are now;
4. packets of flows not answered yet (ct state `new`) to a steered D-SID jump to the
   service's chain, which keeps the flow's earlier slot if that instance is still live (a
   retransmitted SYN), else picks one (3-tuple: the client's earlier choice while its affinity
   lasts; else weighted, in the kernel with `numgen random`) and records it in the conntrack
   entry. A SYN that reuses an old unanswered flow's 5-tuple is thus never sent to a dead
   instance by that old entry's mark.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cand.engine.service_table import DefaultAction
from cand.model import FlowKeyKind, ServiceId

AFFINITY_PROTOS = (("tcp", "meta l4proto tcp"), ("udp", "meta l4proto udp"),
                   ("ip", "meta l4proto != { tcp, udp }"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Marks:
    """cand's mark range: `base | n` for n in 1..2^bits - 1, the bits under `mask` being `base`.

    24 bits by default: a slot per remote instance of every service, so 10k D-SIDs x 12
    instances (120,000 slots) fit, where 16 bits stopped at 65,535. `base` itself is no slot:
    it is the id of the one routing table that holds the tunnels' D-SID routes."""

    base: int = 0xCA000000
    bits: int = 24

    def __post_init__(self) -> None:
        if not 8 <= self.bits <= 28:
            raise ValueError("dataplane.options.mark_bits: must be 8..28")
        if self.base & ~self.mask or self.base == 0 or self.base > 0xFFFFFFFF:
            raise ValueError(
                f"dataplane.options.mark_base: must be a non-zero 32-bit value with its low "
                f"{self.bits} bits 0 (mark_bits = {self.bits}); got {self.base:#x}"
            )

    @property
    def mask(self) -> int:
        return 0xFFFFFFFF & ~((1 << self.bits) - 1)

    @property
    def size(self) -> int:
        """How many slots there are."""
        return (1 << self.bits) - 1

    def owns(self, mark: int) -> bool:
        return mark & self.mask == self.base and mark != self.base

    @property
    def match(self) -> str:
        return f"and {self.mask:#x} == {self.base:#x}"


@dataclass(frozen=True, slots=True)
class SteeredSlot:
    """One instance of a service as the kernel sees it: its slot mark and its share."""

    mark: int
    weight: int
    live: bool  # may keep 3-tuple affinity (not down)


@dataclass(frozen=True, slots=True)
class SteeredService:
    service: ServiceId
    flow_key: FlowKeyKind
    timeout: float
    default: DefaultAction
    slots: tuple[SteeredSlot, ...]


@dataclass(frozen=True, slots=True)
class NatRule:
    """ServiceNAT at the egress: flows marked for this instance go to its D-BID."""

    mark: int
    service: ipaddress.IPv6Address
    binding: ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ProbeIn:
    """Cost probes to this router's responder: to a SID of `locator`, UDP `port`."""

    locator: str
    port: int


def hexname(addr: ServiceId | ipaddress.IPv6Address) -> str:
    a = addr.address if isinstance(addr, ServiceId) else addr
    return f"{int(a):032x}"


def chain_name(service: ServiceId) -> str:
    return f"svc_{hexname(service)}"


def service_of_chain(name: str) -> ServiceId | None:
    """`chain_name` backwards (None for a chain that is not a service's): a restarted
    daemon's read-back of the chains an earlier run left."""
    if not name.startswith("svc_"):
        return None
    try:
        return ServiceId.parse(str(ipaddress.IPv6Address(int(name[4:], 16))))
    except ValueError:
        return None


def affinity_maps(service: ServiceId) -> list[str]:
    return [f"aff_{hexname(service)}_{p}" for p, _ in AFFINITY_PROTOS]


def _secs(t: float) -> str:
    return f"{max(1, round(t))}s"


def _hook(kind: str, hook: str, priority: str) -> str:
    return f"type {kind} hook {hook} priority {priority}; policy accept;"


def base(
    table: str,
    marks: Marks,
    sids: dict[ipaddress.IPv6Address, int],
    services: dict[ServiceId, str] | None,
    nat: Sequence[NatRule],
    mss: int | None,
    probe: ProbeIn | None = None,
) -> list[str]:
    """The table's skeleton and shared state, rewritten whole in every transaction.

    `services` maps each steered D-SID to the chain its new flows jump to; None leaves the
    D-SID map and set as they are (a transaction that changes a few D-SIDs says which with
    `services_added` and `services_removed`, instead of rewriting 10,000 elements)."""
    t = f"ip6 {table}"
    m = marks.match
    out = [
        f"add table {t}",
        f"add map {t} sids {{ type ipv6_addr : mark; }}",
        f"add map {t} services {{ type ipv6_addr : verdict; }}",
        f"add set {t} dsids {{ type ipv6_addr; }}",
        f"add chain {t} prerouting {{ {_hook('filter', 'prerouting', 'mangle')} }}",
        f"add chain {t} forward {{ {_hook('filter', 'forward', 'mangle')} }}",
        f"add chain {t} servicenat {{ {_hook('nat', 'prerouting', 'dstnat')} }}",
        f"add chain {t} untracked {{ {_hook('filter', 'prerouting', 'raw')} }}",
        f"flush chain {t} untracked",
        f"flush chain {t} prerouting",
        f"flush chain {t} forward",
        f"flush chain {t} servicenat",
        f"flush map {t} sids",
        # tunnelled packets only (the inner packet is IPv6, after an SRH or none): anything
        # else sent to a SID is for this router, e.g. a cost probe whose SRH moves it on to
        # the responder at the router id; marked, it was routed to the instance instead
        f"add rule {t} prerouting meta l4proto ipv6 meta mark set ip6 daddr map @sids return",
        f"add rule {t} prerouting meta mark {m} return",
        # the original direction only: replies are routed normally, not back to the instance.
        # Only for a flow that has had an answer (ct state is not `new`): a packet of a flow
        # never answered goes to its service's chain, which keeps its mark only while that
        # instance is live (`service`). A SYN that reuses the 5-tuple of an old unanswered
        # one (a client's port wrapping inside conntrack's 120 s for SYN_SENT) matches that
        # old entry; restored here, it went to whatever instance the old SYN had, dead since
        # (bench.failure: new flows failing 0.3-1.5 s after a kill).
        f"add rule {t} prerouting ct direction original ct state != new ct mark {m} "
        "meta mark set ct mark return",
        f"add rule {t} prerouting ct state new ip6 daddr vmap @services",
    ]
    if services is not None:
        out += [f"flush map {t} services", f"flush set {t} dsids"]
    if probe is not None:
        # a cost probe to this router's responder comes addressed to one of its SIDs, with
        # an SRH whose next segment is the router id. Conntrack checks a UDP checksum where
        # the packet is then, against the SID, not the final address the sender summed
        # over, and the checksum fails at delivery (Udp6InCsumErrors): no probe answered.
        # Not tracked, it is checked once, by UDP, after the SRH step. Only to this
        # router's locator (not probes it forwards), and the SRH right after the IPv6
        # header, as the probe source sends it (no hop-by-hop options before it)
        out.append(
            f"add rule {t} untracked ip6 daddr {probe.locator} ip6 nexthdr 43 "
            f"udp dport {probe.port} notrack"
        )
    if mss is not None:
        for d in ("daddr", "saddr"):
            out.append(
                f"add rule {t} forward ip6 {d} @dsids tcp flags syn / syn,rst "
                f"tcp option maxseg size > {mss} tcp option maxseg size set {mss}"
            )
    for r in nat:
        match = f"meta mark {r.mark:#x} ip6 daddr {r.service}"
        out.append(f"add rule {t} servicenat {match} dnat to {r.binding}")
    if sids:
        elems = ", ".join(f"{sid} : {mark:#x}" for sid, mark in sorted(sids.items()))
        out.append(f"add element {t} sids {{ {elems} }}")
    if services:
        out += services_added(table, sorted(services))
    return out


def services_added(table: str, services: Sequence[ServiceId]) -> list[str]:
    """These D-SIDs' chains (empty if new) and their elements of the D-SID map and set."""
    if not services:
        return []
    t = f"ip6 {table}"
    out = [f"add chain {t} {chain_name(s)}" for s in services]
    elems = ", ".join(f"{s} : jump {chain_name(s)}" for s in services)
    out.append(f"add element {t} services {{ {elems} }}")
    out.append(f"add element {t} dsids {{ {', '.join(str(s) for s in services)} }}")
    return out


def services_removed(table: str, services: Sequence[ServiceId]) -> list[str]:
    """These D-SIDs' elements of the D-SID map and set, gone (their chains go after them:
    a chain the map jumps to cannot be deleted). Each chain and element is added first, so
    that one already missing does not fail the whole transaction."""
    if not services:
        return []
    out = services_added(table, services)
    t = f"ip6 {table}"
    out.append(f"delete element {t} services {{ {', '.join(str(s) for s in services)} }}")
    out.append(f"delete element {t} dsids {{ {', '.join(str(s) for s in services)} }}")
    return out


def parse_nat_rule(rule: dict[str, object]) -> NatRule | None:
    """One `servicenat` rule of `nft -j list table`, as `base` wrote it, back into a NatRule
    (None for anything else): how a restarted daemon learns the translations it must keep."""
    mark = service = binding = None
    exprs = rule.get("expr")
    for e in exprs if isinstance(exprs, list) else []:
        if not isinstance(e, dict):
            continue
        if isinstance(m := e.get("match"), dict) and m.get("op") == "==":
            left, right = m.get("left"), m.get("right")
            if left == {"meta": {"key": "mark"}} and isinstance(right, int):
                mark = right
            elif left == {"payload": {"protocol": "ip6", "field": "daddr"}}:
                service = right
        elif isinstance(d := e.get("dnat"), dict):
            binding = d.get("addr")
    try:
        if mark is None or not isinstance(service, str) or not isinstance(binding, str):
            return None
        return NatRule(mark, ipaddress.IPv6Address(service), ipaddress.IPv6Address(binding))
    except ValueError:
        return None


_NAT_TEXT = re.compile(r"meta mark (0x[0-9a-f]+) ip6 daddr (\S+) dnat to (\S+)")


def parse_nat_text(rule: str) -> NatRule | None:
    """`parse_nat_rule` for one rule of `nft list table`'s text form."""
    m = _NAT_TEXT.fullmatch(rule.strip())
    if m is None:
        return None
    try:
        return NatRule(
            int(m.group(1), 16),
            ipaddress.IPv6Address(m.group(2)),
            ipaddress.IPv6Address(m.group(3)),
        )
    except ValueError:
        return None


def service(table: str, svc: SteeredService) -> list[str]:
    """One service's chain, rewritten in place (its affinity maps are only created)."""
    t = f"ip6 {table}"
    chain = chain_name(svc.service)
    out = [f"add chain {t} {chain}", f"flush chain {t} {chain}"]
    three = svc.flow_key is FlowKeyKind.THREE_TUPLE
    live = [s.mark for s in svc.slots if s.live]
    if live:
        # a flow not answered yet (a retransmitted SYN, one-way UDP) that was steered to an
        # instance still live stays there; one whose instance is down or gone is steered anew
        out.append(
            f"add rule {t} {chain} ct mark {{ {', '.join(f'{m:#x}' for m in live)} }} "
            "meta mark set ct mark return"
        )
    if three:
        for (_, guard), name in zip(AFFINITY_PROTOS, affinity_maps(svc.service), strict=True):
            out.append(
                # no default timeout: each element carries its own, so a changed timeout
                # needs no new map (and keeps the bindings already made)
                f"add map {t} {name} {{ type ipv6_addr : mark; flags dynamic, timeout; }}"
            )
            if live:
                # the client's earlier instance, if it is still one of this service's
                out.append(
                    f"add rule {t} {chain} {guard} meta mark set ip6 saddr map @{name} "
                    f"meta mark {{ {', '.join(f'{m:#x}' for m in live)} }} ct mark set meta mark "
                    f"update @{name} {{ ip6 saddr timeout {_secs(svc.timeout)} : meta mark }} "
                    "return"
                )
    pick = weighted(svc.slots)
    if pick is None:
        out.append(
            f"add rule {t} {chain} {'drop' if svc.default is DefaultAction.DROP else 'return'}"
        )
        return out
    out.append(f"add rule {t} {chain} meta mark set {pick} ct mark set meta mark")
    if three:
        for (_, guard), name in zip(AFFINITY_PROTOS, affinity_maps(svc.service), strict=True):
            out.append(
                f"add rule {t} {chain} {guard} "
                f"update @{name} {{ ip6 saddr timeout {_secs(svc.timeout)} : meta mark }}"
            )
    return out


def weighted(slots: Iterable[SteeredSlot]) -> str | None:
    """`numgen random mod TOTAL map { ranges }`: each slot gets a share of the range equal to
    its weight. None when no slot takes new flows."""
    ranges: list[str] = []
    lo = 0
    for s in slots:
        if s.weight <= 0:
            continue
        hi = lo + s.weight - 1
        ranges.append(f"{lo} : {s.mark:#x}" if hi == lo else f"{lo}-{hi} : {s.mark:#x}")
        lo = hi + 1
    if not ranges:
        return None
    return f"numgen random mod {lo} map {{ {', '.join(ranges)} }}"


def remove_service(table: str, service: ServiceId, had_affinity: bool) -> list[str]:
    t = f"ip6 {table}"
    out = [f"flush chain {t} {chain_name(service)}", f"delete chain {t} {chain_name(service)}"]
    if had_affinity:
        out += [f"delete map {t} {name}" for name in affinity_maps(service)]
    return out
