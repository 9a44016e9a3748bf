"""CATS metric levels: from raw L0 values to L1 category scores and the one L2 score.

The CATS working group's metric document (draft-ietf-cats-metric-definition) describes three
levels: L0 are raw measurements with units, L1 are normalized scores per category (computing,
communication, service, composed), and L2 is a single normalized score per service contact
instance. Scores are unsigned integers 0..10 and **higher is better**: 0-3 means "do not steer
here", 4-7 medium, 8-10 preferred.

cand's L0 values are all "lower is better" (utilisation, fill, delay). Each one is mapped onto
a position `t` in 0..1 between a configurable `best` and `worst` bound (min-max, the default,
or logarithmic for values spanning orders of magnitude), clamped, so `t = 0` at or below
`best` and `t = 1` at or above `worst`. A category's position is the highest of its members'
(a category is as busy as its scarcest member), its L1 score `round(10 * (1 - t))`. The L2
score is composed from the known categories: `min` (default: the worst category decides) or
`mean` (a weighted mean of the unrounded category scores). An instance with nothing known is
idle: every score 10.

Categories and their L0 members:

- computing: cpu, gpu, memory (utilisation, 0..1);
- communication: nothing an instance reports to cand (the ingress measures network cost
  itself); only an instance that computes its own L1 fills it in;
- service: sessions / max_sessions, queue / max_queue (fill, 0..1), delay (milliseconds);
- composed: nothing an instance reports to cand either. A composed metric spans categories
  (an end-to-end figure such as compute plus network delay) that only the instance, or a
  system beside it, can put together: it is an L1 score the instance supplies, never derived
  here.

The L2 composition runs over the categories scored from L0, so over computing and service
only: an instance that supplies L1 scores (composed among them) supplies its L2 beside them,
and that L2 is used as given, never recomposed. Weights for communication and composed are
accepted, under the draft's names, and have no effect.

Every function here is pure and total on valid `Metrics`; the properties tested are range
(0..10), direction (an idle instance scores 10, a saturated one 0) and monotonicity (more load
never raises a score).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cand.model import Metrics

SCORE_MAX = 10
DO_NOT_STEER_MAX = 3
"""Scores 0..3: the draft's "do not steer here"; 4..7 medium; 8..10 preferred."""
PREFERRED_MIN = 8

CATEGORIES = ("computing", "communication", "service", "composed")
MEMBERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "computing": ("cpu", "gpu", "memory"),
        "communication": (),
        "service": ("sessions", "queue", "delay"),
        "composed": (),
    }
)
L0_NAMES = ("cpu", "gpu", "memory", "sessions", "queue", "delay")
"""The L0 values normalization reads (`sessions` and `queue` as fills of their limits)."""

DEFAULT_BOUNDS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "cpu": (0.0, 1.0),
        "gpu": (0.0, 1.0),
        "memory": (0.0, 1.0),
        "sessions": (0.0, 1.0),
        "queue": (0.0, 1.0),
        "delay": (0.0, 1000.0),
    }
)

Method = Literal["min-max", "log"]
Composition = Literal["min", "mean"]


def band(score: int) -> str:
    """The draft's reading of a score: `avoid` (0-3), `medium` (4-7), `preferred` (8-10)."""
    if score <= DO_NOT_STEER_MAX:
        return "avoid"
    return "preferred" if score >= PREFERRED_MIN else "medium"


@dataclass(frozen=True, slots=True)
class Scores:
    """L1 per category (None: unknown) and the L2 score, each 0..10, higher is better."""

    l2: int
    computing: int | None = None
    communication: int | None = None
    service: int | None = None
    composed: int | None = None

    def __post_init__(self) -> None:
        for name in ("l2", *CATEGORIES):
            v = getattr(self, name)
            if v is None and name != "l2":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= SCORE_MAX:
                raise ValueError(f"scores.{name}: must be a whole number 0..{SCORE_MAX}, got {v!r}")

    def l1(self) -> dict[str, int]:
        """The known L1 scores, by category name."""
        return {c: v for c in CATEGORIES if (v := getattr(self, c)) is not None}

    def to_json(self) -> dict[str, object]:
        return {"l1": self.l1(), "l2": self.l2}


