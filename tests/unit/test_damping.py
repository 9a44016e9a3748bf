from dataclasses import replace

from cand.engine.damping import Damper, DampingParams, Retract, Send
from cand.model import InstanceState, Metrics
from tests.helpers import key, route

K = key(1)


def d(**kw: float) -> Damper:
    return Damper(DampingParams(**kw))  # type: ignore[arg-type]


def test_first_report_goes_out_at_once() -> None:
    assert d().offer(K, route(1), 0.0) == [Send(route(1))]


def test_small_change_waits_for_refresh_big_change_for_min_interval() -> None:
    dm = d(threshold=50, min_interval=1.0, refresh_interval=10.0)
    dm.offer(K, route(1, cpu=0.20), 0.0)
    assert dm.offer(K, route(1, cpu=0.22), 0.5) == []  # below threshold
    assert dm.next_deadline() == 10.0
    assert dm.offer(K, route(1, cpu=0.40), 0.6) == []  # significant, but too soon
    assert dm.next_deadline() == 1.0
    assert dm.due(0.9) == []
    assert dm.due(1.0) == [Send(route(1, cpu=0.40))]
    assert dm.next_deadline() is None
    dm.offer(K, route(1, cpu=0.41), 1.5)
    assert dm.due(10.9) == []
    assert dm.due(11.0) == [Send(route(1, cpu=0.41))]


def test_a_prompt_change_goes_out_after_min_interval_whatever_its_size() -> None:
    """What a reload re-scored: the operator's change, not churn, so no refresh-long wait."""
    dm = d(threshold=50, min_interval=1.0, refresh_interval=10.0)
    dm.offer(K, route(1, cpu=0.20), 0.0)
    assert dm.offer(K, route(1, cpu=0.21), 0.5, prompt=True) == []  # too soon
    assert dm.next_deadline() == 1.0
    assert dm.due(1.0) == [Send(route(1, cpu=0.21))]
    # once sent, the next small change waits for the refresh again
    assert dm.offer(K, route(1, cpu=0.22), 2.5) == [] and dm.next_deadline() == 11.0
    assert dm.offer(K, route(1, cpu=0.23), 3.0, prompt=True) == [Send(route(1, cpu=0.23))]
    assert dm.offer(K, route(1, cpu=0.23), 3.5, prompt=True) == []  # nothing changed
    assert dm.next_deadline() is None


def test_state_changes_and_death_are_never_delayed() -> None:
    dm = d(min_interval=5.0)
    dm.offer(K, route(1), 0.0)
    draining = route(1, state=InstanceState.DRAINING)
    assert dm.offer(K, draining, 0.1) == [Send(draining)]
    assert dm.offer(K, None, 0.2) == [Retract(K)]
    assert dm.offer(K, None, 0.3) == []  # already withdrawn


def test_capacity_change_is_significant() -> None:
    dm = d(threshold=500, min_interval=0.0)
    dm.offer(K, route(1), 0.0)
    bigger = replace(route(1), metrics=Metrics(cpu=0.2, capacity=200))
    assert dm.offer(K, bigger, 1.0) == [Send(bigger)]


def test_flapping_instance_is_held_down_then_reused() -> None:
    dm = d(penalty=1000, suppress_above=2500, reuse_below=750, half_life=10.0)
    sent = []
    t = 0.0
    for _ in range(10):  # up/down every second
        sent += dm.offer(K, route(1), t)
        sent += dm.offer(K, None, t + 0.5)
        t += 1.0
    assert dm.suppressed(K)
    assert dm.suppressions == 1
    # 3 announcements and 3 withdrawals before the hold-down, none after
    assert sum(isinstance(a, Send) for a in sent) == 3
    assert sum(isinstance(a, Retract) for a in sent) == 3
    sent_up = dm.offer(K, route(1), t)
    assert sent_up == []
    reuse = dm.next_deadline()
    assert reuse is not None and reuse > t
    assert dm.due(reuse - 0.01) == []
    assert dm.due(reuse + 0.01) == [Send(route(1))]
    assert not dm.suppressed(K)


def test_forget_only_when_quiet() -> None:
    dm = d()
    dm.offer(K, route(1), 0.0)
    dm.forget(K)
    assert dm.next_deadline() is None
    assert dm.offer(K, route(1), 1.0) == []  # still tracked: nothing new


def test_a_tick_at_the_reported_deadline_releases_what_waits() -> None:
    """Found by the steering simulator: with sent_at and the interval such that
    `now - sent_at >= interval` rounds to false at `now = sent_at + interval`, the damper
    named a deadline at which it then released nothing (a fake clock looped forever)."""
    import random

    from cand.engine.damping import Damper, DampingParams
    from tests.helpers import key, route

    rng = random.Random(7)
    for _ in range(500):
        d = Damper(DampingParams(threshold=1, min_interval=rng.uniform(0.01, 3.0)))
        t0 = rng.uniform(0, 1e5)
        d.offer(key(1), route(1, cpu=0.1), t0)
        d.offer(key(1), route(1, cpu=0.9), t0 + 0.001)
        due = d.next_deadline()
        assert due is not None
        assert d.due(due), (t0, d.params.min_interval)
