"""MQTT ingestion in bursts: the socket read, the acknowledgements and the reader's drain."""

from __future__ import annotations

import asyncio
import socket

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode

from cand.adapters.mqtt import MqttMetricSource, burst
from cand.config import MqttConfig
from cand.engine.events import Event
from cand.model import InstanceState, Metrics
from cand.mqtt_client import BrokerSettings, _corked, make_client, read_in_bursts
from cand.wire import mqtt as wire
from tests.helpers import SVC, key

OK = MQTTErrorCode.MQTT_ERR_SUCCESS


class FakeSocket:
    """What paho's reads find: 'msg' (a PUBLISH, handed on), 'ack' (no message), or errors."""

    def __init__(self, packets: list[str]) -> None:
        self.packets = packets
        self.received = 0
        self.reads = 0

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        self.reads += 1
        if not self.packets:
            return OK  # paho on EAGAIN: success, nothing read
        p = self.packets.pop(0)
        if p == "msg":
            self.received += 1
        return MQTTErrorCode.MQTT_ERR_CONN_LOST if p == "lost" else OK


def wrapped(packets: list[str], limit: int = 64) -> tuple[aiomqtt.Client, FakeSocket]:
    async def make() -> aiomqtt.Client:  # aiomqtt wants a running loop, not a connection
        return make_client(BrokerSettings())

    client = asyncio.run(make())
    fake = FakeSocket(packets)
    client._client.loop_read = fake.loop_read  # type: ignore[method-assign]
    assert read_in_bursts(client, lambda: fake.received, limit)
    return client, fake


def test_one_wake_up_reads_every_message_already_there() -> None:
    client, fake = wrapped(["msg"] * 5)
    assert client._client.loop_read() == OK
    assert fake.received == 5 and fake.reads == 6  # the sixth found the socket empty


def test_a_burst_is_bounded_and_the_rest_waits_for_the_next_wake_up() -> None:
    client, fake = wrapped(["msg"] * 5, limit=3)
    client._client.loop_read()
    assert fake.received == 3
    client._client.loop_read()
    assert fake.received == 5


def test_a_packet_that_is_no_message_or_an_error_ends_the_burst() -> None:
    client, fake = wrapped(["msg", "ack", "msg"])
    client._client.loop_read()
    assert fake.received == 1  # the next readiness takes the rest
    client, fake = wrapped(["msg", "lost", "msg"])
    assert client._client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert fake.received == 1


def test_a_burst_never_looks_like_falling_behind() -> None:
    for max_queue in (16, 100, 8192, 1 << 22):
        assert 1 <= burst(max_queue) <= max_queue // 8


def test_cork_is_set_for_the_writes_and_cleared_after() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(server.getsockname())
    b, _ = server.accept()
    try:
        with _corked(a):
            assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
            a.sendall(b"\x40\x02\x00\x01")
            a.sendall(b"\x40\x02\x00\x02")
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        got = b""
        while len(got) < 8:
            got += b.recv(8)
        assert got == b"\x40\x02\x00\x01\x40\x02\x00\x02"
    finally:
        for s in (a, b, server):
            s.close()
    with _corked(None):  # no socket (yet): the writes go as they would
        pass


class Messages:
    """aiomqtt's iterator, enough of it: waits for the queue."""

    def __init__(self, queue: asyncio.Queue[aiomqtt.Message]) -> None:
        self.queue = queue
        self.waits = 0

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> aiomqtt.Message:
        self.waits += 1
        return await self.queue.get()


class Client:
    def __init__(self, queue: asyncio.Queue[aiomqtt.Message]) -> None:
        self.messages = Messages(queue)


def message(n: int, seq: int, payload: bytes | None = None) -> aiomqtt.Message:
    raw = payload if payload is not None else wire.encode(InstanceState.UP, Metrics(), seq, 1.0)
    return aiomqtt.Message(wire.topic(key(n)), raw, 1, False, seq, None)


def test_the_reader_emits_everything_queued_before_it_yields() -> None:
    """The engine's consumer runs only when the reader yields: what was queued reaches it as
    one batch, and a bad message among them is counted and dropped, not the burst."""

    async def go() -> None:
        s = MqttMetricSource(MqttConfig(), [SVC])
        queue = s._queue_type()(64)
        for i in range(10):
            queue.put_nowait(message(i % 3 + 1, 100 + i))
        queue.put_nowait(message(1, 200, b"garbage"))
        emitted: list[Event] = []
        batches: list[int] = []

        async def emit(event: Event) -> None:
            emitted.append(event)

        async def consumer() -> None:  # sees what was emitted each time it gets to run
            while True:
                await asyncio.sleep(0)
                if emitted and sum(batches) < len(emitted):
                    batches.append(len(emitted) - sum(batches))

        client = Client(queue)
        watcher = asyncio.create_task(consumer())
        reader = asyncio.create_task(s._read(client, emit))  # type: ignore[arg-type]
        for _ in range(5):
            await asyncio.sleep(0)
        queue.put_nowait(message(1, 300))
        for _ in range(5):
            await asyncio.sleep(0)
        reader.cancel()
        watcher.cancel()
        await asyncio.gather(reader, watcher, return_exceptions=True)
        assert batches == [10, 1]
        assert s.received == 12 and s.accepted == 11 and s.dropped["not_json"] == 1
        assert client.messages.waits == 2  # one wait per burst, not per message

    asyncio.run(go())
