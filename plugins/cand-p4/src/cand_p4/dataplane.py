"""cand's `Dataplane` on a P4 switch running p4/cand.p4 (`[dataplane] kind = "p4"`).

The engine's effects become the switch's tables (see `state` for the phases of one change):
a `ProgramService` is the service entry, its selector group (one member per copy of an
instance, copies in proportion to the weights, `weights.replicate`) and the new_flow entry;
`ProgramLocalInstance` is the local_sid entry (End.DX6, with ServiceNAT and a nat_out entry
for a `nat` service). New flows are placed by the switch's selector; its new_flow_t digest
comes here and becomes a binding entry with the service's affinity timeout as idle timeout,
so a later weight change or an instance's removal never moves the flow; the switch's
idle-timeout notification deletes the binding.

The session: primary arbitration and the pipeline (only when the device runs another
program, `switch.P4Switch`), then a read-back of every entry cand owns and a reconciliation
(what is not wanted goes, what is missing is written; for `adopt_hold` seconds after start
nothing an earlier run left is deleted, so the bindings and services of established flows
stay). Then one digest reader and one idle-timeout reader for the whole session, and a
reconciliation every `reconcile_interval`. When the switch goes away cand reconnects with
backoff; the switch keeps forwarding with what it holds meanwhile. A switch reply cand
cannot use (a failed write, an entry it cannot read) is logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import finsy as fy
import grpc

from cand.backoff import Backoff
from cand.config import Config
from cand.engine.effects import (
    Effect,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RemoveService,
)
from cand.engine.service_table import DefaultAction, InstanceMode, ServiceEntry
from cand.model import (
    Binding,
    BindingId,
    FlowKey,
    FlowKeyKind,
    InstanceState,
    RouterId,
    ServiceId,
)
from cand.plugins import parse_options
from cand.ports import Emit
from cand_p4 import ageing
from cand_p4 import entries as e
from cand_p4 import names as n
from cand_p4 import state as st
from cand_p4.switch import NotPrimary, P4Switch, Pipeline
from cand_p4.weights import DEFAULT_BUDGET

log = logging.getLogger("cand.p4")

TABLE = "dataplane.options"
REPO_P4 = Path(__file__).resolve().parents[4] / "p4"
"""p4/ of the source tree the plugin was installed from (editable installs)."""


class ConnectionLost(Exception):
    """The switch's stream channel closed."""


# what a switch (or the way to it) can do wrong: logged, counted, retried
SWITCH_ERRORS: tuple[type[Exception], ...] = (
    fy.P4ClientError,
    grpc.RpcError,
    ConnectionLost,
    NotPrimary,
    OSError,
    TimeoutError,
)


def already_exists(exc: BaseException) -> bool:
    """A Write that failed only because every entry in it is there already."""
    if not isinstance(exc, fy.P4ClientError) or not exc.details:
        return False
    return all(d.canonical_code == fy.GRPCStatusCode.ALREADY_EXISTS for d in exc.details.values())


@dataclass(frozen=True)
class P4Options:
    """`[dataplane.options]` for kind = "p4" (`ports` is checked by `parse`)."""

    address: str = "127.0.0.1:9559"
    """P4Runtime server: host:port, or unix:/path for a local socket."""
    device_id: int = 1
    election_id: int = 10
    p4info: str | None = None
    bmv2_json: str | None = None
    build_dir: str | None = None
    """Where p4/build wrote cand.json and cand.p4info.txtpb (when p4info/bmv2_json are not
    given); missing files are built there with p4/build."""
    encap_source: str | None = None
    hop_limit: int = 64
    reduced_encap: bool = False
    idle_timeout: float | None = None
    """Seconds a binding lives without a packet; by default each service's affinity_timeout."""
    max_members: int = DEFAULT_BUDGET
    """Selector members per service (weights are replicated members, see cand_p4.weights)."""
    adopt_hold: float = 60.0
    reconcile_interval: float = 30.0
    reconnect_max: float = 5.0


@dataclass(frozen=True)
class Port:
    """`[[dataplane.options.ports]]`: a switch port, its MAC, its neighbour's MAC and the
    prefixes routed to that neighbour."""

    port: int
    mac: str
    neighbour: str
    prefixes: tuple[str, ...]


