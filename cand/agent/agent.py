"""The D-MA library a service imports to report its load.

    async with MetricAgent("mqtt://web-1:secret@broker", service="2001:db8:5::1",
                           binding="2001:db8:a::10", capacity=100) as agent:
        await agent.report(cpu=0.4, sessions=12)

It never blocks or raises into the service because of the broker: `report` only records the
latest values (a buffer of one, latest wins) and wakes a background publisher that connects,
publishes, reconnects with backoff and repeats the last report before it expires. The broker
holds a Last Will (`state: down`, retained) that it publishes if this process dies; a clean
exit publishes `down` itself and disconnects normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any, Self

import aiomqtt

from cand.agent.collect import Collector
from cand.backoff import Backoff
from cand.model import BindingId, InstanceKey, InstanceState, Metrics, ModelError, ServiceId
from cand.mqtt_client import BrokerSettings, make_client, publish_properties
from cand.normalize import Scores
from cand.wire import mqtt as wire

log = logging.getLogger("cand.agent")


class MetricAgent:
    def __init__(
        self,
        broker: str | BrokerSettings,
        service: str | ServiceId,
        binding: str | BindingId,
        *,
        capacity: int = 100,
        max_sessions: int | None = None,
        max_queue: int | None = None,
        expiry: float = 30.0,
        heartbeat: float | None = None,
        prefix: str = wire.DEFAULT_PREFIX,
        collector: Collector | None = None,
        collect_every: float = 1.0,
    ) -> None:
        self.settings = (
            broker if isinstance(broker, BrokerSettings) else BrokerSettings.from_url(broker)
        )
        self.key = InstanceKey(
            service if isinstance(service, ServiceId) else ServiceId.parse(service),
            binding if isinstance(binding, BindingId) else BindingId.parse(binding),
        )
        self.topic = wire.topic(self.key, prefix)
        self.expiry = expiry
        self.heartbeat = heartbeat if heartbeat is not None else max(1.0, expiry / 3)
        self.collector = collector
        self.collect_every = collect_every
        self._values: dict[str, Any] = {"capacity": capacity}
        if max_sessions is not None:
            self._values["max_sessions"] = max_sessions
        if max_queue is not None:
            self._values["max_queue"] = max_queue
        self._metrics = Metrics(**self._values)
        self._state = InstanceState.UP
        self._seq = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self._progress = asyncio.Event()
        self.published = 0
        self.last_error: str | None = None

    # --- what a service calls --------------------------------------------------------------

    async def report(self, **values: Any) -> None:
        """Record new metric values (merged with the previous ones) and publish them soon.

        L0 values by name (`cpu=0.4`, `delay=12.5` milliseconds, ...). A service that scores
        itself gives `l2=` (0..10, higher is better) and optionally `l1={"service": 7}`; the
        report then carries them (payload v=2) and the egress uses them as they are; `l2=None`
        goes back to letting the egress score the L0 values. Raises ModelError for values out
        of range: that is the service's bug, not the broker's.
        """
        if "l2" in values or "l1" in values:
            l2, l1 = values.pop("l2", None), values.pop("l1", None) or {}
            try:
                values["scores"] = None if l2 is None else Scores(l2=l2, **l1)
            except (TypeError, ValueError) as e:
                raise ModelError(f"metrics: {e}") from None
        merged = {**self._values, **values}
        self._metrics = Metrics(**merged)
        self._values = merged
        self._wake.set()

    async def draining(self) -> None:
        """Stop taking new flows; existing ones stay until the service exits."""
        self._state = InstanceState.DRAINING
        self._wake.set()

    async def up(self) -> None:
        self._state = InstanceState.UP
        self._wake.set()

    @property
    def state(self) -> InstanceState:
        return self._state

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tasks.append(asyncio.create_task(self._publisher(), name=f"d-ma {self.key}"))
        if self.collector is not None:
            self._tasks.append(asyncio.create_task(self._collect(), name=f"collect {self.key}"))
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        publisher, *others = self._tasks
        for t in others:
            t.cancel()
        self._state = InstanceState.DOWN
        self._wake.set()
        said_goodbye = False
        if self.connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(publisher), 3.0)
                said_goodbye = True
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if not said_goodbye:
            await self._goodbye()

    async def wait_published(self, count: int = 1, timeout: float = 10.0) -> None:
        """For tests and start-up scripts: wait until `count` reports went out."""
        async with asyncio.timeout(timeout):
            while self.published < count:
                self._progress.clear()
                await self._progress.wait()

    # --- internals -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        """A session's first seq (its epoch): past every earlier one, even across restarts."""
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        return self._seq

    def _step_seq(self) -> int:
        """Within a session, one more per report: a step of more tells cand reports were lost."""
        self._seq += 1
        return self._seq

    def _payload(self, state: InstanceState, seq: int, epoch: int) -> bytes:
        return wire.encode(state, self._metrics, seq, time.time(), epoch)

    async def _publisher(self) -> None:
        backoff = Backoff(cap=wire.AGENT_BACKOFF_CAP)
        while True:
            epoch = self._next_seq()
            will = aiomqtt.Will(
                self.topic,
                self._payload(InstanceState.DOWN, epoch, epoch),
                qos=1,
                retain=True,
                properties=publish_properties(self.expiry),
            )
            try:
                async with make_client(self.settings, will=will) as client:
                    self.connected.set()
                    backoff.reset()
                    while True:
                        self._wake.clear()
                        seq = self._step_seq()
                        await client.publish(
                            self.topic,
                            self._payload(self._state, seq, epoch),
                            qos=1,
                            retain=True,
                            properties=publish_properties(self.expiry),
                        )
                        self.published += 1
                        self._progress.set()
                        if self._state is InstanceState.DOWN:
                            return  # said goodbye; leaving the block disconnects cleanly
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.heartbeat)
            except aiomqtt.MqttError as e:
                self.connected.clear()
                self.last_error = str(e)
                delay = backoff.delay()
                log.debug("event=agent_broker_lost error=%r retry_in=%.2f", str(e), delay)
                await asyncio.sleep(delay)

    async def _collect(self) -> None:
        assert self.collector is not None
        while True:
            try:
                await self.report(**self.collector.sample())
            except ProcessLookupError:
                log.warning("event=agent_target_gone instance=%s", self.key)
                self._state = InstanceState.DOWN
                self._wake.set()
                return
            except (OSError, ValueError) as e:
                log.warning("event=agent_collect_failed error=%r", e)
            await asyncio.sleep(self.collect_every)

    async def _goodbye(self) -> None:
        """Clean exit: `down`, retained, then a normal disconnect (the will is not sent)."""
        try:
            async with asyncio.timeout(3.0), make_client(self.settings) as client:
                seq = self._next_seq()
                await client.publish(
                    self.topic,
                    self._payload(InstanceState.DOWN, seq, seq - 1),  # seq > epoch: not a will
                    qos=1,
                    retain=True,
                    properties=publish_properties(self.expiry),
                )
        except (aiomqtt.MqttError, TimeoutError) as e:
            log.warning("event=agent_goodbye_failed error=%r (the Last Will covers it)", e)
