"""What can happen to a D-Router, as plain values the engine consumes in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cand.model import InstanceKey, InstanceRoute, InstanceState, Metrics, RouterId

if TYPE_CHECKING:
    from cand.engine.engine import EngineConfig


@dataclass(frozen=True, slots=True)
class InstanceReported:
    """A local D-MA said how an instance is (from MQTT, or the Last Will's `down`).

    `ttl` is how long the report stays true without another one (the MQTT message expiry);
    None means until the next report.
    """

    key: InstanceKey
    state: InstanceState
    metrics: Metrics
    seq: int
    ttl: float | None = None
    origin_ts: float | None = None
    """The publisher's wall clock when it sent the report: for latency tracing only."""
    hold: float = 0.0
    """Seconds to hold this report back before it applies: a Last Will may be the broker's
    doing, not the instance's (see `cand.adapters.mqtt`). A newer report from the instance
    cancels it, and so does losing the broker (MetricsReachable(False))."""


@dataclass(frozen=True, slots=True)
class RouteLearned:
    """A BGP peer announced (or re-announced) one instance path."""

    peer: str
    route: InstanceRoute


@dataclass(frozen=True, slots=True)
class RouteWithdrawn:
    """A BGP peer withdrew the path for one instance behind one egress."""

    peer: str
    key: InstanceKey
    egress: RouterId


@dataclass(frozen=True, slots=True)
class PeerDown:
    """A BGP session went down; its routes stay, marked stale, for `stale_for` seconds
    (graceful restart), so a speaker restart does not move a single flow."""

    peer: str
    stale_for: float = 0.0


@dataclass(frozen=True, slots=True)
class PeerSynced:
    """The peer sent End-of-RIB: whatever of its routes is still stale is gone for good."""

    peer: str


@dataclass(frozen=True, slots=True)
class CostChanged:
    """The network cost towards an egress changed (config, IGP metric or probe); None = unknown."""

    egress: RouterId
    cost: float | None


@dataclass(frozen=True, slots=True)
class CostSampled:
    """A cost source measured the way to an egress: `value` in milliseconds (the raw sample,
    before smoothing), or None when there is no route to it (unusable for steering at once).
    The engine smooths samples (`cand.engine.cost`) and takes them only from the source the
    config gives that egress."""

    egress: RouterId
    source: str
    value: float | None


@dataclass(frozen=True, slots=True)
class MetricsReachable:
    """The metric source lost (False) or regained (True) its broker.

    While it is lost, silence means nothing: local reports do not expire, so a broker outage
    never withdraws a live instance. On regaining it, every local report gets `grace` seconds
    to be confirmed (by a retained message or a fresh report) before it expires.
    """

    reachable: bool
    grace: float = 30.0


@dataclass(frozen=True, slots=True)
class PathsAdopted:
    """The speaker found paths an earlier cand announced (gobgpd outlived it). They stay up
    for `grace` seconds; whichever no local report has confirmed by then is withdrawn, so a
    restart moves no flow and an instance that died meanwhile does not linger."""

    keys: frozenset[InstanceKey]
    grace: float


@dataclass(frozen=True, slots=True)
class Reconfigured:
    """`cand reload`: the engine's part of a new, already validated configuration.

    Services, policies, damping, the default cost and the limits change in place; what only a
    restart can change (router id, locator, roles) the daemon has refused before this. A
    service whose normalization changed has the local instances this egress scored scored
    again from their last L0 values, at once."""

    config: EngineConfig


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: expire what is stale, send what damping held back."""


Event = (
    InstanceReported
    | RouteLearned
    | RouteWithdrawn
    | PeerDown
    | PeerSynced
    | CostChanged
    | CostSampled
    | MetricsReachable
    | PathsAdopted
    | Reconfigured
    | Tick
)
