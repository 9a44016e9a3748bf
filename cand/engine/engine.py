"""The decision core: `Engine.handle(event, now) -> list[Effect]`; it never awaits.

The daemon feeds it one event at a time from one queue and carries out the effects it returns.
Everything here is deterministic given the events and the times they came at, which is what
lets the same code run in the daemon, in the tests with a fake clock, and in the simulator.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cand.engine.cost import CostOutput, CostSmoother, SmoothingParams
from cand.engine.damping import Damper, DampingParams, Retract, Send
from cand.engine.decision import decide
from cand.engine.effects import (
    Advertise,
    Effect,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RemoveService,
    Withdraw,
)
from cand.engine.events import (
    CostChanged,
    CostSampled,
    Event,
    InstanceReported,
    MetricsReachable,
    PathsAdopted,
    PeerDown,
    PeerSynced,
    Reconfigured,
    RouteLearned,
    RouteWithdrawn,
    Tick,
)
from cand.engine.policy import BUILTIN, Policy, PolicyParams
from cand.engine.rib import Rib, RibLimits
from cand.engine.service_table import ServiceEntry, ServiceSpec
from cand.model import InstanceKey, InstanceRoute, InstanceState, RouterId, ServiceId
from cand.normalize import normalize


@dataclass(frozen=True, slots=True)
class EngineConfig:
    router: RouterId
    ingress: bool = True
    egress: bool = True
    locator: ipaddress.IPv6Network | None = None
    services: Mapping[ServiceId, ServiceSpec] = field(default_factory=dict)
    steer_unknown: bool = False
    """Steer D-SIDs learned from BGP that are not configured, with `default_spec`'s settings."""
    default_spec: ServiceSpec | None = None
    policy: PolicyParams = field(default_factory=PolicyParams)
    damping: DampingParams = field(default_factory=DampingParams)
    default_cost: float = 0.0
    limits: RibLimits = field(default_factory=RibLimits)
    cost_source: str = "static"
    """Where the network cost to an egress comes from, unless `cost_sources` names one."""
    cost_sources: Mapping[RouterId, str] = field(default_factory=dict)
    cost_smoothing: SmoothingParams = field(default_factory=SmoothingParams)

    def source_for(self, egress: RouterId) -> str:
        return self.cost_sources.get(egress, self.cost_source)


class UnknownPolicy(LookupError):
    pass


