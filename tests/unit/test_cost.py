"""Network cost smoothing and hysteresis on a fake clock, and the engine taking the result."""

from __future__ import annotations

import ipaddress
import itertools
import math

import pytest

from cand.engine import CostChanged, CostSampled, ProgramService, RouteLearned, Tick
from cand.engine.cost import CostOutput, CostSmoother, SmoothingParams
from tests.helpers import R1, R2, R3, SVC, engine, route


def run_until(s: CostSmoother, end: float) -> list[tuple[float, CostOutput]]:
    """Drive `due` at every deadline up to `end`, as the daemon's Ticks would."""
    out: list[tuple[float, CostOutput]] = []
    for _ in range(10_000):
        d = s.next_deadline()
        if d is None or d > end:
            return out
        out += [(d, o) for o in s.due(d)]
    raise AssertionError("the smoother never settles")


def test_first_sample_is_taken_as_it_is() -> None:
    s = CostSmoother(SmoothingParams(method="ewma", tau=2.0))
    assert s.sample(R2, 20.0, 0.0, "igp") == [CostOutput(R2, 20.0)]
    assert s.next_deadline() is None  # nothing to converge


def test_ewma_step_converges_to_the_new_level_without_new_samples() -> None:
    # an event-driven source reports a level once: the cost must still get there
    s = CostSmoother(SmoothingParams(method="ewma", tau=2.0, min_change=1.0, min_interval=0.5))
    s.sample(R2, 20.0, 0.0, "igp")
    first = s.sample(R2, 30.0, 10.0, "igp")
    assert first == []  # a sample alone moves the average by nothing yet (dt = 0)
    steps = run_until(s, 100.0)
    values = [o.cost for _, o in steps]
    assert values and values[-1] == 30.0
    assert all(a is not None and b is not None and b > a for a, b in itertools.pairwise(values))
    assert s.next_deadline() is None


def test_noise_below_min_change_does_not_move_the_cost() -> None:
    s = CostSmoother(SmoothingParams(method="none", min_change=2.0, min_interval=0.0))
    s.sample(R2, 10.0, 0.0, "probe")
    for i, v in enumerate([10.5, 9.2, 11.9, 8.1, 10.0]):
        assert s.sample(R2, v, 1.0 + i, "probe") == []
    assert s.sample(R2, 12.5, 10.0, "probe") == [CostOutput(R2, 12.5)]


def test_min_interval_holds_a_change_until_it_ends() -> None:
    s = CostSmoother(SmoothingParams(method="none", min_change=1.0, min_interval=5.0))
    s.sample(R2, 10.0, 0.0, "igp")
    assert s.sample(R2, 20.0, 1.0, "igp") == []
    assert s.next_deadline() == 5.0
    assert s.due(4.9) == []
    assert s.due(5.0) == [CostOutput(R2, 20.0)]


def test_losing_the_route_is_never_held_back_and_the_return_is_taken_as_it_is() -> None:
    s = CostSmoother(SmoothingParams(method="ewma", min_interval=60.0))
    s.sample(R2, 10.0, 0.0, "igp")
    assert s.sample(R2, None, 0.1, "igp") == [CostOutput(R2, None, reachable=False)]
    assert s.sample(R2, None, 0.2, "igp") == []  # told once
    assert s.next_deadline() is None
    assert s.sample(R2, 40.0, 0.3, "igp") == [CostOutput(R2, 40.0)]


def test_windowed_median_ignores_one_outlier_and_follows_a_level() -> None:
    s = CostSmoother(SmoothingParams(method="median", window=5.0, min_change=1.0, min_interval=0))
    s.sample(R2, 10.0, 0.0, "probe")
    for t in (1.0, 2.0, 3.0):
        s.sample(R2, 10.0, t, "probe")
    assert s.sample(R2, 90.0, 3.5, "probe") == []  # one spike
    assert s.sample(R2, 10.0, 4.0, "probe") == []
    # a lasting step: once the old samples leave the window the median is the new level
    s.sample(R2, 30.0, 20.0, "probe")
    run_until(s, 100.0)
    assert s.cost(R2) == (30.0, True)


