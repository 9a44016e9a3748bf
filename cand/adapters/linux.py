"""Linux data plane: in-kernel steering at the ingress, SRv6 delivery at the egress.

Ingress (the Dyncast binding table, done by the kernel): a new flow to a steered D-SID gets an
instance slot from nftables (weighted with `numgen random`, or the client's earlier choice for
3-tuple affinity), kept in its conntrack entry (ct mark); every packet of the flow carries it
as fwmark, and `ip rule fwmark N lookup N` sends it through table N, whose one route
encapsulates it towards the instance's SRv6 SID (H.Encaps by a generated eBPF program, see
`srv6_bpf`). A weight change rewrites one nftables chain atomically and never moves a flow
that has a mark. No packet goes up to the daemon.

Egress: each local instance's SID is a local address; the kernel's SRH receive path
(`seg6_enabled`) decapsulates packets for it, nftables has marked them with the instance's
slot on the way in, and table N forwards them to the D-BID (End.DX6). In `nat` mode the egress
also translates D-SID -> D-BID and back (ServiceNAT), so an unmodified server answers from its
own address while the client only ever sees the D-SID.

Everything cand installs is its own: routes and rules carry `proto` (200), tables and marks are
`mark_base | n`, nftables state lives in one table. cand reads this back, changes only the
difference, and at start adopts what an earlier run left, so established flows keep flowing
across a restart; what nobody wants any more is removed once `adopt_hold` has passed.
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
from cand.adapters import srv6_bpf
from cand.adapters.linux_slots import (
    Delivery,
    DeliveryRoute,
    Identity,
    Route,
    SlotTable,
    Tunnel,
    TunnelRoute,
    prog_name,
    sid_of_prog,
)
from cand.config import Config
from cand.engine.effects import (
    Effect,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RemoveService,
)
from cand.engine.service_table import InstanceMode, ServiceEntry
from cand.model import Binding, FlowKey, FlowKeyKind, InstanceState, RouterId, ServiceId
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
    rule_priority: int = 1000
    nft_table: str = "cand"
    encap_source: str | None = None
    tunnel_mtu: int = 1500
    mss_clamp: bool = True
    bpffs: str = "/run/cand/bpf"
    adopt_hold: float = 60.0
    linger: float = 300.0


class LinuxDataplane:
    def __init__(
        self,
        options: LinuxOptions,
        router: RouterId,
        modes: Mapping[ServiceId, InstanceMode] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= options.proto <= 255 or options.proto in RESERVED_PROTOS:
            raise ValueError(f"dataplane.options.proto: {options.proto} is reserved or invalid")
        if not 1 <= options.rule_priority < 32766:
            raise ValueError("dataplane.options.rule_priority: must be 1..32765")
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
        self.marks = nft.Marks(options.mark_base)
        self.mss = options.tunnel_mtu - SRH_OVERHEAD - 60 if options.mss_clamp else None
        # desired state, from the engine
        self.local: dict[ipaddress.IPv6Address, Delivery] = {}
        self.entries: dict[ServiceId, ServiceEntry] = {}
        # what the kernel holds (read back at start and by every reconciliation)
        self.slots = SlotTable(self.marks)
        self.routes: dict[int, Route] = {}
        self.rules: set[int] = set()
        self.local_sids: set[ipaddress.IPv6Address] = set()
        self.chains: set[ServiceId] = set()
        self.affinity_maps: set[str] = set()
        self.adopted: set[Identity] = set()
        self.lingering: dict[int, float] = {}  # tunnel slot -> when its bound flows lose it
        self.started = clock()
        self.read_once = False
        self.lock = asyncio.Lock()
        self.counters = {
            "installed": 0,
            "removed": 0,
            "errors": 0,
            "transactions": 0,
            "adopted": 0,
            "unroutable": 0,
            "skipped_ipv4": 0,
        }

    @classmethod
    def from_config(cls, config: Config) -> LinuxDataplane:
        raw = dict(config.dataplane.options) if config.dataplane is not None else {}
        opts = parse_options(LinuxOptions, raw, "dataplane.options", "linux")
        modes = {s: spec.mode for s, spec in config.service_specs().items()}
        return cls(opts, RouterId.parse(config.router.id), modes)

    # --- the Dataplane port -----------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        await self.reconcile()
        while True:
            await asyncio.sleep(self.opts.reconcile_interval)
            await self.reconcile()

    async def apply(self, effects: Sequence[Effect]) -> None:
        changed: set[ServiceId] = set()
        for e in effects:
            if isinstance(e, ProgramLocalInstance):
                mode = self.modes.get(e.key.service, InstanceMode.VIP)
                self.local[e.sid] = Delivery(e.key, e.sid, mode)
            elif isinstance(e, RemoveLocalInstance):
                self.local.pop(e.sid, None)
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
            if not self.read_once:
                await self._read()
            await self._sync(changed, full=False)

    async def reconcile(self) -> None:
        """Read what the kernel holds, then put back whatever differs from the wanted state."""
        async with self.lock:
            try:
                await self._read()
            except k.KernelError as e:
                self.counters["errors"] += 1
                log.error("event=linux_read_failed error=%r", str(e))
                return
            await self._sync(set(self.entries), full=True)

    def status(self) -> dict[str, Any]:
        return {
            "dataplane": "linux",
            "sids": len(self.local),
            "services": len(self.entries),
            "slots": len(self.slots.by_mark),
            "lingering": len(self.lingering),
            **self.counters,
        }

    # --- reading the kernel -----------------------------------------------------------------

    async def _read(self) -> None:
        rules = await k.ip_json("-6", "rule", "show")
        self.rules = {
            int(r["fwmark"], 16)
            for r in rules
            if r.get("protocol") == str(self.opts.proto)
            and r.get("priority") == self.opts.rule_priority
            and "fwmark" in r
        }
        routes: dict[int, Route] = {}
        local: set[ipaddress.IPv6Address] = set()
        rows = await k.ip_json("-6", "route", "show", "table", "all", "proto", str(self.opts.proto))
        for r in rows:
            table, dst = str(r.get("table", "main")), r.get("dst", "")
            if table == "local" and r.get("type") == "local":
                local.add(ipaddress.IPv6Address(dst.split("/")[0]))
                continue
            if not table.isdigit() or not self.marks.owns(int(table)):
                continue
            if r.get("encap") == "bpf" and (sid := sid_of_prog(r.get("xmit", ""))) is not None:
                routes[int(table)] = TunnelRoute(ServiceId.parse(dst.split("/")[0]), sid, r["dev"])
            elif dst == "default" and "gateway" in r:
                routes[int(table)] = DeliveryRoute(ipaddress.IPv6Address(r["gateway"]), r["dev"])
        self.routes, self.local_sids = routes, local
        sids, chains, maps = await self._read_nft()
        self.chains, self.affinity_maps = chains, maps
        if not self.read_once:
            self._adopt(sids)
        self.read_once = True

    async def _read_nft(self) -> tuple[dict[int, ipaddress.IPv6Address], set[ServiceId], set[str]]:
        try:
            items = await k.nft_json("list", "table", "ip6", self.opts.nft_table)
        except k.KernelError:
            return {}, set(), set()  # no table yet
        sids: dict[int, ipaddress.IPv6Address] = {}
        chains: set[ServiceId] = set()
        maps: set[str] = set()
        for item in items:
            if "chain" in item and item["chain"]["name"].startswith("svc_"):
                with contextlib.suppress(ValueError):
                    chains.add(
                        ServiceId.parse(
                            str(ipaddress.IPv6Address(int(item["chain"]["name"][4:], 16)))
                        )
                    )
            elif "map" in item:
                name = item["map"]["name"]
                if name == "sids":
                    for sid, mark in item["map"].get("elem", []):
                        sids[int(mark)] = ipaddress.IPv6Address(sid)
                elif name.startswith("aff_"):
                    maps.add(name)
        return sids, chains, maps

    def _adopt(self, sids: dict[int, ipaddress.IPv6Address]) -> None:
        """The first read after start: every slot an earlier run left keeps its number."""
        for mark, route in self.routes.items():
            ident: Identity | None = None
            if isinstance(route, TunnelRoute):
                ident = ("tunnel", route.service, route.sid)
            elif mark in sids:
                ident = ("delivery", sids[mark])
            if ident is not None and self.slots.adopt(ident, mark):
                self.adopted.add(ident)
        if self.adopted:
            self.counters["adopted"] = len(self.adopted)
            log.info(
                "event=linux_adopted slots=%d services=%d", len(self.adopted), len(self.chains)
            )

    def _holding(self) -> bool:
        return self.clock() - self.started < self.opts.adopt_hold

    # --- making the kernel match ------------------------------------------------------------

    async def _sync(self, changed: set[ServiceId], full: bool) -> None:
        holding = self._holding()
        want: dict[int, Tunnel | Delivery] = {}
        for d in self.local.values():
            want[self.slots.assign(d)] = d
        steered: dict[ServiceId, list[tuple[int, int, bool]]] = {}
        for service, entry in self.entries.items():
            rows = steered.setdefault(service, [])
            for c in entry.choices:
                if c.sid is None:
                    continue
                if c.local:
                    mark = self.slots.by_id.get(("delivery", c.sid))
                    if mark is None or mark not in want:
                        continue
                else:
                    t = Tunnel(service, c.sid)
                    mark = self.slots.assign(t)
                    want[mark] = t
                rows.append((mark, c.weight, c.state is not InstanceState.DOWN))
        self._linger(want)
        routes = await self._routes_for(want, full)
        await self._install(routes)
        await self._write_nft(steered, routes, changed, full, holding)
        if not holding:
            self.adopted.clear()
        await self._remove(set(want), holding)

    def _linger(self, want: dict[int, Tunnel | Delivery]) -> None:
        """A tunnel whose instance left its service's entry (withdrawn, a peer or reflector
        lost, a table briefly empty) keeps its route and rule, for no new flow, for the
        service's affinity timeout (at most `linger`): the flows already bound to it keep
        going. A service removed altogether takes its tunnels with it at once. Without this a
        reflector restart broke every established connection of the lab (bench.faults)."""
        now = self.clock()
        for mark in [m for m in self.lingering if m in want]:
            del self.lingering[mark]  # wanted again
        for mark, ident in list(self.slots.by_mark.items()):
            if ident[0] != "tunnel" or mark in want or mark not in self.routes:
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

    async def _routes_for(self, want: dict[int, Tunnel | Delivery], full: bool) -> dict[int, Route]:
        """The route each wanted slot needs; slots whose destination has no route are left out
        (and counted): steering new flows into a black hole is worse than not steering."""
        ask = {
            mark: str(p.sid if isinstance(p, Tunnel) else p.key.binding)
            for mark, p in want.items()
            if full or mark not in self.routes or not self._same(self.routes[mark], p)
        }
        got = await k.route_get_many(sorted(set(ask.values())))
        out: dict[int, Route] = {}
        for mark, p in want.items():
            if mark not in ask:
                out[mark] = self.routes[mark]
                continue
            r = got.get(ask[mark])
            if r is None or "dev" not in r or r.get("type", "unicast") not in ("unicast", "local"):
                self.counters["unroutable"] += 1
                log.warning("event=linux_unroutable slot=%#x to=%s", mark, ask[mark])
                continue
            if isinstance(p, Tunnel):
                out[mark] = TunnelRoute(p.service, p.sid, r["dev"])
            else:
                nh = ipaddress.IPv6Address(r.get("gateway", str(p.key.binding)))
                out[mark] = DeliveryRoute(nh, r["dev"])
        return out

    @staticmethod
    def _same(have: Route, p: Tunnel | Delivery) -> bool:
        if isinstance(p, Tunnel):
            return isinstance(have, TunnelRoute) and (have.service, have.sid) == (p.service, p.sid)
        return isinstance(have, DeliveryRoute)

    async def _install(self, routes: dict[int, Route]) -> None:
        p, prio = self.opts.proto, self.opts.rule_priority
        lines: list[str] = []
        pins: list[Path] = []
        try:
            for mark, route in sorted(routes.items()):
                if self.routes.get(mark) == route:
                    continue
                if isinstance(route, TunnelRoute):
                    pin = self._load_tunnel(route.sid, pins)
                    lines.append(
                        f"route replace {route.service}/128 proto {p} table {mark} "
                        f"encap bpf xmit pinned {pin} dev {route.dev}"
                    )
                else:
                    lines.append(
                        f"route replace default proto {p} table {mark} "
                        f"via {route.nh} dev {route.dev}"
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
            await self._batch(lines)
        finally:
            for pin in pins:
                with contextlib.suppress(OSError):
                    pin.unlink()
                with contextlib.suppress(OSError):
                    pin.parent.rmdir()
        self.routes.update(routes)
        self.rules |= set(routes)
        self.local_sids |= delivered

    def _load_tunnel(self, sid: ipaddress.IPv6Address, pins: list[Path]) -> Path:
        """A fresh H.Encaps program for `sid`, pinned only until the route holds it."""
        base = Path(self.opts.bpffs)
        srv6_bpf.ensure_bpffs(base)
        pin = base / uuid.uuid4().hex / prog_name(sid)
        pin.parent.mkdir()
        pins.append(pin)
        code = srv6_bpf.encap_program(srv6_bpf.srh_header(self.source, [sid]))
        srv6_bpf.load_and_pin(code, "cand_h_encaps", pin)
        return pin

    async def _write_nft(
        self,
        steered: dict[ServiceId, list[tuple[int, int, bool]]],
        routes: dict[int, Route],
        changed: set[ServiceId],
        full: bool,
        holding: bool,
    ) -> None:
        table = self.opts.nft_table
        sids = {
            sid: mark
            for sid in self.local
            if (mark := self.slots.by_id.get(("delivery", sid))) is not None and mark in routes
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
        keep = self.chains - set(steered) if holding else set()
        services = {s: nft.chain_name(s) for s in set(steered) | keep}
        script = nft.base(table, self.marks, sids, services, nat, self.mss)
        for service, rows in sorted(steered.items()):
            if not full and service not in changed and service in self.chains:
                continue
            spec = self.entries[service].spec
            slots = tuple(nft.SteeredSlot(m, w, live) for m, w, live in rows if m in routes)
            svc = nft.SteeredService(
                service, spec.flow_key, spec.affinity_timeout, spec.default, slots
            )
            script += nft.service(table, svc)
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
        try:
            await k.nft(script)
        except k.KernelError as e:
            self.counters["errors"] += 1
            log.error("event=linux_nft_failed error=%r (reconciliation retries)", str(e))
            return
        self.counters["transactions"] += 1
        self.chains = set(services)
        self.affinity_maps = (self.affinity_maps - set(stale_maps)) | wanted_maps

    async def _remove(self, wanted: set[int], holding: bool) -> None:
        p, prio = self.opts.proto, self.opts.rule_priority
        unwanted = (set(self.routes) | self.rules) - wanted
        if holding:
            unwanted = {m for m in unwanted if self.slots.by_mark.get(m) not in self.adopted}
        lines = []
        for mark in sorted(unwanted):
            if mark in self.routes:
                lines.append(f"route flush table {mark} proto {p}")
            if mark in self.rules:
                lines.append(f"rule del pref {prio} fwmark {mark:#x} lookup {mark} proto {p}")
        delivered = {d.sid for d in self.local.values()}
        stale_local = set() if holding else self.local_sids - delivered
        lines += [
            f"route del local {sid}/128 dev lo table local proto {p}" for sid in sorted(stale_local)
        ]
        await self._batch(lines)
        for mark in unwanted:
            self.routes.pop(mark, None)
            self.rules.discard(mark)
            self.slots.release(mark)
        self.local_sids -= stale_local

    async def _batch(self, lines: list[str]) -> None:
        if not lines:
            return
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
