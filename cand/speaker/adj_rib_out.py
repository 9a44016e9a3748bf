"""What cand wants its speaker to announce (the desired adj-RIB-out), and the difference
between that and what the speaker really holds: the one reconciler both speakers use.

The engine's Advertise / Withdraw effects change the desired state here first; a speaker then
sends what changed. Because the desired state is kept, a speaker can also check what it
really announces against it and send only the gap: the GoBGP speaker lists gobgpd's local
RIB now and then (a path deleted or added behind cand's back, with `gobgp global rib ...`, is
put right), the ExaBGP speaker, which cannot list anything, announces the whole desired state
again after every (re)start of ExaBGP.

One path per instance: keyed by (D-SID, D-BID), which is also the NLRI plus the ADD-PATH path
identifier cand proposes (`cand.wire.bgp.path_id`). The value is the InstanceRoute the path's
attributes are encoded from (`cand.wire.bgp` is deterministic: equal routes, equal bytes), so
comparing routes is comparing attributes. Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from cand.model import InstanceKey, InstanceRoute

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class RibDiff(Generic[K, V]):
    """What closes the gap: announce these (new, or held with other attributes), withdraw
    those (held, not wanted). Both sorted by key where keys can be ordered, so a run is
    reproducible."""

    announce: tuple[tuple[K, V], ...] = ()
    withdraw: tuple[K, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.announce or self.withdraw)


def reconcile(desired: Mapping[K, V], actual: Mapping[K, V]) -> RibDiff[K, V]:
    """The announcements and withdrawals that turn `actual` into `desired`: applying them
    (`apply`) to `actual` gives exactly `desired`, and nothing already right is sent."""
    announce = [(k, v) for k, v in desired.items() if k not in actual or actual[k] != v]
    withdraw = [k for k in actual if k not in desired]
    return RibDiff(tuple(_sorted_items(announce)), tuple(_sorted_keys(withdraw)))


def apply(actual: Mapping[K, V], diff: RibDiff[K, V]) -> dict[K, V]:
    """`actual` after `diff` was carried out (what a speaker ends up holding)."""
    out = {k: v for k, v in actual.items() if k not in set(diff.withdraw)}
    out.update(diff.announce)
    return out


class AdjRibOut:
    """The paths cand wants announced, one per instance."""

    def __init__(self) -> None:
        self._routes: dict[InstanceKey, InstanceRoute] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, key: object) -> bool:
        return key in self._routes

    def __iter__(self) -> Iterator[InstanceKey]:
        return iter(list(self._routes))

    def get(self, key: InstanceKey) -> InstanceRoute | None:
        return self._routes.get(key)

    def set(self, route: InstanceRoute) -> bool:
        """Want `route` announced; True when that changes what is wanted."""
        if self._routes.get(route.key) == route:
            return False
        self._routes[route.key] = route
        return True

    def remove(self, key: InstanceKey) -> InstanceRoute | None:
        """Want `key` withdrawn; the route that was wanted, if any."""
        return self._routes.pop(key, None)

    def routes(self) -> dict[InstanceKey, InstanceRoute]:
        return dict(self._routes)

    def clear(self) -> dict[InstanceKey, InstanceRoute]:
        """Want nothing any more; what was wanted (to withdraw it)."""
        gone, self._routes = self._routes, {}
        return gone

    def diff(
        self, actual: Mapping[InstanceKey, InstanceRoute]
    ) -> RibDiff[InstanceKey, InstanceRoute]:
        """What the speaker must send when it really holds `actual`."""
        return reconcile(self._routes, actual)

    def graceful_shutdown(self) -> dict[InstanceKey, InstanceRoute]:
        """Every wanted path once more, marked GRACEFUL_SHUTDOWN (RFC 8326), for a stop:
        receivers move new flows elsewhere before the withdrawal comes. What is wanted is
        left as it is."""
        return {k: dataclasses.replace(r, graceful_shutdown=True) for k, r in self._routes.items()}


def _sorted_items(items: list[tuple[K, V]]) -> list[tuple[K, V]]:
    try:
        return sorted(items, key=lambda kv: kv[0])  # type: ignore[arg-type,return-value]
    except TypeError:
        return items


def _sorted_keys(keys: list[K]) -> list[K]:
    try:
        return sorted(keys)  # type: ignore[type-var]
    except TypeError:
        return keys