@dataclass(frozen=True, slots=True)
class Normalization:
    """How one service turns L0 into L1/L2 (`[services.metrics]` in cand.toml)."""

    method: Method = "min-max"
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=lambda: DEFAULT_BOUNDS)
    """Per L0 name: (best, worst), best < worst; names not given keep DEFAULT_BOUNDS."""
    composition: Composition = "min"
    weights: Mapping[str, float] = field(default_factory=dict)
    """For `mean`: weight per category (default 1 each); 0 leaves a category out."""

    def __post_init__(self) -> None:
        merged = dict(DEFAULT_BOUNDS)
        for name, (best, worst) in self.bounds.items():
            if name not in DEFAULT_BOUNDS:
                raise ValueError(f"bounds.{name}: not an L0 value ({', '.join(L0_NAMES)})")
            if not (math.isfinite(best) and math.isfinite(worst)) or not 0 <= best < worst:
                raise ValueError(f"bounds.{name}: need 0 <= best < worst, got {best}, {worst}")
            merged[name] = (float(best), float(worst))
        object.__setattr__(self, "bounds", MappingProxyType(merged))
        for name, w in self.weights.items():
            if name not in CATEGORIES:
                raise ValueError(f"weights.{name}: not a category ({', '.join(CATEGORIES)})")
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"weights.{name}: must be a finite number >= 0, got {w}")
        if self.method not in ("min-max", "log"):
            raise ValueError(f"method: {self.method!r} is not min-max or log")
        if self.composition not in ("min", "mean"):
            raise ValueError(f"composition: {self.composition!r} is not min or mean")


DEFAULT = Normalization()


def position(value: float, best: float, worst: float, method: Method = "min-max") -> float:
    """Where `value` lies between `best` (0.0) and `worst` (1.0), clamped to 0..1."""
    if value <= best:
        return 0.0
    if value >= worst:
        return 1.0
    if method == "log":
        return math.log1p(value - best) / math.log1p(worst - best)
    return (value - best) / (worst - best)


def score(t: float) -> int:
    """A position 0..1 (0 best) as a score 0..10 (10 best), rounding half up."""
    return math.floor(SCORE_MAX * (1.0 - min(max(t, 0.0), 1.0)) + 0.5)


def l0_values(m: Metrics) -> dict[str, float]:
    """The L0 values normalization reads, by name; unknown ones left out."""
    out: dict[str, float] = {}
    for name in ("cpu", "gpu", "memory", "delay"):
        v = getattr(m, name)
        if v is not None:
            out[name] = v
    for name, limit in (("sessions", "max_sessions"), ("queue", "max_queue")):
        v, top = getattr(m, name), getattr(m, limit)
        if v is not None and top is not None:
            out[name] = min(1.0, v / top)
    return out


def normalize(m: Metrics, p: Normalization = DEFAULT) -> Scores:
    """L0 -> L1 and L2 under `p` (module docstring). Pure and total."""
    values = l0_values(m)
    positions: dict[str, float] = {}
    for category in CATEGORIES:
        ts = [position(values[n], *p.bounds[n], p.method) for n in MEMBERS[category] if n in values]
        if ts:
            positions[category] = max(ts)
    l1 = {c: score(t) for c, t in positions.items()}
    if not positions:
        l2 = SCORE_MAX
    elif p.composition == "min":
        l2 = score(max(positions.values()))
    else:
        weights = {c: p.weights.get(c, 1.0) for c in positions}
        total = sum(weights.values())
        if total <= 0:
            l2 = score(max(positions.values()))
        else:
            mean_t = sum(weights[c] * t for c, t in positions.items()) / total
            l2 = score(mean_t)
    return Scores(l2=l2, **l1)
