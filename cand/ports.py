"""The small typed interfaces the daemon drives; every adapter implements one of them.

An adapter is an object with a long-running `run` coroutine (cancelled when the daemon stops)
and a few methods the daemon calls. Adapters push events through `emit`; they never touch the
engine. A new speaker or data plane is one new module that satisfies one of these.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from cand.engine.effects import Effect
from cand.engine.events import Event
from cand.model import Binding, InstanceKey, InstanceRoute, RouterId, ServiceId

if TYPE_CHECKING:
    from cand.config import Config, NeighborConfig

Emit = Callable[[Event], Awaitable[None]]


class AdapterError(Exception):
    """One operation of an adapter failed (a speaker RPC, a kernel batch): the daemon logs and
    counts it and goes on, and the adapter's own reconciliation repairs the difference. Any
    other exception out of an adapter is a bug, and is reported as one."""


class StopMode(enum.Enum):
    """How the daemon ends, as far as peers and flows can tell."""

    STOP = "stop"
    """Withdraw every path and wait until the peers have the withdrawals, then end the speaker:
    ingresses stop sending new flows here at once (SIGTERM, SIGINT, `cand stop`)."""
    RESTART = "restart"
    """Withdraw nothing: gobgpd keeps its sessions and the next cand adopts its paths; ExaBGP
    is ended without a NOTIFICATION, so peers keep its paths under graceful restart
    (`cand restart`, SIGUSR1)."""


class MetricSource(Protocol):
    """Turns D-MA reports into `InstanceReported` events (MQTT in cand)."""

    async def run(self, emit: Emit) -> None: ...

    async def set_services(self, services: frozenset[ServiceId]) -> None:
        """`cand reload`: accept reports for exactly these D-SIDs from now on."""
        ...

    def status(self) -> dict[str, Any]: ...


class CostSource(Protocol):
    """Measures the network towards egresses: `CostSampled` events, raw values in ms (the
    IGP metric, probes). The engine smooths them; the source only measures."""

    name: str
    """The source's name in `[network_cost]` (`igp`): the engine takes an egress's samples
    only from the source the config gives it."""

    async def run(self, emit: Emit) -> None: ...

    def watch(self, egresses: Mapping[RouterId, ipaddress.IPv6Address | None]) -> None:
        """The egresses to measure from now on (learned from BGP, with one SRv6 SID each when
        known); the daemon calls it whenever that set changes."""
        ...

    def status(self) -> dict[str, Any]: ...

    def detail(self) -> dict[str, dict[str, Any]]:
        """Per egress (its address as text): what the source last measured there, for
        `cand routes` (the igp route and metric; the probes' RTT percentiles, jitter, loss)."""
        ...


class Responder(Protocol):
    """Answers other routers' measurements here (the probe responder); emits nothing."""

    name: str

    async def run(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class Speaker(Protocol):
    """Distributes local instance routes and learns remote ones (GoBGP, ExaBGP)."""

    async def run(self, emit: Emit) -> None: ...

    async def advertise(self, routes: Sequence[InstanceRoute]) -> None: ...

    async def withdraw(self, keys: Sequence[InstanceKey]) -> None: ...

    async def stop(self, mode: StopMode) -> None:
        """Called while `run` still runs, before it is cancelled; see `StopMode`."""
        ...

    def live_neighbors(self) -> bool:
        """Whether `set_neighbors` changes sessions in place (else a restart applies them)."""
        ...

    async def set_neighbors(self, neighbors: Sequence[NeighborConfig]) -> None:
        """`cand reload`: sessions of neighbours that are gone are closed (their routes
        withdrawn), new ones opened, changed ones updated; the others are left alone."""
        ...

    def status(self) -> dict[str, Any]: ...

    def routes(self) -> dict[str, Any]: ...


class Dataplane(Protocol):
    """Programs the packet path: ingress service entries and egress instance SIDs."""

    async def run(self, emit: Emit) -> None: ...

    async def apply(self, effects: Sequence[Effect]) -> None: ...

    async def bindings(self) -> list[Binding]: ...

    def status(self) -> dict[str, Any]: ...


# What an entry point names: a class (or any object) whose `from_config` makes the adapter.


class MetricSourcePlugin(Protocol):
    def from_config(self, config: Config, /) -> MetricSource: ...


class CostSourcePlugin(Protocol):
    def from_config(self, config: Config, /) -> CostSource: ...


class SpeakerPlugin(Protocol):
    def from_config(self, config: Config, /) -> Speaker: ...


class DataplanePlugin(Protocol):
    def from_config(self, config: Config, /) -> Dataplane: ...