class Engine:
    def __init__(
        self, config: EngineConfig, policies: Mapping[str, type[Policy]] | None = None
    ) -> None:
        self.config = config
        self.rib = Rib(config.router, config.default_cost, config.limits)
        self.damper = Damper(config.damping)
        self.costs = CostSmoother(config.cost_smoothing)
        self.static_costs: dict[RouterId, float] = {}
        self.table: dict[ServiceId, ServiceEntry] = {}
        self.metrics_reachable = True
        self.held: dict[InstanceKey, tuple[float, InstanceReported]] = {}  # due, will
        self.adopted: dict[InstanceKey, float] = {}  # adopted path -> when it goes unconfirmed
        classes = dict(BUILTIN)
        classes.update(policies or {})
        self._policies: dict[str, Policy] = {n: cls(config.policy) for n, cls in classes.items()}
        for spec in self._specs():
            if spec.policy not in self._policies:
                raise UnknownPolicy(
                    f"service {spec.service}: unknown policy {spec.policy!r} "
                    f"(known: {', '.join(sorted(self._policies))})"
                )
        self.counters: dict[str, int] = {
            "events": 0,
            "recomputes": 0,
            "rejected_reports": 0,
            "stale_reports": 0,
            "wills_held": 0,
            "wills_applied": 0,
            "wills_cancelled": 0,
            "wills_discarded": 0,
            "adopted": 0,
            "adopted_withdrawn": 0,
            "cost_samples": 0,
            "cost_samples_ignored": 0,
            "rescored": 0,
        }

    # --- public ----------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        return self.handle_many((event,), now)

    def handle_many(self, events: Iterable[Event], now: float) -> list[Effect]:
        """Several events that arrived together: each touched service is decided once, after
        all of them, so a burst of N updates to one service costs one decision, not N."""
        effects: list[Effect] = []
        dirty: set[ServiceId] = set()
        for event in events:
            self.counters["events"] += 1
            effects += self._dispatch(event, now, dirty)
        return effects + self._recompute(dirty)

    def _dispatch(self, event: Event, now: float, dirty: set[ServiceId]) -> list[Effect]:
        match event:
            case InstanceReported():
                return self._on_report(event, now, dirty)
            case RouteLearned(peer=peer, route=route):
                if self.rib.learn(peer, route, now):
                    dirty.add(route.service)
            case RouteWithdrawn(peer=peer, key=key, egress=egress):
                if self.rib.withdraw(peer, key, egress):
                    dirty.add(key.service)
            case PeerDown(peer=peer, stale_for=stale_for):
                if stale_for > 0:
                    self.rib.mark_stale(peer, now + stale_for)
                else:
                    dirty |= self.rib.drop_peer(peer, only_stale=False)
            case PeerSynced(peer=peer):
                # what the peer did not send again goes, unless its service would be left
                # with nothing (a reflector back from a reset, still empty): see end_of_rib
                dirty |= self.rib.end_of_rib(peer)
            case CostChanged(egress=egress, cost=cost):
                if cost is None:
                    self.static_costs.pop(egress, None)
                else:
                    self.static_costs[egress] = cost
                dirty |= self.rib.set_cost(egress, cost)
            case CostSampled(egress=egress, source=source, value=value):
                if self.config.source_for(egress) != source:
                    self.counters["cost_samples_ignored"] += 1
                else:
                    self.counters["cost_samples"] += 1
                    self._costs(self.costs.sample(egress, value, now, source), dirty)
            case MetricsReachable(reachable=reachable, grace=grace):
                if not reachable:
                    # our own connection dropped: the broker may publish wills of instances
                    # that are alive; whatever was held back was not confirmed
                    self.counters["wills_discarded"] += len(self.held)
                    self.held.clear()
                self.metrics_reachable = reachable
                self.rib.hold_local(now + grace if reachable else None)
            case PathsAdopted(keys=keys, grace=grace):
                self.counters["adopted"] += len(keys)
                for key in keys:
                    if key not in self.rib.local:
                        self.adopted[key] = now + grace
            case Reconfigured(config=config):
                return self._reconfigure(config, now, dirty)
            case Tick():
                return self._on_tick(now, dirty)
            case _:
                raise TypeError(f"not an event: {event!r}")
        return []

    def start(self) -> list[Effect]:
        """The effects a fresh daemon owes before any event: an entry for every configured
        service (with no instance yet, new flows get the service's default action)."""
        return self._recompute(self.config.services)

    def next_deadline(self) -> float | None:
        """When the engine next wants a Tick, were nothing else to happen."""
        times = [e.expires_at for e in self.rib.local.values() if e.expires_at is not None]
        stale = self.rib.next_stale()
        if stale is not None:
            times.append(stale)
        times += [due for due, _ in self.held.values()]
        if self.adopted:
            times.append(min(self.adopted.values()))
        for d in (self.damper.next_deadline(), self.costs.next_deadline()):
            if d is not None:
                times.append(d)
        return min(times, default=None)

    def cost_targets(self, source: str) -> dict[RouterId, ipaddress.IPv6Address | None]:
        """The egresses (with one SRv6 SID of each, if known) whose cost `source` measures:
        those learned from BGP that the config gives to it."""
        return {
            e: sid for e, sid in self.rib.egresses().items() if self.config.source_for(e) == source
        }

    def cost_table(self, now: float) -> list[dict[str, Any]]:
        """Per egress: the cost in force, where it comes from, how old, the last raw samples."""
        egresses = set(self.rib.egresses()) | set(self.static_costs) | set(self.costs.egresses())
        out = []
        for e in sorted(egresses):
            row: dict[str, Any] = {"egress": str(e), "source": self.config.source_for(e)}
            smoothed = self.costs.status(e, now)
            if row["source"] != "static" and smoothed is not None:
                row.update(smoothed)
            else:
                if row["source"] == "static" and e not in self.static_costs:
                    row["source"] = "default"
                row.update(age=None, samples=[], smoothed=None)
            row["cost"] = self.rib.cost(e)
            row["reachable"] = e not in self.rib.unreachable
            row["paths"] = e in self.rib.egresses()
            out.append(row)
        return out

    def sid_for(self, key: InstanceKey) -> ipaddress.IPv6Address | None:
        """The SRv6 SID (End.DX6) for a local instance: locator plus a stable function.

        A hash of (D-SID, D-BID) rather than a counter, so the SID is the same after a restart
        and no state needs to be kept on disk for established flows to survive.
        """
        loc = self.config.locator
        if loc is None:
            return None
        host_bits = 128 - loc.prefixlen
        function = key.stable_hash(8) & ((1 << min(host_bits, 64)) - 1) or 1
        return ipaddress.IPv6Address(int(loc.network_address) | function)

    def spec_for(self, service: ServiceId) -> ServiceSpec | None:
        spec = self.config.services.get(service)
        if spec is None and self.config.steer_unknown and self.config.default_spec is not None:
            spec = replace(self.config.default_spec, service=service)
        return spec

    # --- handlers --------------------------------------------------------------------------

    def _on_report(self, ev: InstanceReported, now: float, dirty: set[ServiceId]) -> list[Effect]:
        key = ev.key
        if ev.state is not InstanceState.DOWN:
            self.adopted.pop(key, None)  # reported again: the engine advertises it itself
        if self.held.pop(key, None) is not None:
            self.counters["wills_cancelled"] += 1  # the instance spoke again: it is alive
        if ev.hold > 0:
            self.held[key] = (now + ev.hold, replace(ev, hold=0.0))
            self.counters["wills_held"] += 1
            return []
        if not self.config.egress or key.service not in self.config.services:
            self.counters["rejected_reports"] += 1
            return []
        held = self.rib.local.get(key)
        # A `down` may carry an older sequence: the Last Will is written when the publisher
        # connects, before its reports (the source's sequencer has already checked it).
        if held is not None and ev.seq < held.route.seq and ev.state is not InstanceState.DOWN:
            self.counters["stale_reports"] += 1
            return []
        if held is None and ev.state is not InstanceState.DOWN and not self.rib.may_add_local(key):
            self.counters["rejected_reports"] += 1
            return []
        sid = held.route.sid if held is not None else self.sid_for(key)  # a hash per instance
        effects: list[Effect] = []
        if ev.state is InstanceState.DOWN:
            gone = self.rib.remove_local(key)
            effects += self._damp(key, None, now)
            if gone is not None and gone.route.sid is not None:
                effects.append(RemoveLocalInstance(key, gone.route.sid))
        else:
            metrics = ev.metrics
            scored_here = metrics.scores is None
            if scored_here:
                # the instance gave L0 only: score it under the service's normalization, so
                # every router reads the same L1/L2 from the wire
                metrics = metrics.with_scores(
                    normalize(metrics, self.config.services[key.service].normalization)
                )
            route = InstanceRoute(
                key=key,
                egress=self.config.router,
                sid=sid,
                metrics=metrics,
                state=ev.state,
                seq=ev.seq,
            )
            self.rib.set_local(
                route, now, ev.ttl if self.metrics_reachable else None, scored_here=scored_here
            )
            if held is None and sid is not None:
                effects.append(ProgramLocalInstance(key, sid))
            effects += self._damp(key, route, now)
        dirty.add(key.service)
        return effects

    def reload_problems(self, new: EngineConfig) -> list[str]:
        """Why `new` cannot replace the running configuration in place (empty: it can)."""
        problems = []
        for name in ("router", "locator", "ingress", "egress"):
            if getattr(new, name) != getattr(self.config, name):
                problems.append(f"{name} changes only with a restart")
        specs = [*new.services.values(), *([new.default_spec] if new.default_spec else [])]
        for spec in specs:
            if spec.policy not in self._policies:
                problems.append(f"service {spec.service}: unknown policy {spec.policy!r}")
        return problems

    def _reconfigure(self, new: EngineConfig, now: float, dirty: set[ServiceId]) -> list[Effect]:
        """Apply a reloaded configuration: a removed service's local instances are withdrawn
        and its entry removed (unless unknown D-SIDs are steered anyway), every other service
        is decided again under the new policies. Established flows are the data plane's: a
        new entry never moves a bound flow."""
        if self.reload_problems(new):
            self.counters["reconfigure_refused"] = self.counters.get("reconfigure_refused", 0) + 1
            return []  # the daemon checks first; an engine never raises on an event
        policies = {n: type(p)(new.policy) for n, p in self._policies.items()}
        old = self.config
        self.config, self._policies = new, policies
        self.damper.params = new.damping
        self.rib.default_cost = new.default_cost
        self.rib.limits = new.limits
        self.counters["reconfigured"] = self.counters.get("reconfigured", 0) + 1
        effects: list[Effect] = []
        for service in set(old.services) - set(new.services):
            for key in [k for k in self.rib.local if k.service == service]:
                self.held.pop(key, None)
                gone = self.rib.remove_local(key)
                effects += self._damp(key, None, now)
                if gone is not None and gone.route.sid is not None:
                    effects.append(RemoveLocalInstance(key, gone.route.sid))
            if self.spec_for(service) is None and self.table.pop(service, None) is not None:
                effects.append(RemoveService(service))
        effects += self._rescore(old, new, now)
        # every service is decided again: policy, flow key or default may have changed
        dirty |= set(new.services) | set(self.table)
        return effects

    def _rescore(self, old: EngineConfig, new: EngineConfig, now: float) -> list[Effect]:
        """A service whose normalization changed: the local instances this egress scored are
        scored again at once, from the L0 values of their last report, instead of at their next
        report. Scores an instance gave itself stay as given. A changed route goes out after
        `min_interval` (as a significant change would), not after `refresh_interval`: it is
        the operator's change, not churn."""
        effects: list[Effect] = []
        for key, entry in sorted(self.rib.local.items()):
            before, after = old.services.get(key.service), new.services.get(key.service)
            if not entry.scored_here or before is None or after is None:
                continue
            if before.normalization == after.normalization:
                continue
            metrics = entry.route.metrics
            route = replace(
                entry.route, metrics=metrics.with_scores(normalize(metrics, after.normalization))
            )
            if route.metrics.cats == metrics.cats:
                continue
            self.counters["rescored"] += 1
            self.rib.rescore_local(route)
            effects += self._actions(self.damper.offer(key, route, now, prompt=True))
        return effects

    def _on_tick(self, now: float, touched: set[ServiceId]) -> list[Effect]:
        effects: list[Effect] = []
        for key in [k for k, due in self.adopted.items() if due <= now]:
            del self.adopted[key]
            if key not in self.rib.local:  # nobody reported it since the restart
                self.counters["adopted_withdrawn"] += 1
                effects.append(Withdraw(key))
        for key in [k for k, (due, _) in self.held.items() if due <= now]:
            _, will = self.held.pop(key)
            self.counters["wills_applied"] += 1
            effects += self._on_report(will, now, touched)
        for key in self.rib.expired_local(now):
            gone = self.rib.remove_local(key)
            effects += self._damp(key, None, now)
            if gone is not None and gone.route.sid is not None:
                effects.append(RemoveLocalInstance(key, gone.route.sid))
            touched.add(key.service)
        touched |= self.rib.expire_stale(now)
        self._costs(self.costs.due(now), touched)
        effects += self._actions(self.damper.due(now))
        return effects

    def _costs(self, outputs: Iterable[CostOutput], dirty: set[ServiceId]) -> None:
        for o in outputs:
            dirty |= self.rib.set_reachable(o.egress, o.reachable)
            if o.cost is not None:
                dirty |= self.rib.set_cost(o.egress, o.cost)

    def _damp(self, key: InstanceKey, route: InstanceRoute | None, now: float) -> list[Effect]:
        return self._actions(self.damper.offer(key, route, now))

    def _actions(self, actions: Iterable[Send | Retract]) -> list[Effect]:
        out: list[Effect] = []
        for a in actions:
            if isinstance(a, Send):
                out.append(Advertise(a.route))
            else:
                out.append(Withdraw(a.key))
                self.damper.forget(a.key)
        return out

    def _recompute(self, services: Iterable[ServiceId]) -> list[Effect]:
        if not self.config.ingress:
            return []
        effects: list[Effect] = []
        for service in sorted(services):
            spec = self.spec_for(service)
            if spec is None:
                continue
            self.counters["recomputes"] += 1
            previous = self.table.get(service)
            candidates = self.rib.candidates(service)
            if not candidates and service not in self.config.services:
                if previous is not None:
                    del self.table[service]
                    effects.append(RemoveService(service))
                continue
            entry = decide(
                spec,
                candidates,
                self._policies[spec.policy],
                previous,
                self.config.policy.hysteresis,
            )
            if entry != previous:
                self.table[service] = entry
                effects.append(ProgramService(entry))
        return effects

    def _specs(self) -> list[ServiceSpec]:
        specs = list(self.config.services.values())
        if self.config.default_spec is not None:
            specs.append(self.config.default_spec)
        return specs
