"""What a D-Router knows: its local instances, every peer's instance paths, and network costs.

Plain data with deterministic updates and no clock of its own: every method that depends on
time takes `now`. Remote paths are kept per peer (an adj-RIB-in each), so two reflectors giving
the same instance, or a peer restarting, never lose a path another peer still has.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from cand.engine.service_table import Candidate
from cand.model import InstanceKey, InstanceRoute, RouterId, ServiceId

RemoteKey = tuple[str, InstanceKey, RouterId]


@dataclass(frozen=True, slots=True)
class LocalEntry:
    route: InstanceRoute
    updated_at: float
    expires_at: float | None
    scored_here: bool = False
    """The instance gave L0 only and this egress derived its CATS scores (under the service's
    normalization): a reload that changes the normalization scores it again."""


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    peer: str
    route: InstanceRoute
    learned_at: float
    stale_until: float | None = None


@dataclass(frozen=True, slots=True)
class RibSnapshot:
    """An immutable copy, for comparing states in tests and for `cand routes`."""

    local: tuple[tuple[InstanceKey, LocalEntry], ...]
    remote: tuple[tuple[RemoteKey, RemoteEntry], ...]
    costs: tuple[tuple[RouterId, float], ...]


@dataclass(frozen=True, slots=True)
class RibLimits:
    """Caps on what others can make us hold: instances per service and per egress router
    (the local router counts as an egress for its own instances). Paths beyond them are
    refused and counted, never evicting one already held."""

    per_service: int = 1024
    per_egress: int = 4096


class Rib:
    def __init__(
        self, router: RouterId, default_cost: float = 0.0, limits: RibLimits | None = None
    ) -> None:
        self.router = router
        self.default_cost = default_cost
        self.limits = limits or RibLimits()
        self.local: dict[InstanceKey, LocalEntry] = {}
        self.remote: dict[RemoteKey, RemoteEntry] = {}
        self.costs: dict[RouterId, float] = {}
        self.unreachable: set[RouterId] = set()
        self.refused: Counter[str] = Counter()
        self._by_service: dict[ServiceId, set[RemoteKey]] = {}
        # (instance, egress) pairs held, with how many peers gave each, and their counts
        self._pairs: dict[tuple[InstanceKey, RouterId], int] = {}
        self._remote_per_service: Counter[ServiceId] = Counter()
        self._per_egress: Counter[RouterId] = Counter()
        # one SRv6 SID per egress that has paths: the address the network cost is taken to
        self._egress_sid: dict[RouterId, ipaddress.IPv6Address | None] = {}
        self._local_per_service: Counter[ServiceId] = Counter()
        # False: no remote entry is stale (the usual case), so next_stale need not walk them all
        self._maybe_stale = False
        # stale paths their peer did not send again by its End-of-RIB, kept because their
        # service had nothing else (see end_of_rib), by service
        self._kept: dict[ServiceId, set[RemoteKey]] = {}

    # --- local instances -------------------------------------------------------------------

    def may_add_local(self, key: InstanceKey) -> bool:
        """False (and counted) when a new local instance would pass a limit."""
        if key in self.local:
            return True
        if self._local_per_service[key.service] >= self.limits.per_service:
            self.refused["service_limit"] += 1
            return False
        if len(self.local) >= self.limits.per_egress:
            self.refused["egress_limit"] += 1
            return False
        return True

    def set_local(
        self, route: InstanceRoute, now: float, ttl: float | None, scored_here: bool = False
    ) -> None:
        expires = now + ttl if ttl is not None else None
        if route.key not in self.local:
            self._local_per_service[route.key.service] += 1
        self.local[route.key] = LocalEntry(route, now, expires, scored_here)
        self.release_kept(route.key.service)

    def rescore_local(self, route: InstanceRoute) -> None:
        """The same report with scores derived again: when it came and when it expires stay."""
        self.local[route.key] = replace(self.local[route.key], route=route)

    def hold_local(self, until: float | None) -> None:
        """Set every local report's expiry at once (None: frozen until told otherwise)."""
        for k, e in self.local.items():
            self.local[k] = replace(e, expires_at=until)

    def remove_local(self, key: InstanceKey) -> LocalEntry | None:
        gone = self.local.pop(key, None)
        if gone is not None:
            _decrement(self._local_per_service, key.service)
        return gone

    def expired_local(self, now: float) -> list[InstanceKey]:
        return sorted(
            k for k, e in self.local.items() if e.expires_at is not None and e.expires_at <= now
        )

    # --- remote paths ----------------------------------------------------------------------

    def learn(self, peer: str, route: InstanceRoute, now: float) -> bool:
        """Store a peer's path; False when it is our own path reflected back (ignored)."""
        if route.egress == self.router:
            return False
        rk = (peer, route.key, route.egress)
        if rk not in self.remote and not self._index(rk):
            return False  # over a limit (counted)
        self.remote[rk] = RemoteEntry(peer, route, now)
        if route.sid is not None and self._egress_sid.get(route.egress) is None:
            self._egress_sid[route.egress] = route.sid
        self._unkeep(rk)  # a kept path sent again is fresh: not one of those that go now
        self.release_kept(route.key.service)
        return True

    def withdraw(self, peer: str, key: InstanceKey, egress: RouterId) -> bool:
        rk = (peer, key, egress)
        if self.remote.pop(rk, None) is None:
            return False
        self._unindex(rk)
        return True

    def mark_stale(self, peer: str, until: float) -> set[ServiceId]:
        """Every path of a peer that went down is stale until `until`. A kept path keeps the
        deadline it had: another restart of the peer does not lengthen its life."""
        touched: set[ServiceId] = set()
        for rk, entry in list(self.remote.items()):
            if rk[0] == peer and not self._is_kept(rk):
                self.remote[rk] = replace(entry, stale_until=until)
                touched.add(rk[1].service)
                self._maybe_stale = True
        return touched

    def next_stale(self) -> float | None:
        """The earliest end of a stale path's grace, if any path is stale. The engine asks
        after every batch: with nothing stale (nearly always) this is O(1), not a walk of
        every remote path (120,000 at 10k x 12)."""
        if not self._maybe_stale:
            return None
        due = min(
            (e.stale_until for e in self.remote.values() if e.stale_until is not None), default=None
        )
        if due is None:
            self._maybe_stale = False
        return due

    def drop_peer(self, peer: str, only_stale: bool) -> set[ServiceId]:
        touched: set[ServiceId] = set()
        for rk, entry in list(self.remote.items()):
            if rk[0] == peer and (not only_stale or entry.stale_until is not None):
                del self.remote[rk]
                self._unindex(rk)
                touched.add(rk[1].service)
        return touched

    def end_of_rib(self, peer: str) -> set[ServiceId]:
        """The peer has sent again all it has (End-of-RIB, or GoBGP's quiet read): its paths
        still stale are dropped, except where that would leave a service with nothing, no
        local instance and no fresh path from anyone. A reflector that comes back from a reset
        holds nothing yet and relays its clients' paths only as their sessions return (seconds
        apart): dropping then would steer the service to no instance in between. Those paths
        stay stale, are counted in `stale_kept`, and go when a fresh path or a local instance
        of their service arrives (release_kept), or at their stale deadline (expire_stale)."""
        stale: dict[ServiceId, list[RemoteKey]] = {}
        for rk, entry in self.remote.items():
            if rk[0] == peer and entry.stale_until is not None:
                stale.setdefault(rk[1].service, []).append(rk)
        touched: set[ServiceId] = set()
        for service, keys in stale.items():
            if self._alone(service):
                self._kept.setdefault(service, set()).update(keys)
                continue
            for rk in keys:
                del self.remote[rk]
                self._unindex(rk)
            touched.add(service)
        return touched

    def release_kept(self, service: ServiceId) -> bool:
        """Drop the kept stale paths of a service that has something fresh now: True if any."""
        keys = self._kept.get(service)
        if not keys:
            return False
        if self._alone(service):
            return False
        for rk in list(keys):
            if rk in self.remote:
                del self.remote[rk]
                self._unindex(rk)
        return True

    def stale_kept(self) -> int:
        """Stale paths held past their peer's End-of-RIB because their service had no other."""
        return sum(len(keys) for keys in self._kept.values())

    def _is_kept(self, rk: RemoteKey) -> bool:
        keys = self._kept.get(rk[1].service)
        return keys is not None and rk in keys

    def _alone(self, service: ServiceId) -> bool:
        """No local instance and no fresh path: its stale paths are all it has."""
        if self._local_per_service[service]:
            return False
        return all(
            self.remote[rk].stale_until is not None for rk in self._by_service.get(service, ())
        )

    def expire_stale(self, now: float) -> set[ServiceId]:
        touched: set[ServiceId] = set()
        for rk, entry in list(self.remote.items()):
            if entry.stale_until is not None and entry.stale_until <= now:
                del self.remote[rk]
                self._unindex(rk)
                touched.add(rk[1].service)
        return touched

    def _index(self, rk: RemoteKey) -> bool:
        _, key, egress = rk
        pair = (key, egress)
        held = self._pairs.get(pair, 0)
        if held == 0:
            if self._remote_per_service[key.service] >= self.limits.per_service:
                self.refused["service_limit"] += 1
                return False
            if self._per_egress[egress] >= self.limits.per_egress:
                self.refused["egress_limit"] += 1
                return False
            self._remote_per_service[key.service] += 1
            self._per_egress[egress] += 1
            self._egress_sid.setdefault(egress, None)
        self._pairs[pair] = held + 1
        self._by_service.setdefault(key.service, set()).add(rk)
        return True

    def _unkeep(self, rk: RemoteKey) -> None:
        kept = self._kept.get(rk[1].service)
        if kept is not None:
            kept.discard(rk)
            if not kept:
                del self._kept[rk[1].service]

    def _unindex(self, rk: RemoteKey) -> None:
        _, key, egress = rk
        self._unkeep(rk)
        keys = self._by_service.get(key.service)
        if keys is not None:
            keys.discard(rk)
            if not keys:
                del self._by_service[key.service]
        pair = (key, egress)
        held = self._pairs.pop(pair, 0) - 1
        if held > 0:
            self._pairs[pair] = held
        elif held == 0:
            _decrement(self._remote_per_service, key.service)
            _decrement(self._per_egress, egress)
            if egress not in self._per_egress:
                del self._egress_sid[egress]

    # --- network cost ----------------------------------------------------------------------

    def set_cost(self, egress: RouterId, cost: float | None) -> set[ServiceId]:
        if cost is None:
            changed = self.costs.pop(egress, None) is not None
        else:
            changed = self.costs.get(egress) != cost
            self.costs[egress] = cost
        if not changed:
            return set()
        return {rk[1].service for rk in self.remote if rk[2] == egress}

    def set_reachable(self, egress: RouterId, reachable: bool) -> set[ServiceId]:
        """An egress the network cannot reach takes no new flow (its cost is kept aside)."""
        if reachable == (egress not in self.unreachable):
            return set()
        if reachable:
            self.unreachable.discard(egress)
        else:
            self.unreachable.add(egress)
        return {rk[1].service for rk in self.remote if rk[2] == egress}

    def egresses(self) -> dict[RouterId, ipaddress.IPv6Address | None]:
        """Every egress with paths here, with one of its instance SIDs (None if it gave none)."""
        return dict(self._egress_sid)

    def cost(self, egress: RouterId) -> float:
        if egress == self.router:
            return 0.0
        return self.costs.get(egress, self.default_cost)

    # --- views -----------------------------------------------------------------------------

    def services(self) -> set[ServiceId]:
        return {k.service for k in self.local} | set(self._by_service)

    def candidates(self, service: ServiceId) -> list[Candidate]:
        """One candidate per instance: a local report wins, then the freshest path
        (highest sequence, not stale, lowest egress, lowest peer name: deterministic)."""
        best: dict[InstanceKey, tuple[tuple[int, int, RouterId, str], InstanceRoute]] = {}
        for rk in self._by_service.get(service, ()):
            entry = self.remote[rk]
            rank = (-entry.route.seq, entry.stale_until is not None, entry.route.egress, rk[0])
            held = best.get(rk[1])
            if held is None or rank < held[0]:
                best[rk[1]] = (rank, entry.route)
        out = [
            Candidate(
                route,
                self.cost(route.egress),
                local=False,
                reachable=route.egress not in self.unreachable,
            )
            for key, (_, route) in best.items()
            if key not in self.local
        ]
        out += [
            Candidate(e.route, 0.0, local=True)
            for k, e in self.local.items()
            if k.service == service
        ]
        out.sort(key=lambda c: c.key)
        return out

    def snapshot(self) -> RibSnapshot:
        return RibSnapshot(
            local=tuple(sorted(self.local.items())),
            remote=tuple(
                sorted(self.remote.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))
            ),
            costs=tuple(sorted(self.costs.items())),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "router": str(self.router),
            "local": [
                {**e.route.to_json(), "updated_at": e.updated_at, "expires_at": e.expires_at}
                for _, e in sorted(self.local.items())
            ],
            "remote": [
                {
                    **e.route.to_json(),
                    "peer": e.peer,
                    "learned_at": e.learned_at,
                    "stale_until": e.stale_until,
                }
                for _, e in self.snapshot().remote
            ],
            "costs": {str(r): c for r, c in sorted(self.costs.items())},
            "unreachable": sorted(str(r) for r in self.unreachable),
        }


def _decrement(counts: Counter[Any], key: Any) -> None:
    """Counters that never keep zero entries: their size is what is held, not what was seen."""
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
