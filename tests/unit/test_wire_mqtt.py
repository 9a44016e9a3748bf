import json

import pytest

from cand.model import InstanceState, Metrics
from cand.wire import mqtt as wire
from tests.helpers import SVC, key

K = key(1)
TOPIC = "dyncast/v1/2001:db8:5::1/2001:db8:a::1"


def test_topic_round_trip_and_canonical_form() -> None:
    assert wire.topic(K) == TOPIC
    assert wire.parse_topic(TOPIC) == K
    assert wire.subscription(service=SVC) == "dyncast/v1/2001:db8:5::1/+"
    for bad, reason in (
        ("dyncast/v1/2001:0db8:5::1/2001:db8:a::1", "address"),  # not canonical
        ("dyncast/v1/2001:db8:5::1", "topic"),
        ("other/2001:db8:5::1/2001:db8:a::1", "topic"),
        ("dyncast/v1/2001:db8:5::1/10.0.0.1", "address"),
        ("dyncast/v1/x/y", "address"),
    ):
        with pytest.raises(wire.PayloadError) as e:
            wire.parse_topic(bad)
        assert e.value.reason == reason


def test_encode_is_byte_exact() -> None:
    raw = wire.encode(InstanceState.UP, Metrics(cpu=0.25, sessions=3), 42, 1700000000.5, 40)
    assert raw == (
        b'{"v":1,"seq":42,"epoch":40,"ts":1700000000.5,"state":"up",'
        b'"metrics":{"cpu":0.25,"sessions":3,"capacity":100}}'
    )
    r = wire.decode(K, raw)
    assert (r.seq, r.epoch, r.state, r.metrics.cpu) == (42, 40, InstanceState.UP, 0.25)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", "not_json"),
        (b"[1]", "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up"}', "version"),
        (b'{"v":1,"seq":-1,"ts":1,"state":"up"}', "range"),
        (b'{"v":1,"seq":true,"ts":1,"state":"up"}', "schema"),
        (b'{"v":1,"seq":1,"ts":NaN,"state":"up"}', "not_json"),
        (b'{"v":1,"seq":1,"ts":1,"state":"sleepy"}', "schema"),
        (b'{"v":1,"seq":1,"ts":1,"state":"up","metrics":{"cpu":2}}', "range"),
        (b'{"v":1,"seq":1,"ts":1,"state":"up","metrics":{"sessions":1.5}}', "schema"),
        (b'{"v":1,"seq":1,"ts":1,"state":"up","metrics":{"fan":1}}', "schema"),
        (b'{"v":1,"seq":1,"ts":1,"state":"up","extra":1}', "schema"),
        (b'{"v":1,"seq":1,"epoch":2,"ts":1,"state":"up"}', "range"),
        (b"{" * 100000, "too_large"),
    ],
)
def test_bad_payloads_have_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(wire.PayloadError) as e:
        wire.decode(K, payload)
    assert e.value.reason == reason


def body(seq: int, state: str = "up", epoch: int | None = None) -> bytes:
    return json.dumps(
        {"v": 1, "seq": seq, "epoch": seq if epoch is None else epoch, "ts": 1, "state": state}
    ).encode()


def test_sequencer_orders_dedups_and_honours_the_will() -> None:
    s = wire.Sequencer()

    def check(raw: bytes) -> bool:
        return s.check(wire.decode(K, raw), raw)

    assert check(body(100))  # session starts at epoch 100
    assert check(body(101, epoch=100))
    assert not check(body(101, epoch=100))  # retained re-delivery: quietly ignored
    with pytest.raises(wire.PayloadError, match="replay"):
        check(body(99))
    assert check(body(100, "down", epoch=100))  # the will, written at connect time
    with pytest.raises(wire.PayloadError, match="replay"):
        check(body(101, epoch=100))  # a late report of the dead session
    assert check(body(200))  # the restarted instance
