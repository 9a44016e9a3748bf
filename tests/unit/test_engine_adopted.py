"""Paths adopted from a gobgpd that outlived cand: kept while confirmed, withdrawn when not,
by an engine deadline on a fake clock (it was a sleep in the speaker)."""

from cand.engine import InstanceReported, PathsAdopted, Tick, Withdraw
from cand.model import InstanceState, Metrics
from tests.helpers import engine, key


def up(n: int) -> InstanceReported:
    return InstanceReported(key(n), InstanceState.UP, Metrics(cpu=0.2), 5, ttl=300.0)


def withdrawn(effects: list[object]) -> list[object]:
    return [e.key for e in effects if isinstance(e, Withdraw)]


def test_unconfirmed_adopted_paths_are_withdrawn_at_the_deadline_only() -> None:
    e = engine()
    e.handle(PathsAdopted(frozenset({key(1), key(2)}), grace=30.0), 0.0)
    assert e.next_deadline() == 30.0
    e.handle(up(1), 2.0)  # its instance reported again after the restart: confirmed
    assert withdrawn(e.handle(Tick(), 29.9)) == []
    assert withdrawn(e.handle(Tick(), 30.0)) == [key(2)]
    assert e.counters["adopted"] == 2 and e.counters["adopted_withdrawn"] == 1
    assert e.adopted == {} and key(1) in e.rib.local


def test_a_path_already_reported_is_not_held_for_withdrawal() -> None:
    e = engine()
    e.handle(up(1), 0.0)
    e.handle(PathsAdopted(frozenset({key(1)}), grace=5.0), 1.0)
    assert e.adopted == {} and withdrawn(e.handle(Tick(), 10.0)) == []


def test_a_down_report_does_not_confirm_an_adopted_path() -> None:
    e = engine()
    e.handle(PathsAdopted(frozenset({key(1)}), grace=5.0), 0.0)
    e.handle(InstanceReported(key(1), InstanceState.DOWN, Metrics(), 6), 1.0)
    assert withdrawn(e.handle(Tick(), 5.0)) == [key(1)]
