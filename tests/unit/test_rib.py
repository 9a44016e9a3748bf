import json

from cand.engine.rib import Rib
from tests.helpers import R1, R2, R3, SVC, key, route


def test_candidates_prefer_highest_sequence_then_fresh() -> None:
    rib = Rib(R1)
    rib.learn("a", route(1, seq=1, cpu=0.1), 0.0)
    rib.learn("b", route(1, seq=2, cpu=0.5), 0.0)
    (c,) = rib.candidates(SVC)
    assert c.route.seq == 2
    rib.mark_stale("b", 10.0)
    rib.learn("a", route(1, seq=2, cpu=0.1), 1.0)
    (c,) = rib.candidates(SVC)
    assert c.route.metrics.cpu == 0.1  # same seq, a's copy is not stale


def test_same_instance_behind_two_egresses_counts_once() -> None:
    rib = Rib(R1)
    rib.learn("a", route(1, egress=R2), 0.0)
    rib.learn("a", route(1, egress=R3), 0.0)
    assert len(rib.candidates(SVC)) == 1
    assert rib.candidates(SVC)[0].route.egress == R2


def test_cost_lookup_and_change_reports_touched_services() -> None:
    rib = Rib(R1, default_cost=7.0)
    rib.learn("a", route(1, egress=R2), 0.0)
    assert rib.cost(R2) == 7.0 and rib.cost(R1) == 0.0
    assert rib.set_cost(R2, 1.0) == {SVC}
    assert rib.set_cost(R3, 1.0) == set()
    assert rib.set_cost(R2, None) == {SVC}
    assert rib.cost(R2) == 7.0


def test_expiry_and_json_dump() -> None:
    rib = Rib(R1)
    rib.set_local(route(1, egress=R1), 0.0, 5.0)
    rib.set_local(route(2, egress=R1), 0.0, None)
    assert rib.expired_local(4.9) == []
    assert rib.expired_local(5.0) == [key(1)]
    rib.learn("a", route(3), 0.0)
    dump = json.loads(json.dumps(rib.to_json()))
    assert {r["binding"] for r in dump["local"]} == {str(key(1).binding), str(key(2).binding)}
    assert dump["remote"][0]["peer"] == "a"
    assert rib.services() == {SVC}


def test_next_stale_is_the_earliest_grace_end_and_none_once_nothing_is_stale() -> None:
    rib = Rib(R1)
    assert rib.next_stale() is None
    rib.learn("a", route(1), 0.0)
    rib.learn("b", route(2), 0.0)
    assert rib.next_stale() is None
    rib.mark_stale("a", 30.0)
    rib.mark_stale("b", 20.0)
    assert rib.next_stale() == 20.0
    rib.learn("b", route(2), 1.0)  # heard again: no longer stale
    assert rib.next_stale() == 30.0
    rib.drop_peer("a", only_stale=True)
    assert rib.next_stale() is None
    rib.mark_stale("b", 40.0)
    assert rib.next_stale() == 40.0
    assert rib.expire_stale(41.0) == {SVC}
    assert rib.next_stale() is None
