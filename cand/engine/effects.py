"""What the engine asks the adapters to do; the engine itself never does it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cand.engine.service_table import ServiceEntry
from cand.model import InstanceKey, InstanceRoute, ServiceId


@dataclass(frozen=True, slots=True)
class Advertise:
    """Speaker: announce (or replace) the path for one local instance."""

    route: InstanceRoute


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Speaker: withdraw the path for one local instance."""

    key: InstanceKey


@dataclass(frozen=True, slots=True)
class ProgramService:
    """Ingress data plane: make new flows to this D-SID follow this entry."""

    entry: ServiceEntry


@dataclass(frozen=True, slots=True)
class RemoveService:
    """Ingress data plane: cand no longer steers this D-SID."""

    service: ServiceId


@dataclass(frozen=True, slots=True)
class ProgramLocalInstance:
    """Egress data plane: the SRv6 SID that delivers to this local instance."""

    key: InstanceKey
    sid: ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class RemoveLocalInstance:
    """Egress data plane: the instance is gone; its SID goes too."""

    key: InstanceKey
    sid: ipaddress.IPv6Address


Effect = (
    Advertise
    | Withdraw
    | ProgramService
    | RemoveService
    | ProgramLocalInstance
    | RemoveLocalInstance
)
