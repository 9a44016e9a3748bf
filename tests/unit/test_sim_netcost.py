"""The simulated network's delay changes (bench/sim/netcost.py)."""

from __future__ import annotations

import math

import pytest

from bench.sim.netcost import Change, DynamicNetwork
from bench.sim.steer import StaticNetwork
from bench.sim.world import build


def test_a_step_holds_from_its_start() -> None:
    c = Change("e0", "step", 20.0, 10.0)
    assert c.extra(9.999) == 0.0
    assert c.extra(10.0) == pytest.approx(0.020)
    assert c.extra(1e6) == pytest.approx(0.020)


def test_a_drift_grows_linearly_then_holds() -> None:
    c = Change("e1", "drift", 10.0, 100.0, 200.0)
    assert c.extra(50.0) == 0.0
    assert c.extra(150.0) == pytest.approx(0.005)
    assert c.extra(200.0) == pytest.approx(0.010)
    assert c.extra(500.0) == pytest.approx(0.010)


def test_without_jitter_the_delay_is_the_world_plus_the_changes_of_that_egress() -> None:
    w = build(1)
    net = DynamicNetwork(w, [Change("e2", "step", 20.0, 5.0)], jitter_ms=0.0, seed=1)
    static = StaticNetwork(w)
    for i in w.ingresses:
        for e in w.egresses:
            extra = 0.020 if e == "e2" else 0.0
            assert net.one_way(i, e, 1.0) == static.one_way(i, e, 1.0)
            assert net.one_way(i, e, 6.0) == pytest.approx(w.one_way[(i, e)] + extra)
            assert net.probe_one_way(i, e, 6.0) == net.mean_one_way(i, e, 6.0)


def test_jitter_only_adds_and_averages_its_mean() -> None:
    w = build(1)
    net = DynamicNetwork(w, [], jitter_ms=0.5, seed=1)
    base = w.one_way[("i0", "e0")]
    draws = [net.one_way("i0", "e0", 0.0) - base for _ in range(20000)]
    assert min(draws) >= 0
    assert math.isclose(sum(draws) / len(draws), 0.0005, rel_tol=0.05)
    assert net.mean_one_way("i0", "e0", 0.0) == pytest.approx(base + 0.0005)
