import logging

import pytest

from cand.adapters.mqtt import MqttMetricSource
from cand.config import MqttConfig
from cand.model import InstanceState, Metrics
from cand.wire import mqtt as wire
from tests.helpers import SVC, SVC2, key

TOPIC = wire.topic(key(1))


def source() -> MqttMetricSource:
    return MqttMetricSource(MqttConfig(default_expiry=20.0), [SVC], clock=lambda: 0.0)


def test_good_message_becomes_an_event_with_expiry() -> None:
    s = source()
    raw = wire.encode(InstanceState.UP, Metrics(cpu=0.5), 7, 1.0)
    ev = s.handle(TOPIC, raw, 12.0)
    assert ev is not None
    assert ev.key == key(1) and ev.seq == 7 and ev.ttl == 12.0 and ev.hold == 0
    assert s.handle(TOPIC, raw, 12.0) is None  # re-delivery
    got2 = s.handle(TOPIC, wire.encode(InstanceState.UP, Metrics(), 8, 1.0), None)
    assert got2 is not None and got2.ttl == 20.0
    assert s.status()["accepted"] == 2 and s.status()["duplicates"] == 1


def test_bad_messages_are_counted_by_reason_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = source()
    other = wire.topic(key(1, SVC2))
    with caplog.at_level(logging.WARNING, "cand.mqtt"):
        for _ in range(5):
            assert s.handle(TOPIC, b"garbage", None) is None
        assert s.handle(other, wire.encode(InstanceState.UP, Metrics(), 1, 1.0), None) is None
        assert s.handle(TOPIC, b"", None) is None
    st = s.status()
    assert st["dropped_not_json"] == 5 and st["dropped_service"] == 1 and st["dropped_empty"] == 1
    assert st["dropped"] == 7
    logged = [r for r in caplog.records if "mqtt_dropped" in r.getMessage()]
    assert len(logged) == 3  # once per reason per interval (per topic would grow unbounded)


def test_wills_are_held_back_live_briefly_retained_longer() -> None:
    s = source()
    s.handle(TOPIC, wire.encode(InstanceState.UP, Metrics(), 11, 1.0, epoch=10), None)
    will = wire.encode(InstanceState.DOWN, Metrics(), 10, 1.0, epoch=10)
    got = s.handle(TOPIC, will, None)
    assert got is not None and got.hold == s.cfg.will_confirm
    other = wire.topic(key(2))
    got = s.handle(other, wire.encode(InstanceState.DOWN, Metrics(), 5, 1.0), None, retained=True)
    assert got is not None and got.hold == s.cfg.will_grace
    goodbye = wire.encode(InstanceState.DOWN, Metrics(), 30, 1.0, epoch=29)
    got = s.handle(TOPIC, goodbye, None)
    assert got is not None and got.hold == 0  # a clean goodbye is not held


def test_falling_behind_counts_as_a_possible_loss_once_per_episode() -> None:
    """While our queue is a quarter full the broker's queue for us drops in silence: that
    episode alone must lead to a resync, even if no instance's seq ever shows a gap."""
    s = source()
    q = s._queue_type()(16)
    before = s._losses()
    for i in range(12):
        q.put_nowait(i)  # type: ignore[arg-type]
    assert s.status()["fell_behind"] == 1 and s._losses() == before + 1
    s._behind = False  # what the resync loop does once the backlog is drained
    q.put_nowait(99)  # type: ignore[arg-type]
    assert s.status()["fell_behind"] == 2
