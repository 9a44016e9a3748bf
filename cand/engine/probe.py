"""Delay probes towards egresses: when to send, what came back, what it says. Pure.

`ProbeBook` is the `probe` cost source's bookkeeping, on the caller's clock:

- **when**: each egress is probed `rate` times a second, each send time moved by up to
  `jitter` of the interval either way (so probes of many ingresses do not fall into step);
  when the egresses together would exceed `max_total_rate`, every interval is stretched to
  fit, and a token bucket of that rate holds the total under it whatever the jitter does;
- **what came back**: a probe is answered (its RTT, measured by the adapter from kernel
  timestamps) or lost (no answer within `timeout`); a reply that is late, duplicated or
  unknown is counted and ignored;
- **what it says**: over the results of the last `window` seconds, per egress: RTT
  percentiles (p50, p90, p99), jitter (the mean difference between consecutive RTTs) and the
  loss fraction. The sample handed to the engine is the configured RTT percentile plus
  `loss_penalty` ms times the loss fraction; once at least `min_probes` results are in the
  window and the loss fraction reaches `unusable_loss`, the sample is None: unusable.

Samples go out at most every `report_interval` per egress, and at once when the egress
becomes unusable or usable again. Smoothing and hysteresis are the engine's
(`cand.engine.cost`), not this module's.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cand.model import RouterId


@dataclass(frozen=True, slots=True)
class ProbeParams:
    rate: float = 5.0
    """Probes a second to each egress."""
    jitter: float = 0.2
    """Each send time moves by up to this fraction of the interval, either way."""
    max_total_rate: float = 200.0
    """Probes a second to all egresses together, at most."""
    timeout: float = 1.0
    """Seconds after which an unanswered probe counts as lost."""
    window: float = 5.0
    """Seconds of results the statistics are taken over."""
    percentile: float = 50.0
    """The RTT percentile that is the cost."""
    loss_penalty: float = 100.0
    """Milliseconds added to the cost at 100 % loss (in proportion below)."""
    unusable_loss: float = 0.5
    """At this loss fraction (or above) the egress is unusable."""
    min_probes: int = 3
    """Results needed in the window before loss may make an egress unusable."""
    report_interval: float = 0.5
    """Seconds between two samples of one egress, at least (usability changes go at once)."""


_EPS = 1e-9
"""Float slack: a token due at `ready_at` is there at `ready_at`."""


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; on the caller's clock."""

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, now

    def _fill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def take(self, now: float) -> bool:
        self._fill(now)
        if self.tokens >= 1 - _EPS:
            self.tokens = max(0.0, self.tokens - 1)
            return True
        return False

    def ready_at(self, now: float) -> float:
        """When the next token is there."""
        self._fill(now)
        return now if self.tokens >= 1 - _EPS else self.at + (1 - self.tokens) / self.rate


