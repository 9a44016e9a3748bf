"""Cost smoothing: noise never moves the cost by less than min_change, and a held input is
reached, whatever came before (fake clock, driven at the deadlines the smoother asks for)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.engine.cost import CostSmoother, SmoothingParams
from tests.helpers import R2

params = st.builds(
    SmoothingParams,
    method=st.sampled_from(["ewma", "median", "none"]),
    tau=st.floats(0.1, 10),
    window=st.floats(0.1, 10),
    min_change=st.floats(0, 20),
    min_interval=st.floats(0, 5),
)
samples = st.lists(
    st.tuples(st.floats(0.0, 5.0), st.one_of(st.none(), st.floats(0, 1000))), max_size=40
)


def drive(s: CostSmoother, history: list[tuple[float, float | None]], end_value: float):  # type: ignore[no-untyped-def]
    """Feed the history, then hold `end_value` for a long time; return the outputs in order
    (None for 'unreachable') and the time reached."""
    now, outs = 0.0, []
    for dt, value in history:
        target = now + dt
        for _ in range(5000):
            d = s.next_deadline()
            if d is None or d > target:
                break
            now = max(now, d)
            outs += s.due(now)
        else:
            raise AssertionError(f"deadline {s.next_deadline()} does not move at {now}")
        now = target
        outs += s.sample(R2, value, now, "probe")
    outs += s.sample(R2, end_value, now, "probe")
    for _ in range(5000):
        d = s.next_deadline()
        if d is None:
            break
        now = max(now, d)
        outs += s.due(now)
    return outs, now


@settings(max_examples=300, deadline=None)
@given(params, samples, st.floats(0, 1000))
def test_no_change_smaller_than_min_change_and_a_held_input_is_reached(
    p: SmoothingParams, history: list[tuple[float, float | None]], end: float
) -> None:
    s = CostSmoother(p)
    outs, _ = drive(s, history, end)
    assert s.next_deadline() is None, "the smoother settles"
    last: float | None = None
    for o in outs:
        if o.reachable and last is not None:
            assert o.cost is not None and abs(o.cost - last) >= p.min_change
        last = o.cost if o.reachable else None
    got = s.cost(R2)
    assert got is not None and got[1] is True
    assert got[0] is not None and abs(got[0] - end) < max(p.min_change, 1e-6)


@settings(max_examples=200, deadline=None)
@given(params, st.floats(0, 1000), st.integers(1, 30))
def test_a_constant_input_is_the_cost_exactly(p: SmoothingParams, c: float, n: int) -> None:
    s = CostSmoother(p)
    outs, _ = drive(s, [(0.5, c)] * n, c)
    assert s.cost(R2) == (c, True)
    assert len(outs) == 1  # taken once, never moved by its own repetition
