"""The pure core: events in, effects out, no I/O anywhere below this package."""

from cand.engine.damping import DampingParams
from cand.engine.effects import (
    Advertise,
    Effect,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RemoveService,
    Withdraw,
)
from cand.engine.engine import Engine, EngineConfig, UnknownPolicy
from cand.engine.events import (
    CostChanged,
    CostSampled,
    Event,
    InstanceReported,
    MetricsReachable,
    PathsAdopted,
    PeerDown,
    PeerSynced,
    Reconfigured,
    RouteLearned,
    RouteWithdrawn,
    Tick,
)
from cand.engine.policy import PolicyParams
from cand.engine.service_table import (
    Choice,
    DefaultAction,
    InstanceMode,
    ServiceEntry,
    ServiceSpec,
)

__all__ = [
    "Advertise",
    "Choice",
    "CostChanged",
    "CostSampled",
    "DampingParams",
    "DefaultAction",
    "Effect",
    "Engine",
    "EngineConfig",
    "Event",
    "InstanceMode",
    "InstanceReported",
    "MetricsReachable",
    "PathsAdopted",
    "PeerDown",
    "PeerSynced",
    "PolicyParams",
    "ProgramLocalInstance",
    "ProgramService",
    "Reconfigured",
    "RemoveLocalInstance",
    "RemoveService",
    "RouteLearned",
    "RouteWithdrawn",
    "ServiceEntry",
    "ServiceSpec",
    "Tick",
    "UnknownPolicy",
    "Withdraw",
]
