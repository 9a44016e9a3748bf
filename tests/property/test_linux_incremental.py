"""The Linux data plane's incremental sync (a batch touches only the D-SIDs it changed) ends
where a whole walk of every D-SID ends, in the wanted slots and in what the kernel is left
holding. The kernel here is a test double (`FakeKernel`: the tunnel map, the tunnel table's
routes, the tunnel rule and the nftables table as the adapter's own command lines describe
them); the real kernel runs the same paths in `tests/netns/test_tunnel_map.py` and
`tests/netns/test_linux_dataplane.py`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cand.adapters import linux_kernel as k
from cand.adapters import srv6_bpf
from cand.adapters.linux import LinuxDataplane, LinuxOptions
from cand.adapters.linux_nft import Marks
from cand.adapters.linux_slots import SlotTable
from cand.adapters.linux_want import WantedSlots
from cand.engine.effects import Effect, ProgramService, RemoveService
from cand.engine.service_table import Choice, ServiceEntry, ServiceSpec
from cand.model import BindingId, InstanceKey, InstanceState, RouterId, ServiceId

SERVICES = [ServiceId.parse(f"2001:db8:5::{i}") for i in range(1, 5)]
SIDS = [ipaddress.IPv6Address(f"fc00:0:{i}::1") for i in range(1, 6)]
UNROUTABLE = SIDS[4]
EGRESS = RouterId.parse("fc00:ff::3")
ROUTER = RouterId.parse("fc00:1::1")


@dataclass
class FakeKernel:
    """A test double of the kernel parts the ingress writes, fed the adapter's own lines."""

    map: dict[int, bytes] = field(default_factory=dict)
    dsid_routes: dict[str, str] = field(default_factory=dict)
    tunnel_rule: bool = False
    chains: dict[str, list[str]] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    dsids: set[str] = field(default_factory=set)
    writes: int = 0

    def snapshot(self) -> tuple[Any, ...]:
        svc = {c: r for c, r in self.chains.items() if c.startswith("svc_")}
        return (dict(self.map), dict(self.dsid_routes), self.tunnel_rule, svc,
                dict(self.services), set(self.dsids))  # fmt: skip

    async def ip_batch(self, lines: list[str]) -> None:
        for line in lines:
            w = line.split()
            if w[:2] == ["route", "replace"] and "encap" in w:
                self.dsid_routes[w[2].split("/")[0]] = w[w.index("dev") + 1]
            elif w[:2] == ["route", "del"] and "local" not in w:
                assert self.dsid_routes.pop(w[2].split("/")[0], None) is not None, line
            elif w[:2] == ["rule", "add"]:
                assert not self.tunnel_rule, line
                self.tunnel_rule = True
            elif w[:2] == ["rule", "del"]:
                assert self.tunnel_rule, line
                self.tunnel_rule = False
            else:
                raise AssertionError(f"unexpected ip line {line!r}")
        self.writes += 1

    async def route_get_many(self, dsts: list[str]) -> dict[str, dict[str, Any] | None]:
        return {d: None if d == str(UNROUTABLE) else {"dev": "e" + d.split(":")[2]} for d in dsts}

    async def nft(self, script: list[str]) -> None:
        """One transaction, applied to copies and kept only if every line applies."""
        chains = {c: list(r) for c, r in self.chains.items()}
        services, dsids = dict(self.services), set(self.dsids)
        for line in script:
            w = line.split()
            elems = re.findall(r"\{ (.*) \}", line)
            if w[:2] == ["add", "chain"]:
                chains.setdefault(w[4], [])
            elif w[:2] == ["flush", "chain"]:
                chains[w[4]] = []
            elif w[:2] == ["delete", "chain"]:
                assert w[4] in chains and w[4] not in services.values(), line
                del chains[w[4]]
            elif w[:2] == ["add", "rule"]:
                chains[w[4]].append(" ".join(w[5:]))
            elif w[:2] == ["add", "element"] and w[4] == "services":
                for e in elems[0].split(", "):
                    s, _, _, c = e.split()
                    assert c in chains, line
                    services[s] = c
            elif w[:2] == ["add", "element"] and w[4] == "dsids":
                dsids |= set(elems[0].split(", "))
            elif w[:2] == ["delete", "element"] and w[4] == "services":
                for s in elems[0].split(", "):
                    del services[s]  # a missing element fails the transaction
            elif w[:2] == ["delete", "element"] and w[4] == "dsids":
                for s in elems[0].split(", "):
                    dsids.remove(s)
            elif w[:3] == ["flush", "map", "ip6"] and w[4] == "services":
                services = {}
            elif w[:3] == ["flush", "set", "ip6"] and w[4] == "dsids":
                dsids = set()
        self.chains, self.services, self.dsids = chains, services, dsids
        self.writes += 1

    def map_update(self, fd: int, entries: dict[int, bytes]) -> None:
        self.map.update(entries)

    def map_delete(self, fd: int, marks: list[int]) -> None:
        for m in marks:
            del self.map[m]  # the kernel's batch delete fails on a missing key too


