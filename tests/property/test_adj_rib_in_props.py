"""The adj-RIB-in differ: whatever the order of announcements, withdrawals and snapshots,
the events it returns keep the engine's view of the peer equal to what the peer has."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.engine.events import RouteLearned, RouteWithdrawn
from cand.model import InstanceRoute
from cand.speaker.adj_rib_in import AdjRibIn
from tests.helpers import R2, R3, SVC, SVC2, route

routes = st.builds(
    lambda n, egress, cpu, service: route(n, egress=egress, cpu=cpu, service=service),
    st.integers(1, 4),
    st.sampled_from([R2, R3]),
    st.sampled_from([0.1, 0.5]),
    st.sampled_from([SVC, SVC2]),
)
path_ids = st.integers(1, 6)
ops = st.one_of(
    st.tuples(st.just("announce"), path_ids, routes),
    st.tuples(st.just("withdraw"), path_ids),
    st.tuples(st.just("full"), st.dictionaries(path_ids, routes, max_size=6)),
    st.tuples(
        st.just("scoped"),
        st.sampled_from([SVC, SVC2]),
        st.dictionaries(path_ids, routes, max_size=4),
    ),
)


@given(st.lists(ops, max_size=40))
@settings(max_examples=400)
def test_events_keep_the_engine_view_equal_to_the_peer(script: list[tuple]) -> None:  # type: ignore[type-arg]
    rib = AdjRibIn("p")
    peer: dict[int, InstanceRoute] = {}  # what the peer really has, by path id
    view: dict[tuple[object, object], InstanceRoute] = {}  # what the engine was told
    for op in script:
        if op[0] == "announce":
            peer[op[1]] = op[2]
            events = rib.announce(op[1], op[2])
        elif op[0] == "withdraw":
            peer.pop(op[1], None)
            events = rib.withdraw(op[1])
        elif op[0] == "full":
            peer = dict(op[1])
            events = rib.replace(peer, None)
            # a full snapshot re-announces every path: nothing stays stale in the engine
            learned = {(e.route.key, e.route.egress) for e in events if isinstance(e, RouteLearned)}
            assert learned >= {(r.key, r.egress) for r in peer.values()}
        else:
            service, table = op[1], {p: r for p, r in op[2].items() if r.service == op[1]}
            peer = {p: r for p, r in peer.items() if r.service != service and p not in table}
            peer.update(table)
            # a path id moving to another D-SID leaves the old scope: read that scope too
            events = rib.replace(table, [service])
            events += rib.replace(
                {p: r for p, r in peer.items() if r.service != service},
                [s for s in (SVC, SVC2) if s != service],
            )
        for e in events:
            if isinstance(e, RouteLearned):
                view[(e.route.key, e.route.egress)] = e.route
            else:
                assert isinstance(e, RouteWithdrawn)
                del view[(e.key, e.egress)]  # never a withdrawal of what was not announced
        by_instance: dict[tuple[object, object], list[InstanceRoute]] = {}
        for r in peer.values():
            by_instance.setdefault((r.key, r.egress), []).append(r)
        assert set(view) == set(by_instance)
        for inst, held in view.items():
            assert held in by_instance[inst]
        assert rib.routes() == peer
