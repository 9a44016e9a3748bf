"""Last Wills held back by the engine, on a fake clock: the hold-back is a deadline, not a sleep."""

from hypothesis import given
from hypothesis import strategies as st

from cand.engine import InstanceReported, MetricsReachable, Tick, Withdraw
from cand.model import InstanceState, Metrics
from tests.helpers import engine, key


def up(seq: int) -> InstanceReported:
    return InstanceReported(key(1), InstanceState.UP, Metrics(cpu=0.2), seq, ttl=300.0)


def will(seq: int, hold: float) -> InstanceReported:
    return InstanceReported(key(1), InstanceState.DOWN, Metrics(), seq, hold=hold)


def withdrawn(effects: list[object]) -> bool:
    return any(isinstance(e, Withdraw) and e.key == key(1) for e in effects)


def test_a_will_applies_at_its_deadline_not_before() -> None:
    e = engine()
    e.handle(up(11), 0.0)
    assert e.handle(will(10, hold=0.5), 1.0) == []
    assert e.next_deadline() == 1.5
    assert not withdrawn(e.handle(Tick(), 1.4)) and key(1) in e.rib.local
    assert withdrawn(e.handle(Tick(), 1.5)) and key(1) not in e.rib.local
    assert e.counters["wills_held"] == 1 and e.counters["wills_applied"] == 1
    assert e.held == {}


def test_a_newer_report_cancels_the_held_will() -> None:
    e = engine()
    e.handle(up(11), 0.0)
    e.handle(will(10, hold=10.0), 1.0)
    e.handle(up(12), 3.0)  # the instance reconnected after a broker restart
    assert not withdrawn(e.handle(Tick(), 20.0)) and key(1) in e.rib.local
    assert e.counters["wills_cancelled"] == 1 and e.counters["wills_applied"] == 0


def test_losing_the_broker_discards_held_wills() -> None:
    e = engine()
    e.handle(up(11), 0.0)
    e.handle(will(10, hold=0.1), 1.0)  # the broker shutting down publishes every will
    e.handle(MetricsReachable(False), 1.05)
    assert not withdrawn(e.handle(Tick(), 5.0)) and key(1) in e.rib.local
    assert e.counters["wills_discarded"] == 1


@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.booleans()), min_size=1, max_size=12))
def test_an_instance_is_removed_only_by_a_will_nothing_followed(
    steps: list[tuple[float, bool]],
) -> None:
    """Whatever the interleaving of reports and held wills, the instance is gone at the end
    exactly when the last thing it sent was a will and that will's deadline has passed."""
    e = engine()
    now, seq = 0.0, 100
    e.handle(up(seq), now)
    last_will_due: float | None = None

    def run_until(t: float) -> None:  # what the daemon does: a Tick at each deadline
        for _ in range(100):
            d = e.next_deadline()
            if d is None or d > t:
                return
            e.handle(Tick(), d)

    for gap, is_will in steps:
        now += gap
        seq += 1
        run_until(now)
        if is_will:
            e.handle(will(seq, hold=1.0), now)
            last_will_due = now + 1.0
        else:
            e.handle(up(seq), now)
            last_will_due = None
    end = now + 2.0
    run_until(end)
    assert (key(1) not in e.rib.local) == (last_will_due is not None and last_will_due <= end)
