"""Linux data plane: in-kernel steering at the ingress, SRv6 delivery at the egress.

Ingress (the Dyncast binding table, done by the kernel): a new flow to a steered D-SID gets an
instance slot from nftables (weighted with `numgen random`, or the client's earlier choice for
3-tuple affinity), kept in its conntrack entry (ct mark); every packet of the flow carries it
as fwmark. One rule, `fwmark base/mask lookup base`, sends every tunnel mark to the tunnel
table, whose one route per steered D-SID hands the packet to one eBPF program; it looks the
mark up in the tunnel map (mark -> the outer header towards the instance's SRv6 SID) and
pushes that header (H.Encaps, see `srv6_bpf`). So 120,000 tunnels are 120,000 map entries,
10,000 routes and one rule: no table, rule or program per tunnel, and no per-packet walk
through thousands of rules. A weight change rewrites one nftables chain atomically and never
moves a flow that has a mark. No packet goes up to the daemon.

Egress: each local instance's SID is a local address; the kernel's SRH receive path
(`seg6_enabled`) decapsulates packets for it, nftables has marked them with the instance's
slot on the way in, and `ip rule fwmark N lookup N` (one per local instance, at
`rule_priority`, before the tunnel rule) sends them to table N, which forwards them to the
D-BID (End.DX6). In `nat` mode the egress also translates D-SID -> D-BID and back
(ServiceNAT), so an unmodified server answers from its own address while the client only
ever sees the D-SID.

Everything cand installs is its own: routes and rules carry `proto` (200), tables and marks are
`mark_base | n` (the tunnel table is `mark_base` itself), nftables state lives in one table,
and the tunnel program's name is unique to its map. cand reads all of it back (the map's
entries too), changes only the difference, and at start adopts what an earlier run left,
found through the kernel itself (its routes name the program, the program holds the map), so
established flows keep flowing across a restart or a kill -9; what nobody wants any more is
removed once `adopt_hold` has passed.

Upgrade from the layout before the tunnel map (a table, a rule and a program per tunnel): it is
converted, not waited out. Its tunnel slots are adopted with their numbers, their entries put
into the map, and only then are their tables and rules removed; a flow's mark leads to the same
instance before and after, through the per-slot rule first and the tunnel rule afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cand.adapters import linux_kernel as k
from cand.adapters import linux_nft as nft
from cand.adapters import linux_nft_diff as nftdiff
from cand.adapters import srv6_bpf
from cand.adapters.linux_slots import (
    MAP_PROG_PREFIX,
    Delivery,
    DeliveryRoute,
    DsidRoute,
    Identity,
    Route,
    SlotTable,
    Tunnel,
    TunnelRoute,
    map_prog_of,
    sid_of_prog,
)
from cand.adapters.linux_want import Row, WantedSlots
from cand.config import Config
from cand.engine.effects import (
    Effect,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RemoveService,
)
from cand.engine.service_table import InstanceMode, ServiceEntry
from cand.model import Binding, FlowKey, FlowKeyKind, RouterId, ServiceId
from cand.plugins import parse_options
from cand.ports import Emit

log = logging.getLogger("cand.linux")

SRH_OVERHEAD = 40 + 8 + 16  # outer IPv6 header + SRH with one segment
RESERVED_PROTOS = (2, 3, 4, 186, 187, 188, 189)


@dataclass(frozen=True)
class LinuxOptions:
    """`[dataplane.options]` for kind = "linux"."""

    proto: int = 200
    reconcile_interval: float = 30.0
    mark_base: int = 0xCA000000
    mark_bits: int = 24
    tunnel_map_entries: int = 1 << 18
    rule_priority: int = 1000
    nft_table: str = "cand"
    encap_source: str | None = None
    tunnel_mtu: int = 1500
    mss_clamp: bool = True
    bpffs: str = "/run/cand/bpf"
    adopt_hold: float = 60.0
    linger: float = 300.0
    # a reconciliation writes only the nftables chains and elements that differ from what it
    # read back (false: it rewrites the whole table, as before: 44 s of nft at 10,000 D-SIDs)
    nft_diff: bool = True


class LinuxDataplane:
    def __init__(
        self,
        options: LinuxOptions,
        router: RouterId,
        modes: Mapping[ServiceId, InstanceMode] | None = None,
        clock: Callable[[], float] = time.monotonic,
        probe: nft.ProbeIn | None = None,
    ) -> None:
        if not 1 <= options.proto <= 255 or options.proto in RESERVED_PROTOS:
            raise ValueError(f"dataplane.options.proto: {options.proto} is reserved or invalid")
        if not 1 <= options.rule_priority < 32765:
            raise ValueError(
                "dataplane.options.rule_priority: must be 1..32764 (the tunnel rule takes the "
                "next priority)"
            )
        if not 0 < options.reconcile_interval <= 86400:
            raise ValueError("dataplane.options.reconcile_interval: between 0 and 86400 seconds")
        if not 0 <= options.adopt_hold <= 86400:
            raise ValueError("dataplane.options.adopt_hold: between 0 and 86400 seconds")
        if not 0 <= options.linger <= 86400:
            raise ValueError("dataplane.options.linger: between 0 and 86400 seconds")
        if options.tunnel_mtu < 1280 + SRH_OVERHEAD:
            raise ValueError(f"dataplane.options.tunnel_mtu: at least {1280 + SRH_OVERHEAD}")
        source = options.encap_source or str(router)
        try:
            self.source = ipaddress.IPv6Address(source)
        except ValueError:
            raise ValueError(
                f"dataplane.options.encap_source: {source!r} is not an IPv6 address "
                "(set it when router.id is IPv4)"
            ) from None
        self.opts = options
        self.router = router
        self.modes = dict(modes or {})
        self.clock = clock
        self.marks = nft.Marks(options.mark_base, options.mark_bits)
        if not 1 <= options.tunnel_map_entries <= 1 << 28:
            raise ValueError("dataplane.options.tunnel_map_entries: must be 1..268435456")
        self.map_entries = min(options.tunnel_map_entries, self.marks.size)  # no more slots
        self.mss = options.tunnel_mtu - SRH_OVERHEAD - 60 if options.mss_clamp else None
        self.probe = probe  # the responder's probes, when this router runs one
        # desired state, from the engine
        self.local: dict[ipaddress.IPv6Address, Delivery] = {}
        self.entries: dict[ServiceId, ServiceEntry] = {}
        # what the kernel holds (read back at start and by every reconciliation)
        self.slots = SlotTable(self.marks)
        self.wanted = WantedSlots(self.slots)  # per D-SID: its tunnel slots and chain rows
        self.walked = False  # `wanted` holds every entry (a whole walk has run since start)
        self.routes: dict[int, Route] = {}  # per-slot tables (delivery; the earlier layout)
        self.rules: set[int] = set()  # per-slot rules
        self.tunnel_rule = False  # fwmark base/mask lookup base
        self.dsid_routes: dict[ServiceId, DsidRoute] = {}  # the tunnel table (id `base`)
        # the tunnel map: slot mark -> the tunnel its entry is (None: not an entry cand writes)
        self.tunnels: dict[int, Tunnel | None] = {}
        self.stale: set[int] = set()  # entries of a tunnel in other bytes (encap_source, layout)
        self.reread = False  # a batch failed: what the kernel holds is read before the next one
        self.tunnel_dev: dict[int, str] = {}  # where each tunnel's SID is routed (not read back)
        self.tmap: srv6_bpf.TunnelMap | None = None
        self.local_sids: set[ipaddress.IPv6Address] = set()
        self.chains: set[ServiceId] = set()
        self.affinity_maps: set[str] = set()
        self.adopted: set[Identity] = set()
        self.adopted_nat: dict[int, nft.NatRule] = {}  # slot -> the translation it had
        self.lingering: dict[int, float] = {}  # tunnel slot -> when its bound flows lose it
        self.started = clock()
        self.read_once = False
        self.lock = asyncio.Lock()
        # cand's nftables table as the last read found it, for a reconciliation to write only
        # what differs (None: not read, or not understood; used once, by the next full write)
        self.nft_have: nftdiff.Table | None = None
        self.counters = {
            "installed": 0,
            "removed": 0,
            "errors": 0,
            "transactions": 0,
            "adopted": 0,
            "unroutable": 0,
            "skipped_ipv4": 0,
            "walks": 0,
            "partial_syncs": 0,
            "chains_written": 0,  # nftables chains created, rewritten or deleted
            "elements_written": 0,  # D-SID map and set, SID map: elements added or deleted
            "nft_diff_fallbacks": 0,  # reconciliations that rewrote the whole table
            "nft_unparsed": 0,  # read-backs that could not be compared (then a full write)
        }

    @classmethod
    def from_config(cls, config: Config) -> LinuxDataplane:
        raw = dict(config.dataplane.options) if config.dataplane is not None else {}
        opts = parse_options(LinuxOptions, raw, "dataplane.options", "linux")
        modes = {s: spec.mode for s, spec in config.service_specs().items()}
        loc = config.router.locator
        probe = (
            nft.ProbeIn(loc, config.network_cost.probe.port) if config.responds and loc else None
        )
        return cls(opts, RouterId.parse(config.router.id), modes, probe=probe)

    # --- the Dataplane port -----------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        m = self.marks
        log.info("event=linux_marks base=%#x mask=%#x slots=%d", m.base, m.mask, m.size)
        await self.reconcile()
        while True:
            await asyncio.sleep(self.opts.reconcile_interval)
            await self.reconcile()

    async def apply(self, effects: Sequence[Effect]) -> None:
        changed: set[ServiceId] = set()
        local = False
        for e in effects:
            if isinstance(e, ProgramLocalInstance):
                mode = self.modes.get(e.key.service, InstanceMode.VIP)
                self.local[e.sid] = Delivery(e.key, e.sid, mode)
                local = True
            elif isinstance(e, RemoveLocalInstance):
                self.local.pop(e.sid, None)
                local = True
            elif isinstance(e, ProgramService):
                if e.entry.service.version != 6:
                    self.counters["skipped_ipv4"] += 1
                    log.warning("event=linux_ipv4_service_skipped service=%s", e.entry.service)
                    continue
                self.entries[e.entry.service] = e.entry
                changed.add(e.entry.service)
            elif isinstance(e, RemoveService):
                self.entries.pop(e.service, None)
                changed.add(e.service)
        async with self.lock:
            read = not self.read_once or self.reread
            if read:
                await self._read()
            if read or local or not self.walked or (self.adopted and self._holding()):
                await self._sync(changed, full=False)  # every D-SID: see `_sync_some`
            else:
                await self._sync_some(changed)

    async def reconcile(self) -> None:
        """Read what the kernel holds, then put back whatever differs from the wanted state."""
        async with self.lock:
            try:
                await self._read()
            except k.KernelError as e:
                self.counters["errors"] += 1
                log.error("event=linux_read_failed error=%r", str(e))
                return
            try:
                await self._sync(set(self.entries), full=True)
            except (k.KernelError, OSError, RuntimeError) as e:  # the next round retries
                self.counters["errors"] += 1
                log.error("event=linux_reconcile_failed error=%r", str(e))

    def status(self) -> dict[str, Any]:
        return {
            "dataplane": "linux",
            "sids": len(self.local),
            "services": len(self.entries),
            "slots": len(self.slots.by_mark),
            "tunnels": len(self.tunnels),
            "tunnel_routes": len(self.dsid_routes),
            "chains": len(self.chains),
            "lingering": len(self.lingering),
            **self.counters,
        }

    # --- reading the kernel -----------------------------------------------------------------

    async def _read(self) -> None:
        base, prio = self.marks.base, self.opts.rule_priority
        rules = await k.ip_json("-6", "rule", "show")
        mine = [r for r in rules if r.get("protocol") == str(self.opts.proto) and "fwmark" in r]
        self.rules = {
            int(r["fwmark"], 16)
            for r in mine
            if r.get("priority") == prio and int(r.get("fwmask", "0xffffffff"), 16) == 0xFFFFFFFF
        }
        self.tunnel_rule = any(
            r.get("priority") == prio + 1
            and int(r["fwmark"], 16) == base
            and int(r.get("fwmask", "0xffffffff"), 16) == self.marks.mask
            and str(r.get("table")) == str(base)
            for r in mine
        )
        routes: dict[int, Route] = {}
        dsids: dict[ServiceId, DsidRoute] = {}
        local: set[ipaddress.IPv6Address] = set()
        rows = await k.ip_json("-6", "route", "show", "table", "all", "proto", str(self.opts.proto))
        for r in rows:
            table, dst = str(r.get("table", "main")), r.get("dst", "")
            if table == "local" and r.get("type") == "local":
                local.add(ipaddress.IPv6Address(dst.split("/")[0]))
                continue
            if not table.isdigit():
                continue
            xmit = r.get("xmit", "") if r.get("encap") == "bpf" else ""
            if int(table) == base:
                if (prog := map_prog_of(xmit)) is not None and "dev" in r:
                    dsids[ServiceId.parse(dst.split("/")[0])] = DsidRoute(prog, r["dev"])
                continue
            if not self.marks.owns(int(table)):
                continue
            if xmit and (sid := sid_of_prog(xmit)) is not None:  # the layout before the map
                routes[int(table)] = TunnelRoute(ServiceId.parse(dst.split("/")[0]), sid, r["dev"])
            elif dst == "default" and "gateway" in r:
                routes[int(table)] = DeliveryRoute(ipaddress.IPv6Address(r["gateway"]), r["dev"])
        self.routes, self.dsid_routes, self.local_sids = routes, dsids, local
        self._read_map()
        self.reread = False
        sids, chains, maps, nat = await self._read_nft()
        self.chains, self.affinity_maps = chains, maps
        if not self.read_once:
            self._adopt(sids, nat)
        self.read_once = True

    def _delete_tunnels(self, marks: Sequence[int]) -> None:
        """Take these tunnels out of the map. The delete stops at its first failure: what is
        left is read back (and keeps its slots), or read at the next walk."""
        if not marks or self.tmap is None:
            return
        try:
            srv6_bpf.map_delete(self.tmap.map_fd, marks)
            self.counters["removed"] += len(marks)
            for mark in marks:
                self.tunnels.pop(mark, None)
        except srv6_bpf.BpfError as e:
            self.counters["errors"] += 1
            log.error("event=linux_map_failed error=%r (reconciliation retries)", str(e))
            try:
                self._read_map()
            except k.KernelError:
                self.reread = True

    def _read_map(self) -> None:
        """The tunnel map's entries; at the first read, the map (and program) an earlier run
        left, found through the program its D-SID routes name."""
        if self.tmap is None:
            for name in sorted({r.prog for r in self.dsid_routes.values()}):
                try:
                    self.tmap = srv6_bpf.TunnelMap.find(name)
                except srv6_bpf.BpfError as e:
                    raise k.KernelError(f"finding the tunnel program {name}: {e}") from None
                if self.tmap is not None:
                    log.info("event=linux_tunnel_map_adopted prog=%s", name)
                    break
        try:
            entries = srv6_bpf.map_dump(self.tmap.map_fd) if self.tmap else {}
        except srv6_bpf.BpfError as e:
            raise k.KernelError(f"reading the tunnel map: {e}") from None
        self.tunnels = {mark: self._tunnel_of(value) for mark, value in entries.items()}
        self.stale = {
            m for m, t in self.tunnels.items() if t is not None and self._value(t) != entries[m]
        }

    def _tunnel_of(self, value: bytes) -> Tunnel | None:
        """The tunnel a map value is: its D-SID and first segment, even if this run would
        write other bytes for it (another `encap_source`: `stale`, rewritten in place), so
        that its mark stays with the instance its flows' conntrack marks lead to."""
        parsed = srv6_bpf.parse_tunnel_value(value)
        if parsed is None:
            return None
        dsid, header = parsed
        try:
            return Tunnel(ServiceId.parse(str(dsid)), srv6_bpf.first_segment(header))
        except ValueError:
            return None

    async def _read_nft(
        self,
    ) -> tuple[dict[int, ipaddress.IPv6Address], set[ServiceId], set[str], list[nft.NatRule]]:
        """cand's table, read in its text form and kept (`nft_have`) for the next full write
        to compare against; if the text cannot be understood, read as JSON (what adoption
        needs) and the next reconciliation rewrites the whole table."""
        self.nft_have = None
        try:
            text = await k.run("nft", "list", "table", "ip6", self.opts.nft_table)
        except k.KernelError:
            self.nft_have = nftdiff.Table()  # no table yet: everything is to be written
            return {}, set(), set(), []
        try:
            have = nftdiff.parse_listing(text, self.opts.nft_table)
        except nftdiff.Untrusted as e:
            self.counters["nft_unparsed"] += 1
            log.warning("event=linux_nft_unparsed error=%r (the whole table is rewritten)", str(e))
            return await self._read_nft_json()
        self.nft_have = have
        sids = {
            int(mark, 16): ipaddress.IPv6Address(sid)
            for sid, mark in have.elems.get("sids", {}).items()
        }
        chains = {s for name in have.chains if (s := nft.service_of_chain(name)) is not None}
        maps = {name for name in have.sets if name.startswith("aff_")}
        servicenat = have.chains.get("servicenat")
        nat = [
            r
            for line in (servicenat.rules if servicenat else [])
            if (r := nft.parse_nat_text(line)) is not None
        ]
        return sids, chains, maps, nat

    async def _read_nft_json(
        self,
    ) -> tuple[dict[int, ipaddress.IPv6Address], set[ServiceId], set[str], list[nft.NatRule]]:
        try:
            items = await k.nft_json("list", "table", "ip6", self.opts.nft_table)
        except k.KernelError:
            return {}, set(), set(), []  # no table yet
        sids: dict[int, ipaddress.IPv6Address] = {}
        chains: set[ServiceId] = set()
        maps: set[str] = set()
        nat: list[nft.NatRule] = []
        for item in items:
            if "rule" in item and item["rule"].get("chain") == "servicenat":
                if (r := nft.parse_nat_rule(item["rule"])) is not None:
                    nat.append(r)
            elif "chain" in item:
                if (service := nft.service_of_chain(item["chain"]["name"])) is not None:
                    chains.add(service)
            elif "map" in item:
                name = item["map"]["name"]
                if name == "sids":
                    for sid, mark in item["map"].get("elem", []):
                        sids[int(mark)] = ipaddress.IPv6Address(sid)
                elif name.startswith("aff_"):
                    maps.add(name)
        return sids, chains, maps, nat

    def _adopt(self, sids: dict[int, ipaddress.IPv6Address], nat: list[nft.NatRule]) -> None:
        """The first read after start: every slot an earlier run left keeps its number, the
        tunnel map's entries as well as the earlier layout's per-tunnel tables, and a delivery
        slot its ServiceNAT translation (kept while `adopt_hold` lasts)."""
        found: list[tuple[int, Identity]] = []
        for mark, t in self.tunnels.items():
            if t is not None:
                found.append((mark, ("tunnel", t.service, t.sid)))
            else:  # not one cand can read: its number is given to no one until it is removed
                self.slots.adopt(("unreadable", mark), mark)
        for mark, route in self.routes.items():
            if isinstance(route, TunnelRoute):
                found.append((mark, ("tunnel", route.service, route.sid)))
            elif mark in sids:
                found.append((mark, ("delivery", sids[mark])))
        for mark, ident in found:
            if self.slots.adopt(ident, mark):
                self.adopted.add(ident)
        delivered = {m for m, r in self.routes.items() if isinstance(r, DeliveryRoute)}
        self.adopted_nat = {r.mark: r for r in nat if r.mark in delivered and r.mark in sids}
        if self.adopted:
            self.counters["adopted"] = len(self.adopted)
            log.info(
                "event=linux_adopted slots=%d tunnels=%d services=%d",
                len(self.adopted),
                len(self.tunnels),
                len(self.chains),
            )

    def _holding(self) -> bool:
        return self.clock() - self.started < self.opts.adopt_hold

    # --- making the kernel match ------------------------------------------------------------

    def _deliveries(self) -> dict[int, Tunnel | Delivery]:
        return {self.slots.assign(d): d for d in self.local.values()}

    async def _sync(self, changed: set[ServiceId], full: bool) -> None:
        """Every D-SID's slots, routes and chain against what the kernel holds (read back,
        or as this run wrote it): reconciliation, the first batch, and any batch after a read
        or a change of local instances (the chains' local rows depend on them)."""
        self.counters["walks"] += 1
        holding = self._holding()
        want = self._deliveries()
        delivery = {d.sid: m for m, d in want.items()}
        steered = self.wanted.rebuild(self.entries, delivery)
        self.walked = True
        for service in self.entries:
            want.update(self.wanted.tunnels[service])
        self._linger(want)
        if holding:  # an earlier run's tunnels keep carrying their flows (and are converted)
            for ident in self.adopted:
                mark = self.slots.by_id.get(ident)
                if ident[0] == "tunnel" and mark is not None and mark not in want:
                    want[mark] = Tunnel(ident[1], ident[2])  # type: ignore[arg-type]
        routes, tunnels = await self._routes_for(want, full)
        await self._install(routes, tunnels)
        usable = set(routes) | set(tunnels)
        await self._write_nft(steered, usable, changed, full, holding)
        if not holding:
            self.adopted.clear()
        await self._remove(want, holding)

    async def _sync_some(self, changed: set[ServiceId]) -> None:
        """`_sync` for the D-SIDs one batch changed (and the tunnels lingering): their slots,
        map entries, tunnel-table routes and chains, in the same steps and to the same end as
        a whole walk, at a cost that grows with the batch, not with the table. What the kernel
        lost behind cand's back meanwhile is repaired by the next reconciliation."""
        self.counters["partial_syncs"] += 1
        want = self._deliveries()
        delivery = {d.sid: m for m, d in want.items()}
        dropped, steered = self.wanted.update(self.entries, changed, delivery)
        gone = self._linger_some(dropped)
        lingering = {m: self._lingering_tunnel(m) for m in self.lingering}
        touched = changed | {t.service for t in lingering.values()}
        touched |= {self._lingering_tunnel(m).service for m in gone}  # their routes may go
        for service in touched:  # each with all its tunnels: its D-SID route is chosen of them
            want.update(self.wanted.tunnels.get(service, {}))
        want.update(lingering)
        routes, tunnels = await self._routes_for(want, full=False)
        await self._install(routes, tunnels)
        usable = set(routes) | set(tunnels)
        await self._write_nft_some(steered, usable, changed)
        await self._remove_some(gone, touched, want)

    def _lingering_tunnel(self, mark: int) -> Tunnel:
        """The tunnel a slot held by a tunnel (lingering, or just let go) is."""
        _, service, sid = self.slots.by_mark[mark]
        return Tunnel(service, sid)  # type: ignore[arg-type]

    def _linger_some(self, dropped: set[int]) -> set[int]:
        """`_linger` for the tunnels one batch dropped and those already lingering: returns the
        slots whose time is over (or whose service is gone), to be removed now."""
        now = self.clock()
        gone: set[int] = set()
        for mark in [m for m in self.lingering if self.wanted.wants(m)]:
            del self.lingering[mark]  # wanted again
        for mark in sorted(dropped | set(self.lingering)):
            ident = self.slots.by_mark.get(mark)
            if ident is None or ident[0] != "tunnel":
                self.lingering.pop(mark, None)
                continue
            gone.add(mark)  # unless it lingers (below)
            if mark not in self.tunnels and mark not in self.routes:
                self.lingering.pop(mark, None)
                continue
            entry = self.entries.get(ident[1])  # type: ignore[call-overload]
            if entry is None:  # the service itself is gone: nothing of it stays
                self.lingering.pop(mark, None)
                continue
            hold = min(entry.spec.affinity_timeout, self.opts.linger)
            if self.lingering.setdefault(mark, now + hold) > now:
                gone.discard(mark)
            else:
                del self.lingering[mark]
        return gone

    async def _remove_some(
        self, gone: set[int], touched: set[ServiceId], want: dict[int, Tunnel | Delivery]
    ) -> None:
        """`_remove` for one batch: the tunnels it let go, the tunnel-table routes of its
        D-SIDs that have no tunnel left, and the tunnel rule once no D-SID has one. Delivery
        tables and local SIDs change only with local instances, which take `_remove`."""
        p = self.opts.proto
        have: set[ServiceId] = set()
        for mark in self.tunnels.keys() & (want.keys() - gone):
            ident = self.slots.by_mark.get(mark)
            if ident is not None and ident[1] in touched:
                have.add(ident[1])  # type: ignore[arg-type]
        gone_dsids = sorted(s for s in touched - have if s in self.dsid_routes)
        lines = [f"route del {s}/128 proto {p} table {self.marks.base}" for s in gone_dsids]
        left = set(self.dsid_routes) - set(gone_dsids)
        rule_gone = self.tunnel_rule and not left and not (self.tunnels.keys() & want.keys())
        if rule_gone:
            lines.append(self._tunnel_rule_line("del"))
        if not await self._batch(lines):
            self.reread = True  # what the kernel still holds is read before the next batch
        self._delete_tunnels(sorted(m for m in gone if m in self.tunnels))
        for s in gone_dsids:
            self.dsid_routes.pop(s, None)
        self.tunnel_rule = self.tunnel_rule and not rule_gone
        for mark in gone:
            if mark not in self.routes and mark not in self.tunnels:
                self.slots.release(mark)
                self.tunnel_dev.pop(mark, None)

    def _linger(self, want: dict[int, Tunnel | Delivery]) -> None:
        """A tunnel whose instance left its service's entry (withdrawn, a peer or reflector
        lost, a table briefly empty) keeps its map entry, for no new flow, for the
        service's affinity timeout (at most `linger`): the flows already bound to it keep
        going. A service removed altogether takes its tunnels with it at once. Without this a
        reflector restart broke every established connection of the lab (bench.faults)."""
        now = self.clock()
        for mark in [m for m in self.lingering if m in want]:
            del self.lingering[mark]  # wanted again
        for mark, ident in list(self.slots.by_mark.items()):
            if ident[0] != "tunnel" or mark in want:
                continue
            if mark not in self.tunnels and mark not in self.routes:
                continue
            service, sid = ident[1], ident[2]
            if not isinstance(service, ServiceId) or not isinstance(sid, ipaddress.IPv6Address):
                continue
            entry = self.entries.get(service)
            if entry is None:  # the service itself is gone: nothing of it stays
                self.lingering.pop(mark, None)
                continue
            hold = min(entry.spec.affinity_timeout, self.opts.linger)
            until = self.lingering.setdefault(mark, now + hold)
            if until > now:
                want[mark] = Tunnel(service, sid)
            else:
                del self.lingering[mark]  # its flows had their time: removed below

    def _value(self, t: Tunnel) -> bytes:
        header = srv6_bpf.srh_header(self.source, [t.sid])
        return srv6_bpf.tunnel_value(t.service.address, header)  # type: ignore[arg-type]

    async def _routes_for(
        self, want: dict[int, Tunnel | Delivery], full: bool
    ) -> tuple[dict[int, DeliveryRoute], dict[int, tuple[Tunnel, str]]]:
        """What each wanted slot needs: a delivery slot its table's route, a tunnel slot its
        map entry (and the device towards its SID, for its D-SID's route). Slots whose
        destination has no route are left out (and counted): steering new flows into a black
        hole is worse than not steering."""
        ask: dict[int, str] = {}
        for mark, p in want.items():
            if isinstance(p, Tunnel):
                known = self.tunnels.get(mark) == p and mark in self.tunnel_dev
                if full or not known:
                    ask[mark] = str(p.sid)
            elif full or not isinstance(self.routes.get(mark), DeliveryRoute):
                ask[mark] = str(p.key.binding)
        got = await k.route_get_many(sorted(set(ask.values())))
        routes: dict[int, DeliveryRoute] = {}
        tunnels: dict[int, tuple[Tunnel, str]] = {}
        for mark, p in want.items():
            if mark not in ask:
                if isinstance(p, Tunnel):
                    tunnels[mark] = (p, self.tunnel_dev[mark])
                else:
                    routes[mark] = self.routes[mark]  # type: ignore[assignment]
                continue
            r = got.get(ask[mark])
            if r is None or "dev" not in r or r.get("type", "unicast") not in ("unicast", "local"):
                self.counters["unroutable"] += 1
                log.warning("event=linux_unroutable slot=%#x to=%s", mark, ask[mark])
                continue
            if isinstance(p, Tunnel):
                tunnels[mark] = (p, r["dev"])
            else:
                nh = ipaddress.IPv6Address(r.get("gateway", str(p.key.binding)))
                routes[mark] = DeliveryRoute(nh, r["dev"])
        return routes, tunnels

    def _dsid_routes(
        self, tunnels: dict[int, tuple[Tunnel, str]], prog: str
    ) -> dict[ServiceId, DsidRoute]:
        """One tunnel-table route per D-SID with a usable tunnel. Its device is one of its
        tunnels' (the program re-routes every packet after the push): the one it has if that
        is still one of them, else the lowest slot's, so it does not change for nothing."""
        devs: dict[ServiceId, list[tuple[int, str]]] = {}
        for mark, (_, dev) in tunnels.items():
            ident = self.slots.by_mark.get(mark)
            if ident is not None and isinstance(ident[1], ServiceId):
                devs.setdefault(ident[1], []).append((mark, dev))
        out: dict[ServiceId, DsidRoute] = {}
        for service, rows in devs.items():
            have = self.dsid_routes.get(service)
            if have is not None and have.dev in {d for _, d in rows}:
                out[service] = DsidRoute(prog, have.dev)
            else:
                out[service] = DsidRoute(prog, min(rows)[1])
        return out

    def _tunnel_map(self) -> srv6_bpf.TunnelMap:
        if self.tmap is None:
            name = f"{MAP_PROG_PREFIX}{uuid.uuid4().hex[:9]}"
            self.tmap = srv6_bpf.TunnelMap.create(name, self.map_entries)
            log.info("event=linux_tunnel_map_created prog=%s", name)
        return self.tmap

    async def _install(
        self, routes: dict[int, DeliveryRoute], tunnels: dict[int, tuple[Tunnel, str]]
    ) -> None:
        p, prio = self.opts.proto, self.opts.rule_priority
        lines: list[str] = []
        pins: list[Path] = []
        dsids: dict[ServiceId, DsidRoute] = {}
        try:
            if tunnels:
                try:
                    tunnels, dsids = self._put_tunnels(tunnels, lines, pins)
                except (srv6_bpf.BpfError, OSError) as e:  # bpffs, map or program: next round
                    self.counters["errors"] += 1
                    log.error("event=linux_map_failed error=%r (reconciliation retries)", str(e))
                    tunnels = {}
            for mark, route in sorted(routes.items()):
                if self.routes.get(mark) == route:
                    continue
                lines.append(
                    f"route replace default proto {p} table {mark} via {route.nh} dev {route.dev}"
                )
            for mark in sorted(set(routes) - self.rules):
                lines.append(f"rule add pref {prio} fwmark {mark:#x} lookup {mark} proto {p}")
            delivered = {
                sid for sid in self.local if self.slots.by_id.get(("delivery", sid)) in routes
            }
            if delivered:
                k.seg6_enable_all()
            for sid in sorted(delivered - self.local_sids):
                lines.append(f"route replace local {sid}/128 dev lo table local proto {p}")
            ok = await self._batch(lines)
        finally:
            for pin in pins:
                with contextlib.suppress(OSError):
                    pin.unlink()
                with contextlib.suppress(OSError):
                    pin.parent.rmdir()
        if ok:
            self.dsid_routes.update(dsids)
            self.tunnel_rule = self.tunnel_rule or bool(tunnels)
        else:  # `-force` went on past the failed line: what did go in is read back first
            self.reread = True
        self.routes.update(routes)
        self.rules |= set(routes)
        self.local_sids |= delivered

    def _put_tunnels(
        self, tunnels: dict[int, tuple[Tunnel, str]], lines: list[str], pins: list[Path]
    ) -> tuple[dict[int, tuple[Tunnel, str]], dict[ServiceId, DsidRoute]]:
        """The map entries that differ, written; the lines for the D-SID routes and the tunnel
        rule that the tunnels in the map need. Returns the tunnels now in the map."""
        p = self.opts.proto
        tmap = self._tunnel_map()
        put = {m: t for m, (t, _) in tunnels.items() if self.tunnels.get(m) != t or m in self.stale}
        try:  # the values are built only for what is written
            srv6_bpf.map_update(tmap.map_fd, {m: self._value(t) for m, t in put.items()})
        except srv6_bpf.BpfError as e:
            self.counters["errors"] += 1
            log.error("event=linux_map_failed error=%r (reconciliation retries)", str(e))
            put = {}
            tunnels = {m: t for m, t in tunnels.items() if self.tunnels.get(m) == t[0]}
        self.tunnels.update(put)
        self.stale -= set(put)
        self.counters["installed"] += len(put)
        self.tunnel_dev.update({m: dev for m, (_, dev) in tunnels.items()})
        dsids = self._dsid_routes(tunnels, tmap.name)
        todo = {s: r for s, r in dsids.items() if self.dsid_routes.get(s) != r}
        if todo:
            pin = self._pin(tmap, pins)
            for service, r in sorted(todo.items()):
                lines.append(
                    f"route replace {service}/128 proto {p} table {self.marks.base} "
                    f"encap bpf xmit pinned {pin} dev {r.dev}"
                )
        if not self.tunnel_rule:
            lines.append(self._tunnel_rule_line("add"))
        return tunnels, dsids

    def _tunnel_rule_line(self, verb: str) -> str:
        base, prio = self.marks.base, self.opts.rule_priority + 1
        return (
            f"rule {verb} pref {prio} fwmark {base:#x}/{self.marks.mask:#x} lookup {base} "
            f"proto {self.opts.proto}"
        )

    def _pin(self, tmap: srv6_bpf.TunnelMap, pins: list[Path]) -> Path:
        """The tunnel program, pinned only until the routes hold it (iproute2 wants a path);
        the pin's name is what the routes show, and how a restarted daemon finds it."""
        base = Path(self.opts.bpffs)
        srv6_bpf.ensure_bpffs(base)
        pin = base / uuid.uuid4().hex / tmap.name
        pin.parent.mkdir()
        pins.append(pin)
        srv6_bpf.pin(tmap.prog_fd, pin)
        return pin

    async def _write_nft(
        self,
        steered: dict[ServiceId, list[tuple[int, int, bool]]],
        usable: set[int],
        changed: set[ServiceId],
        full: bool,
        holding: bool,
    ) -> None:
        table = self.opts.nft_table
        sids, nat = self._sids_and_nat(usable, holding)
        keep = self.chains - set(steered) if holding else set()
        services = {s: nft.chain_name(s) for s in set(steered) | keep}
        script = nft.base(table, self.marks, sids, services, nat, self.mss, self.probe)
        for service, rows in sorted(steered.items()):
            if not full and service not in changed and service in self.chains:
                continue
            script += self._chain(service, rows, usable)
        gone = self.chains - set(services)
        for service in sorted(gone):
            script += nft.remove_service(table, service, had_affinity=False)
        wanted_maps = {
            name
            for s, e in self.entries.items()
            if e.spec.flow_key is FlowKeyKind.THREE_TUPLE
            for name in nft.affinity_maps(s)
        } | {name for s in keep for name in nft.affinity_maps(s)}
        stale_maps = sorted(self.affinity_maps - wanted_maps)
        script += [f"delete map ip6 {table} {name}" for name in stale_maps]
        if await self._nft_full_or_diff(script, full):
            self.chains = set(services)
            self.affinity_maps = (self.affinity_maps - set(stale_maps)) | wanted_maps

    async def _nft_full_or_diff(self, script: list[str], full: bool) -> bool:
        """A whole walk's script; for a reconciliation, when the table was just read back and
        understood, only the part of its effect the kernel lacks. A difference that cannot be
        worked out, or whose transaction fails, falls back to the whole script (counted in
        `nft_diff_fallbacks`): never a table left wrong for the sake of speed."""
        table = self.opts.nft_table
        have, self.nft_have = self.nft_have, None  # read for this write only
        if full and self.opts.nft_diff:
            try:
                if have is None:
                    raise nftdiff.Untrusted("the table was not read back")
                p = nftdiff.plan(have, nftdiff.interpret(have, script, table), table)
            except nftdiff.Untrusted as e:
                log.warning("event=linux_nft_diff_untrusted error=%r (full write)", str(e))
            else:
                if not p.script or await self._nft(p.script):
                    self.counters["chains_written"] += p.chains
                    self.counters["elements_written"] += p.elements
                    return True
                log.warning("event=linux_nft_diff_failed (full write)")
            self.counters["nft_diff_fallbacks"] += 1
        if not await self._nft(script):
            return False
        self.counters["chains_written"] += len(
            {line.split()[4] for line in script if line.startswith("flush chain ")}
        )
        return True

    async def _write_nft_some(
        self, steered: dict[ServiceId, list[Row]], usable: set[int], changed: set[ServiceId]
    ) -> None:
        """`_write_nft` for the D-SIDs of one batch: their chains, and their elements of the
        D-SID map and set added or deleted; the rest of the table stays as it is."""
        self.nft_have = None  # the table changes: a read from before no longer says what it is
        table, holding = self.opts.nft_table, self._holding()
        sids, nat = self._sids_and_nat(usable, holding)
        script = nft.base(table, self.marks, sids, None, nat, self.mss, self.probe)
        script += nft.services_added(table, sorted(s for s in steered if s not in self.chains))
        for service, rows in sorted(steered.items()):
            script += self._chain(service, rows, usable)
        # while holding, a chain nothing steers any more stays (as `_write_nft` keeps it)
        gone = [] if holding else sorted(s for s in changed - set(steered) if s in self.chains)
        script += nft.services_removed(table, gone)
        for service in gone:
            script += nft.remove_service(table, service, had_affinity=False)
        wanted, stale = set(), set()
        for s in changed:
            e = self.entries.get(s)
            names = set(nft.affinity_maps(s))
            if (e is not None and e.spec.flow_key is FlowKeyKind.THREE_TUPLE) or (
                e is None and holding and s in self.chains
            ):
                wanted |= names
            else:
                stale |= names & self.affinity_maps
        script += [f"delete map ip6 {table} {name}" for name in sorted(stale)]
        if await self._nft(script):
            self.counters["chains_written"] += len(steered) + len(gone)
            self.chains = (self.chains - set(gone)) | set(steered)
            self.affinity_maps = (self.affinity_maps - stale) | wanted
        else:
            self.reread = True  # the next batch walks everything, from what is read back

    def _chain(self, service: ServiceId, rows: list[Row], usable: set[int]) -> list[str]:
        spec = self.entries[service].spec
        slots = tuple(nft.SteeredSlot(m, w, live) for m, w, live in rows if m in usable)
        svc = nft.SteeredService(service, spec.flow_key, spec.affinity_timeout, spec.default, slots)
        return nft.service(self.opts.nft_table, svc)

    async def _nft(self, script: list[str]) -> bool:
        try:
            await k.nft(script)
        except k.KernelError as e:
            self.counters["errors"] += 1
            log.error("event=linux_nft_failed error=%r (reconciliation retries)", str(e))
            return False
        self.counters["transactions"] += 1
        return True

    def _sids_and_nat(
        self, usable: set[int], holding: bool
    ) -> tuple[dict[ipaddress.IPv6Address, int], list[nft.NatRule]]:
        """The egress's share of the table: its SIDs' marks and its ServiceNAT rules."""
        sids = {
            sid: mark
            for sid in self.local
            if (mark := self.slots.by_id.get(("delivery", sid))) is not None and mark in usable
        }
        if holding:  # an earlier run's SIDs keep being received until the engine says again
            for ident in self.adopted:
                mark = self.slots.by_id.get(ident)
                if ident[0] == "delivery" and mark is not None and mark in self.routes:
                    sids.setdefault(ident[1], mark)  # type: ignore[arg-type]
        nat = [
            nft.NatRule(sids[d.sid], d.key.service.address, d.key.binding.address)  # type: ignore[arg-type]
            for d in self.local.values()
            if d.mode is InstanceMode.NAT and d.sid in sids
        ]
        if holding:
            # ... and translated: a new flow to an adopted NAT instance before the metric
            # source has named it again would otherwise reach the server with the D-SID as
            # its destination, and conntrack would keep that untranslated entry for the
            # SYN's retries too (bench.faults: kill -9 of the egress's cand failed one new
            # connection in about 220).
            claimed = {d.sid for d in self.local.values()}
            nat += [
                r
                for r in self.adopted_nat.values()
                if r.mark in sids.values() and self.slots.by_mark.get(r.mark) in self.adopted
                and self.slots.by_mark[r.mark][1] not in claimed
            ]  # fmt: skip
        else:
            self.adopted_nat.clear()
        return sids, nat

    def _converted(self, mark: int) -> bool:
        """An earlier layout's tunnel slot is carried by the map now: its entry, its D-SID's
        route and the tunnel rule are all in (only then may its own table and rule go)."""
        t = self.tunnels.get(mark)
        return t is not None and self.tunnel_rule and t.service in self.dsid_routes

    async def _remove(self, want: dict[int, Tunnel | Delivery], holding: bool) -> None:
        """Everything cand holds that nothing wants. A per-slot table and rule stays only for a
        wanted delivery slot (or one adopted, while holding), and for an earlier layout's
        tunnel slot (`TunnelRoute`) that is wanted but has no map entry yet; once its entry is
        in the map, the tunnel rule carries its flows and its table and rule go: the earlier
        layout is converted in place, slot numbers (the marks in conntrack) kept."""
        p, prio = self.opts.proto, self.opts.rule_priority
        held = {self.slots.by_id.get(i) for i in self.adopted} if holding else set()
        legacy = {m for m, r in self.routes.items() if isinstance(r, TunnelRoute)}
        unconverted = {
            m for m in legacy if isinstance(want.get(m), Tunnel) and not self._converted(m)
        }
        delivery = {m for m in set(self.routes) | self.rules if isinstance(want.get(m), Delivery)}
        keep_table = unconverted | ((delivery | held) - legacy)
        lines = []
        for mark in sorted((set(self.routes) | self.rules) - keep_table):
            if mark in self.routes:
                lines.append(f"route flush table {mark} proto {p}")
            if mark in self.rules:
                lines.append(f"rule del pref {prio} fwmark {mark:#x} lookup {mark} proto {p}")
        gone_tunnels = sorted(m for m in self.tunnels if m not in want)
        wanted_dsids = {
            ident[1]
            for m in self.tunnels
            if m in want and (ident := self.slots.by_mark.get(m)) is not None
        }
        gone_dsids = sorted(set(self.dsid_routes) - wanted_dsids)
        base = self.marks.base
        lines += [f"route del {s}/128 proto {p} table {base}" for s in gone_dsids]
        rule_gone = self.tunnel_rule and not wanted_dsids
        if rule_gone:
            lines.append(self._tunnel_rule_line("del"))
        delivered = {d.sid for d in self.local.values()}
        stale_local = set() if holding else self.local_sids - delivered
        lines += [
            f"route del local {sid}/128 dev lo table local proto {p}" for sid in sorted(stale_local)
        ]
        await self._batch(lines)  # routes first: a flow of a removed D-SID is routed plainly
        self._delete_tunnels(gone_tunnels)
        for mark in (set(self.routes) | self.rules) - keep_table:
            self.routes.pop(mark, None)
            self.rules.discard(mark)
        for s in gone_dsids:
            self.dsid_routes.pop(s, None)
        self.tunnel_rule = self.tunnel_rule and not rule_gone
        for mark in list(self.slots.by_mark):
            if mark not in want and mark not in self.routes and mark not in self.tunnels:
                self.slots.release(mark)
                self.tunnel_dev.pop(mark, None)
        self.local_sids -= stale_local

    async def _batch(self, lines: list[str]) -> bool:
        if not lines:
            return True
        try:
            await k.ip_batch(lines)
            self.counters["installed"] += sum(
                x.startswith(("route replace", "rule add")) for x in lines
            )
            self.counters["removed"] += sum(
                x.startswith(("route flush", "route del", "rule del")) for x in lines
            )
        except k.KernelError as e:
            self.counters["errors"] += 1
            log.error("event=linux_batch_failed error=%r (reconciliation retries)", str(e))
            return False
        return True

    # --- the binding table ------------------------------------------------------------------

    async def bindings(self) -> list[Binding]:
        """Flow -> instance, read from the kernel: conntrack for every steered flow, and the
        affinity maps for 3-tuple services (client -> instance until the timeout)."""
        now = time.time()
        where = self._where()
        out: list[Binding] = []
        try:
            rows = await k.conntrack_rows(self.marks.base, self.marks.mask)
        except k.KernelError as e:
            log.warning("event=linux_conntrack_failed error=%r", str(e))
            rows = []
        for row in rows:
            b = parse_conntrack(row, where, now)
            if b is not None:
                out.append(b)
        for name in sorted(self.affinity_maps):
            out += await self._affinity(name, where, now)
        return out

    def _where(self) -> dict[int, tuple[Any, RouterId]]:
        """slot -> (D-BID, egress) from the service table the data plane was given."""
        where: dict[int, tuple[Any, RouterId]] = {}
        for service, entry in self.entries.items():
            for c in entry.choices:
                if c.sid is None:
                    continue
                ident = ("delivery", c.sid) if c.local else ("tunnel", service, c.sid)
                mark = self.slots.by_id.get(ident)
                if mark is not None:
                    where[mark] = (c.binding, c.egress)
        return where

    async def _affinity(
        self, name: str, where: dict[int, tuple[Any, RouterId]], now: float
    ) -> list[Binding]:
        try:
            items = await k.nft_json("list", "map", "ip6", self.opts.nft_table, name)
        except k.KernelError:
            return []
        service = ServiceId.parse(str(ipaddress.IPv6Address(int(name.split("_")[1], 16))))
        proto = {"tcp": 6, "udp": 17}.get(name.rsplit("_", 1)[1], 0)
        out = []
        for item in items:
            for key, mark in item.get("map", {}).get("elem", []):
                elem = key.get("elem", {}) if isinstance(key, dict) else {"val": key}
                if int(mark) not in where:
                    continue
                timeout, left = float(elem.get("timeout", 0)), float(elem.get("expires", 0))
                binding, egress = where[int(mark)]
                out.append(
                    Binding(
                        flow=FlowKey(ipaddress.IPv6Address(elem["val"]), service, proto),
                        binding=binding,
                        egress=egress,
                        created=now - max(0.0, timeout - left),
                        last_seen=now,
                        timeout=left,
                    )
                )
        return out


def parse_conntrack(
    row: str, where: Mapping[int, tuple[Any, RouterId]], now: float
) -> Binding | None:
    """One `conntrack -L` line into a binding (its original direction is the flow key)."""
    words = row.split()
    fields: dict[str, str] = {}
    for w in words:
        if "=" in w:
            key, _, value = w.partition("=")
            fields.setdefault(key, value)
    try:
        proto, left = int(words[1]), float(words[2])
        mark = int(fields["mark"])
        if mark not in where:
            return None
        ports = (int(fields["sport"]), int(fields["dport"])) if "sport" in fields else (None, None)
        flow = FlowKey(
            ipaddress.IPv6Address(fields["src"]),
            ServiceId.parse(fields["dst"]),
            proto,
            ports[0],
            ports[1],
        )
    except (KeyError, ValueError, IndexError):
        return None
    binding, egress = where[mark]
    return Binding(
        flow=flow, binding=binding, egress=egress, created=now, last_seen=now, timeout=left
    )


def tools_missing() -> list[str]:
    return [t for t in ("ip", "nft", "conntrack") if shutil.which(t) is None]