@dataclass(slots=True)
class _Egress:
    next_send: float
    seq: int = 0
    outstanding: dict[int, float] = field(default_factory=dict)
    """seq -> when it counts as lost."""
    results: deque[tuple[float, int, float | None]] = field(default_factory=deque)
    """(when resolved, seq, RTT in ms or None for lost), oldest first."""
    sent: int = 0
    received: int = 0
    lost: int = 0
    ignored: int = 0
    last_report: float | None = None
    usable: bool | None = None
    last_value: float | None = None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class ProbeBook:
    def __init__(self, params: ProbeParams, rng: random.Random | None = None) -> None:
        self.params = params
        self.rng = rng or random.Random()
        self._egresses: dict[RouterId, _Egress] = {}
        self.total = TokenBucket(params.max_total_rate, max(1.0, params.max_total_rate / 10))
        self.counters = {"sent": 0, "replies": 0, "lost": 0, "ignored": 0, "held_by_cap": 0}

    # --- targets and sending ---------------------------------------------------------------

    def interval(self) -> float:
        p = self.params
        n = max(1, len(self._egresses))
        return max(1.0 / p.rate, n / p.max_total_rate)

    def _next(self, now: float) -> float:
        j = self.params.jitter
        return now + self.interval() * (1 + j * self.rng.uniform(-1.0, 1.0))

    def set_targets(self, egresses: Iterable[RouterId], now: float) -> None:
        """Probe exactly these from now on; a new one starts at a random point of one
        interval, so a set learned at once is not probed in one burst."""
        wanted = set(egresses)
        for gone in set(self._egresses) - wanted:
            del self._egresses[gone]
        added = sorted(wanted - set(self._egresses))
        for new in added:
            self._egresses[new] = _Egress(next_send=now)
        for new in added:  # the interval for the new number of egresses
            self._egresses[new].next_send = now + self.interval() * self.rng.random()

    def targets(self) -> list[RouterId]:
        return sorted(self._egresses)

    def due_sends(self, now: float) -> list[tuple[RouterId, int]]:
        """The probes to send now, (egress, seq) each; the book counts them as outstanding."""
        out: list[tuple[RouterId, int]] = []
        for egress in sorted(self._egresses, key=lambda r: self._egresses[r].next_send):
            e = self._egresses[egress]
            if e.next_send > now:
                break
            if not self.total.take(now):
                self.counters["held_by_cap"] += 1
                e.next_send = self.total.ready_at(now)
                continue
            e.seq = (e.seq + 1) & 0xFFFFFFFF
            e.outstanding[e.seq] = now + self.params.timeout
            e.sent += 1
            self.counters["sent"] += 1
            e.next_send = self._next(now)
            out.append((egress, e.seq))
        return out

    def unsent(self, egress: RouterId, seq: int) -> None:
        """The adapter could not send it (a socket error): not a loss, forget it."""
        e = self._egresses.get(egress)
        if e is not None and e.outstanding.pop(seq, None) is not None:
            e.sent -= 1
            self.counters["sent"] -= 1

    # --- results ---------------------------------------------------------------------------

    def reply(self, egress: RouterId, seq: int, rtt_ms: float, now: float) -> bool:
        """An answer; False (and counted) when it answers nothing outstanding."""
        e = self._egresses.get(egress)
        if (
            e is None
            or e.outstanding.pop(seq, None) is None
            or not (math.isfinite(rtt_ms) and rtt_ms >= 0)
        ):
            self.counters["ignored"] += 1
            if e is not None:
                e.ignored += 1
            return False
        e.received += 1
        self.counters["replies"] += 1
        e.results.append((now, seq, rtt_ms))
        return True

    def expire(self, now: float) -> None:
        for e in self._egresses.values():
            for seq in [s for s, due in e.outstanding.items() if due <= now]:
                del e.outstanding[seq]
                e.lost += 1
                self.counters["lost"] += 1
                e.results.append((now, seq, None))

    def _trim(self, e: _Egress, now: float) -> None:
        # the same sum as `next_deadline`'s, so a result leaves exactly when due
        while e.results and e.results[0][0] + self.params.window <= now:
            e.results.popleft()

    # --- what it says ----------------------------------------------------------------------

    def stats(self, egress: RouterId, now: float) -> dict[str, Any] | None:
        e = self._egresses.get(egress)
        if e is None:
            return None
        self._trim(e, now)
        rtts = [r for _, _, r in e.results if r is not None]
        n = len(e.results)
        loss = (n - len(rtts)) / n if n else 0.0
        jitter = (
            sum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (len(rtts) - 1)
            if len(rtts) > 1
            else None
        )

        def pct(p: float) -> float | None:
            return round(percentile(rtts, p), 3) if rtts else None

        return {
            "results": n,
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "jitter": None if jitter is None else round(jitter, 3),
            "loss": round(loss, 3),
            "sent": e.sent,
            "received": e.received,
            "lost": e.lost,
            "ignored": e.ignored,
            "outstanding": len(e.outstanding),
            "usable": e.usable,
            "last_rtt": next((r for _, _, r in reversed(e.results) if r is not None), None),
        }

    def _value(self, e: _Egress, now: float) -> tuple[bool, float | None] | None:
        """(usable, cost) from the window; None when there is nothing to say yet."""
        p = self.params
        self._trim(e, now)
        n = len(e.results)
        if n == 0:
            return None
        rtts = [r for _, _, r in e.results if r is not None]
        loss = (n - len(rtts)) / n
        if n >= p.min_probes and loss >= p.unusable_loss:
            return False, None
        if not rtts:
            return None  # only losses, too few yet to judge
        return True, percentile(rtts, p.percentile) + p.loss_penalty * loss

    def reports(self, now: float) -> list[tuple[RouterId, float | None]]:
        """The samples to hand to the engine now: (egress, ms or None for unusable)."""
        out: list[tuple[RouterId, float | None]] = []
        for egress in sorted(self._egresses):
            e = self._egresses[egress]
            got = self._value(e, now)
            if got is None:
                if e.last_report is not None:
                    e.last_report = now  # nothing to say: looked at again an interval later
                continue
            usable, value = got
            changed = usable != e.usable
            if not changed and e.last_report is not None:
                if now < e.last_report + self.params.report_interval:
                    continue
                if not usable:
                    e.last_report = now  # still unusable: said once, looked at again later
                    continue
            e.usable, e.last_value, e.last_report = usable, value, now
            out.append((egress, value))
        return out

    def next_deadline(self) -> float | None:
        times: list[float] = []
        for e in self._egresses.values():
            times.append(e.next_send)
            times += e.outstanding.values()
            if e.results and e.last_report is not None:
                times.append(e.last_report + self.params.report_interval)
            if e.results:
                times.append(e.results[0][0] + self.params.window)
        return min(times, default=None)
