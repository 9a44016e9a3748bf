"""Builders shared by the tests: short names for long domain values."""

from __future__ import annotations

import ipaddress

from cand.engine import Engine, EngineConfig, ServiceSpec
from cand.engine.service_table import Candidate
from cand.model import (
    BindingId,
    InstanceKey,
    InstanceRoute,
    InstanceState,
    Metrics,
    RouterId,
    ServiceId,
)

SVC = ServiceId.parse("2001:db8:5::1")
SVC2 = ServiceId.parse("2001:db8:5::2")
R1 = RouterId.parse("fc00:ff::1")
R2 = RouterId.parse("fc00:ff::2")
R3 = RouterId.parse("fc00:ff::3")


def bid(n: int) -> BindingId:
    return BindingId.parse(f"2001:db8:a::{n:x}")


def key(n: int, service: ServiceId = SVC) -> InstanceKey:
    return InstanceKey(service, bid(n))


def route(
    n: int,
    *,
    egress: RouterId = R3,
    cpu: float = 0.2,
    capacity: int = 100,
    state: InstanceState = InstanceState.UP,
    seq: int = 1,
    service: ServiceId = SVC,
) -> InstanceRoute:
    return InstanceRoute(
        key=key(n, service),
        egress=egress,
        sid=ipaddress.IPv6Address(f"fc00:0:3::{n:x}"),
        metrics=Metrics(cpu=cpu, capacity=capacity),
        state=state,
        seq=seq,
    )


def cand(n: int, *, cost: float = 0.0, local: bool = False, **kw: object) -> Candidate:
    return Candidate(route(n, **kw), cost, local)  # type: ignore[arg-type]


def engine(
    router: RouterId = R1,
    *,
    services: tuple[ServiceId, ...] | dict[ServiceId, ServiceSpec] = (SVC,),
    ingress: bool = True,
    egress: bool = True,
    **kw: object,
) -> Engine:
    cfg = EngineConfig(
        router=router,
        ingress=ingress,
        egress=egress,
        locator=ipaddress.IPv6Network("fc00:0:1::/48"),
        services=services if isinstance(services, dict) else {s: ServiceSpec(s) for s in services},
        **kw,  # type: ignore[arg-type]
    )
    return Engine(cfg)
