"""One simulated run: requests steered by cand's engines on late reports, or by the oracle.

The cand side is the daemon's own pipeline without its I/O: each instance's D-MA report goes
to its egress router's `Engine` (which damps it into BGP advertisements), each advertisement
reaches every ingress router's `Engine` `staleness` seconds later as a `RouteLearned`, and the
ingress's `ProgramService` weights pick the instance of each new flow as the Linux data plane
does (`numgen random` over the integer weights). Every request is a new flow.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import math
import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bench.sim.core import EventQueue, FifoServer, Job
from bench.sim.world import Request, World
from cand.engine import (
    Advertise,
    CostChanged,
    CostSampled,
    DampingParams,
    Effect,
    Engine,
    EngineConfig,
    InstanceReported,
    ProgramService,
    RouteLearned,
    ServiceSpec,
    Tick,
)
from cand.engine.cost import SmoothingParams
from cand.engine.policy import Policy
from cand.model import BindingId, InstanceKey, InstanceState, Metrics, RouterId, ServiceId

SERVICE = ServiceId.parse("2001:db8:5::1")
DAMPING = DampingParams(threshold=10, min_interval=0.0)
"""Every report that moves the load by 10 per-mille (or the CATS L2 score across a band) goes
out at once: staleness is the only delay studied (the daemon's default `min_interval` of 1 s
would add up to a second of its own)."""
SESSION_WINDOW = 0.1
"""A D-MA's `max_sessions`: the requests its instance clears in this many seconds."""
WARMUP = 0.1
"""Share of the first requests left out of the figures (queues start empty)."""
MEAN_SIZE = 1.0
TICK_LATE = 1e-6


class Network(Protocol):
    """Delays between ingresses and egresses, possibly changing with time."""

    def one_way(self, ingress: str, egress: str, now: float) -> float:
        """Seconds a packet sent at `now` takes (jitter included, if the network has any)."""
        ...

    def mean_one_way(self, ingress: str, egress: str, now: float) -> float:
        """The delay a packet sent at `now` takes on average (what the oracle knows)."""
        ...


class StaticNetwork:
    """The world's shortest-path delays, for ever (the plain steering-quality run)."""

    def __init__(self, world: World) -> None:
        self.delays = world.one_way

    def one_way(self, ingress: str, egress: str, now: float) -> float:
        return self.delays[(ingress, egress)]

    def mean_one_way(self, ingress: str, egress: str, now: float) -> float:
        return self.delays[(ingress, egress)]


class Steering(Protocol):
    def choose(self, ingress: str, now: float) -> int | None:
        """The instance (index into world.instances) for a new flow; None: dropped."""
        ...


@dataclass
class Result:
    completions: list[float]
    assigned_work: list[float]
    span: float
    dropped: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def utilisation(self, rates: list[float]) -> list[float]:
        """Offered utilisation per instance: work sent to it over what it can do in the run
        (not capped at 1, so an overloaded instance shows by how much)."""
        return [w / (r * self.span) for w, r in zip(self.assigned_work, rates, strict=True)]


class Sim:
    """Servers, network delays and the event queue shared by both kinds of steering."""

    def __init__(self, world: World, net: Network | None = None) -> None:
        self.world = world
        self.net: Network = net or StaticNetwork(world)
        self.q = EventQueue()
        self.servers = [FifoServer(i.rate) for i in world.instances]
        self.inflight = [0.0] * len(self.servers)  # seconds of service on its way to each

    def run(self, requests: list[Request], steering: Steering) -> Result:
        world, q, net = self.world, self.q, self.net
        n_inst = len(self.servers)
        assigned = [0.0] * n_inst
        first_measured = int(len(requests) * WARMUP)
        completions: list[float] = []
        dropped = 0

        def finish(idx: int, t: float) -> None:
            job, nxt = self.servers[idx].complete(t)
            if nxt is not None:
                q.at(nxt, functools.partial(finish, idx))
            back = net.one_way(requests[job.id].ingress, world.instances[idx].egress, t)
            if job.id >= first_measured:
                completions.append(job.finished + back - requests[job.id].time)

        def reach(idx: int, job: Job, t: float) -> None:
            server = self.servers[idx]
            self.inflight[idx] -= job.size / server.rate
            done = server.arrive(job, t)
            if done is not None:
                q.at(done, functools.partial(finish, idx))

        def enter(n: int, t: float) -> None:
            nonlocal dropped
            if n + 1 < len(requests):
                q.at(requests[n + 1].time, functools.partial(enter, n + 1))
            r = requests[n]
            idx = steering.choose(r.ingress, t)
            if idx is None:
                dropped += 1
                return
            assigned[idx] += r.size
            self.inflight[idx] += r.size / self.servers[idx].rate
            delay = net.one_way(r.ingress, world.instances[idx].egress, t)
            q.at(t + delay, functools.partial(reach, idx, Job(r.id, r.size)))

        if requests:
            q.at(requests[0].time, functools.partial(enter, 0))
        q.run()
        span = requests[-1].time if requests else 0.0
        return Result(completions, assigned, span, dropped)


