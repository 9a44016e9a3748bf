"""CATS normalization: every score in 0..10, higher is better, and more load never scores
higher, under any bounds, method and composition a config can give."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cand.engine import InstanceReported, Reconfigured
from cand.engine.service_table import ServiceSpec
from cand.model import InstanceState, Metrics
from cand.normalize import (
    CATEGORIES,
    DEFAULT_BOUNDS,
    L0_NAMES,
    Normalization,
    band,
    normalize,
    position,
    score,
)
from tests.helpers import SVC, engine, key
from tests.property.strategies import metrics


@st.composite
def normalizations(draw: st.DrawFn) -> Normalization:
    bounds = {}
    for name in draw(st.lists(st.sampled_from(L0_NAMES), unique=True)):
        top = 1.0 if name != "delay" else 5000.0
        best = draw(st.floats(0, top * 0.9, allow_nan=False))
        worst = draw(st.floats(best + top * 0.01, top * 1.1, allow_nan=False))
        bounds[name] = (best, worst)
    weights = draw(st.dictionaries(st.sampled_from(CATEGORIES), st.floats(0, 10), max_size=3))
    return Normalization(
        method=draw(st.sampled_from(["min-max", "log"])),
        bounds=bounds,
        composition=draw(st.sampled_from(["min", "mean"])),
        weights=weights,
    )


@given(metrics, normalizations())
def test_every_score_is_within_0_to_10(m: Metrics, p: Normalization) -> None:
    s = normalize(m, p)
    assert 0 <= s.l2 <= 10
    assert all(0 <= v <= 10 for v in s.l1().values())
    assert s.communication is None and s.composed is None  # nothing an instance reports feeds them


@given(
    metrics,
    normalizations(),
    st.dictionaries(st.sampled_from(("communication", "composed")), st.floats(0, 10), min_size=1),
)
def test_composed_and_communication_never_enter_the_egress_composition(
    m: Metrics, p: Normalization, extra: dict[str, float]
) -> None:
    """The documented choice: L2 is composed over the categories scored from L0 (computing,
    service); a weight for composed or communication is accepted and changes nothing."""
    mean = dataclasses.replace(p, composition="mean")
    weighted = dataclasses.replace(mean, weights={**mean.weights, **extra})
    assert normalize(m, weighted) == normalize(m, mean)


@given(normalizations())
def test_direction_idle_scores_10_and_saturated_scores_0(p: Normalization) -> None:
    assert normalize(Metrics(), p).l2 == 10  # nothing known: idle
    idle = Metrics(cpu=0.0, memory=0.0, sessions=0, max_sessions=10, delay=0.0)
    assert normalize(idle, p).l2 == 10 if all(p.bounds[n][0] == 0 for n in L0_NAMES) else True
    full = Metrics(cpu=1.0, gpu=1.0, memory=1.0, sessions=10, max_sessions=10, delay=5500.0)
    assert normalize(full, p).l2 == 0 if all(p.bounds[n][1] <= 1.0 or n == "delay"
                                             for n in L0_NAMES) else True  # fmt: skip


busier = st.sampled_from(["cpu", "gpu", "memory", "sessions", "delay"])


@given(metrics, normalizations(), busier, st.floats(0, 1, allow_nan=False))
def test_more_load_never_scores_higher(
    m: Metrics, p: Normalization, name: str, more: float
) -> None:
    # the value is known on both sides: a category that appears is more knowledge, not load
    if name == "sessions":
        top = m.max_sessions or 100
        m = dataclasses.replace(m, max_sessions=top, sessions=min(top, m.sessions or 0))
        worse = dataclasses.replace(m, sessions=min(top, (m.sessions or 0) + round(more * top)))
    elif name == "delay":
        m = dataclasses.replace(m, delay=m.delay or 0.0)
        worse = dataclasses.replace(m, delay=(m.delay or 0.0) + more * 1000)
    else:
        m = dataclasses.replace(m, **{name: getattr(m, name) or 0.0})
        worse = dataclasses.replace(m, **{name: min(1.0, (getattr(m, name) or 0.0) + more)})
    a, b = normalize(m, p), normalize(worse, p)
    assert b.l2 <= a.l2
    for category, v in b.l1().items():
        assert v <= a.l1().get(category, 10)


@given(st.floats(0, 1, allow_nan=False), st.floats(0, 1, allow_nan=False))
def test_score_is_monotone_in_position(t: float, u: float) -> None:
    lo, hi = sorted((t, u))
    assert score(hi) <= score(lo)
    assert score(0.0) == 10 and score(1.0) == 0


@given(
    st.floats(0, 100, allow_nan=False),
    st.floats(0, 100, allow_nan=False),
    st.sampled_from(["min-max", "log"]),
)
def test_position_is_clamped_and_monotone(x: float, y: float, method: str) -> None:
    lo, hi = sorted((x, y))
    assert 0.0 <= position(lo, 10, 50, method) <= position(hi, 10, 50, method) <= 1.0  # type: ignore[arg-type]


def test_default_is_min_max_of_the_bottleneck() -> None:
    assert normalize(Metrics(cpu=0.25)).l2 == 8  # 10 * 0.75 = 7.5, half up
    assert normalize(Metrics(cpu=0.97)).l2 == 0  # the demo's overloaded instance: avoid
    assert normalize(Metrics(cpu=0.1, sessions=9, max_sessions=10)).l1() == {
        "computing": 9,
        "service": 1,
    }
    assert normalize(Metrics(cpu=0.1, sessions=9, max_sessions=10)).l2 == 1  # worst decides
    mean = Normalization(composition="mean", weights={"computing": 3})
    assert normalize(Metrics(cpu=0.1, sessions=9, max_sessions=10), mean).l2 == 7  # (27+1)/4
    tight = Normalization(bounds={"delay": (10, 110)})
    assert normalize(Metrics(delay=60), tight).l1() == {"service": 5}
    assert normalize(Metrics(delay=5), tight).l2 == 10
    log = Normalization(method="log", bounds={"delay": (0, 999)})
    assert normalize(Metrics(delay=30.6), log).l2 == 5  # log(31.6) / log(1000) = 0.5
    assert [band(s) for s in (0, 3, 4, 7, 8, 10)] == ["avoid"] * 2 + ["medium"] * 2 + [
        "preferred"
    ] * 2
    assert set(DEFAULT_BOUNDS) == set(L0_NAMES)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"bounds": {"cpu": (0.5, 0.5)}}, "bounds.cpu"),
        ({"bounds": {"cpu": (0.9, 0.1)}}, "bounds.cpu"),
        ({"bounds": {"fan": (0, 1)}}, "bounds.fan"),
        ({"bounds": {"delay": (-1, 1)}}, "bounds.delay"),
        ({"weights": {"network": 1}}, "weights.network"),
        ({"weights": {"service": -1}}, "weights.service"),
        ({"method": "z-score"}, "method"),
        ({"composition": "max"}, "composition"),
    ],
)
def test_bad_normalization_names_the_field(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Normalization(**kw)  # type: ignore[arg-type]


@given(metrics, normalizations(), normalizations())
def test_a_reload_scores_as_a_fresh_report_would(
    m: Metrics, before: Normalization, after: Normalization
) -> None:
    """After a reload that changes the normalization, every local instance holds the scores
    the same report would get under the new one: derived again when the egress scored it,
    as given when the instance scored itself. No new report is needed for either."""
    report = InstanceReported(key(1), InstanceState.UP, m, 1, ttl=60.0)
    e = engine(services={SVC: ServiceSpec(SVC, normalization=before)})
    e.handle(report, 0.0)
    e.handle(
        Reconfigured(
            dataclasses.replace(e.config, services={SVC: ServiceSpec(SVC, normalization=after)})
        ),
        1.0,
    )
    fresh = engine(services={SVC: ServiceSpec(SVC, normalization=after)})
    fresh.handle(report, 0.0)
    got, want = e.rib.local[key(1)].route.metrics, fresh.rib.local[key(1)].route.metrics
    assert got.cats == want.cats == (m.scores if m.scores is not None else normalize(m, after))
    assert got.load_permille == want.load_permille and got == want
