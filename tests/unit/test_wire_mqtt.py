import json

import pytest

from cand.model import InstanceState, Metrics
from cand.normalize import Scores
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


def test_v2_carries_delay_and_the_instances_own_scores_byte_exact() -> None:
    m = Metrics(cpu=0.5, delay=12.5, scores=Scores(l2=6, service=6))
    raw = wire.encode(InstanceState.UP, m, 42, 1700000000.5, 40)
    assert raw == (
        b'{"v":2,"seq":42,"epoch":40,"ts":1700000000.5,"state":"up",'
        b'"metrics":{"cpu":0.5,"capacity":100,"delay":12.5},"l1":{"service":6},"l2":6}'
    )
    r = wire.decode(K, raw)
    assert r.metrics == m and r.metrics.l2 == 6 and r.metrics.l1() == {"service": 6}
    # L0 only, with a delay: v=2 without scores; the egress computes them
    r = wire.decode(K, b'{"v":2,"seq":1,"ts":1,"state":"up","metrics":{"delay":250}}')
    assert r.metrics.scores is None and r.metrics.delay == 250.0
    # scores only, no L0: the load follows the score
    r = wire.decode(K, b'{"v":2,"seq":1,"ts":1,"state":"up","l2":2}')
    assert r.metrics.scores == Scores(l2=2) and r.metrics.load_permille == 800


def test_v2_carries_the_composed_l1_score_byte_exact() -> None:
    """composed, the draft's fourth L1 category, is one an instance supplies: keys in the
    order of CATEGORIES, composed last."""
    m = Metrics(delay=80.0, scores=Scores(l2=4, service=7, composed=4))
    raw = wire.encode(InstanceState.UP, m, 42, 1700000000.5, 40)
    assert raw == (
        b'{"v":2,"seq":42,"epoch":40,"ts":1700000000.5,"state":"up",'
        b'"metrics":{"capacity":100,"delay":80.0},"l1":{"service":7,"composed":4},"l2":4}'
    )
    r = wire.decode(K, raw)
    assert r.metrics == m and r.metrics.l1() == {"service": 7, "composed": 4}
    assert r.metrics.scores is not None and r.metrics.scores.composed == 4


def test_an_unknown_l1_category_is_refused_naming_the_field() -> None:
    with pytest.raises(wire.PayloadError, match=r"l1: unknown categories 'network'") as e:
        wire.decode(K, b'{"v":2,"seq":1,"ts":1,"state":"up","l2":3,"l1":{"network":3}}')
    assert e.value.reason == "schema"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", "not_json"),
        (b"[1]", "schema"),
        (b'{"v":3,"seq":1,"ts":1,"state":"up"}', "version"),
        # the CATS additions exist only in v=2 ...
        (b'{"v":1,"seq":1,"ts":1,"state":"up","l2":5}', "schema"),
        (b'{"v":1,"seq":1,"ts":1,"state":"up","metrics":{"delay":3}}', "schema"),
        # ... and are as strict as the rest
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":11}', "range"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":-1}', "range"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":5.0}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":true}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":null}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l1":{"service":3}}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":3,"l1":{"network":3}}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":3,"l1":{"composed":11}}', "range"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":3,"l1":{"service":"3"}}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":3,"l1":{"service":30}}', "range"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":3,"l1":[3]}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","l2":3,"l2":4}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","metrics":{"delay":-1}}', "range"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","metrics":{"delay":"1"}}', "schema"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","metrics":{"delay":1e300}}', "range"),
        (b'{"v":2,"seq":1,"ts":1,"state":"up","extra":1}', "schema"),
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


def test_agent_reports_its_own_scores_as_v2_and_goes_back() -> None:
    import asyncio

    from cand.agent import MetricAgent
    from cand.model import ModelError

    agent = MetricAgent("mqtt://127.0.0.1", SVC, K.binding)

    async def run() -> list[bytes]:
        out = []
        await agent.report(cpu=0.4)
        out.append(wire.encode(agent.state, agent._metrics, 1, 1.0))
        await agent.report(l2=4, l1={"service": 4})
        out.append(wire.encode(agent.state, agent._metrics, 2, 1.0))
        await agent.report(l2=None)
        out.append(wire.encode(agent.state, agent._metrics, 3, 1.0))
        await agent.report(l2=2, l1={"composed": 2})
        out.append(wire.encode(agent.state, agent._metrics, 4, 1.0))
        await agent.report(l2=None)
        for bad in ({"l2": 11}, {"l2": 3, "l1": {"network": 1}}, {"l2": 3, "l1": {"composed": 11}}):
            with pytest.raises(ModelError):
                await agent.report(**bad)
        return out

    v1, v2, back, composed = asyncio.run(run())
    assert composed.endswith(b'"l1":{"composed":2},"l2":2}')
    assert wire.decode(K, composed).metrics.l1() == {"composed": 2}
    assert v1.startswith(b'{"v":1') and back.startswith(b'{"v":1')
    assert v2.startswith(b'{"v":2') and v2.endswith(b'"l1":{"service":4},"l2":4}')
    assert wire.decode(K, v2).metrics.l2 == 4
