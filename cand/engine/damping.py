"""Egress-side damping: when a local instance's change becomes a BGP update.

The Dyncast draft warns that metric churn can make the whole network fluctuate. Three rules
answer it:

- a change goes out at once only if it matters (state change, the load moved by at least
  `threshold` per-mille, the CATS L2 score crossed a band (0-3, 4-7, 8-10), capacity
  changed, or a reload scored the instance again: `offer(prompt=True)`) and the last update
  for that instance is at least `min_interval` old; otherwise it waits for that interval;
- whatever small drift accumulates goes out at least every `refresh_interval`;
- an instance that flaps (changes state often) collects a penalty that decays with
  `half_life`, as in RFC 2439 route-flap damping; above `suppress_above` it is withdrawn and
  held down until the penalty falls below `reuse_below`.

A withdrawal of a dead, unsuppressed instance is never delayed: sending new flows to a dead
instance costs more than one extra update.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from cand.model import InstanceKey, InstanceRoute, InstanceState
from cand.normalize import band


@dataclass(frozen=True, slots=True)
class DampingParams:
    threshold: int = 50
    min_interval: float = 1.0
    refresh_interval: float = 60.0
    penalty: float = 1000.0
    suppress_above: float = 3000.0
    reuse_below: float = 750.0
    half_life: float = 15.0

    def __post_init__(self) -> None:
        if self.reuse_below >= self.suppress_above:
            raise ValueError("damping: reuse_below must be lower than suppress_above")
        if self.half_life <= 0 or self.min_interval < 0 or self.refresh_interval <= 0:
            raise ValueError("damping: intervals must be positive")


@dataclass(frozen=True, slots=True)
class Send:
    """Announce this route now."""

    route: InstanceRoute


@dataclass(frozen=True, slots=True)
class Retract:
    """Withdraw this instance's path now."""

    key: InstanceKey


Action = Send | Retract


@dataclass(slots=True)
class _Track:
    current: InstanceRoute | None = None  # None: down / gone
    sent: InstanceRoute | None = None  # what peers believe; None: not advertised
    sent_at: float = -math.inf
    penalty: float = 0.0
    penalty_at: float = 0.0
    suppressed: bool = False
    prompt: bool = False  # `current` is owed after min_interval even if not significant

    def decayed(self, now: float, half_life: float) -> float:
        return float(self.penalty * 2.0 ** (-(now - self.penalty_at) / half_life))


