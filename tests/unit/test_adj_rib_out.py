"""The desired adj-RIB-out and the reconciler: what is missing or different is announced,
what is held but not wanted is withdrawn, what is right is left alone."""

from __future__ import annotations

from cand.speaker.adj_rib_out import AdjRibOut, RibDiff, apply, reconcile
from tests.helpers import SVC2, key, route


def test_nothing_to_do_when_the_speaker_holds_what_is_wanted() -> None:
    rib = AdjRibOut()
    rib.set(route(1))
    rib.set(route(2))
    diff = rib.diff({key(1): route(1), key(2): route(2)})
    assert diff == RibDiff()
    assert not diff


def test_a_path_deleted_behind_our_back_is_announced_again() -> None:
    rib = AdjRibOut()
    rib.set(route(1))
    rib.set(route(2))
    assert rib.diff({key(2): route(2)}) == RibDiff(announce=((key(1), route(1)),))


def test_a_path_added_behind_our_back_is_withdrawn() -> None:
    rib = AdjRibOut()
    rib.set(route(1))
    diff = rib.diff({key(1): route(1), key(3): route(3)})
    assert diff == RibDiff(withdraw=(key(3),))


def test_a_path_held_with_other_attributes_is_announced_with_ours() -> None:
    rib = AdjRibOut()
    rib.set(route(1, cpu=0.7, seq=5))
    diff = rib.diff({key(1): route(1, cpu=0.2, seq=4)})
    assert diff.announce == ((key(1), route(1, cpu=0.7, seq=5)),)
    assert diff.withdraw == ()


def test_set_and_remove_say_whether_the_wanted_state_changed() -> None:
    rib = AdjRibOut()
    assert rib.set(route(1))
    assert not rib.set(route(1))
    assert rib.set(route(1, cpu=0.5))
    assert key(1) in rib and len(rib) == 1
    assert rib.remove(key(1)) == route(1, cpu=0.5)
    assert rib.remove(key(1)) is None
    assert len(rib) == 0


def test_the_diff_is_ordered_by_key() -> None:
    desired = {key(n): route(n) for n in (5, 1, 3)}
    actual = {key(n, SVC2): route(n, service=SVC2) for n in (4, 2)}
    diff = reconcile(desired, actual)
    assert [k for k, _ in diff.announce] == sorted(desired)
    assert list(diff.withdraw) == sorted(actual)
    assert apply(actual, diff) == desired


def test_clear_hands_back_what_was_wanted() -> None:
    rib = AdjRibOut()
    rib.set(route(1))
    assert rib.clear() == {key(1): route(1)}
    assert rib.routes() == {}
