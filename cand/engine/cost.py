"""Network cost per egress from raw samples: smoothing and hysteresis, on the caller's clock.

A cost source (the IGP metric, probes) reports raw samples in milliseconds, or None for "no
route": the egress cannot be reached. What the decision sees is one cost per egress that
moves only when it is worth moving a flow for:

- smoothing: `ewma` (a time-constant low-pass: the last sample holds until the next, so an
  event-driven source such as the IGP, which reports a level once, converges as surely as a
  probe stream does), `median` (of the samples of the last `window` seconds, the last one
  always counted) or `none`;
- hysteresis: the output changes only by at least `min_change`, and at most once per
  `min_interval` (a change that waits is sent when the interval ends); when the smoothed
  value is within `min_change` of a held input, the output lands on the input itself, so a
  level is reached exactly rather than approached forever;
- reachability is never smoothed: losing the route makes the egress unusable at once, and
  the first sample after that (or the first ever) is taken as it is.

Pure: no I/O, no clock of its own. `sample` and `due` return the outputs to apply;
`next_deadline` says when `due` next has something to do.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from cand.model import RouterId

Method = Literal["ewma", "median", "none"]

SAMPLES_KEPT = 8
"""Raw samples kept per egress for `cand routes` (the median window keeps its own)."""


@dataclass(frozen=True, slots=True)
class SmoothingParams:
    method: Method = "ewma"
    tau: float = 2.0
    """`ewma`: seconds for the output to cover 63 % of a step in the input."""
    window: float = 5.0
    """`median`: seconds of samples the median is taken over."""
    min_change: float = 1.0
    """The output moves only by at least this much (ms)."""
    min_interval: float = 1.0
    """Seconds between two changes of the output, at least."""


@dataclass(frozen=True, slots=True)
class CostOutput:
    """What the rib is told about one egress: a cost, or that it cannot be reached."""

    egress: RouterId
    cost: float | None
    reachable: bool = True


@dataclass(slots=True)
class _Track:
    source: str
    raw: float | None = None
    raw_at: float = 0.0
    smooth: float | None = None
    smooth_at: float = 0.0
    window: deque[tuple[float, float]] = field(default_factory=deque)
    out: float | None = None
    out_reachable: bool = True
    out_at: float | None = None
    samples: deque[tuple[float, float | None]] = field(
        default_factory=lambda: deque(maxlen=SAMPLES_KEPT)
    )


class CostSmoother:
    def __init__(self, params: SmoothingParams | None = None) -> None:
        self.params = params or SmoothingParams()
        self._tracks: dict[RouterId, _Track] = {}

    # --- public ----------------------------------------------------------------------------

    def sample(
        self, egress: RouterId, value: float | None, now: float, source: str
    ) -> list[CostOutput]:
        """One raw sample (ms; None: unreachable). Returns the output change, if any."""
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"cost sample for {egress}: {value!r} is not a finite cost >= 0")
        t = self._tracks.get(egress)
        if t is None:
            t = self._tracks[egress] = _Track(source)
        t.source = source
        t.samples.append((now, value))
        if value is None:
            t.raw, t.smooth = None, None
            t.window.clear()
            if t.out_at is not None and not t.out_reachable:
                return []
            t.out, t.out_reachable, t.out_at = None, False, now
            return [CostOutput(egress, None, reachable=False)]
        if t.raw is None:
            # first sample, or the first since the route came back: taken as it is
            t.raw, t.raw_at, t.smooth, t.smooth_at = value, now, value, now
            t.window.clear()
            t.window.append((now, value))
            t.out, t.out_reachable, t.out_at = value, True, now
            return [CostOutput(egress, value)]
        self._advance(t, now)
        t.raw, t.raw_at = value, now
        t.window.append((now, value))
        self._advance(t, now)
        return self._maybe_emit(egress, t, now)

    def forget(self, egress: RouterId) -> None:
        self._tracks.pop(egress, None)

    def due(self, now: float) -> list[CostOutput]:
        out: list[CostOutput] = []
        for egress in sorted(self._tracks):
            t = self._tracks[egress]
            if t.raw is None:
                continue
            self._advance(t, now)
            out += self._maybe_emit(egress, t, now)
        return out

    def next_deadline(self) -> float | None:
        times = [d for t in self._tracks.values() if (d := self._deadline(t)) is not None]
        return min(times, default=None)

    def cost(self, egress: RouterId) -> tuple[float | None, bool] | None:
        """The output in force (cost, reachable), None when nothing was ever sampled."""
        t = self._tracks.get(egress)
        if t is None or t.out_at is None:
            return None
        return t.out, t.out_reachable

    def status(self, egress: RouterId, now: float) -> dict[str, Any] | None:
        t = self._tracks.get(egress)
        if t is None:
            return None
        last = t.samples[-1][0] if t.samples else None
        return {
            "source": t.source,
            "cost": t.out,
            "reachable": t.out_reachable,
            "smoothed": None if t.smooth is None else round(t.smooth, 3),
            "age": None if last is None else round(now - last, 1),
            "samples": [{"age": round(now - at, 1), "value": v} for at, v in reversed(t.samples)],
        }

    def egresses(self) -> list[RouterId]:
        return sorted(self._tracks)

    # --- inside ----------------------------------------------------------------------------

    def _advance(self, t: _Track, now: float) -> None:
        """Bring the smoothed value up to `now`, the raw value having held since `raw_at`."""
        p = self.params
        if t.raw is None:
            return
        if p.method == "none":
            t.smooth = t.raw
        elif p.method == "ewma":
            assert t.smooth is not None
            dt = max(0.0, now - t.smooth_at)
            t.smooth = t.raw + (t.smooth - t.raw) * math.exp(-dt / p.tau)
            if abs(t.smooth - t.raw) <= self._snap():
                t.smooth = t.raw
        else:
            # the same sum as `_deadline`'s, so the sample leaves exactly when due
            while len(t.window) > 1 and t.window[0][0] + p.window <= now:
                t.window.popleft()
            t.smooth = statistics.median(v for _, v in t.window)
        t.smooth_at = now

    def _snap(self) -> float:
        # close enough to the input to be the input: converged, no more ticks wanted
        return max(self.params.min_change / 2, 1e-6)

    def _maybe_emit(self, egress: RouterId, t: _Track, now: float) -> list[CostOutput]:
        assert t.smooth is not None
        if not self._moves(t):
            return []
        if t.out_at is not None and now < t.out_at + self.params.min_interval:
            return []  # waits: `_deadline` brings it back when the interval ends
        value = t.smooth
        if (
            t.raw is not None
            and abs(value - t.raw) < self.params.min_change
            and (t.out is None or abs(t.raw - t.out) >= self.params.min_change)
        ):
            # nearly there: land on the input itself, so a held level is reached exactly
            # (and this step is still at least min_change)
            value = t.raw
        t.out, t.out_reachable, t.out_at = value, True, now
        return [CostOutput(egress, value)]

    def _moves(self, t: _Track) -> bool:
        """Whether the smoothed value is far enough from the output to change it."""
        assert t.smooth is not None
        if t.out is None:
            return True
        return t.smooth != t.out and abs(t.smooth - t.out) >= self.params.min_change

    def _deadline(self, t: _Track) -> float | None:
        p = self.params
        if t.raw is None or t.smooth is None:
            return None
        change_due = self._moves(t)
        earliest = (t.out_at + p.min_interval) if t.out_at is not None else t.smooth_at
        if change_due:
            return max(earliest, t.smooth_at)
        if p.method == "ewma" and t.smooth != t.raw:
            return max(earliest, t.smooth_at + p.tau / 2)
        if p.method == "median" and len(t.window) > 1:
            return max(earliest, t.window[0][0] + p.window)
        return None
