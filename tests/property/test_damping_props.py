"""Whatever an instance does, damping bounds the updates it causes."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.engine.damping import Damper, DampingParams, Retract, Send
from cand.model import InstanceState
from tests.helpers import key, route

K = key(1)
P = DampingParams(
    threshold=50,
    min_interval=1.0,
    refresh_interval=30.0,
    penalty=1000,
    suppress_above=3000,
    reuse_below=750,
    half_life=15.0,
)


@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 2.0),  # time step
            st.sampled_from([None, *InstanceState]),
            st.floats(0.0, 1.0),
        ),
        min_size=1,
        max_size=300,
    )
)
@settings(max_examples=200)
def test_updates_are_bounded(steps: list[tuple[float, InstanceState | None, float]]) -> None:
    dm = Damper(P)
    now, sent = 0.0, []
    for dt, state, cpu in steps:
        now += dt
        r = None if state in (None, InstanceState.DOWN) else route(1, state=state, cpu=cpu)
        sent += dm.offer(K, r, now)
        sent += dm.due(now)
    # Metric-only updates: at most one per min_interval, plus one per state change; state
    # changes that go out are bounded by flap damping: before suppression at most
    # suppress_above/penalty + 1 transitions can be sent within a half-life window.
    duration = max(now, 1e-9)
    announcements = sum(isinstance(a, Send) for a in sent)
    withdrawals = sum(isinstance(a, Retract) for a in sent)
    flaps_budget = (P.suppress_above / P.penalty + 1) * (1 + duration / P.half_life) * 2
    assert announcements <= math.floor(duration / P.min_interval) + 1 + flaps_budget
    assert withdrawals <= announcements
    # withdrawals and announcements alternate correctly: never two withdrawals in a row
    last = None
    for a in sent:
        if isinstance(a, Retract):
            assert not isinstance(last, Retract)
        last = a
