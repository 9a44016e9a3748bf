import pytest

from cand.engine.decision import decide, quantize
from cand.engine.policy import MinCost, Nearest, PolicyParams, Random, Weighted
from cand.engine.service_table import ServiceSpec
from cand.model import InstanceState
from tests.helpers import SVC, cand, key

P = PolicyParams()
SPEC = ServiceSpec(SVC)


def weights(entry):  # type: ignore[no-untyped-def]
    return {c.binding.address.packed[-1]: c.weight for c in entry.choices}


def test_weighted_follows_spare_capacity() -> None:
    e = decide(SPEC, [cand(1, cpu=0.2), cand(2, cpu=0.6)], Weighted(P), None, 0.05)
    # spare 80 vs 40
    assert weights(e) == {1: 667, 2: 333}


def test_weighted_counts_capacity_and_network_cost() -> None:
    big = cand(1, cpu=0.5, capacity=400)  # spare 200
    small = cand(2, cpu=0.0, capacity=100)  # spare 100
    e = decide(SPEC, [big, small], Weighted(P), None, 0.05)
    assert weights(e) == {1: 667, 2: 333}
    far = cand(1, cpu=0.5, capacity=400, cost=100.0)  # cost_scale away, worth half: 100
    e = decide(SPEC, [far, small], Weighted(P), None, 0.05)
    assert weights(e) == {1: 500, 2: 500}


def test_overloaded_instance_gets_no_new_flow_while_a_sibling_has_room() -> None:
    e = decide(SPEC, [cand(1, cpu=0.97), cand(2, cpu=0.9)], Weighted(P), None, 0.05)
    assert weights(e) == {1: 0, 2: 1000}
    # everyone overloaded: still served, least loaded first
    e = decide(SPEC, [cand(1, cpu=0.99), cand(2, cpu=0.96)], Weighted(P), None, 0.05)
    assert 0 < weights(e)[1] < weights(e)[2]


def test_draining_kept_with_zero_weight_and_down_left_out() -> None:
    cs = [
        cand(1, state=InstanceState.DRAINING),
        cand(2),
        cand(3, state=InstanceState.DOWN),
    ]
    e = decide(SPEC, cs, Weighted(P), None, 0.05)
    assert weights(e) == {1: 0, 2: 1000}
    assert e.choices[0].state is InstanceState.DRAINING


def test_no_instance_up_gives_empty_weights() -> None:
    e = decide(SPEC, [cand(1, state=InstanceState.DRAINING)], Weighted(P), None, 0.05)
    assert e.eligible == ()


def test_hysteresis_keeps_weights_for_small_moves_only() -> None:
    first = decide(SPEC, [cand(1, cpu=0.2), cand(2, cpu=0.6)], Weighted(P), None, 0.05)
    nudged = decide(SPEC, [cand(1, cpu=0.22), cand(2, cpu=0.6)], Weighted(P), first, 0.05)
    assert nudged.weights == first.weights
    moved = decide(SPEC, [cand(1, cpu=0.5), cand(2, cpu=0.6)], Weighted(P), first, 0.05)
    assert moved.weights != first.weights
    # a new instance is never held back by hysteresis
    grown = decide(SPEC, [cand(1), cand(2), cand(3)], Weighted(P), first, 0.5)
    assert grown.weights[cand(3).route.binding] > 0


def test_min_cost_single_best_with_incumbent_margin() -> None:
    pol = MinCost(P)
    e = decide(SPEC, [cand(1, cpu=0.30), cand(2, cpu=0.20)], pol, None, 0.05)
    assert weights(e) == {1: 0, 2: 1000}
    # challenger better by less than 5 % (50 per-mille): the incumbent stays
    e2 = decide(SPEC, [cand(1, cpu=0.17), cand(2, cpu=0.20)], pol, e, 0.05)
    assert weights(e2) == {1: 0, 2: 1000}
    e3 = decide(SPEC, [cand(1, cpu=0.10), cand(2, cpu=0.20)], pol, e, 0.05)
    assert weights(e3) == {1: 1000, 2: 0}
    # network cost counts: 10 per-mille per unit
    e4 = decide(SPEC, [cand(1, cpu=0.10, cost=20), cand(2, cpu=0.20)], pol, None, 0.05)
    assert weights(e4) == {1: 0, 2: 1000}


