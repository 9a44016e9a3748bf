"""The daemon: adapters in one TaskGroup around one event queue and one engine.

One consumer takes events off the queue, feeds the engine and hands the effects to the
adapters, so the engine never needs a lock (GoBGP's single management loop, in asyncio).
Events that arrive together are handled together and their effects coalesced: a burst of
120k route events programs each service once, not 120k times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cand import __version__, plugins
from cand.config import Config
from cand.engine import (
    Advertise,
    CostChanged,
    Effect,
    Engine,
    Event,
    ProgramService,
    RemoveService,
    Tick,
    Withdraw,
)
from cand.model import RouterId
from cand.ports import Dataplane, MetricSource, Speaker

log = logging.getLogger("cand.daemon")

MAX_BATCH = 5000


@dataclass
class Adapters:
    sources: list[MetricSource] = field(default_factory=list)
    speaker: Speaker | None = None
    dataplane: Dataplane | None = None


class Daemon:
    def __init__(
        self,
        config: Config,
        adapters: Adapters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.adapters = adapters
        self.clock = clock
        self.engine = Engine(
            config.engine_config(),
            {n: ep.load() for n, ep in plugins.available("cand.policies").items()},
        )
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.started = time.time()
        self.ready = asyncio.Event()
        self.counters = {"effects": 0, "batches": 0, "adapter_errors": 0}
        self.listeners: list[Callable[[Sequence[Event], Sequence[Effect]], None]] = []

    async def emit(self, event: Event) -> None:
        await self.queue.put(event)

    async def run(self) -> None:
        from cand.api import ApiServer

        api = ApiServer(self, self.config.api.socket)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._consume(), name="engine")
                tg.create_task(api.serve(), name="api")
                if self.config.prometheus.listen:
                    from cand.metrics import serve as serve_metrics

                    tg.create_task(serve_metrics(self, self.config.prometheus.listen), name="prom")
                for i, source in enumerate(self.adapters.sources):
                    tg.create_task(source.run(self.emit), name=f"metric-source-{i}")
                if self.adapters.speaker is not None:
                    tg.create_task(self.adapters.speaker.run(self.emit), name="speaker")
                if self.adapters.dataplane is not None:
                    tg.create_task(self.adapters.dataplane.run(self.emit), name="dataplane")
        finally:
            if self.adapters.speaker is not None:
                await _shielded(self.adapters.speaker.shutdown())

    async def _consume(self) -> None:
        now = self.clock()
        await self._apply(self.engine.start(), [])
        for egress, cost in self.config.network_cost.static.items():
            await self.queue.put(CostChanged(RouterId.parse(egress), cost))
        self.ready.set()
        log.info("event=started version=%s router=%s", __version__, self.config.router.id)
        while True:
            deadline = self.engine.next_deadline()
            now = self.clock()
            timeout = None if deadline is None else max(0.0, deadline - now)
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout)
                batch = [first]
            except TimeoutError:
                batch = [Tick()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            now = self.clock()
            if deadline is not None and deadline <= now and not isinstance(batch[0], Tick):
                batch.append(Tick())
            effects = self.engine.handle_many(batch, now)
            await self._apply(effects, batch)

    async def _apply(self, effects: list[Effect], batch: Sequence[Event]) -> None:
        effects = coalesce(effects)
        self.counters["batches"] += 1
        self.counters["effects"] += len(effects)
        speaker, dataplane = self.adapters.speaker, self.adapters.dataplane
        adverts = [e.route for e in effects if isinstance(e, Advertise)]
        withdrawals = [e.key for e in effects if isinstance(e, Withdraw)]
        packet = [e for e in effects if not isinstance(e, Advertise | Withdraw)]
        # Data plane first: a withdrawn local instance must stop taking flows here too.
        if dataplane is not None and packet:
            await self._guard("dataplane", dataplane.apply(packet))
        if speaker is not None:
            if withdrawals:
                await self._guard("speaker", speaker.withdraw(withdrawals))
            if adverts:
                await self._guard("speaker", speaker.advertise(adverts))
        for listener in self.listeners:
            listener(batch, effects)

    async def _guard(self, what: str, call: Any) -> None:
        """An adapter failing one operation is logged and counted; the daemon goes on, and
        the adapter's own reconciliation repairs the difference."""
        try:
            await call
        except (OSError, RuntimeError, ValueError) as e:
            self.counters["adapter_errors"] += 1
            log.error("event=adapter_error adapter=%s error=%r", what, e)

    def status(self) -> dict[str, Any]:
        a = self.adapters
        return {
            "version": __version__,
            "router": self.config.router.id,
            "roles": list(self.config.router.roles),
            "uptime": round(time.time() - self.started, 1),
            "services": len(self.engine.table),
            "local_instances": len(self.engine.rib.local),
            "remote_paths": len(self.engine.rib.remote),
            "engine": dict(self.engine.counters),
            "daemon": dict(self.counters),
            "queue": self.queue.qsize(),
            "metric_sources": [s.status() for s in a.sources],
            "speaker": a.speaker.status() if a.speaker is not None else None,
            "dataplane": a.dataplane.status() if a.dataplane is not None else None,
        }


def coalesce(effects: list[Effect]) -> list[Effect]:
    """Keep only the last effect per D-SID (program/remove) and per instance (advertise/
    withdraw), each at the place of its last mention, so a batch never replays history and
    an advertise followed by a withdraw of the same instance ends withdrawn."""
    last: dict[object, int] = {}
    for i, e in enumerate(effects):
        k = _subject(e)
        if k is not None:
            last[k] = i
    return [e for i, e in enumerate(effects) if (k := _subject(e)) is None or last[k] == i]


def _subject(e: Effect) -> object | None:
    if isinstance(e, ProgramService):
        return ("svc", e.entry.service)
    if isinstance(e, RemoveService):
        return ("svc", e.service)
    if isinstance(e, Advertise):
        return ("path", e.route.key)
    if isinstance(e, Withdraw):
        return ("path", e.key)
    return None


async def _shielded(coro: Any) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(coro), 5.0)
    except (TimeoutError, OSError, RuntimeError) as e:
        log.warning("event=shutdown_incomplete error=%r", e)
