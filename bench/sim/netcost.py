"""Network cost that follows the network: changing delays, and probes that measure them.

`DynamicNetwork` is the world's shortest-path delays plus changes on an egress's path (a step:
a reroute onto a longer path; a drift: a link that slowly fills up) and per-packet jitter.
`Prober` runs the daemon's `probe` cost source without its sockets: one `ProbeBook` per
ingress (cand's own schedule, rate cap, timeouts and window statistics) whose probes cross the
simulated network (lost with a given probability, delayed by what the network says at that
moment), and whose samples go to the ingress `Engine` as `CostSampled`, smoothed there by the
engine's own `CostSmoother`, exactly as in the daemon.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bench.sim.steer import CandSteering
from bench.sim.world import World
from cand.engine import CostSampled
from cand.engine.probe import ProbeBook, ProbeParams
from cand.model import RouterId

SOURCE = "probe"


@dataclass(frozen=True, slots=True)
class Change:
    """Extra one-way delay on every path to `egress`: `ms` from `start` on (a step), or
    growing linearly from 0 at `start` to `ms` at `end` and held there (a drift)."""

    egress: str
    kind: Literal["step", "drift"]
    ms: float
    start: float
    end: float = 0.0

    def extra(self, now: float) -> float:
        """Seconds added at `now`."""
        if now < self.start:
            return 0.0
        if self.kind == "step" or now >= self.end:
            return self.ms / 1000
        return self.ms / 1000 * (now - self.start) / (self.end - self.start)


class DynamicNetwork:
    """Delays that change with time, with exponential per-packet jitter of mean `jitter_ms`.

    Requests and probes draw their jitter from separate generators, so probing does not shift
    the requests' dice (and every policy's requests see the same network, draw for draw, as
    far as they go the same way)."""

    def __init__(
        self, world: World, changes: Sequence[Change], jitter_ms: float, seed: int
    ) -> None:
        self.base = world.one_way
        self.changes = tuple(changes)
        self.jitter = jitter_ms / 1000
        self._rng = random.Random(seed)
        self.probe_rng = random.Random(seed + 1)

    def mean_one_way(self, ingress: str, egress: str, now: float) -> float:
        d = self.base[(ingress, egress)]
        for c in self.changes:
            if c.egress == egress:
                d += c.extra(now)
        return d + self.jitter

    def _sample(self, ingress: str, egress: str, now: float, rng: random.Random) -> float:
        d = self.mean_one_way(ingress, egress, now) - self.jitter
        return d + (rng.expovariate(1 / self.jitter) if self.jitter > 0 else 0.0)

    def one_way(self, ingress: str, egress: str, now: float) -> float:
        return self._sample(ingress, egress, now, self._rng)

    def probe_one_way(self, ingress: str, egress: str, now: float) -> float:
        return self._sample(ingress, egress, now, self.probe_rng)


class Prober:
    """Every ingress probes every egress with cand's `ProbeBook`, from 0 to `until`."""

    def __init__(
        self,
        steering: CandSteering,
        net: DynamicNetwork,
        params: ProbeParams,
        loss: float,
        seed: int,
    ) -> None:
        self.steering, self.net, self.loss = steering, net, loss
        self.q = steering.sim.q
        self.books = {
            i: ProbeBook(params, random.Random(seed + n)) for n, i in enumerate(steering.ingress)
        }
        self.loss_rng = random.Random(seed + 1000)
        self.names: dict[RouterId, str] = {rid: e for e, rid in steering.egress_id.items()}
        self._wake_at: dict[str, float] = {}
        self.until = 0.0
        self.counters = {"probes": 0, "probes_lost": 0, "samples": 0}

    def start(self, until: float) -> None:
        self.until = until
        for ingress, book in self.books.items():
            book.set_targets(self.names, 0.0)
            self._wake(ingress, 0.0)

    def _wake(self, ingress: str, t: float) -> None:
        """What the adapter's loop does when it wakes: expire, send what is due, hand the
        samples to the engine, sleep until the book's next deadline."""
        if self._wake_at.get(ingress) == t:
            del self._wake_at[ingress]
        book = self.books[ingress]
        book.expire(t)
        if t <= self.until:
            for egress, seq in book.due_sends(t):
                self.counters["probes"] += 1
                if self.loss_rng.random() < self.loss:
                    self.counters["probes_lost"] += 1
                    continue  # no answer: the book's timeout counts it lost
                name = self.names[egress]
                there = self.net.probe_one_way(ingress, name, t)
                rtt = there + self.net.probe_one_way(ingress, name, t + there)
                self.q.at(t + rtt, functools.partial(self._reply, ingress, egress, seq, rtt))
        samples = [CostSampled(e, SOURCE, v) for e, v in book.reports(t)]
        if samples:
            self.counters["samples"] += len(samples)
            self.steering.sample_cost(ingress, samples, t)
        d = book.next_deadline()
        if d is None or d > self.until or self._wake_at.get(ingress) == d:
            return
        self._wake_at[ingress] = max(d, t)
        self.q.at(max(d, t), functools.partial(self._wake, ingress))

    def _reply(self, ingress: str, egress: RouterId, seq: int, rtt: float, t: float) -> None:
        self.books[ingress].reply(egress, seq, rtt * 1000, t)
        self._wake(ingress, t)


class CostTrace:
    """What one ingress's rib holds as the cost of each egress, and the true mean round trip,
    every `every` seconds (for the plot)."""

    def __init__(
        self, steering: CandSteering, net: DynamicNetwork, ingress: str, every: float = 0.5
    ) -> None:
        self.steering, self.net, self.ingress, self.every = steering, net, ingress, every
        self.times: list[float] = []
        self.cost: dict[str, list[float | None]] = {e: [] for e in steering.egress_id}
        self.true_rtt: dict[str, list[float]] = {e: [] for e in steering.egress_id}

    def start(self, until: float) -> None:
        self.until = until
        self.steering.sim.q.at(0.0, self._take)

    def _take(self, t: float) -> None:
        rib = self.steering.ingress[self.ingress].rib
        self.times.append(t)
        for e, rid in self.steering.egress_id.items():
            c = rib.costs.get(rid)
            self.cost[e].append(None if c is None or rid in rib.unreachable else c)
            self.true_rtt[e].append(2 * self.net.mean_one_way(self.ingress, e, t) * 1000)
        if t + self.every <= self.until:
            self.steering.sim.q.at(t + self.every, self._take)