class Damper:
    """Per-instance damping state, kept only while it matters: a track is dropped once its
    instance is gone, withdrawn and its penalty has decayed away. Deadlines sit in a heap,
    so a tick costs what it releases, not what is held (or was ever seen)."""

    def __init__(self, params: DampingParams) -> None:
        self.params = params
        self._tracks: dict[InstanceKey, _Track] = {}
        self._due: dict[InstanceKey, float] = {}  # each track's next deadline
        self._heap: list[tuple[float, InstanceKey]] = []  # may hold outdated entries
        self.suppressions = 0

    def __len__(self) -> int:
        return len(self._tracks)

    def offer(
        self, key: InstanceKey, route: InstanceRoute | None, now: float, prompt: bool = False
    ) -> list[Action]:
        """The instance is now `route` (None: down). Returns what to send right away.

        `prompt`: the change goes out as a significant one would (after `min_interval`),
        whatever its size; for changes the operator made (a reload), which are not churn."""
        t = self._tracks.setdefault(key, _Track())
        t.prompt = t.prompt or prompt
        if route is not None and route.state is InstanceState.DOWN:
            route = None
        before = _state(t.current)
        t.current = route
        if _state(route) != before and before is not None:
            self._add_penalty(t, now)
        return self._settle_and_schedule(key, t, now)

    def suppressed(self, key: InstanceKey) -> bool:
        t = self._tracks.get(key)
        return t is not None and t.suppressed

    def due(self, now: float) -> list[Action]:
        """Whatever the passing of time releases: held updates, refreshes, reuse after hold-down."""
        ready: list[InstanceKey] = []
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._due.get(key) == at:
                del self._due[key]
                ready.append(key)
        out: list[Action] = []
        for key in sorted(ready):
            t = self._tracks.get(key)
            if t is not None:
                out += self._settle_and_schedule(key, t, now)
        return out

    def next_deadline(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # outdated
        return self._heap[0][0] if self._heap else None

    def forget(self, key: InstanceKey) -> None:
        """Kept for callers; tracks now forget themselves once nothing is left to remember."""
        t = self._tracks.get(key)
        if t is not None and _idle(t):
            self._drop(key)

    # --- internals -------------------------------------------------------------------------

    def _settle_and_schedule(self, key: InstanceKey, t: _Track, now: float) -> list[Action]:
        actions = self._settle(key, t, now)
        if _idle(t):
            self._drop(key)
            return actions
        at = self._deadline(t)
        if at is None and t.current is None and t.sent is None:
            # gone and withdrawn: remember the penalty only until it has decayed away (to
            # half of the 1.0 that `_settle` rounds to zero, so that deadline always clears it)
            at = t.penalty_at + self.params.half_life * math.log2(max(t.penalty, 1.0) * 2)
        if at is None:
            self._due.pop(key, None)
        elif self._due.get(key) != at:
            self._due[key] = at
            heapq.heappush(self._heap, (at, key))
            if len(self._heap) > 2 * len(self._due) + 64:
                self._heap = [(d, k) for k, d in self._due.items()]
                heapq.heapify(self._heap)
        return actions

    def _drop(self, key: InstanceKey) -> None:
        del self._tracks[key]
        self._due.pop(key, None)

    def _add_penalty(self, t: _Track, now: float) -> None:
        p = self.params
        t.penalty = t.decayed(now, p.half_life) + p.penalty
        t.penalty_at = now
        if not t.suppressed and t.penalty > p.suppress_above:
            t.suppressed = True
            self.suppressions += 1

    def _settle(self, key: InstanceKey, t: _Track, now: float) -> list[Action]:
        p = self.params
        if t.suppressed and t.decayed(now, p.half_life) < p.reuse_below:
            t.suppressed = False
        if t.current is None:
            t.prompt = False
        if t.suppressed or t.current is None:
            if t.sent is not None:
                t.sent, t.sent_at = None, now
                return [Retract(key)]
            if t.current is None and t.decayed(now, p.half_life) < 1.0:
                t.penalty = 0.0
            return []
        cur, sent = t.current, t.sent
        if sent is None or cur.state != sent.state:
            urgent = True  # first announcement, or up <-> draining: peers must know now
        elif cur == sent:
            t.prompt = False
            return []
        elif t.prompt or _significant(cur, sent, p.threshold):
            # the same sum as _deadline's: `now - sent_at >= i` can be false at `sent_at + i`
            # by rounding, and a Tick at the deadline would then release nothing, forever
            urgent = now >= t.sent_at + p.min_interval
        else:
            urgent = now >= t.sent_at + p.refresh_interval
        if not urgent:
            return []
        t.sent, t.sent_at, t.prompt = cur, now, False
        return [Send(cur)]

    def _deadline(self, t: _Track) -> float | None:
        p = self.params
        if t.suppressed:
            # when the decayed penalty reaches reuse_below
            return t.penalty_at + p.half_life * math.log2(t.penalty / p.reuse_below)
        cur, sent = t.current, t.sent
        if cur is None or sent is None or cur == sent:
            return None
        if cur.state != sent.state:
            return t.sent_at
        if t.prompt or _significant(cur, sent, p.threshold):
            return t.sent_at + p.min_interval
        return t.sent_at + p.refresh_interval


def _idle(t: _Track) -> bool:
    """Nothing to remember: gone, withdrawn, not suppressed, no penalty left."""
    return t.current is None and t.sent is None and not t.suppressed and t.penalty == 0.0


def _state(route: InstanceRoute | None) -> InstanceState | None:
    return None if route is None else route.state


def _significant(cur: InstanceRoute, sent: InstanceRoute, threshold: int) -> bool:
    return (
        abs(cur.metrics.load_permille - sent.metrics.load_permille) >= threshold
        or band(cur.metrics.l2) != band(sent.metrics.l2)
        or cur.metrics.capacity != sent.metrics.capacity
        or cur.egress != sent.egress
        or cur.sid != sent.sid
    )
