"""Finds adapters and policies by entry point, so a plugin distribution needs no core change."""

from __future__ import annotations

import dataclasses
import functools
from importlib.metadata import entry_points
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

T = TypeVar("T")

GROUPS = (
    "cand.speakers",
    "cand.dataplanes",
    "cand.policies",
    "cand.metric_sources",
    "cand.cost_sources",
)


class PluginNotFound(LookupError):
    def __init__(self, group: str, message: str) -> None:
        super().__init__(message)
        self.group = group


def available(group: str) -> dict[str, Any]:
    """Name -> entry point for one group (not loaded: loading may import heavy modules)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load(group: str, name: str) -> Any:
    eps = available(group)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise PluginNotFound(group, f"{group}: no plugin named {name[:60]!r} (installed: {known})")
    return eps[name].load()


def parse_options(cls: type[T], raw: dict[str, Any], table: str, plugin: str) -> T:
    """A plugin's options table (`[bgp.options]`, `[dataplane.options]`) into its options
    dataclass; an unknown key is named with the table it is in."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{table}: unknown options for {plugin}: {sorted(unknown)}")
    try:
        checked = _checker(cls).model_validate(raw)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{table}.{where}: {err['msg']}") from None
    return cls(**{name: getattr(checked, name) for name in raw})


@functools.cache
def _checker(cls: type) -> type[BaseModel]:
    """A strict model of an options dataclass: a string is no number, 1 is no `true` (an
    int is still a float), and no option is infinite."""
    hints = get_type_hints(cls)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], f.default if f.default is not dataclasses.MISSING else ...)
        for f in dataclasses.fields(cls)
    }
    strict = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    return create_model(f"{cls.__name__}Check", __config__=strict, **fields)
