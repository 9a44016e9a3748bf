"""What the engine's service entries want of the ingress's slots, kept per D-SID.

The Linux data plane's sync rebuilt this from every entry on every pass: at 10k D-SIDs x 12
instances that is 120,000 tunnels walked (and their slots, rows and map values compared) for
a batch that changed a few D-SIDs, about a third of the ingress's time while it learns. Kept
per D-SID, a pass recomputes only the D-SIDs its effects named (`update`), and what it holds
afterwards is what a rebuild from every entry gives (`tests/property/test_linux_incremental.py`).

Pure: no I/O. The slot numbers come from the data plane's `SlotTable`, which this assigns
from (a tunnel keeps its number while it is wanted, so flows keep their instance).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from cand.adapters.linux_slots import SlotTable, Tunnel
from cand.engine.service_table import ServiceEntry
from cand.model import InstanceState, ServiceId

Row = tuple[int, int, bool]
"""One instance of a service's nftables chain: its slot mark, its weight, whether it is live
(not down: a flow not answered yet may stay on it)."""


class WantedSlots:
    """Per steered D-SID: the tunnel slots its entry wants. The rows of its chain are handed
    back by `update` and not kept: a chain is written only when its D-SID changes."""

    def __init__(self, slots: SlotTable) -> None:
        self.slots = slots
        self.tunnels: dict[ServiceId, dict[int, Tunnel]] = {}

    def wants(self, mark: int) -> bool:
        """Whether some D-SID's entry wants this tunnel slot."""
        ident = self.slots.by_mark.get(mark)
        if ident is None or ident[0] != "tunnel" or not isinstance(ident[1], ServiceId):
            return False
        return mark in self.tunnels.get(ident[1], {})

    def update(
        self,
        entries: Mapping[ServiceId, ServiceEntry],
        services: Iterable[ServiceId],
        delivery: Mapping[ipaddress.IPv6Address, int],
    ) -> tuple[set[int], dict[ServiceId, list[Row]]]:
        """Recompute these D-SIDs from their entries (a D-SID without one is no longer
        steered). `delivery` is each local instance's SID -> its delivery slot: a local choice
        without one is left out. Returns the tunnel slots these D-SIDs wanted before and no
        longer want (the caller lets them linger or removes them), and the chain rows of
        those of them still steered."""
        dropped: set[int] = set()
        chains: dict[ServiceId, list[Row]] = {}
        for service in services:
            before = self.tunnels.pop(service, {})
            now: dict[int, Tunnel] = {}
            entry = entries.get(service)
            if entry is not None:
                rows: list[Row] = []
                for c in entry.choices:
                    if c.sid is None:
                        continue
                    if c.local:
                        mark = delivery.get(c.sid)
                        if mark is None:
                            continue
                    else:
                        mark = self.slots.assign(Tunnel(service, c.sid))
                        # the object held before, if any: 120,000 of them are not copied
                        now[mark] = before.get(mark) or Tunnel(service, c.sid)
                    rows.append((mark, c.weight, c.state is not InstanceState.DOWN))
                self.tunnels[service] = now
                chains[service] = rows
            dropped |= before.keys() - now.keys()
        return dropped, chains

    def rebuild(
        self,
        entries: Mapping[ServiceId, ServiceEntry],
        delivery: Mapping[ipaddress.IPv6Address, int],
    ) -> dict[ServiceId, list[Row]]:
        """Every D-SID again, from scratch; returns every steered D-SID's chain rows."""
        self.tunnels = {}
        return self.update(entries, list(entries), delivery)[1]

    def all_tunnels(self) -> dict[int, Tunnel]:
        return {m: t for ts in self.tunnels.values() for m, t in ts.items()}
