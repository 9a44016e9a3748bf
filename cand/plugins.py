"""Finds adapters and policies by entry point, so a plugin distribution needs no core change."""

from __future__ import annotations

import dataclasses
from importlib.metadata import entry_points
from typing import Any, TypeVar

T = TypeVar("T")

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


def parse_options(cls: type[T], raw: dict[str, Any], table: str, plugin: str) -> T:
    """A plugin's options table (`[bgp.options]`, `[dataplane.options]`) into its options
    dataclass; an unknown key is named with the table it is in."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{table}: unknown options for {plugin}: {sorted(unknown)}")
    return cls(**raw)
