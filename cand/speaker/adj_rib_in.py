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
_NONE: object = object()


class AdjRibIn:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._paths: dict[PathId, InstanceRoute] = {}
        # which path ids carry an instance: the one path id itself, as nearly always, or a
        # set of them (ADD-PATH alternatives); a set per instance would be 200 B per path
        self._of: dict[Instance, PathId | set[PathId]] = {}
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
        inst = _instance(route)
        if inst == path:
            inst = path  # GoBGP's path ids are (instance, egress): hold one tuple, not two
        self._add(path, route, inst)
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

    def resync(self, snapshot: Mapping[PathId, InstanceRoute]) -> list[Change]:
        """The peer's whole table just after its session came back, before its `PeerSynced`:
        every path in it is re-announced, and a path no longer in it is forgotten here
        without a withdrawal. The engine holds it stale since the `PeerDown`, and at the
        `PeerSynced` drops it, or keeps it while its service has nothing else (a reflector
        back empty from a reset); a withdrawal here would drop it before that choice."""
        gone = [self._remove(p) for p in sorted(set(self._paths) - set(snapshot), key=repr)]
        for inst in gone:
            if not self._carriers(inst):
                self._told.pop(inst, None)
        out: list[Change] = []
        for path, route in snapshot.items():
            out += self.announce(path, route, always=True)
        return out

    def clear(self) -> list[Change]:
        """Forget the peer entirely (it was deconfigured): withdraw all it gave."""
        return self._settle([self._remove(p) for p in list(self._paths)])

    def _add(self, path: PathId, route: InstanceRoute, inst: Instance) -> None:
        self._paths[path] = route
        held = self._of.get(inst, _NONE)
        if held is _NONE:
            self._of[inst] = path
        elif isinstance(held, set):
            held.add(path)
        elif held != path:
            self._of[inst] = {held, path}
        self._by_service.setdefault(route.service, set()).add(path)

    def _remove(self, path: PathId) -> Instance:
        route = self._paths.pop(path)
        inst = _instance(route)
        _discard(self._by_service, route.service, path)
        held = self._of.get(inst, _NONE)
        if isinstance(held, set):
            held.discard(path)
            if len(held) == 1:
                self._of[inst] = next(iter(held))
        elif held is not _NONE and held == path:
            del self._of[inst]
        return inst

    def _carriers(self, inst: Instance) -> list[PathId]:
        held = self._of.get(inst, _NONE)
        if held is _NONE:
            return []
        return sorted(held, key=repr) if isinstance(held, set) else [held]

    def _settle(self, instances: Iterable[Instance]) -> list[Change]:
        """After paths went: withdraw instances no path carries any more; where another
        path id still carries one, make sure the engine holds that path's route."""
        out: list[Change] = []
        for inst in dict.fromkeys(instances):
            told = self._told.get(inst)
            paths = self._carriers(inst)
            if not paths:
                if told is not None:
                    del self._told[inst]
                    out.append(RouteWithdrawn(self.peer, inst[0], inst[1]))
                continue
            carried = [self._paths[p] for p in paths]
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
