"""The decision engine's output: per D-SID, where new flows may go and how flows stick."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Any, NamedTuple

from cand.model import (
    BindingId,
    FlowKeyKind,
    InstanceKey,
    InstanceRoute,
    InstanceState,
    RouterId,
    ServiceId,
)
from cand.normalize import DEFAULT as DEFAULT_NORMALIZATION
from cand.normalize import Normalization

WEIGHT_SCALE = 1000
"""Weights are integers that add up to about this; the data plane needs integers."""


class DefaultAction(enum.StrEnum):
    """What happens to a new flow when no instance of its service may take it."""

    DROP = "drop"
    ROUTE = "route"  # fall back to plain routing towards the D-SID (nearest anycast)


class InstanceMode(enum.StrEnum):
    """How an egress hands packets to a local instance."""

    VIP = "vip"  # the instance carries the D-SID itself
    NAT = "nat"  # ServiceNAT: the egress translates D-SID <-> D-BID


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """How one service is steered: the per-service affinity the Dyncast draft asks for."""

    service: ServiceId
    flow_key: FlowKeyKind = FlowKeyKind.FIVE_TUPLE
    affinity_timeout: float = 300.0
    policy: str = "weighted"
    default: DefaultAction = DefaultAction.DROP
    mode: InstanceMode = InstanceMode.VIP
    name: str = ""
    normalization: Normalization = DEFAULT_NORMALIZATION
    """How this egress turns its local instances' L0 into CATS L1/L2 scores."""


class Candidate(NamedTuple):
    """An instance as the decision engine sees it: its route plus the cost to reach its egress.

    NamedTuple rather than a frozen dataclass: built for every instance on every decision."""

    route: InstanceRoute
    network_cost: float
    local: bool
    reachable: bool = True
    """False when the cost source found no route to the egress: no new flows go there."""

    @property
    def key(self) -> InstanceKey:
        return self.route.key


class Choice(NamedTuple):
    """One instance in a service entry; weight 0 keeps its existing flows but takes no new one.
    (A NamedTuple for the same reason as Candidate.)"""

    key: InstanceKey
    egress: RouterId
    sid: ipaddress.IPv6Address | None
    weight: int
    state: InstanceState
    load_permille: int
    """The fine-grained load the decision used, 0 idle .. 1000 saturated (higher is worse)."""
    l2: int
    """CATS L2 score, 0..10, higher is better (0-3 do not steer, 8-10 preferred)."""
    network_cost: float
    local: bool
    reachable: bool = True
    l1: tuple[tuple[str, int], ...] = ()
    """CATS L1 scores 0..10 by category (computing, communication, service, composed), the
    known ones, in that order."""

    @property
    def binding(self) -> BindingId:
        return self.key.binding

    def to_json(self) -> dict[str, Any]:
        return {
            "binding": str(self.binding),
            "egress": str(self.egress),
            "sid": str(self.sid) if self.sid is not None else None,
            "weight": self.weight,
            "state": self.state.value,
            "load_permille": self.load_permille,
            "l2": self.l2,
            "l1": dict(self.l1),
            "network_cost": self.network_cost,
            "local": self.local,
            "reachable": self.reachable,
        }


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """The desired state for one D-SID at an ingress."""

    spec: ServiceSpec
    choices: tuple[Choice, ...]

    @property
    def service(self) -> ServiceId:
        return self.spec.service

    @property
    def weights(self) -> dict[BindingId, int]:
        return {c.binding: c.weight for c in self.choices}

    @property
    def eligible(self) -> tuple[Choice, ...]:
        return tuple(c for c in self.choices if c.weight > 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.service),
            "name": self.spec.name,
            "policy": self.spec.policy,
            "flow_key": self.spec.flow_key.value,
            "affinity_timeout": self.spec.affinity_timeout,
            "default": self.spec.default.value,
            "instances": [c.to_json() for c in self.choices],
        }
