"""Metric ingestion: D-MA reports from an MQTT v5 broker become `InstanceReported` events.

Every message is validated; a bad one is counted by reason, logged at most once per topic per
`LOG_EVERY` seconds, and dropped. Nothing a publisher sends can stop this loop. A lost broker
is reported to the engine (`MetricsReachable`) so that silence during an outage is not read as
instances dying; reconnects back off with jitter and resubscribe, and the retained messages
resync the state without a flap (exact re-deliveries are recognised and ignored).

Last Wills need care: a broker publishes every client's will when it shuts down, and keeps
them as retained messages. So a will (a `down` whose seq is its epoch) carries a hold-back for
the engine (`InstanceReported.hold`, a deadline there, testable on a fake clock): briefly
(`will_confirm`) for a live one, which is discarded if our own connection drops meanwhile, and
`will_grace` for a retained one found on subscribing; a newer report from the instance cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import aiomqtt

from cand.backoff import Backoff
from cand.config import Config, MqttConfig
from cand.engine.events import InstanceReported, MetricsReachable
from cand.model import InstanceKey, RouterId, ServiceId
from cand.mqtt_client import BrokerSettings, make_client, read_in_bursts, read_secret
from cand.ports import Emit
from cand.supervise import input_bug
from cand.wire import mqtt as wire

log = logging.getLogger("cand.mqtt")

LOG_EVERY = 30.0
KEY_CACHE = 16384  # topics remembered parsed (valid ones only)
RESYNC_QUIET = 1.0  # seconds between checks for lost reports
MAX_DRAIN = 1024  # messages taken off the received queue per engine batch, at most
MAX_BURST = 64  # MQTT packets read per wake-up of the socket, at most


def burst(max_queue: int) -> int:
    """Packets read per wake-up: a burst alone fills at most an eighth of the queue, so it
    never looks like falling behind (a quarter, see `_queue_type`)."""
    return max(1, min(MAX_BURST, max_queue // 8))


class MqttMetricSource:
    def __init__(
        self,
        cfg: MqttConfig,
        services: Iterable[ServiceId],
        clock: Callable[[], float] = time.monotonic,
        router: RouterId | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.services = frozenset(services)
        self.clock = clock
        self.wall_clock = wall_clock
        self.router = router
        self._client: aiomqtt.Client | None = None
        # topic -> its parsed key, one object per instance: parsing is most of a report's
        # cost, and a dict lookup of the very same key object skips every __eq__
        self._keys: dict[str, InstanceKey] = {}
        self._not_bindings = self._never_instances()
        # forgotten long after its last report can have expired (so no replay window opens)
        self.sequencer = wire.Sequencer(cfg.max_instances, forget_after=2 * cfg.max_expiry)
        self.dropped: Counter[str] = Counter()
        self.received = 0  # messages the client handed us, queued or refused
        self.accepted = 0
        self.duplicates = 0
        self.connected = False
        self.connects = 0
        self._last_log: dict[str, float] = {}
        self.counters: dict[str, int] = {}
        self.resyncs = 0
        self.behind = 0  # times the received queue reached a quarter of max_queue
        self._behind = False
        self._queue: asyncio.Queue[aiomqtt.Message] | None = None

    @classmethod
    def from_config(cls, config: Config) -> MqttMetricSource:
        if config.mqtt is None:
            raise ValueError("mqtt: no [mqtt] table in the config")
        return cls(config.mqtt, config.service_specs(), router=RouterId.parse(config.router.id))

    def settings(self) -> BrokerSettings:
        c = self.cfg
        return BrokerSettings(
            host=c.host,
            port=c.port,
            username=c.username,
            password=c.password if c.password is not None else read_secret(c.password_file),
            tls=c.tls,
            ca_file=str(c.ca_file) if c.ca_file else None,
            cert_file=str(c.cert_file) if c.cert_file else None,
            key_file=str(c.key_file) if c.key_file else None,
            keepalive=c.keepalive,
            client_id=c.client_id,
        )

    async def run(self, emit: Emit) -> None:
        backoff = Backoff()
        settings, c = self.settings(), self.cfg
        while True:
            try:
                client = make_client(settings, None, self._queue_type(), c.max_queue)
                read_in_bursts(client, self._received, burst(c.max_queue))
                async with client:
                    await self._subscribe(client)
                    self._client = client
                    self.connected = True
                    self.connects += 1
                    backoff.reset()
                    log.info("event=mqtt_connected broker=%s:%s", settings.host, settings.port)
                    await emit(MetricsReachable(True, self.cfg.default_expiry))
                    resync = asyncio.create_task(self._resync_after_loss(client), name="resync")
                    try:
                        await self._read(client, emit)
                    finally:
                        self._client = None
                        resync.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await resync
            except aiomqtt.MqttError as e:
                self._client = None
                delay = backoff.delay()
                if self.connected:
                    await emit(MetricsReachable(False))
                self.connected = False
                log.warning("event=mqtt_lost error=%r retry_in=%.2f", str(e), delay)
                await asyncio.sleep(delay)

    async def _read(self, client: aiomqtt.Client, emit: Emit) -> None:
        """Every message already received is taken at once and its events are emitted
        together, without yielding in between: the engine gets the whole burst as one batch
        (one pass, one deadline scan) and this task wakes once per burst, not per message."""
        messages, queue = client.messages, self._queue
        assert queue is not None  # made by the client, with our queue type
        while True:
            # wait (and notice a lost broker) only when nothing is queued
            batch = [await anext(messages)] if queue.empty() else []
            while not queue.empty() and len(batch) < MAX_DRAIN:
                batch.append(queue.get_nowait())
            for event in self.handle_messages(batch):
                await emit(event)

    def handle_messages(self, messages: Iterable[aiomqtt.Message]) -> list[InstanceReported]:
        """`handle` for each message in order; what is not acted on is counted there."""
        out = []
        for message in messages:
            try:
                got = self.handle(
                    message.topic.value,
                    _payload(message.payload),
                    _expiry(message),
                    retained=bool(message.retain),
                )
            except Exception as e:  # a bug, not bad input: see cand.supervise
                input_bug(log, self.counters, f"mqtt {message.topic.value!r}", e)
                continue
            if got is not None:
                out.append(got)
        return out

    def _received(self) -> int:
        return self.received

    def _never_instances(self) -> set[ipaddress.IPv6Address | ipaddress.IPv4Address]:
        """Addresses that are never an instance here: our own and every service's."""
        out = {s.address for s in self.services}
        if self.router is not None:
            out.add(self.router.address)
        return out

    async def set_services(self, services: frozenset[ServiceId]) -> None:
        """A reload changed the configured D-SIDs: subscribe to the new ones (their retained
        reports arrive at once) and stop listening to the removed ones."""
        added, removed = services - self.services, self.services - services
        self.services = services
        self._not_bindings = self._never_instances()
        client = self._client
        if client is None:
            return  # the next (re)connect subscribes to exactly these
        try:
            for service in sorted(removed):
                await client.unsubscribe(wire.subscription(self.cfg.topic_prefix, service))
            for service in sorted(added):
                await client.subscribe(wire.subscription(self.cfg.topic_prefix, service), 1)
        except aiomqtt.MqttError as e:  # the reconnect will subscribe from self.services
            log.warning("event=mqtt_resubscribe_failed error=%r", str(e))

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for service in sorted(self.services):
            await client.subscribe(wire.subscription(self.cfg.topic_prefix, service), 1)

    async def _resync_after_loss(self, client: aiomqtt.Client) -> None:
        """Reports were lost (our queue overflowed, or the broker's queue for us did and an
        instance's seq skipped), or may have been (our queue was a quarter full: while we
        are that far behind the broker's queue for us fills and drops in silence, and a
        report whose instance says nothing more is never seen missing): once the flood is
        over, subscribe again. The broker resends
        each instance's retained report, its newest, so the latest state lost in the flood
        comes back now rather than at the instance's next report or its expiry; exact
        re-deliveries are ignored by the sequencer."""
        seen = self._losses()
        while True:
            await asyncio.sleep(RESYNC_QUIET)
            if self._backlog() > self.cfg.max_queue // 4:
                continue
            self._behind = False
            if self._losses() == seen:
                continue
            seen = self._losses()
            await self._subscribe(client)
            self.resyncs += 1
            log.info("event=mqtt_resync after=lost_reports resyncs=%d", self.resyncs)

    def _losses(self) -> int:
        return self.dropped["overflow"] + self.sequencer.gaps + self.behind

    def _backlog(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def _queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """The client's queue of received messages, bounded by `max_queue`: a flood that
        outruns the daemon is dropped and counted (`overflow`), not buffered without end."""
        source = self

        class Queue(asyncio.Queue[aiomqtt.Message]):
            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                source._queue = self

            def put_nowait(self, item: aiomqtt.Message) -> None:
                source.received += 1
                if not source._behind and self.qsize() >= self.maxsize // 4:
                    source._behind = True
                    source.behind += 1
                try:
                    super().put_nowait(item)
                except asyncio.QueueFull:
                    e = wire.PayloadError("overflow", f"more than {self.maxsize} queued")
                    source.dropped[e.reason] += 1
                    source._log_drop(item.topic.value, e)

        return Queue

    def handle(
        self, topic: str, payload: bytes, expiry: float | None, retained: bool = False
    ) -> InstanceReported | None:
        """One message to at most one event, a Last Will with how long the engine holds it
        back. Never raises for anything a publisher can send."""
        try:
            key = self._keys.get(topic)
            if key is None:
                key = wire.parse_topic(topic, self.cfg.topic_prefix)
                if len(self._keys) >= KEY_CACHE:
                    self._keys.clear()  # a flood of distinct topics costs no memory
                self._keys[topic] = key
            if key.service not in self.services:
                raise wire.PayloadError("service", f"{key.service} is not a configured service")
            if key.binding.address in self._not_bindings:
                raise wire.PayloadError("address", f"D-BID {key.binding} is a D-SID or this router")
            if not payload:
                # A retained message being cleared: the instance's publisher is gone for good.
                raise wire.PayloadError("empty", "empty payload (retained message cleared)")
            report = wire.decode(key, payload, self.cfg.max_payload)
            self._check_clock(report)
            if not self.sequencer.check(report, payload, self.clock()):
                self.duplicates += 1
                return None
        except wire.PayloadError as e:
            self.dropped[e.reason] += 1
            self._log_drop(topic, e)
            return None
        self.accepted += 1
        ttl = min(expiry if expiry is not None else self.cfg.default_expiry, self.cfg.max_expiry)
        hold = 0.0
        if report.is_will:
            hold = self.cfg.will_grace if retained else self.cfg.will_confirm
        return InstanceReported(
            report.key, report.state, report.metrics, report.seq, ttl, report.ts, hold
        )

    def _check_clock(self, report: wire.Report) -> None:
        """A seq or ts from the future would pin the instance (every real report after it
        looks like a replay) until it expires: refused beyond `max_clock_skew`."""
        horizon = self.wall_clock() + self.cfg.max_clock_skew
        if report.seq > horizon * 1000:
            raise wire.PayloadError("future", f"seq {report.seq} is ahead of the clock")
        if report.ts > horizon:
            raise wire.PayloadError("future", f"ts {report.ts} is ahead of the clock")

    def _log_drop(self, topic: str, e: wire.PayloadError) -> None:
        # throttled per reason, not per topic: a flood of distinct topics costs no memory
        now = self.clock()
        if now - self._last_log.get(e.reason, -LOG_EVERY) >= LOG_EVERY:
            self._last_log[e.reason] = now
            log.warning(
                "event=mqtt_dropped topic=%r reason=%s detail=%r total=%d",
                topic[:120],
                e.reason,
                e.detail[:200],
                sum(self.dropped.values()),
            )

    def status(self) -> dict[str, Any]:
        return {
            "source": "mqtt",
            "connected": self.connected,
            "connects": self.connects,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "instances_tracked": len(self.sequencer),
            "instances_forgotten": self.sequencer.forgotten,
            "sequence_gaps": self.sequencer.gaps,
            "reports_missing": self.sequencer.missing,
            "input_bugs": self.counters.get("input_bugs", 0),
            "resyncs": self.resyncs,
            "fell_behind": self.behind,
            "dropped": sum(self.dropped.values()),
            **{f"dropped_{k}": v for k, v in sorted(self.dropped.items())},
        }


def _payload(p: Any) -> bytes:
    if isinstance(p, bytes | bytearray):
        return bytes(p)
    if isinstance(p, str):
        return p.encode()
    if p is None:
        return b""
    return str(p).encode()


def _expiry(message: aiomqtt.Message) -> float | None:
    props = message.properties
    value = getattr(props, "MessageExpiryInterval", None) if props is not None else None
    return float(value) if isinstance(value, int) else None