@contextlib.contextmanager
def patched(fk: FakeKernel) -> Iterator[FakeKernel]:
    """The adapter's kernel calls, pointed at `fk` while the block runs."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _patch(monkeypatch, fk)
        yield fk


def _patch(monkeypatch: pytest.MonkeyPatch, fk: FakeKernel) -> None:
    monkeypatch.setattr(k, "ip_batch", fk.ip_batch)
    monkeypatch.setattr(k, "route_get_many", fk.route_get_many)
    monkeypatch.setattr(k, "nft", fk.nft)
    monkeypatch.setattr(srv6_bpf, "map_update", fk.map_update)
    monkeypatch.setattr(srv6_bpf, "map_delete", fk.map_delete)
    monkeypatch.setattr(
        srv6_bpf.TunnelMap, "create", classmethod(lambda cls, name, n: cls(-1, -1, name))
    )
    monkeypatch.setattr(srv6_bpf, "ensure_bpffs", lambda d: None)
    monkeypatch.setattr(srv6_bpf, "pin", lambda fd, path: None)


def choice(sid: ipaddress.IPv6Address, weight: int, state: InstanceState) -> Choice:
    n = SIDS.index(sid) + 1
    key = InstanceKey(SERVICES[0], BindingId.parse(f"2001:db8:a::{n}"))
    return Choice(key, EGRESS, sid, weight, state, 0, 5, 1.0, False)


entries = st.builds(
    lambda service, rows: ServiceEntry(
        ServiceSpec(service, affinity_timeout=30.0),
        tuple(choice(sid, w, s) for sid, (w, s) in sorted(rows.items())),
    ),
    st.sampled_from(SERVICES),
    st.dictionaries(
        st.sampled_from(SIDS),
        st.tuples(st.integers(0, 3), st.sampled_from([InstanceState.UP, InstanceState.DOWN])),
        max_size=4,
    ),
)
effect = st.one_of(st.builds(ProgramService, entries),
                   st.builds(RemoveService, st.sampled_from(SERVICES)))  # fmt: skip
steps = st.lists(
    st.tuples(st.lists(effect, min_size=1, max_size=4), st.sampled_from([0.0, 10.0, 40.0])),
    min_size=1,
    max_size=8,
)


def dataplane(tmp: Path, linger: float, now: list[float]) -> LinuxDataplane:
    dp = LinuxDataplane(
        LinuxOptions(linger=linger, bpffs=str(tmp), adopt_hold=0.0),
        ROUTER,
        clock=lambda: now[0],
    )
    dp.read_once = True  # nothing to adopt: the kernel double starts empty
    return dp


def marks_as_tunnels(dp: LinuxDataplane, fk: FakeKernel) -> set[tuple[object, ...]]:
    return {dp.slots.by_mark[m] for m in fk.map}


@settings(max_examples=150, deadline=None)
@given(steps=steps, linger=st.sampled_from([0.0, 30.0]))
def test_incremental_syncs_end_where_a_whole_walk_ends(
    steps: list[tuple[list[Effect], float]], linger: float
) -> None:
    now = [0.0]
    with tempfile.TemporaryDirectory() as tmp, patched(FakeKernel()) as kernel:
        dp = dataplane(Path(tmp), linger, now)
        for effects, dt in steps:
            now[0] += dt
            asyncio.run(dp.apply(effects))
        assert dp.counters["partial_syncs"] == len(steps) - 1  # the first batch walks
        state = kernel.snapshot()
        asyncio.run(dp._sync(set(dp.entries), full=True))  # the whole walk reconcile does
        assert kernel.snapshot() == state
        assert dp.counters["errors"] == 0
    if linger > 0.0:
        return
    # nothing lingers: a fresh data plane given the end state in one batch agrees
    with tempfile.TemporaryDirectory() as tmp, patched(FakeKernel()) as fresh_kernel:
        fresh = dataplane(Path(tmp), linger, now)
        asyncio.run(fresh.apply([ProgramService(e) for e in dp.entries.values()]))
        assert marks_as_tunnels(fresh, fresh_kernel) == marks_as_tunnels(dp, kernel)
        # the device of a D-SID's route is kept while it is one of its tunnels': history
        assert set(fresh_kernel.dsid_routes) == set(kernel.dsid_routes)
        assert fresh_kernel.tunnel_rule == kernel.tunnel_rule
        assert fresh_kernel.services == kernel.services
        assert fresh_kernel.dsids == kernel.dsids
        assert set(fresh_kernel.chains) == set(kernel.chains)


@given(st.lists(st.lists(entries | st.sampled_from(SERVICES), max_size=4), max_size=8))
def test_wanted_slots_updated_per_dsid_equal_a_rebuild(
    batches: list[list[ServiceEntry | ServiceId]],
) -> None:
    slots = SlotTable(Marks())
    wanted = WantedSlots(slots)
    table: dict[ServiceId, ServiceEntry] = {}
    rows: dict[ServiceId, list[tuple[int, int, bool]]] = {}
    for batch in batches:
        names = set()
        for e in batch:
            if isinstance(e, ServiceId):
                table.pop(e, None)
                names.add(e)
            else:
                table[e.service] = e
                names.add(e.service)
        dropped, changed = wanted.update(table, names, {})
        assert not any(wanted.wants(m) for m in dropped)
        for s in names:
            rows.pop(s, None)
        rows.update(changed)
    again = WantedSlots(slots)  # same slot table: the numbers given stay the numbers
    assert again.rebuild(table, {}) == rows
    assert wanted.tunnels == again.tunnels
    assert wanted.all_tunnels() == again.all_tunnels()
    assert all(wanted.wants(m) for m in wanted.all_tunnels())
