"""Weights by member replication (cand_p4.weights.replicate): proportions, the group's size
bound, one member at least for every positive weight, none for a zero weight."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from cand_p4.weights import replicate
from hypothesis import given, settings
from hypothesis import strategies as st

weights = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=40)
budgets = st.integers(min_value=1, max_value=128)


def keyed(ws: list[int]) -> list[tuple[str, int]]:
    return [(f"i{i}", w) for i, w in enumerate(ws)]


@settings(max_examples=400)
@given(weights, budgets)
def test_zero_gets_nothing_positive_gets_at_least_one(ws: list[int], budget: int) -> None:
    got = replicate(keyed(ws), budget)
    for key, w in keyed(ws):
        if w > 0:
            assert got[key] >= 1
        else:
            assert key not in got


@settings(max_examples=400)
@given(weights, budgets)
def test_total_is_bounded(ws: list[int], budget: int) -> None:
    got = replicate(keyed(ws), budget)
    positive = sum(1 for w in ws if w > 0)
    assert sum(got.values()) <= max(budget, positive)
    if positive > budget:
        assert set(got.values()) <= {1}


@settings(max_examples=400)
@given(weights, budgets)
def test_exact_when_the_reduced_weights_fit(ws: list[int], budget: int) -> None:
    got = replicate(keyed(ws), budget)
    positive = [(k, w) for k, w in keyed(ws) if w > 0]
    g = math.gcd(*(w for _, w in positive)) if positive else 1
    if sum(w // g for _, w in positive) <= budget:
        assert got == {k: w // g for k, w in positive}
    else:
        assert sum(got.values()) == max(budget, len(positive))


@settings(max_examples=400)
@given(weights, budgets)
def test_within_one_member_of_the_quota_when_no_floor_was_needed(
    ws: list[int], budget: int
) -> None:
    got = replicate(keyed(ws), budget)
    positive = [(k, w) for k, w in keyed(ws) if w > 0]
    if not positive:
        return
    total_w = sum(w for _, w in positive)
    total_c = sum(got.values())
    quotas = {k: Fraction(w * total_c, total_w) for k, w in positive}
    if all(q >= 1 for q in quotas.values()):
        for k, q in quotas.items():
            assert abs(got[k] - q) < 1, (k, got[k], q)


@settings(max_examples=400)
@given(weights, budgets)
def test_a_heavier_instance_never_gets_fewer_members(ws: list[int], budget: int) -> None:
    got = replicate(keyed(ws), budget)
    for ki, wi in keyed(ws):
        for kj, wj in keyed(ws):
            if wi > wj > 0:
                assert got[ki] >= got[kj]


def test_examples() -> None:
    assert replicate([("a", 750), ("b", 250)], 64) == {"a": 3, "b": 1}
    assert replicate([("a", 500), ("b", 500)], 64) == {"a": 1, "b": 1}
    assert replicate([("a", 1000), ("b", 0)], 64) == {"a": 1}
    assert replicate([("a", 0)], 64) == {}
    # 999:1 does not fit 16 members: the light one keeps one member, the heavy one the rest
    assert replicate([("a", 999), ("b", 1)], 16) == {"a": 15, "b": 1}
    # 600:300:100 over 7 members: quotas 4.2, 2.1, 0.7 -> 4, 2, 1
    assert replicate([("a", 601), ("b", 300), ("c", 100)], 7) == {"a": 4, "b": 2, "c": 1}
    assert replicate([("a", 1), ("b", 1), ("c", 1)], 2) == {"a": 1, "b": 1, "c": 1}


def test_refuses_a_key_twice_and_no_budget() -> None:
    with pytest.raises(ValueError, match="twice"):
        replicate([("a", 1), ("a", 2)])
    with pytest.raises(ValueError, match="budget"):
        replicate([("a", 1)], 0)
