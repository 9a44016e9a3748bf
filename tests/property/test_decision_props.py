"""Invariants of the decision engine, for every policy and any metrics."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.engine.decision import decide
from cand.engine.policy import BUILTIN, PolicyParams, Weighted
from cand.engine.service_table import Candidate, ServiceSpec
from cand.model import InstanceState, Metrics
from tests.helpers import SVC
from tests.property.strategies import candidates, ratios

SPEC = ServiceSpec(SVC)
P = PolicyParams()
policies = st.sampled_from(sorted(BUILTIN))


@given(candidates(), policies)
def test_weights_are_sane(cs: list[Candidate], name: str) -> None:
    entry = decide(SPEC, cs, BUILTIN[name](P), None, P.hysteresis)
    by_state = {c.route.binding: c.route.state for c in cs}
    for choice in entry.choices:
        assert choice.weight >= 0
        assert by_state[choice.binding] is not InstanceState.DOWN  # down is left out
        if choice.state is not InstanceState.UP:
            assert choice.weight == 0  # draining keeps flows, takes no new one
    if any(c.route.state is InstanceState.UP for c in cs):
        assert sum(entry.weights.values()) > 0
    else:
        assert sum(entry.weights.values()) == 0


@given(candidates(), policies)
def test_decision_is_deterministic_and_order_free(cs: list[Candidate], name: str) -> None:
    pol = BUILTIN[name](P)
    assert decide(SPEC, cs, pol, None, 0.05) == decide(SPEC, cs[::-1], pol, None, 0.05)


@given(candidates(min_size=1), st.data(), ratios, ratios)
def test_more_load_never_means_more_weight(
    cs: list[Candidate], data: st.DataObject, a: float, b: float
) -> None:
    i = data.draw(st.integers(0, len(cs) - 1))
    lo, hi = sorted((a, b))

    def weight_at(load: float) -> int:
        changed = list(cs)
        m = changed[i].route.metrics
        route = replace(changed[i].route, metrics=Metrics(cpu=load, capacity=m.capacity))
        changed[i] = changed[i]._replace(route=route)
        entry = decide(SPEC, changed, Weighted(P), None, 0.0)
        return entry.weights.get(changed[i].route.binding, 0)

    assert weight_at(hi) <= weight_at(lo)


@given(candidates(min_size=2), st.floats(0.0, 0.2), st.sampled_from(["weighted", "min-cost"]))
@settings(max_examples=200)
def test_hysteresis_holds_for_small_changes(cs: list[Candidate], h: float, name: str) -> None:
    """After a decision, re-deciding on metrics that moved by less than what any weight could
    notice keeps the weights exactly; and re-deciding on the same input is a fixpoint."""
    pol = BUILTIN[name](PolicyParams(hysteresis=h))
    first = decide(SPEC, cs, pol, None, h)
    again = decide(SPEC, cs, pol, first, h)
    assert again.weights == first.weights
    nudged = [
        c._replace(
            route=replace(
                c.route,
                metrics=Metrics(
                    cpu=min(1.0, (c.route.metrics.cpu or 0.0) + 0.001),
                    capacity=c.route.metrics.capacity,
                ),
            ),
        )
        for c in cs
    ]
    # tiny moves: at most h of the scale, so weights stay
    baseline = decide(SPEC, nudged, pol, None, h)
    if all(
        abs(baseline.weights[b] - w) <= h * 1000 for b, w in first.weights.items() if w > 0
    ) and {b for b, w in baseline.weights.items() if w} == {
        b for b, w in first.weights.items() if w
    }:
        assert decide(SPEC, nudged, pol, first, h).weights == first.weights
