"""Decision policies: how new flows of one service are shared among its instances.

A policy scores the instances that may take new flows; `decision.decide` turns scores into
integer weights and applies hysteresis. Policies are plugins (entry point group
`cand.policies`): a class with a `name` and a `scores` method, built from `PolicyParams`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from cand.engine.service_table import Candidate
from cand.model import InstanceKey


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """Knobs shared by the built-in policies (the `[decision]` config table)."""

    cost_scale: float = 100.0
    """Network cost (ms) at which an instance is worth half as much to `weighted`. Set it to
    about the service's completion time under load: a millisecond of round trip is only
    worth moving a flow for against the queueing it causes where the flow goes. 10 ms, the
    old default, made a 40 ms reroute of the biggest egress cut its worth to a quarter and
    pushed flows onto small instances whose queues cost more (bench/README, network cost)."""
    network_weight: float = 10.0
    """Per-mille of load that one ms of network cost is worth to `min-cost`. Lowering it to 1
    stopped a 40 ms reroute of the biggest egress from herding flows onto small instances
    (probe-cost p99 12x -> 1.03x of static) but costs 10-40 % p99 with stale reports, where
    the network spread is what keeps ingresses from all picking the same instance
    (bench/README, network cost): kept at 10, and `min-cost` skips saturated instances
    instead (1.07x at 10); `weighted` is the policy to use."""
    overload: float = 0.95
    """Load from which `weighted` gives an instance no new flow while a sibling has room, and
    from which `min-cost` neither picks an instance nor keeps it as the incumbent."""
    hysteresis: float = 0.05
    """Share of all new flows a weight must move by before the data plane is changed."""


class Policy(Protocol):
    name: ClassVar[str]

    def __init__(self, params: PolicyParams) -> None: ...

    def scores(
        self, candidates: Sequence[Candidate], previous: Mapping[InstanceKey, int]
    ) -> dict[InstanceKey, float]:
        """Non-negative score per candidate (all of them `up`); shares are score / sum.
        `previous` holds the weights in force, for policies that want an incumbent bonus."""
        ...


class Weighted:
    """Share new flows in proportion to spare capacity, discounted by network cost.

    Proportional shares rather than a single best keep working when metrics are stale: a
    burst of new flows between two reports spreads over every instance with room instead of
    herding onto the one that looked idlest (the failure mode of `min-cost`).
    """

    name: ClassVar[str] = "weighted"

    def __init__(self, params: PolicyParams) -> None:
        self.params = params

    def scores(
        self, candidates: Sequence[Candidate], previous: Mapping[InstanceKey, int]
    ) -> dict[InstanceKey, float]:
        p = self.params
        roomy = [c for c in candidates if c.route.metrics.load < p.overload]
        out: dict[InstanceKey, float] = {}
        for c in candidates:
            m = c.route.metrics
            reach = 1.0 / (1.0 + max(c.network_cost, 0.0) / p.cost_scale)
            if roomy:
                out[c.key] = m.spare * reach if m.load < p.overload else 0.0
            else:
                # Everyone is overloaded: still serve, least loaded first.
                out[c.key] = m.capacity * max(1.0 - m.load, 0.001) * reach
        return out


class MinCost:
    """The Dyncast draft's single best: lowest compute cost (the load in per-mille) plus
    weighted network cost.

    The incumbent keeps the service until a challenger is cheaper by more than the hysteresis
    margin, so two near-equal instances do not swap on every report.

    Only instances below `overload` are ranked, and a saturated incumbent gets no bonus:
    ranking every instance kept sending new flows to one that was already full whenever its
    network cost was low enough (at `network_weight` 10, 40 ms outweigh 40 % of load), and
    the bonus kept it there (`bench.steer_netcost`, probe cost: p99 19.8 s). When every
    candidate is saturated the one with the most capacity left wins, as in `weighted`'s
    fallback: the least loaded in per-mille may be a small instance with almost no room.
    """

    name: ClassVar[str] = "min-cost"

    def __init__(self, params: PolicyParams) -> None:
        self.params = params

    def cost(self, c: Candidate) -> float:
        return c.route.metrics.load_permille + self.params.network_weight * max(c.network_cost, 0.0)

    def scores(
        self, candidates: Sequence[Candidate], previous: Mapping[InstanceKey, int]
    ) -> dict[InstanceKey, float]:
        if not candidates:
            return {}
        overload = self.params.overload
        roomy = [c for c in candidates if c.route.metrics.load < overload]
        if roomy:
            best = min(roomy, key=lambda c: (self.cost(c), c.key))
            incumbents = [c for c in candidates if previous.get(c.key, 0) > 0]
            # only a roomy incumbent is worth keeping; a saturated one is what flows leave
            if len(incumbents) == 1 and incumbents[0].route.metrics.load < overload:
                margin = self.params.hysteresis * 1000
                if self.cost(incumbents[0]) <= self.cost(best) + margin:
                    best = incumbents[0]
        else:
            # Everyone is saturated: still serve, where the most capacity is left.
            best = min(candidates, key=lambda c: (-_left(c), self.cost(c), c.key))
        return {c.key: 1.0 if c.key == best.key else 0.0 for c in candidates}


def _left(c: Candidate) -> float:
    """Capacity left, floored so that fully loaded instances still rank by capacity."""
    m = c.route.metrics
    return m.capacity * max(1.0 - m.load, 0.001)


class Nearest:
    """Plain anycast: the instances behind the lowest network cost, equally (ECMP)."""

    name: ClassVar[str] = "nearest"

    def __init__(self, params: PolicyParams) -> None:
        self.params = params

    def scores(
        self, candidates: Sequence[Candidate], previous: Mapping[InstanceKey, int]
    ) -> dict[InstanceKey, float]:
        if not candidates:
            return {}
        low = min(c.network_cost for c in candidates)
        return {c.key: 1.0 if c.network_cost == low else 0.0 for c in candidates}


class Random:
    """Every up instance equally likely, load ignored: the baseline any policy must beat."""

    name: ClassVar[str] = "random"

    def __init__(self, params: PolicyParams) -> None:
        self.params = params

    def scores(
        self, candidates: Sequence[Candidate], previous: Mapping[InstanceKey, int]
    ) -> dict[InstanceKey, float]:
        return {c.key: 1.0 for c in candidates}


BUILTIN: dict[str, type[Policy]] = {cls.name: cls for cls in (Weighted, MinCost, Nearest, Random)}