def _mac(value: Any, where: str) -> str:
    text = value if isinstance(value, str) else ""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"{where}: {value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    try:
        [int(p, 16) for p in parts]
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a MAC address") from None
    return text.lower()


def parse_ports(raw: Any) -> tuple[Port, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{TABLE}.ports: expected a list of tables")
    out: list[Port] = []
    seen: set[int] = set()
    for i, item in enumerate(raw):
        where = f"{TABLE}.ports[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a table")
        unknown = set(item) - {"port", "mac", "neighbour", "prefixes"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        port = item.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 511:
            raise ValueError(f"{where}.port: expected a port number 0..510, got {port!r}")
        if port in seen:
            raise ValueError(f"{where}.port: port {port} given twice")
        seen.add(port)
        prefixes = item.get("prefixes", [])
        if not isinstance(prefixes, list):
            raise ValueError(f"{where}.prefixes: expected a list of IPv6 prefixes")
        nets: list[str] = []
        for j, p in enumerate(prefixes):
            try:
                nets.append(str(ipaddress.IPv6Network(p)))
            except (ValueError, TypeError):
                raise ValueError(f"{where}.prefixes[{j}]: {p!r} is not an IPv6 prefix") from None
        out.append(
            Port(
                port,
                _mac(item.get("mac"), f"{where}.mac"),
                _mac(item.get("neighbour"), f"{where}.neighbour"),
                tuple(nets),
            )
        )
    return tuple(out)


def parse(raw: Mapping[str, Any]) -> tuple[P4Options, tuple[Port, ...]]:
    """`[dataplane.options]` into options and ports; an error names its field."""
    rest = dict(raw)
    ports = parse_ports(rest.pop("ports", []))
    opts = parse_options(P4Options, rest, TABLE, "p4")
    if not 1 <= opts.device_id <= 0xFFFFFFFF:
        raise ValueError(f"{TABLE}.device_id: must be 1..4294967295")
    if not 1 <= opts.election_id < 1 << 64:
        raise ValueError(f"{TABLE}.election_id: must be at least 1 (0 is no election id)")
    if not 1 <= opts.hop_limit <= 255:
        raise ValueError(f"{TABLE}.hop_limit: must be 1..255")
    if opts.idle_timeout is not None and not 1 <= opts.idle_timeout <= 86400:
        raise ValueError(f"{TABLE}.idle_timeout: between 1 and 86400 seconds")
    if not 1 <= opts.max_members <= 1024:
        raise ValueError(f"{TABLE}.max_members: must be 1..1024")
    for name in ("adopt_hold", "reconcile_interval", "reconnect_max"):
        value = getattr(opts, name)
        low = 0 if name == "adopt_hold" else 0.1
        if not low <= value <= 86400:
            raise ValueError(f"{TABLE}.{name}: between {low} and 86400 seconds")
    if not opts.address or (":" not in opts.address):
        raise ValueError(f"{TABLE}.address: expected host:port or unix:/path")
    if (opts.p4info is None) != (opts.bmv2_json is None):
        raise ValueError(f"{TABLE}.p4info and {TABLE}.bmv2_json: give both or neither")
    routes: dict[str, int] = {}
    for i, p in enumerate(ports):
        for prefix in p.prefixes:
            if prefix in routes:
                raise ValueError(f"{TABLE}.ports[{i}].prefixes: {prefix} routed twice")
            routes[prefix] = p.port
    return opts, ports


def pipeline_for(opts: P4Options) -> Pipeline:
    """The compiled program: the given files, or `build_dir` (built there by p4/build when
    missing; build/p4 of the source tree by default)."""
    if opts.p4info is not None and opts.bmv2_json is not None:
        return Pipeline(Path(opts.bmv2_json), Path(opts.p4info))
    build = Path(opts.build_dir) if opts.build_dir else REPO_P4.parent / "build" / "p4"
    pipeline = Pipeline.in_dir(build)
    if not (pipeline.json.is_file() and pipeline.p4info.is_file()):
        script = REPO_P4 / "build"
        if not script.is_file():
            raise ValueError(
                f"{TABLE}.build_dir: {build} has no cand.json/cand.p4info.txtpb and there is "
                "no p4/build to make them (set p4info and bmv2_json)"
            )
        run = subprocess.run(
            [str(script), str(build)], capture_output=True, text=True, timeout=300, check=False
        )
        if run.returncode != 0:
            raise ValueError(f"{TABLE}: p4/build failed: {(run.stdout + run.stderr)[-500:]}")
    return pipeline


def static_of(ports: Sequence[Port]) -> st.Static:
    """Next hop id = port number; each prefix routed to its port's neighbour."""
    return st.Static(
        routes={prefix: p.port for p in ports for prefix in p.prefixes},
        nexthops={p.port: st.Neighbour(p.port, p.neighbour, p.mac) for p in ports},
    )


def steered(entry: ServiceEntry, modes: Mapping[ServiceId, InstanceMode]) -> st.Steered:
    """A service entry as the switch takes it: each instance that may take new flows (a SID
    or local, weight > 0, not down) with its weight."""
    nat = modes.get(entry.service, entry.spec.mode) is InstanceMode.NAT
    weights: list[tuple[e.Target, int]] = []
    seen: set[e.Target] = set()
    for c in entry.choices:
        if c.weight <= 0 or c.state is InstanceState.DOWN:
            continue
        target: e.Target
        if c.local:
            target = e.ToLocal(str(c.binding.address), nat=nat)
        elif c.sid is not None:
            target = e.ToSid(str(c.sid))
        else:
            continue
        if target not in seen:
            seen.add(target)
            weights.append((target, c.weight))
    return st.Steered(
        str(entry.service.address),
        entry.spec.flow_key is FlowKeyKind.THREE_TUPLE,
        entry.spec.default is DefaultAction.ROUTE,
        tuple(weights),
    )


class P4Dataplane:
    def __init__(
        self,
        options: P4Options,
        ports: Sequence[Port],
        router: RouterId,
        modes: Mapping[ServiceId, InstanceMode] | None = None,
        *,
        pipeline: Pipeline | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        source = options.encap_source or str(router)
        try:
            self.source = str(ipaddress.IPv6Address(source))
        except ValueError:
            raise ValueError(
                f"{TABLE}.encap_source: {source!r} is not an IPv6 address "
                "(set it when router.id is IPv4)"
            ) from None
        self.opts = options
        self.router = router
        self.modes = dict(modes or {})
        self.static = static_of(ports)
        self.pipeline = pipeline or pipeline_for(options)
        self.clock = clock
        self.started = clock()
        # desired state, from the engine
        self.entries: dict[ServiceId, ServiceEntry] = {}
        self.local: dict[str, tuple[ServiceId, BindingId]] = {}  # SID -> (D-SID, D-BID)
        # what the switch holds (read back on connect)
        self.ids = st.Ids()
        self.have: st.Tables | None = None
        self.bound: dict[e.FlowKey, e.Target] = {}
        self.binding_now: set[e.FlowKey] = set()  # binding writes in flight
        self.bound_at: dict[e.FlowKey, float] = {}  # wall clock, for the bindings this run made
        self.where: dict[e.Target, tuple[BindingId, RouterId]] = {}
        self.sw: P4Switch | None = None
        self.lock = asyncio.Lock()
        self.resync = asyncio.Event()
        self.counters = {
            "connects": 0,
            "disconnects": 0,
            "writes": 0,
            "errors": 0,
            "bad_replies": 0,
            "digests": 0,
            "bound": 0,
            "expired": 0,
            "reconciled": 0,
            "skipped_ipv4": 0,
        }

    @classmethod
    def from_config(cls, config: Config) -> P4Dataplane:
        raw = dict(config.dataplane.options) if config.dataplane is not None else {}
        opts, ports = parse(raw)
        modes = {s: spec.mode for s, spec in config.service_specs().items()}
        return cls(opts, ports, RouterId.parse(config.router.id), modes)

    # --- the Dataplane port -------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        backoff = Backoff(cap=self.opts.reconnect_max)
        while True:
            try:
                await self._session(backoff)
            except* SWITCH_ERRORS as group:
                for exc in group.exceptions:
                    self._failed("session", exc)
            if self.sw is not None:
                self.counters["disconnects"] += 1
            self.sw, self.have = None, None
            await asyncio.sleep(backoff.delay())

    async def apply(self, effects: Sequence[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, ProgramService):
                if eff.entry.service.version != 6:
                    self.counters["skipped_ipv4"] += 1
                    log.warning("event=p4_ipv4_service_skipped service=%s", eff.entry.service)
                    continue
                self.entries[eff.entry.service] = eff.entry
                self.where.update(_where(eff.entry))
            elif isinstance(eff, RemoveService):
                self.entries.pop(eff.service, None)
            elif isinstance(eff, ProgramLocalInstance):
                if eff.sid.version == 6 and eff.key.binding.version == 6:
                    self.local[str(eff.sid)] = (eff.key.service, eff.key.binding)
            elif isinstance(eff, RemoveLocalInstance):
                self.local.pop(str(eff.sid), None)
        # what a target is, for `cand bindings`: only for the entries and the bound flows
        # (instance churn over a long run would grow it otherwise)
        keep = {t for entry in self.entries.values() for t in _where(entry)}
        keep |= set(self.bound.values())
        for t in [t for t in self.where if t not in keep]:
            del self.where[t]
        sw = self.sw
        if sw is not None:
            async with self.lock:
                await self._sync(sw, read=self.have is None)

    async def bindings(self) -> list[Binding]:
        """Every binding entry with its packet and byte counters, read from the switch."""
        sw = self.sw
        if sw is None:
            return []
        try:
            rows = await sw.read(
                fy.P4TableEntry(
                    n.BINDING.name, counter_data=fy.P4CounterData(), time_since_last_hit=0
                )
            )
        except SWITCH_ERRORS as exc:
            self._failed("read_bindings", exc)
            return []
        now = time.time()
        out: list[Binding] = []
        for row in rows:
            try:
                out.append(self._binding(row, now))
            except (KeyError, ValueError, TypeError, AttributeError, LookupError) as exc:
                self.counters["bad_replies"] += 1
                log.debug("event=p4_binding_unreadable error=%r", str(exc))
        return out

    def status(self) -> dict[str, Any]:
        return {
            "dataplane": "p4",
            "address": self.opts.address,
            "connected": self.sw is not None and self.sw.is_up,
            "services": len(self.entries),
            "sids": len(self.local),
            "bindings": len(self.bound),
            **self.counters,
            "dropped": dict(self.sw.dropped) if self.sw is not None else {},
        }

    # --- the session --------------------------------------------------------------------------

    async def _session(self, backoff: Backoff) -> None:
        async with P4Switch(
            self.opts.address,
            self.pipeline,
            device_id=self.opts.device_id,
            election_id=self.opts.election_id,
        ) as sw:
            self.counters["connects"] += 1
            # effects from now on wait for the first reconciliation (the lock), then are
            # written as a difference: none is left for the next periodic one
            self.sw = sw
            async with self.lock:
                await self._sync(sw, read=True)
            backoff.reset()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._digests(sw), name="p4-bind")
                tg.create_task(self._expiries(sw), name="p4-expire")
                tg.create_task(self._watch(sw), name="p4-watch")
                tg.create_task(self._periodic(sw), name="p4-reconcile")

    async def _watch(self, sw: P4Switch) -> None:
        await sw.wait_closed()
        raise ConnectionLost(f"{self.opts.address}: stream closed")

    async def _periodic(self, sw: P4Switch) -> None:
        """A reconciliation every `reconcile_interval`, at the end of `adopt_hold`, and soon
        (with backoff) after a failed one."""
        retry = Backoff(first=0.5, cap=self.opts.reconcile_interval)
        while True:
            wait = self.opts.reconcile_interval
            hold_left = self.started + self.opts.adopt_hold - self.clock()
            if hold_left > 0:
                wait = min(wait, hold_left + 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.resync.wait(), wait)
            if self.resync.is_set():
                self.resync.clear()
                await asyncio.sleep(retry.delay())
            async with self.lock:
                if await self._sync(sw, read=True):
                    retry.reset()

    def _holding(self) -> bool:
        return self.clock() - self.started < self.opts.adopt_hold

    async def _read(self, sw: P4Switch) -> list[Any]:
        found: list[Any] = []
        for table in st.READ_TABLES:
            found += await sw.read(fy.P4TableEntry(table.name))
        found += await sw.read(fy.P4ActionProfileMember(n.INSTANCES))
        found += await sw.read(fy.P4ActionProfileGroup(n.INSTANCES))
        try:
            found += await sw.read(fy.P4DigestEntry(n.NEW_FLOW_DIGEST))
        except fy.P4ClientError as exc:
            if exc.code != fy.GRPCStatusCode.NOT_FOUND:
                raise  # NOT_FOUND: the digest is not switched on yet
        return found

    async def _sync(self, sw: P4Switch, *, read: bool) -> bool:
        """Make the switch hold what the engine wants (reading it back first when `read`);
        False when the switch refused (logged, counted, and retried by `_periodic`)."""
        read = read or self.have is None
        try:
            if read:
                have, bound, bad = st.from_device(await self._read(sw))
                if bad:
                    self.counters["bad_replies"] += bad
                    log.warning("event=p4_read_unreadable entries=%d", bad)
                self.ids.adopt(have)
                self.have, self.bound = have, bound
                # age counts from this run's bind, or from its first read-back of an entry it
                # did not bind (an earlier run's): a lower bound for those
                seen = time.time()
                self.bound_at = {k: self.bound_at.get(k, seen) for k in bound}
            assert self.have is not None
            have = self.have
            want = st.desired(
                [steered(x, self.modes) for x in self.entries.values()],
                *self._local_tables(),
                self.static,
                self.ids,
                have=have,
                budget=self.opts.max_members,
            )
            holding = self._holding()
            if holding:
                want = st.keep_unknown(want, have)
            self.ids.retain(want.services, want.members)
            phases = st.plan(have, want, max_group_size=0)
            if read:  # the encap table's default action cannot be read back as cand's: set it
                encap = e.encap_settings(
                    self.source, hop_limit=self.opts.hop_limit, reduced=self.opts.reduced_encap
                )
                phases.insert(0, [~encap])
            for updates in phases:
                await sw.write(updates)
                self.counters["writes"] += 1
            self.have = st.after(have, want)
            if read:  # counted once the switch holds the want, not at the read: a reader of
                # `reconciled` (the lab's readiness, the tests) then finds the tables written
                self.counters["reconciled"] += 1
            if not holding:
                await self._drop_orphan_bindings(sw, want)
        except SWITCH_ERRORS as exc:
            self._failed("sync", exc)
            self.have = None  # read back on the next try
            self.resync.set()
            return False
        return True

    def _local_tables(self) -> tuple[dict[str, st.LocalSid], dict[str, str]]:
        local: dict[str, st.LocalSid] = {}
        nat_out: dict[str, str] = {}
        for sid, (dsid, dbid) in self.local.items():
            nat = self.modes.get(dsid) is InstanceMode.NAT
            local[sid] = st.LocalSid(str(dbid.address), nat)
            if nat:
                nat_out[str(dbid.address)] = str(dsid.address)
        return local, nat_out

    async def _drop_orphan_bindings(self, sw: P4Switch, want: st.Tables) -> None:
        """Bindings of a D-SID cand no longer steers are dead weight: removed."""
        orphans = [k for k in self.bound if k.dst not in want.services]
        if orphans:
            await sw.write([-self._binding_entry(k) for k in orphans])
            for k in orphans:
                self.bound.pop(k, None)

    @staticmethod
    def _binding_entry(key: e.FlowKey) -> fy.P4TableEntry:
        return fy.P4TableEntry(
            n.BINDING.name,
            match=fy.P4TableMatch(
                src=key.src, dst=key.dst, proto=key.proto, sport=key.sport, dport=key.dport
            ),
        )

    # --- bindings -----------------------------------------------------------------------------

    def _timeout_for(self, dsid: str) -> float:
        if self.opts.idle_timeout is not None:
            return self.opts.idle_timeout
        for service, entry in self.entries.items():
            if str(service.address) == dsid:
                return max(1.0, entry.spec.affinity_timeout)
        return 300.0

    async def _digests(self, sw: P4Switch) -> None:
        """A digest means the switch had no binding for the flow when its packet passed: only
        one whose binding is being written now is a duplicate. Any other is written, even if
        `bound` has the flow (a read-back that raced an idle-timeout delete may have put it
        back): the switch answers ALREADY_EXISTS if it is there, which is success."""
        async for flow in sw.new_flows():
            self.counters["digests"] += 1
            if flow.key in self.binding_now:
                continue  # a later packet of a flow whose binding is being written
            if self.have is not None and flow.key.dst not in self.have.services:
                continue  # a digest from a service just removed
            # where this packet went (the switch had no binding): so the flow stays there
            self.bound[flow.key] = flow.target
            entry = e.binding(flow.key, flow.target, idle_timeout_s=self._timeout_for(flow.key.dst))
            self.binding_now.add(flow.key)
            try:
                await sw.write([+entry])
            except SWITCH_ERRORS as exc:
                if already_exists(exc):  # bound meanwhile (a read-back raced this digest)
                    continue
                self.bound.pop(flow.key, None)
                self._failed("bind", exc)
                continue
            finally:
                self.binding_now.discard(flow.key)
            self.bound_at[flow.key] = time.time()
            self.counters["bound"] += 1
            log.debug("event=p4_bound flow=%s target=%s", flow.key, flow.target)

    async def _expiries(self, sw: P4Switch) -> None:
        async for idle in sw.idle_timeouts():
            gone: list[Any] = []
            for ent in idle:
                try:
                    key = st.flow_key_of(ent.match or {})
                except (KeyError, ValueError, TypeError) as exc:
                    self.counters["bad_replies"] += 1
                    log.warning("event=p4_idle_unreadable error=%r", str(exc))
                    continue
                self.bound.pop(key, None)
                self.bound_at.pop(key, None)
                gone.append(-self._binding_entry(key))
            if not gone:
                continue
            try:
                await sw.write(gone)
            except SWITCH_ERRORS as exc:
                self._failed("expire", exc)
                continue
            self.counters["expired"] += len(gone)

    def _binding(self, row: Any, now: float) -> Binding:
        key = st.flow_key_of(row.match)
        target = st.target_of(row.action)
        binding, egress = self.where[target]
        service = ServiceId.parse(key.dst)
        three = key.sport == 0 and key.dport == 0 and self._three_tuple(service)
        flow = FlowKey(
            ipaddress.IPv6Address(key.src),
            service,
            key.proto,
            None if three else key.sport,
            None if three else key.dport,
        )
        # BMv2 wraps the time left at 2**32 ns: ageing undoes it
        idle = ageing.idle(row.idle_timeout_ns, row.time_since_last_hit or 0)
        last_seen = now - idle.since_hit
        data = row.counter_data
        return Binding(
            flow=flow,
            binding=binding,
            egress=egress,
            created=min(self.bound_at.setdefault(key, now), last_seen),
            last_seen=last_seen,
            timeout=idle.left,
            packets=data.packet_count if data is not None else None,
            bytes=data.byte_count if data is not None else None,
        )

    def _three_tuple(self, service: ServiceId) -> bool:
        entry = self.entries.get(service)
        return entry is not None and entry.spec.flow_key is FlowKeyKind.THREE_TUPLE

    def _failed(self, what: str, exc: BaseException) -> None:
        self.counters["errors"] += 1
        log.error("event=p4_%s_failed error=%r", what, str(exc)[:500])


def _where(entry: ServiceEntry) -> dict[e.Target, tuple[BindingId, RouterId]]:
    """The switch targets of a service entry's instances, with the instance each one is."""
    out: dict[e.Target, tuple[BindingId, RouterId]] = {}
    for c in entry.choices:
        if c.local:
            for nat in (False, True):
                out[e.ToLocal(str(c.binding.address), nat=nat)] = (c.binding, c.egress)
        elif c.sid is not None:
            out[e.ToSid(str(c.sid))] = (c.binding, c.egress)
    return out
