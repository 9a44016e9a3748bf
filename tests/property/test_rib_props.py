"""Announce then withdraw restores the state; the engine survives any event sequence."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.engine import (
    CostChanged,
    Engine,
    InstanceReported,
    MetricsReachable,
    PeerDown,
    PeerSynced,
    ProgramService,
    RouteLearned,
    RouteWithdrawn,
    Tick,
)
from cand.engine.rib import Rib
from cand.model import InstanceKey, InstanceRoute
from tests.helpers import R1, R2, R3, SVC, engine
from tests.property.strategies import candidates, metrics, states

routes = candidates(max_size=5).map(lambda cs: [c.route for c in cs])
peers = st.sampled_from(["rr1", "rr2"])


@given(routes, routes, peers)
def test_announce_then_withdraw_restores_rib(base: list[InstanceRoute], extra, peer) -> None:  # type: ignore[no-untyped-def]
    rib = Rib(R1)
    for r in base:
        rib.learn("rr0", r, 0.0)
    before = rib.snapshot()
    for r in extra:
        rib.learn(peer, r, 1.0)
    for r in extra:
        rib.withdraw(peer, r.key, r.egress)
    assert rib.snapshot() == before
    assert sorted(rib._by_service.get(SVC, ())) == sorted(k for k in rib.remote)


@given(routes, peers)
def test_engine_learn_then_withdraw_restores_table(extra: list[InstanceRoute], peer: str) -> None:
    e = engine()
    e.start()
    before = dict(e.table)
    for r in extra:
        e.handle(RouteLearned(peer, r), 0.0)
    for r in extra:
        e.handle(RouteWithdrawn(peer, r.key, r.egress), 1.0)
    assert e.table == before


def _events(draw: st.DrawFn) -> list[object]:
    rs = draw(routes)
    evs: list[object] = []
    for r in rs:
        evs.append(
            draw(
                st.sampled_from(
                    [
                        RouteLearned(draw(peers), r),
                        RouteWithdrawn(draw(peers), r.key, r.egress),
                        InstanceReported(
                            InstanceKey(SVC, r.binding),
                            draw(states),
                            draw(metrics),
                            draw(st.integers(0, 5)),
                            draw(st.none() | st.floats(0, 10)),
                        ),
                        PeerDown(draw(peers), draw(st.sampled_from([0.0, 5.0]))),
                        PeerSynced(draw(peers)),
                        CostChanged(
                            draw(st.sampled_from([R2, R3])), draw(st.none() | st.floats(0, 50))
                        ),
                        MetricsReachable(draw(st.booleans())),
                        Tick(),
                    ]
                )
            )
        )
    return evs


@given(st.data())
@settings(max_examples=150)
def test_engine_survives_any_sequence(data: st.DataObject) -> None:
    e: Engine = engine()
    e.start()
    now = 0.0
    for ev in data.draw(st.composite(_events)()):
        now += data.draw(st.floats(0, 3))
        for eff in e.handle(ev, now):  # type: ignore[arg-type]
            if isinstance(eff, ProgramService):
                assert all(c.weight >= 0 for c in eff.entry.choices)
        d = e.next_deadline()
        assert d is None or d >= 0
    # and the table always matches a fresh decision on the final rib
    for svc, entry in e.table.items():
        assert {c.binding for c in entry.choices} <= {
            c.route.binding for c in e.rib.candidates(svc)
        }
