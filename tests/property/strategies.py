"""Hypothesis strategies for domain values."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from cand.engine.service_table import Candidate
from cand.model import InstanceKey, InstanceRoute, InstanceState, Metrics
from cand.normalize import Scores
from tests.helpers import R2, R3, SVC, bid

ratios = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
score_values = st.integers(0, 10)
scores = st.builds(
    Scores,
    l2=score_values,
    computing=st.none() | score_values,
    communication=st.none() | score_values,
    service=st.none() | score_values,
    composed=st.none() | score_values,
)
metrics = st.builds(
    Metrics,
    cpu=st.none() | ratios,
    memory=st.none() | ratios,
    sessions=st.none() | st.integers(0, 1000),
    max_sessions=st.none() | st.integers(1, 1000),
    capacity=st.integers(1, 10_000),
    delay=st.none() | st.floats(0, 5000, allow_nan=False),
    scores=st.none() | scores,
)
states = st.sampled_from(list(InstanceState))


@st.composite
def candidates(draw: st.DrawFn, min_size: int = 1, max_size: int = 8) -> list[Candidate]:
    ns = draw(st.lists(st.integers(1, 200), min_size=min_size, max_size=max_size, unique=True))
    out = []
    for n in ns:
        r = InstanceRoute(
            key=InstanceKey(SVC, bid(n)),
            egress=draw(st.sampled_from([R2, R3])),
            sid=ipaddress.IPv6Address(f"fc00:0:3::{n:x}"),
            metrics=draw(metrics),
            state=draw(states),
            seq=draw(st.integers(0, 10)),
        )
        out.append(Candidate(r, draw(st.floats(0, 100, allow_nan=False)), draw(st.booleans())))
    return out
