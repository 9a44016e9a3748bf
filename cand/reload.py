"""What `cand reload` (SIGHUP) may change in a running daemon, and what only a restart can.

A pure comparison of the running and the new configuration: the daemon applies the plan, and
a reload never half-applies a file that does not validate (that is refused before a plan is
made). Sections whose adapters cannot change in place keep their running values, and the
answer names them, so an operator knows a `cand restart` is still owed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cand.config import Config, NeighborConfig
from cand.engine import EngineConfig
from cand.model import RouterId, ServiceId

# sections whose adapter is built once: changing them needs `cand restart` (which moves no flow)
RESTART_ONLY = ("router", "mqtt", "bgp", "dataplane", "api", "prometheus")


class ReloadRefused(Exception):
    """The new configuration was not applied; the running one stays in force."""


@dataclass(frozen=True)
class ReloadPlan:
    effective: Config
    """The new configuration with the restart-only sections kept as they run."""
    engine: EngineConfig
    changed: list[str] = field(default_factory=list)
    """Sections applied in place."""
    needs_restart: list[str] = field(default_factory=list)
    """Sections that differ but keep their running values until `cand restart`."""
    costs: list[tuple[RouterId, float | None]] = field(default_factory=list)
    """Static network costs that changed (None: removed, the default applies again)."""
    services: frozenset[ServiceId] = frozenset()
    """Every configured D-SID after the reload (the metric sources subscribe to these)."""
    neighbors: tuple[NeighborConfig, ...] | None = None
    """The BGP neighbours to run from now on, when they are all that changed in `[bgp]` and the
    speaker changes sessions in place (None: no change to hand the speaker)."""

    def summary(self) -> dict[str, object]:
        return {
            "changed": self.changed,
            "needs_restart": self.needs_restart,
            "services": sorted(str(s) for s in self.services),
        }


def plan_reload(old: Config, new: Config, live_neighbors: bool = False) -> ReloadPlan:
    """`live_neighbors`: the running speaker adds, removes and changes sessions in place (so a
    `[bgp]` that differs only in `neighbors` is applied, not kept for a restart)."""
    sections = list(type(old).model_fields)
    differ = [s for s in sections if getattr(old, s) != getattr(new, s)]
    neighbors = None
    if (
        "bgp" in differ
        and live_neighbors
        and old.bgp is not None
        and new.bgp is not None
        and old.bgp.model_copy(update={"neighbors": new.bgp.neighbors}) == new.bgp
    ):
        neighbors = new.bgp.neighbors
    live = neighbors is not None
    keep = [s for s in differ if s in RESTART_ONLY and not (s == "bgp" and live)]
    effective = new.model_copy(update={s: getattr(old, s) for s in keep})
    before, after = old.network_cost.static, new.network_cost.static
    costs: list[tuple[RouterId, float | None]] = [
        (RouterId.parse(a), after.get(a)) for a in sorted(set(before) | set(after))
        if before.get(a) != after.get(a)
    ]  # fmt: skip
    return ReloadPlan(
        effective=effective,
        engine=effective.engine_config(),
        changed=[("bgp.neighbors" if s == "bgp" else s) for s in differ if s not in keep],
        needs_restart=keep,
        costs=costs,
        services=frozenset(effective.engine_config().services),
        neighbors=neighbors,
    )
