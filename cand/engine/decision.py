"""From candidates to a service entry: eligibility, integer weights, hysteresis.

Pure: the same candidates and previous entry always give the same entry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cand.engine.policy import Policy
from cand.engine.service_table import (
    WEIGHT_SCALE,
    Candidate,
    Choice,
    ServiceEntry,
    ServiceSpec,
)
from cand.model import InstanceKey, InstanceState


def quantize(scores: dict[InstanceKey, float]) -> dict[InstanceKey, int]:
    """Scores to integer weights summing to about WEIGHT_SCALE.

    Plain rounding of each share (not largest-remainder) keeps each weight a monotone function
    of its own score, which is what makes "more load never means more weight" hold.
    """
    clean = {k: (s if math.isfinite(s) and s > 0 else 0.0) for k, s in scores.items()}
    total = sum(clean.values())
    if total <= 0:
        return dict.fromkeys(scores, 0)
    weights = {k: math.floor(s / total * WEIGHT_SCALE + 0.5) for k, s in clean.items()}
    if not any(weights.values()):
        top = max(clean, key=lambda k: (clean[k], k))
        weights[top] = 1
    return weights


def decide(
    spec: ServiceSpec,
    candidates: Sequence[Candidate],
    policy: Policy,
    previous: ServiceEntry | None,
    hysteresis: float,
) -> ServiceEntry:
    """The entry for one service.

    Down instances are left out; draining ones, and those behind an egress the network cannot
    reach, stay with weight 0 so the data plane keeps the path their existing flows use (and
    a route that comes back after a moment has moved nothing). An up instance whose egress
    announced it with GRACEFUL_SHUTDOWN (RFC 8326: least preferred) is treated as draining
    while another up instance can take the new flows, and shares them as usual when none can.
    When the set of eligible instances is unchanged and no weight would move by more than
    `hysteresis` of the scale, the previous weights stand.
    """
    live = [c for c in candidates if c.route.state is not InstanceState.DOWN]
    up = [c for c in live if c.route.state is InstanceState.UP and c.reachable]
    up = [c for c in up if not c.route.graceful_shutdown] or up
    prev_weights = {c.key: c.weight for c in previous.choices} if previous is not None else {}
    weights = quantize(policy.scores(up, prev_weights)) if up else {}
    if previous is not None and _within(weights, prev_weights, hysteresis):
        weights = {k: prev_weights[k] for k in weights}
    choices = tuple(
        Choice(
            key=c.key,
            egress=c.route.egress,
            sid=c.route.sid,
            weight=weights.get(c.key, 0),
            state=c.route.state,
            load_permille=c.route.metrics.load_permille,
            l2=c.route.metrics.l2,
            network_cost=c.network_cost,
            local=c.local,
            reachable=c.reachable,
            l1=tuple(c.route.metrics.l1().items()),
        )
        for c in sorted(live, key=lambda c: c.key)
    )
    return ServiceEntry(spec=spec, choices=choices)


def _within(new: dict[InstanceKey, int], old: dict[InstanceKey, int], hysteresis: float) -> bool:
    new_set = {k for k, w in new.items() if w > 0}
    old_set = {k for k, w in old.items() if w > 0}
    if new_set != old_set or not new_set:
        return False
    if set(new) - set(old):
        return False
    limit = hysteresis * WEIGHT_SCALE
    return all(abs(new[k] - old.get(k, 0)) <= limit for k in new)