def test_a_bad_sample_is_refused() -> None:
    s = CostSmoother()
    with pytest.raises(ValueError, match="not a finite cost"):
        s.sample(R2, math.inf, 0.0, "igp")
    with pytest.raises(ValueError, match="not a finite cost"):
        s.sample(R2, -1.0, 0.0, "igp")


def test_status_shows_source_age_and_last_samples_newest_first() -> None:
    s = CostSmoother(SmoothingParams(method="none", min_change=0, min_interval=0))
    s.sample(R2, 10.0, 0.0, "igp")
    s.sample(R2, None, 1.0, "igp")
    st = s.status(R2, 3.0)
    assert st is not None
    assert st["source"] == "igp" and st["age"] == 2.0 and st["reachable"] is False
    assert [x["value"] for x in st["samples"]] == [None, 10.0]


# --- in the engine ----------------------------------------------------------------------------


def two_egresses(**kw: object):  # type: ignore[no-untyped-def]
    e = engine(R1, egress=False, cost_source="igp", **kw)
    e.handle(RouteLearned("p", route(1, egress=R2)), 0.0)
    e.handle(RouteLearned("p", route(2, egress=R3)), 0.0)
    return e


def weights(e) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {str(c.egress): c.weight for c in e.table[SVC].choices}


def test_igp_cost_moves_weights_and_losing_the_route_takes_the_egress_out_at_once() -> None:
    e = two_egresses(cost_smoothing=SmoothingParams(method="none", min_change=1, min_interval=0))
    e.handle(CostSampled(R2, "igp", 10.0), 1.0)
    e.handle(CostSampled(R3, "igp", 10.0), 1.0)
    assert weights(e) == {str(R2): 500, str(R3): 500}
    e.handle(CostSampled(R3, "igp", 40.0), 2.0)
    w = weights(e)
    assert w[str(R2)] > w[str(R3)] > 0
    effects = e.handle(CostSampled(R2, "igp", None), 3.0)
    assert any(isinstance(x, ProgramService) for x in effects)
    w = weights(e)
    assert w[str(R2)] == 0 and w[str(R3)] == 1000
    # the instance stays (weight 0) so flows pinned to it keep their path
    assert [c.reachable for c in e.table[SVC].choices] == [False, True]
    e.handle(CostSampled(R2, "igp", 10.0), 4.0)
    assert weights(e)[str(R2)] > weights(e)[str(R3)]


def test_samples_from_a_source_the_egress_is_not_given_are_ignored() -> None:
    e = two_egresses(cost_sources={R3: "static"})
    e.handle(CostChanged(R3, 5.0), 0.0)
    e.handle(CostSampled(R3, "igp", 90.0), 1.0)
    assert e.rib.cost(R3) == 5.0
    assert e.counters["cost_samples_ignored"] == 1
    assert e.cost_targets("igp") == {R2: ipaddress.IPv6Address("fc00:0:3::1")}


def test_the_engine_asks_for_ticks_while_a_cost_converges() -> None:
    e = two_egresses(cost_smoothing=SmoothingParams(method="ewma", tau=1.0, min_interval=0.2))
    e.handle(CostSampled(R2, "igp", 10.0), 0.0)
    e.handle(CostSampled(R2, "igp", 50.0), 1.0)
    now = 1.0
    for _ in range(200):
        d = e.next_deadline()
        if d is None:
            break
        now = d
        e.handle(Tick(), now)
    assert e.rib.cost(R2) == 50.0 and e.next_deadline() is None
    rows = {r["egress"]: r for r in e.cost_table(now)}
    assert rows[str(R2)]["source"] == "igp" and rows[str(R2)]["cost"] == 50.0
    assert rows[str(R3)]["source"] == "igp" and rows[str(R3)]["samples"] == []
