"""One peer's adj-RIB-in as the engine has been told it: the one differ both speakers use.

A speaker hears paths in its own way (ExaBGP: one UPDATE at a time, by path identifier;
GoBGP: a snapshot of a peer's table, per D-SID or whole) and hands them here; what comes back
are the RouteLearned / RouteWithdrawn events that bring the engine's view of the peer in line.
Two path identifiers may carry the same instance behind the same egress (ADD-PATH from a
reflector that has it twice): the instance is withdrawn only when the last of them goes.
A full snapshot re-announces every path, changed or not, because after a session came back
the engine holds them all as stale and drops, at PeerSynced, what was not heard again.
Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from cand.engine.events import RouteLearned, RouteWithdrawn
from cand.model import InstanceKey, InstanceRoute, RouterId, ServiceId

PathId = Hashable
Instance = tuple[InstanceKey, RouterId]
Change = RouteLearned | RouteWithdrawn
K = TypeVar("K")


class AdjRibIn:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._paths: dict[PathId, InstanceRoute] = {}
        self._of: dict[Instance, set[PathId]] = {}  # which path ids carry an instance
        self._told: dict[Instance, InstanceRoute] = {}  # the route the engine holds for it
        self._by_service: dict[ServiceId, set[PathId]] = {}

    def __len__(self) -> int:
        return len(self._paths)

    def routes(self) -> dict[PathId, InstanceRoute]:
        return dict(self._paths)

    def announce(self, path: PathId, route: InstanceRoute, always: bool = True) -> list[Change]:
        """The peer (re)announced `path` as `route`. `always`: report it even if unchanged
        (an UPDATE is news; a re-read of an unchanged table is not)."""
        old = self._paths.get(path)
        if old == route and not always:
            return []
        moved = self._remove(path) if old is not None else None
        self._add(path, route)
        inst = _instance(route)
        self._told[inst] = route
        out: list[Change] = [RouteLearned(self.peer, route)]
        if moved is not None and moved != inst:
            out = self._settle([moved]) + out
        return out

    def withdraw(self, path: PathId) -> list[Change]:
        """The peer withdrew `path` (or sent it malformed: treat-as-withdraw)."""
        if path not in self._paths:
            return []
        return self._settle([self._remove(path)])

    def replace(
        self, snapshot: Mapping[PathId, InstanceRoute], services: Iterable[ServiceId] | None
    ) -> list[Change]:
        """The peer's table now, for these D-SIDs (None: all of it, every path re-announced)."""
        if services is None:
            scope = set(self._paths)
        else:
            scope = {p for s in services for p in self._by_service.get(s, ())}
        touched = [self._remove(p) for p in sorted(scope - set(snapshot), key=repr)]
        out = self._settle(touched)
        for path, route in snapshot.items():
            out += self.announce(path, route, always=services is None)
        return out

    def clear(self) -> list[Change]:
        """Forget the peer entirely (it was deconfigured): withdraw all it gave."""
        return self._settle([self._remove(p) for p in list(self._paths)])

    def _add(self, path: PathId, route: InstanceRoute) -> None:
        self._paths[path] = route
        self._of.setdefault(_instance(route), set()).add(path)
        self._by_service.setdefault(route.service, set()).add(path)

    def _remove(self, path: PathId) -> Instance:
        route = self._paths.pop(path)
        inst = _instance(route)
        _discard(self._by_service, route.service, path)
        _discard(self._of, inst, path)
        return inst

    def _settle(self, instances: Iterable[Instance]) -> list[Change]:
        """After paths went: withdraw instances no path carries any more; where another
        path id still carries one, make sure the engine holds that path's route."""
        out: list[Change] = []
        for inst in dict.fromkeys(instances):
            told = self._told.get(inst)
            paths = self._of.get(inst)
            if not paths:
                if told is not None:
                    del self._told[inst]
                    out.append(RouteWithdrawn(self.peer, inst[0], inst[1]))
                continue
            carried = [self._paths[p] for p in sorted(paths, key=repr)]
            if told not in carried:
                self._told[inst] = carried[0]
                out.append(RouteLearned(self.peer, carried[0]))
        return out


def _discard(index: dict[K, set[PathId]], key: K, path: PathId) -> None:
    held = index.get(key)
    if held is not None:
        held.discard(path)
        if not held:
            del index[key]


def _instance(route: InstanceRoute) -> Instance:
    return (route.key, route.egress)
