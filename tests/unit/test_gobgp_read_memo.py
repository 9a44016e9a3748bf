"""The GoBGP speaker remembers decoded paths by their bytes: a path read again unchanged is
the route decoded before (the same object, so nothing is decoded twice), equal to what
decoding from scratch gives; a path whose bytes changed is decoded afresh."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cand import config
from cand.engine.events import Event, RouteLearned
from cand.model import InstanceRoute, Metrics
from cand.wire import bgp_update
from tests.helpers import R3, route

gobgp = pytest.importorskip("cand_gobgp.speaker")
api = pytest.importorskip("cand_gobgp.api")
PEER = "fc00:a::3"
CFG = {
    "router": {"id": "fc00:ff::1", "roles": ["ingress"], "locator": "fc00:0:1::/48"},
    "bgp": {"speaker": "gobgp", "neighbors": [{"address": PEER, "asn": 65000}]},
}


class ListStub:
    """ListPath answers with whatever `table` holds now (one destination per path)."""

    def __init__(self) -> None:
        self.table: list[Any] = []

    def ListPath(self, req: Any) -> Any:
        async def gen() -> Any:
            for p in self.table:
                yield api.pb.ListPathResponse(destination=api.pb.Destination(paths=[p]))

        return gen()


def received(sender: Any, r: InstanceRoute) -> Any:
    p = sender._path(r)
    p.neighbor_ip = PEER
    return p


def read(sp: Any) -> list[InstanceRoute]:
    got: list[Event] = []

    async def emit(e: Event) -> None:
        got.append(e)

    asyncio.run(sp._read(PEER, None, emit))
    return [e.route for e in got if isinstance(e, RouteLearned)]


def speaker(stub: ListStub) -> Any:
    sp = gobgp.GobgpSpeaker(config.parse(CFG), gobgp.GobgpOptions())
    sp.stub = stub
    sp.peers[PEER] = gobgp._PeerView(gobgp.AdjRibIn(PEER))
    return sp


def test_a_path_read_again_unchanged_is_not_decoded_again() -> None:
    stub = ListStub()
    sp = speaker(stub)
    routes = [route(n, egress=R3) for n in range(1, 6)]
    stub.table = [received(sp, r) for r in routes]
    first = read(sp)
    assert first == routes
    again = read(sp)  # a whole-table read re-announces every path
    assert again == routes
    assert all(a is b for a, b in zip(first, again, strict=True))
    bgp_update.clear_memos()
    fresh = speaker(stub)  # a speaker with an empty memo decodes them from scratch
    assert read(fresh) == again


def test_a_changed_path_is_decoded_afresh() -> None:
    stub = ListStub()
    sp = speaker(stub)
    r = route(1, egress=R3)
    stub.table = [received(sp, r)]
    assert read(sp) == [r]
    busier = InstanceRoute(r.key, r.egress, r.sid, Metrics(cpu=0.9, capacity=100), seq=2)
    stub.table = [received(sp, busier)]
    assert read(sp) == [busier]
    stub.table = [received(sp, r)]  # and back: the memo answers, with the first route
    assert read(sp) == [r]


def test_a_refused_path_is_refused_on_every_read_and_counted_once() -> None:
    stub = ListStub()
    sp = speaker(stub)
    p = received(sp, route(1, egress=R3))
    bad = api.pb.Path()
    bad.CopyFrom(p)
    del bad.pattrs_binary[:]
    bad.pattrs_binary.extend(a for a in p.pattrs_binary if a[1] != 32)  # no large communities
    stub.table = [bad]
    assert read(sp) == [] and read(sp) == []
    assert sp.counters["malformed"] == 1