class Oracle:
    """Perfect, instant knowledge: the instance with the least expected completion, i.e.
    round trip + the work queued and in flight there (less what drains on the way) + a
    mean-size request's service. Greedy, so a yardstick rather than a true optimum."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def choose(self, ingress: str, now: float) -> int | None:
        w = self.sim.world
        best, best_cost = None, math.inf
        for idx, (inst, server) in enumerate(zip(w.instances, self.sim.servers, strict=True)):
            d = self.sim.net.mean_one_way(ingress, inst.egress, now)
            queued = server.backlog(now) + self.sim.inflight[idx]
            cost = 2 * d + max(0.0, queued - d) + MEAN_SIZE / inst.rate
            if cost < best_cost:
                best, best_cost = idx, cost
        return best


def _router(kind: int, n: int) -> RouterId:
    return RouterId.parse(f"fc00:{kind}::{n + 1}")


class CandSteering:
    """cand's engines at every router, fed by D-MA reports every `interval` seconds that
    reach the ingresses `staleness` seconds after they were made."""

    def __init__(
        self,
        sim: Sim,
        policy: str,
        policies: Mapping[str, type[Policy]],
        staleness: float,
        interval: float,
        seed: int,
        cost_source: str = "static",
        smoothing: SmoothingParams | None = None,
    ) -> None:
        """`cost_source` "static": every ingress is told the world's round trip to each egress
        once, at 0, as an operator's `network_cost.static` would; any other source: nothing,
        the cost comes from `CostSampled` events (see `bench.sim.netcost`), through each
        ingress engine's own smoothing (`smoothing`, the daemon's defaults if None)."""
        self.sim, self.staleness, self.interval = sim, staleness, interval
        self.rng = random.Random(seed)
        w = sim.world
        spec = ServiceSpec(SERVICE, policy=policy)
        self.keys = [
            InstanceKey(SERVICE, BindingId.parse(f"2001:db8:b::{n + 1}"))
            for n in range(len(w.instances))
        ]
        self.index = {k.binding: n for n, k in enumerate(self.keys)}
        self.egress = {
            e: Engine(
                EngineConfig(
                    router=_router(2, n),
                    ingress=False,
                    locator=ipaddress.IPv6Network(f"fc00:{0x100 + n:x}::/48"),
                    services={SERVICE: spec},
                    damping=DAMPING,
                ),
                policies,
            )
            for n, e in enumerate(w.egresses)
        }
        self.egress_id = {e: _router(2, n) for n, e in enumerate(w.egresses)}
        self.ingress = {
            i: Engine(
                EngineConfig(
                    router=_router(1, n),
                    egress=False,
                    services={SERVICE: spec},
                    cost_source=cost_source,
                    cost_smoothing=smoothing or SmoothingParams(),
                ),
                policies,
            )
            for n, i in enumerate(w.ingresses)
        }
        self.ingress_id = {i: _router(1, n) for n, i in enumerate(w.ingresses)}
        self.tables: dict[str, tuple[list[int], list[int]]] = {i: ([], []) for i in w.ingresses}
        self.counters = {"reports": 0, "advertisements": 0, "programmed": 0}
        self._seq = [0] * len(w.instances)
        self._busy = [0.0] * len(w.instances)
        self._last = [0.0] * len(w.instances)
        self._tick_at: dict[str, float] = {}
        self._ingress_tick_at: dict[str, float] = {}
        for i, eng in self.ingress.items():
            self._apply(i, eng.start())
            if cost_source == "static":
                costs = [CostChanged(self.egress_id[e], w.rtt(i, e) * 1000) for e in w.egresses]
                self._apply(i, eng.handle_many(costs, 0.0))

    def start(self, until: float) -> None:
        """Every instance reports at 0 (delivered at once: the network was running before),
        then every `interval`, each with its own phase, until `until`."""
        q = self.sim.q
        for idx in range(len(self.keys)):
            for route in self._report(idx, 0.0):
                self._deliver(route, 0.0)
            phase = self.rng.uniform(0.0, self.interval)
            q.at(phase, functools.partial(self._periodic, idx, until=until))

    def choose(self, ingress: str, now: float) -> int | None:
        cum, slots = self.tables[ingress]
        if not cum:
            return None
        return slots[bisect.bisect_right(cum, self.rng.randrange(cum[-1]))]

    # --- reports and routes ----------------------------------------------------------------

    def _periodic(self, idx: int, t: float, *, until: float) -> None:
        for route in self._report(idx, t):
            if self.staleness > 0:
                self.sim.q.at(t + self.staleness, functools.partial(self._deliver, route))
            else:
                self._deliver(route, t)
        if t + self.interval <= until:
            self.sim.q.at(t + self.interval, functools.partial(self._periodic, idx, until=until))

    def _report(self, idx: int, t: float) -> list[RouteLearned]:
        """What the instance's D-MA says (busy share since its last report, sessions against
        what it clears in SESSION_WINDOW), through its egress engine; the routes it sends."""
        server = self.sim.servers[idx]
        inst = self.sim.world.instances[idx]
        busy = server.busy_time(t)
        cpu = (busy - self._busy[idx]) / (t - self._last[idx]) if t > self._last[idx] else 0.0
        self._busy[idx], self._last[idx] = busy, t
        self._seq[idx] += 1
        metrics = Metrics(
            cpu=min(1.0, max(0.0, cpu)),
            sessions=server.in_system(),
            max_sessions=max(1, math.ceil(inst.rate * SESSION_WINDOW)),
            capacity=round(inst.rate),
        )
        self.counters["reports"] += 1
        ev = InstanceReported(self.keys[idx], InstanceState.UP, metrics, self._seq[idx])
        egress = self.egress[inst.egress]
        out = self._routes(inst.egress, egress.handle(ev, t))
        self._schedule_tick(inst.egress, t)
        return out

    def _routes(self, egress: str, effects: list[Effect]) -> list[RouteLearned]:
        peer = str(self.egress_id[egress])
        out = [RouteLearned(peer, e.route) for e in effects if isinstance(e, Advertise)]
        self.counters["advertisements"] += len(out)
        return out

    def _schedule_tick(self, egress: str, now: float) -> None:
        """The damper's deadlines (refreshes of held drift) become Ticks, as in the daemon.

        A tick lands TICK_LATE after the deadline: the damper tests `now - sent_at >= interval`
        against a deadline of `sent_at + interval`, which rounding can leave unmet at exactly
        the deadline, and a clock that does not move would then tick there for ever (the
        daemon's real clock always moves on)."""
        d = self.egress[egress].next_deadline()
        if d is None or self._tick_at.get(egress) == d:
            return
        self._tick_at[egress] = d
        self.sim.q.at(max(d + TICK_LATE, now), functools.partial(self._tick, egress))

    def _tick(self, egress: str, t: float) -> None:
        self._tick_at.pop(egress, None)
        for route in self._routes(egress, self.egress[egress].handle(Tick(), t)):
            self.sim.q.at(t + self.staleness, functools.partial(self._deliver, route))
        self._schedule_tick(egress, t)

    def sample_cost(self, ingress: str, samples: list[CostSampled], now: float) -> None:
        """Cost samples (from a cost source at `ingress`) into its engine, whose smoothing
        may want Ticks later: they are scheduled as the daemon's loop would."""
        self._apply(ingress, self.ingress[ingress].handle_many(samples, now))
        self._schedule_ingress_tick(ingress, now)

    def _schedule_ingress_tick(self, ingress: str, now: float) -> None:
        d = self.ingress[ingress].next_deadline()
        if d is None or self._ingress_tick_at.get(ingress) == d:
            return
        self._ingress_tick_at[ingress] = d
        self.sim.q.at(max(d + TICK_LATE, now), functools.partial(self._ingress_tick, ingress))

    def _ingress_tick(self, ingress: str, t: float) -> None:
        if self._ingress_tick_at.get(ingress) is None:
            return
        self._ingress_tick_at.pop(ingress, None)
        self._apply(ingress, self.ingress[ingress].handle(Tick(), t))
        self._schedule_ingress_tick(ingress, t)

    def _deliver(self, route: RouteLearned, t: float) -> None:
        for name, eng in self.ingress.items():
            self._apply(name, eng.handle(route, t))

    def _apply(self, ingress: str, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, ProgramService):
                self.counters["programmed"] += 1
                cum: list[int] = []
                slots: list[int] = []
                for c in e.entry.eligible:
                    cum.append((cum[-1] if cum else 0) + c.weight)
                    slots.append(self.index[c.binding])
                self.tables[ingress] = (cum, slots)


def run_policy(
    world: World,
    reqs: list[Request],
    policy: str,
    policies: Mapping[str, type[Policy]],
    staleness: float,
    interval: float,
    seed: int,
) -> Result:
    sim = Sim(world)
    steering = CandSteering(sim, policy, policies, staleness, interval, seed)
    steering.start(until=reqs[-1].time if reqs else 0.0)
    res = sim.run(reqs, steering)
    res.counters = dict(steering.counters)
    return res


def run_oracle(world: World, reqs: list[Request]) -> Result:
    sim = Sim(world)
    return sim.run(reqs, Oracle(sim))


def imbalance(util: list[float]) -> tuple[float, float]:
    """(max / mean, coefficient of variation) of per-instance utilisation."""
    mean = statistics.fmean(util)
    return max(util) / mean, statistics.pstdev(util) / mean