def test_min_cost_skips_a_saturated_cheapest_instance() -> None:
    """Near and full (960 per-mille, no network cost) against far and half loaded (500 + 10 x
    50 ms = 1000): the full one was cheaper and took every new flow."""
    pol = MinCost(P)
    near_full, far_roomy = cand(1, cpu=0.96), cand(2, cpu=0.50, cost=50)
    e = decide(SPEC, [near_full, far_roomy], pol, None, 0.05)
    assert weights(e) == {1: 0, 2: 1000}
    # at overload exactly it is saturated too
    e = decide(SPEC, [cand(1, cpu=0.95), far_roomy], pol, None, 0.05)
    assert weights(e) == {1: 0, 2: 1000}


def test_min_cost_saturated_incumbent_loses_its_bonus() -> None:
    pol = MinCost(P)
    first = decide(SPEC, [cand(1, cpu=0.10), cand(2, cpu=0.20)], pol, None, 0.05)
    assert weights(first) == {1: 1000, 2: 0}
    # within the 50 per-mille margin of the challenger, but saturated: it goes
    e = decide(SPEC, [cand(1, cpu=0.96), cand(2, cpu=0.93)], pol, first, 0.05)
    assert weights(e) == {1: 0, 2: 1000}
    # just below overload it is still roomy and keeps the service by the margin
    e = decide(SPEC, [cand(1, cpu=0.94), cand(2, cpu=0.90)], pol, first, 0.05)
    assert weights(e) == {1: 1000, 2: 0}


def test_min_cost_all_saturated_picks_the_most_capacity_left() -> None:
    """Least loaded in per-mille would be the small one (970): 3 left against 8 of 400 at 980."""
    pol = MinCost(P)
    small, big = cand(1, cpu=0.97, capacity=100), cand(2, cpu=0.98, capacity=400)
    assert weights(decide(SPEC, [small, big], pol, None, 0.05)) == {1: 0, 2: 1000}
    # the incumbent's bonus does not hold a saturated one either
    prev = decide(SPEC, [cand(1, cpu=0.10, capacity=100), cand(2, capacity=400)], pol, None, 0.05)
    assert weights(prev) == {1: 1000, 2: 0}
    assert weights(decide(SPEC, [small, big], pol, prev, 0.05)) == {1: 0, 2: 1000}
    # fully loaded everywhere: the biggest still serves
    full = [cand(1, cpu=1.0, capacity=100), cand(2, cpu=1.0, capacity=400, cost=30)]
    assert weights(decide(SPEC, full, pol, None, 0.05)) == {1: 0, 2: 1000}


def test_min_cost_hysteresis_unchanged_among_healthy_instances() -> None:
    """A saturated third instance changes nothing between two healthy ones."""
    pol = MinCost(P)
    hot = cand(3, cpu=0.99, capacity=400)
    first = decide(SPEC, [cand(1, cpu=0.30), cand(2, cpu=0.20), hot], pol, None, 0.05)
    assert weights(first) == {1: 0, 2: 1000, 3: 0}
    e = decide(SPEC, [cand(1, cpu=0.17), cand(2, cpu=0.20), hot], pol, first, 0.05)
    assert weights(e) == {1: 0, 2: 1000, 3: 0}
    e = decide(SPEC, [cand(1, cpu=0.10), cand(2, cpu=0.20), hot], pol, first, 0.05)
    assert weights(e) == {1: 1000, 2: 0, 3: 0}


def test_nearest_is_ecmp_over_lowest_cost_and_ignores_load() -> None:
    cs = [cand(1, cpu=0.99, cost=1), cand(2, cpu=0.0, cost=5), cand(3, cpu=0.5, cost=1)]
    assert weights(decide(SPEC, cs, Nearest(P), None, 0.0)) == {1: 500, 2: 0, 3: 500}


def test_random_is_uniform() -> None:
    cs = [cand(1, cpu=0.9), cand(2, cpu=0.0), cand(3)]
    assert set(weights(decide(SPEC, cs, Random(P), None, 0.0)).values()) == {333}


def test_quantize_edge_cases() -> None:
    assert quantize({}) == {}
    assert quantize({key(1): 0.0}) == {key(1): 0}
    assert quantize({key(1): float("nan"), key(2): 1.0}) == {key(1): 0, key(2): 1000}
    tiny = {key(i): 1.0 for i in range(1, 3000)}
    q = quantize(tiny)
    assert sum(q.values()) >= 1


@pytest.mark.parametrize("policy", [Weighted, MinCost, Nearest, Random])
def test_every_policy_serves_when_one_instance_is_up(policy: type) -> None:
    e = decide(SPEC, [cand(1, cpu=1.0)], policy(P), None, 0.05)
    assert sum(e.weights.values()) > 0
