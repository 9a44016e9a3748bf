"""Weighted new-flow selection on a target without member weights (BMv2): replication.

BMv2's action selector hashes the flow key over a group's members with equal probability, and
refuses any member weight but 1. A weight is therefore given as a number of copies of the
instance's member in its service's group. `replicate` turns the engine's integer weights into
those counts:

- a zero (or negative) weight gets no member: the instance takes no new flow; its bound flows
  keep their binding entries;
- the weights are first divided by their greatest common divisor; when the quotients add up
  to at most `budget` they are the counts, and the proportions are exact (3:1 is 3 and 1
  members, 500:500 is 1 and 1);
- otherwise the group gets `budget` members, shared by the largest-remainder method
  (Hamilton): each instance its quota's floor, the rest one by one to the largest fractional
  parts, ties to the earlier instance. An instance whose quota is under 1 still gets one
  member (every positive weight takes new flows), paid for by the instances most over their
  quota that have a member to spare; so when more instances than `budget` have a positive
  weight, each gets exactly one and the group has that many members.

Each count is then within one member of its exact quota whenever no instance needed the
one-member floor. A selector picks a member by hash, so the share of new flows each instance
sees also carries the hash's own unevenness (a few per cent for thousands of flows).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from fractions import Fraction
from math import floor, gcd
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

DEFAULT_BUDGET = 64
"""Members per service group unless `[dataplane.options] max_members` says otherwise."""


def replicate(weights: Sequence[tuple[K, int]], budget: int = DEFAULT_BUDGET) -> dict[K, int]:
    """key -> number of members, for the keys with a positive weight (in the order given)."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    seen: set[K] = set()
    positive: list[tuple[K, int]] = []
    for key, w in weights:
        if key in seen:
            raise ValueError(f"key {key!r} given twice")
        seen.add(key)
        if w > 0:
            positive.append((key, w))
    if not positive:
        return {}
    g = 0
    for _, w in positive:
        g = gcd(g, w)
    reduced = [(k, w // g) for k, w in positive]
    if sum(w for _, w in reduced) <= budget:
        return dict(reduced)
    if len(positive) >= budget:
        return {k: 1 for k, _ in positive}
    total = sum(w for _, w in reduced)
    quota = [Fraction(w * budget, total) for _, w in reduced]
    counts = [max(1, floor(q)) for q in quota]
    order = range(len(counts))
    while sum(counts) < budget:  # to the largest remainders, ties to the earlier
        i = max(order, key=lambda j: (quota[j] - counts[j], -j))
        counts[i] += 1
    while sum(counts) > budget:  # floors of 1 paid by the most over their quota
        spare = [j for j in order if counts[j] > 1]
        i = max(spare, key=lambda j: (counts[j] - quota[j], -j))
        counts[i] -= 1
    return {k: c for (k, _), c in zip(reduced, counts, strict=True)}
