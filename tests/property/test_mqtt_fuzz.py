"""Mutated real reports and hostile topics: only PayloadError leaves the decoder, and the
source's `handle` never raises and never grows its state past its caps.

The mutations are what the random fuzz of test_wire_props.py never reached: numbers of
hundreds of digits or huge exponents in every numeric field, duplicated keys, wrong types in
exact places, and byte flips of a real payload."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.adapters.mqtt import MqttMetricSource
from cand.config import MqttConfig
from cand.model import InstanceState, Metrics
from cand.normalize import Scores
from cand.wire import mqtt as wire
from tests.helpers import R1, SVC, key

K = key(1)
REAL = wire.encode(
    InstanceState.UP, Metrics(cpu=0.25, sessions=3, max_sessions=9), 1_700_000_000_123, 1.7e9
).decode()
REAL_V2 = wire.encode(
    InstanceState.UP,
    Metrics(cpu=0.25, delay=4.5, scores=Scores(l2=7, computing=7, service=9)),
    1_700_000_000_123,
    1.7e9,
).decode()
NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
REASONS = {"too_large", "not_json", "schema", "version", "range"}

odd_numbers = st.sampled_from(
    ["1" + "0" * 400, "-" + "9" * 500, "1e400", "-1e400", "1e-400", "0." + "1" * 300, "1E99999"]
) | st.from_regex(r"-?\d{1,40}(\.\d{1,40})?([eE][-+]?\d{1,6})?", fullmatch=True)
odd_values = odd_numbers | st.sampled_from(
    ["null", "true", "false", '"1"', "[]", "{}", '"up"', "[" * 50 + "]" * 50]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from([REAL, REAL_V2]))
    kind = draw(st.sampled_from(["number", "dup", "flip", "cut", "insert"]))
    if kind == "number":
        spans = [m.span() for m in NUMBER.finditer(text)]
        a, b = draw(st.sampled_from(spans))
        text = text[:a] + draw(odd_values) + text[b:]
    elif kind == "dup":
        k = draw(
            st.sampled_from(
                ["v", "seq", "epoch", "ts", "state", "metrics", "cpu", "l1", "l2", "delay"]
            )
        )
        text = text.replace("{", f'{{"{k}":{draw(odd_values)},', 1)
    elif kind == "flip":
        raw = bytearray(text.encode())
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        return bytes(raw)
    elif kind == "cut":
        text = text[: draw(st.integers(0, len(text) - 1))]
    else:
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(odd_values) + text[i:]
    return text.encode()


@given(mutated())
@settings(max_examples=1500)
def test_mutated_reports_raise_only_payload_errors(raw: bytes) -> None:
    try:
        r = wire.decode(K, raw)
    except wire.PayloadError as e:
        assert e.reason in REASONS
        return
    # what was accepted is exactly what the format allows
    body = json.loads(raw)
    assert type(body["v"]) is int and body["v"] in (1, 2)
    assert 0 <= r.seq <= wire.MAX_SEQ and 0 <= r.ts <= wire.MAX_TS
    assert 0 <= r.metrics.load <= 1
    if body["v"] == 1:  # the CATS additions exist only in v=2
        assert "l1" not in body and "l2" not in body and "delay" not in body["metrics"]
    if "l2" in body:
        assert type(body["l2"]) is int and r.metrics.l2 == body["l2"]
    assert 0 <= r.metrics.l2 <= 10 and all(0 <= v <= 10 for v in r.metrics.l1().values())


segments = st.text(max_size=60) | st.sampled_from(
    ["::1", "fe80::1%eth0", "2001:db8:a::1", "2001:DB8:a::1", "127.0.0.1", str(SVC), "+", "#"]
)


@given(st.lists(st.tuples(st.lists(segments, max_size=4), mutated()), max_size=40))
@settings(max_examples=200)
def test_source_never_raises_and_stays_bounded(msgs: list[tuple[list[str], bytes]]) -> None:
    s = MqttMetricSource(
        MqttConfig(max_instances=8), [SVC], clock=lambda: 0.0, router=R1, wall_clock=lambda: 1.7e9
    )
    for parts, raw in msgs:
        s.handle("/".join(["dyncast", "v1", *parts]), raw, None)
    st_ = s.status()
    assert st_["instances_tracked"] <= 8
    assert len(s._last_log) <= len(st_) and st_["accepted"] + st_["dropped"] <= len(msgs)
