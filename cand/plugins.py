"""Finds adapters and policies by entry point, so a plugin distribution needs no core change."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

GROUPS = ("cand.speakers", "cand.dataplanes", "cand.policies", "cand.metric_sources")


class PluginNotFound(LookupError):
    pass


def available(group: str) -> dict[str, Any]:
    """Name -> entry point for one group (not loaded: loading may import heavy modules)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load(group: str, name: str) -> Any:
    eps = available(group)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise PluginNotFound(f"{group}: no plugin named {name!r} (installed: {known})")
    return eps[name].load()
