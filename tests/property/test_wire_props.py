"""The MQTT codec round-trips every valid report and refuses anything else cleanly."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.wire import mqtt as wire
from tests.helpers import key
from tests.property.strategies import metrics, states

K = key(1)


@given(states, metrics, st.integers(0, wire.MAX_SEQ), st.floats(0, 4e9))
def test_round_trip(state, m, seq, ts) -> None:  # type: ignore[no-untyped-def]
    r = wire.decode(K, wire.encode(state, m, seq, ts))
    assert (r.state, r.metrics, r.seq, r.epoch) == (state, m, seq, seq)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=300) | json_values.map(lambda v: __import__("json").dumps(v).encode()))
@settings(max_examples=500)
def test_fuzz_only_payload_errors(raw: bytes) -> None:
    try:
        wire.decode(K, raw)
    except wire.PayloadError as e:
        assert e.reason in {"too_large", "not_json", "schema", "version", "range"}


@given(
    st.fixed_dictionaries(
        {
            "v": st.just(1),
            "seq": st.integers(-5, 2**60),
            "ts": st.floats(allow_nan=True) | st.integers() | st.text(max_size=3),
            "state": st.sampled_from(["up", "down", "draining", "x", ""]),
            "metrics": st.dictionaries(
                st.sampled_from(
                    ["cpu", "gpu", "memory", "sessions", "capacity", "max_sessions", "q"]
                ),
                st.floats(allow_nan=True) | st.integers(-10, 2**40) | st.booleans(),
                max_size=5,
            ),
        }
    )
)
@settings(max_examples=500)
def test_fuzz_near_valid_payloads(body: dict[str, object]) -> None:
    _near_valid(body)


@given(
    st.fixed_dictionaries(
        {
            "v": st.just(2),
            "seq": st.integers(0, 2**40),
            "ts": st.just(1.0),
            "state": st.just("up"),
            "metrics": st.dictionaries(
                st.sampled_from(["cpu", "delay", "sessions", "max_sessions", "q"]),
                st.floats(allow_nan=True) | st.integers(-10, 2**40) | st.booleans(),
                max_size=4,
            ),
        },
        optional={
            "l2": st.integers(-3, 14) | st.floats(allow_nan=True) | st.booleans() | st.none(),
            "l1": st.dictionaries(
                st.sampled_from(["computing", "communication", "service", "composed", "network"]),
                st.integers(-3, 14) | st.floats() | st.text(max_size=2),
                max_size=4,
            )
            | st.integers(),
        },
    )
)
@settings(max_examples=500)
def test_fuzz_near_valid_v2_payloads(body: dict[str, object]) -> None:
    r = _near_valid(body)
    if r is None:
        return
    l2 = body.get("l2")
    assert type(l2) is int and 0 <= l2 <= 10 and r.metrics.l2 == l2 if "l2" in body else True
    l1 = body.get("l1", {})
    assert isinstance(l1, dict) and r.metrics.l1() == l1 if "l2" in body else "l1" not in body


def _near_valid(body: dict[str, object]) -> wire.Report | None:
    import json

    raw = json.dumps(body).encode()
    try:
        r = wire.decode(K, raw)
    except wire.PayloadError:
        return None
    assert 0 <= r.seq <= wire.MAX_SEQ
    assert 0 <= r.metrics.load <= 1
    return r
