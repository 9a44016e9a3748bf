"""Undoing BMv2's 32-bit wrap of a binding's time left (cand_p4.ageing): every time since the
last hit up to the timeout (and a little past it) comes back exactly from what the switch
reports, for timeouts up to 18.6 h; right reports pass through unchanged."""

from __future__ import annotations

import pytest
from cand_p4 import ageing as a
from hypothesis import given, settings
from hypothesis import strategies as st

S = 10**9  # ns


def test_the_inverse_is_one_of_15625_modulo_2_to_the_26() -> None:
    assert a.ODD * a.INVERSE % a.MODULUS_MS == 1
    assert a.ODD << a.SHIFT == a.MS and a.MODULUS_MS * a.MS // a.ODD == 1 << 32


@pytest.mark.parametrize(
    ("timeout_s", "since_ms"),
    [(60, 1023), (60, 2027), (60, 4045), (60, 5048), (60, 12072), (30, 5000), (300, 0)],
)
def test_what_simple_switch_grpc_reported(timeout_s: int, since_ms: int) -> None:
    """The values read from BMv2 1.15.5 (a 60-s binding, read each second): left 3.14, 2.14,
    0.12, 3.41 s as they stand; the model reproduces them and `idle` reads them right."""
    report = a.bmv2_report(timeout_s * S, since_ms)
    got = a.idle(timeout_s * S, report)
    assert got.since_hit_ns == since_ms * a.MS
    assert got.left_ns == timeout_s * S - since_ms * a.MS


def test_the_models_wrapped_values_are_the_switchs() -> None:
    # elapsed_ns as simple_switch_grpc gave them for a 60-s entry, 1023 ms and 5048 ms idle
    assert a.bmv2_report(60 * S, 1023) == 56857574848
    assert a.bmv2_report(60 * S, 5048) == 56587607552
    as_it_stands = 60 * S - 56857574848
    assert as_it_stands < 1 << 32  # what cand showed before: 3.1 s left, not 58.98


@settings(max_examples=2000)
@given(st.integers(min_value=1, max_value=a.MODULUS_MS - 1), st.data())
def test_every_idle_time_within_the_timeout_is_exact(timeout_ms: int, data: st.DataObject) -> None:
    since_ms = data.draw(st.integers(min_value=0, max_value=timeout_ms))
    got = a.idle(timeout_ms * a.MS, a.bmv2_report(timeout_ms * a.MS, since_ms))
    assert got.since_hit_ns == since_ms * a.MS
    assert got.left_ns == (timeout_ms - since_ms) * a.MS


@settings(max_examples=500)
@given(
    st.integers(min_value=1, max_value=86_400_000 // 2),
    st.integers(min_value=1, max_value=10_000),
)
def test_past_the_timeout_but_not_yet_swept_is_overdue_with_nothing_left(
    timeout_ms: int, overdue_ms: int
) -> None:
    since_ms = timeout_ms + overdue_ms
    got = a.idle(timeout_ms * a.MS, a.bmv2_report(timeout_ms * a.MS, since_ms))
    assert got.since_hit_ns == since_ms * a.MS and got.left_ns == 0


@settings(max_examples=500)
@given(st.integers(min_value=1, max_value=10**8), st.data())
def test_a_report_that_is_right_stays_right(timeout_ms: int, data: st.DataObject) -> None:
    """A target without the wrap (elapsed_ns the true value in ms) is read as it reports."""
    since_ms = data.draw(st.integers(min_value=0, max_value=timeout_ms))
    got = a.idle(timeout_ms * a.MS, since_ms * a.MS)
    assert got.since_hit_ns == since_ms * a.MS


@settings(max_examples=500)
@given(st.integers(min_value=1, max_value=10**6), st.data())
def test_a_timeout_not_in_whole_ms(timeout_us: int, data: st.DataObject) -> None:
    """PI hands BMv2 whole ms (truncated); the time left is counted from the ns given."""
    timeout_ns = timeout_us * 1000
    since_ms = data.draw(st.integers(min_value=0, max_value=timeout_ns // a.MS))
    got = a.idle(timeout_ns, a.bmv2_report(timeout_ns, since_ms))
    assert got.since_hit_ns == since_ms * a.MS
    assert got.left_ns == timeout_ns - since_ms * a.MS


def test_past_18_6_hours_the_idle_time_is_known_modulo_2_to_the_26_ms() -> None:
    """The documented limit: a 24-h timeout, idle 20 h, reads as idle 20 h - 2**26 ms."""
    timeout = 24 * 3600 * S
    since_ms = 20 * 3600 * 1000
    got = a.idle(timeout, a.bmv2_report(timeout, since_ms))
    assert got.since_hit_ns == (since_ms - a.MODULUS_MS) * a.MS
    # within 18.6 h it is exact even with that timeout
    got = a.idle(timeout, a.bmv2_report(timeout, 3_600_000))
    assert got.since_hit_ns == 3_600_000 * a.MS


def test_a_report_not_of_the_wrapped_form_is_taken_as_it_stands() -> None:
    got = a.idle(60 * S, 1_500_000_001)  # ns precision; 60e9 - that is odd
    assert (got.since_hit_ns, got.left_ns) == (1_500_000_001, 60 * S - 1_500_000_001)
    assert a.idle(0, 7) == a.Idle(7, 0)  # no timeout: nothing left
    assert a.idle(60 * S, 61 * S) == a.Idle(61 * S, 0)
    with pytest.raises(ValueError, match="not a multiple of 64"):
        a.left_ms_mod(65)


def test_seconds() -> None:
    got = a.idle(30 * S, a.bmv2_report(30 * S, 5250))
    assert got.since_hit == pytest.approx(5.25) and got.left == pytest.approx(24.75)
