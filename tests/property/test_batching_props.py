"""MQTT reports taken in bursts (one engine pass per burst) end in the same state as the same
reports taken one at a time: the rib, what the speaker was told to announce, the local SIDs,
and the source's counters."""

from __future__ import annotations

from typing import Any

import aiomqtt
from hypothesis import given, settings
from hypothesis import strategies as st

from cand.adapters.mqtt import MqttMetricSource
from cand.config import MqttConfig
from cand.engine import (
    Advertise,
    Effect,
    Engine,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RemoveService,
    Tick,
    Withdraw,
)
from cand.engine.policy import PolicyParams
from cand.model import InstanceState, Metrics
from cand.wire import mqtt as wire
from tests.helpers import R1, SVC, SVC2, engine, key
from tests.property.strategies import ratios

EPOCH = 1_700_000_000_000
WALL = 1.8e9  # the source's wall clock: every seq above is in its past


@st.composite
def reports(draw: st.DrawFn) -> list[aiomqtt.Message]:
    """Reports of a few instances, mostly in order, with re-deliveries, replays, wills,
    clean goodbyes and garbage among them."""
    out: list[aiomqtt.Message] = []
    seqs: dict[int, int] = {}
    for mid in range(draw(st.integers(1, 40))):
        n = draw(st.integers(1, 4))
        service = draw(st.sampled_from([SVC, SVC, SVC2]))
        topic = wire.topic(key(n, service))
        kind = draw(st.sampled_from(["report", "report", "report", "again", "old", "will", "bad"]))
        seq = seqs.get(n, EPOCH) + draw(st.integers(1, 3))
        epoch = EPOCH
        state = draw(st.sampled_from([InstanceState.UP, InstanceState.UP, InstanceState.DRAINING]))
        if kind == "again" and out:
            out.append(out[-1])
            continue
        if kind == "old":
            seq = max(EPOCH, seq - 5)
        if kind == "will":
            state, seq = InstanceState.DOWN, EPOCH
        if kind == "bad":
            raw = draw(st.sampled_from([b"garbage", b"", b'{"v":1}']))
        else:
            metrics = Metrics(cpu=draw(st.none() | ratios), sessions=draw(st.integers(0, 9)))
            raw = wire.encode(state, metrics, seq, 1.0, epoch=epoch)
            seqs[n] = max(seqs.get(n, EPOCH), seq)
        retained = draw(st.booleans()) if kind == "will" else False
        out.append(aiomqtt.Message(topic, raw, 1, retained, mid, None))
    return out


@st.composite
def bursts(draw: st.DrawFn, n: int) -> list[int]:
    """Cut points: how many of the `n` messages each burst takes."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(draw(st.integers(1, max(1, n - sum(sizes)))))
    return sizes


class Side:
    """One source and one engine (egress and ingress, as one router), effects folded into
    the state the adapters would end with."""

    def __init__(self) -> None:
        self.now = 0.0
        cfg = MqttConfig(will_confirm=0.1, will_grace=10.0)
        self.source = MqttMetricSource(
            cfg, [SVC, SVC2], clock=lambda: self.now, wall_clock=lambda: WALL
        )
        self.engine: Engine = engine(R1, services=(SVC, SVC2), policy=PolicyParams(hysteresis=0))
        self.adverts: dict[Any, Any] = {}
        self.table: dict[Any, Any] = {}
        self.sids: dict[Any, Any] = {}
        self.fold(self.engine.start())

    def fold(self, effects: list[Effect]) -> None:
        for e in effects:
            match e:
                case Advertise(route=r):
                    self.adverts[r.key] = r
                case Withdraw(key=k):
                    self.adverts.pop(k, None)
                case ProgramService(entry=entry):
                    self.table[entry.service] = entry
                case RemoveService(service=s):
                    self.table.pop(s, None)
                case ProgramLocalInstance(key=k, sid=sid):
                    self.sids[k] = sid
                case RemoveLocalInstance(key=k):
                    self.sids.pop(k, None)

    def state(self) -> tuple[object, ...]:
        st_ = self.source.status()
        return (
            self.engine.rib.snapshot(),
            self.adverts,
            self.table,
            self.sids,
            sorted(self.engine.held.items()),
            {k: v for k, v in st_.items() if k != "instances_tracked"},
            len(self.source.sequencer),
        )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_bursts_end_where_one_at_a_time_ends(data: st.DataObject) -> None:
    messages = data.draw(reports())
    sizes = data.draw(bursts(len(messages)))
    one, many = Side(), Side()
    i = 0
    for b, size in enumerate(sizes):
        burst = messages[i : i + size]
        i += size
        for side in (one, many):
            side.now = 0.05 * b
        for m in burst:  # as the daemon did before: an engine pass per report
            for ev in one.source.handle_messages([m]):
                one.fold(one.engine.handle(ev, one.now))
        many.fold(many.engine.handle_many(many.source.handle_messages(burst), many.now))
    for side in (one, many):  # let held wills and damped updates come out
        for t in (1.0, 5.0, 20.0):
            side.now = t
            side.fold(side.engine.handle(Tick(), t))
    assert one.state() == many.state()
