"""The daemon: adapters in one TaskGroup around one event queue and one engine.

One consumer takes events off the queue, feeds the engine and hands the effects to one lane
per adapter, so the engine never needs a lock (GoBGP's single management loop, in asyncio)
and never waits for an adapter. Events that arrive together are handled together and their
effects coalesced: a burst of 120k route events programs each service once, not 120k times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cand import __version__, plugins
from cand import config as configmod
from cand.config import Config
from cand.engine import (
    Advertise,
    CostChanged,
    Effect,
    Engine,
    Event,
    Reconfigured,
    Tick,
    Withdraw,
)
from cand.lane import Lane, coalesce
from cand.model import RouterId
from cand.ports import (
    AdapterError,
    CostSource,
    Dataplane,
    MetricSource,
    Responder,
    Speaker,
    StopMode,
)
from cand.reload import ReloadRefused, plan_reload

log = logging.getLogger("cand.daemon")

MAX_BATCH = 5000
DATAPLANE_DUTY = 0.5


@dataclass
class Adapters:
    sources: list[MetricSource] = field(default_factory=list)
    costs: list[CostSource] = field(default_factory=list)
    responders: list[Responder] = field(default_factory=list)
    speaker: Speaker | None = None
    dataplane: Dataplane | None = None


class Daemon:
    def __init__(
        self,
        config: Config,
        adapters: Adapters,
        clock: Callable[[], float] = time.monotonic,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.adapters = adapters
        self.clock = clock
        self.engine = Engine(
            config.engine_config(),
            {n: ep.load() for n, ep in plugins.available("cand.policies").items()},
        )
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.started = time.time()
        self.ready = asyncio.Event()
        self.counters = {
            "effects": 0,
            "batches": 0,
            "adapter_errors": 0,
            "adapter_bugs": 0,
            "reloads": 0,
            "reloads_refused": 0,
        }
        self.listeners: list[Callable[[Sequence[Event], Sequence[Effect]], None]] = []
        self.lanes: dict[str, Lane] = {}
        if adapters.dataplane is not None:
            # a data-plane sync walked every service's tunnels: at 120k of them, back to back,
            # it took a third of the loop from the learning that feeds it (bench.route_scale);
            # a batch now touches only its D-SIDs, and the duty bounds what is left
            self.lanes["dataplane"] = Lane(
                "dataplane", adapters.dataplane.apply, self, duty=DATAPLANE_DUTY
            )
        if adapters.speaker is not None:
            self.lanes["speaker"] = Lane("speaker", _speaker_apply(adapters.speaker), self)
        self.stop_mode: StopMode | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._reload_lock = asyncio.Lock()  # one reload at a time (SIGHUP and the API)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: dict[str, dict[RouterId, Any]] = {}

    async def emit(self, event: Event) -> None:
        await self.queue.put(event)

    def request_stop(self, mode: StopMode) -> None:
        """Begin an orderly stop (the first request wins)."""
        if self.stop_mode is None:
            self.stop_mode = mode
            log.info("event=stop_requested mode=%s", mode.value)
        self._stop.set()

    def request_reload(self) -> None:
        """SIGHUP: reload soon, inside the daemon's TaskGroup (several signals, one reload)."""
        self._reload.set()

    async def _reloads(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            try:
                await self.reload()
            except ReloadRefused:  # logged and counted; the old one stays
                pass
            except Exception as e:  # a bug, not the file: the daemon goes on with the old one
                self.counters["reloads_refused"] += 1
                log.exception("event=reload_failed error=%r", str(e))

    async def reload(self) -> dict[str, Any]:
        """`cand reload`, SIGHUP: read the config file again and apply what changed in place.

        A file that does not validate (or asks the engine for what only a restart can change)
        is refused with the reason and the running configuration stays in force."""
        async with self._reload_lock:
            return await self._reload_now()

    async def _reload_now(self) -> dict[str, Any]:
        from cand import wiring  # wiring builds Adapters from here: imported late

        if self.config_path is None:
            raise ReloadRefused("the daemon was not started from a config file")
        try:
            new = configmod.load(self.config_path)
            wiring.check(new, str(self.config_path))
        except configmod.ConfigError as e:
            self.counters["reloads_refused"] += 1
            log.warning("event=reload_refused why=%r", str(e))
            raise ReloadRefused(str(e)) from None
        speaker = self.adapters.speaker
        # a speaker plugin written before `set_neighbors` existed keeps them until a restart
        live = speaker is not None and bool(getattr(speaker, "live_neighbors", lambda: False)())
        plan = plan_reload(self.config, new, live_neighbors=live)
        problems = self.engine.reload_problems(plan.engine)
        if problems:
            self.counters["reloads_refused"] += 1
            raise ReloadRefused("; ".join(problems))
        if plan.neighbors is not None and speaker is not None:
            try:
                await speaker.set_neighbors(plan.neighbors)
            except Exception as e:  # a speaker RPC failed: maybe partly applied, say so
                self.counters["reloads_refused"] += 1
                log.error("event=reload_neighbors_failed error=%r", str(e))
                raise ReloadRefused(
                    f"bgp.neighbors: the speaker failed ({e}); some sessions may have changed: "
                    "`cand restart` applies the file whole"
                ) from e
        self.config = plan.effective
        await self.queue.put(Reconfigured(plan.engine))
        for egress, cost in plan.costs:
            await self.queue.put(CostChanged(egress, cost))
        for source in self.adapters.sources:
            await source.set_services(plan.services)
        if "log" in plan.changed:
            logging.getLogger().setLevel(plan.effective.log.level.upper())
        self.counters["reloads"] += 1
        log.info(
            "event=reloaded changed=%s needs_restart=%s",
            ",".join(plan.changed) or "-",
            ",".join(plan.needs_restart) or "-",
        )
        return plan.summary()

    async def run(self) -> StopMode:
        """Run until `request_stop`, then stop in order: the metric sources first (nothing new
        comes in), then the engine, then the speaker while its session still runs (so a STOP's
        withdrawals reach the peers), and only then everything else. Returns how it stopped."""
        from cand.api import ApiServer

        self._loop = asyncio.get_running_loop()
        api = ApiServer(self, self.config.api.socket)
        speaker = self.adapters.speaker
        stopped = False
        try:
            async with asyncio.TaskGroup() as tg:
                sources = [
                    tg.create_task(s.run(self.emit), name=f"metric-source-{i}")
                    for i, s in enumerate(self.adapters.sources)
                ]
                sources += [
                    tg.create_task(c.run(self.emit), name=f"cost-source-{c.name}")
                    for c in self.adapters.costs
                ]
                sources += [tg.create_task(r.run(), name=r.name) for r in self.adapters.responders]
                engine = tg.create_task(self._consume(), name="engine")
                tg.create_task(api.serve(), name="api")
                tg.create_task(self._reloads(), name="reloads")
                if self.config.prometheus.listen:
                    from cand.metrics import serve as serve_metrics

                    tg.create_task(serve_metrics(self, self.config.prometheus.listen), name="prom")
                for name, lane in self.lanes.items():
                    tg.create_task(lane.run(), name=f"lane-{name}")
                if speaker is not None:
                    tg.create_task(speaker.run(self.emit), name="speaker")
                if self.adapters.dataplane is not None:
                    tg.create_task(self.adapters.dataplane.run(self.emit), name="dataplane")
                await self._stop.wait()
                mode = self.stop_mode or StopMode.STOP
                await _cancel(sources)
                await _cancel([engine])
                if "speaker" in self.lanes and mode is StopMode.STOP:
                    await _bounded(self.lanes["speaker"].idle(), 5.0, "speaker_queue")
                if speaker is not None:
                    # a graceful shutdown's wait comes on top of the withdrawals' own time
                    gshut = self.config.bgp.graceful_shutdown if self.config.bgp else 0.0
                    limit = STOP_TIMEOUT + (gshut if mode is StopMode.STOP else 0.0)
                    await _bounded(speaker.stop(mode), limit, "speaker_stop")
                stopped = True
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            if speaker is not None and not stopped:
                # a crash, or a cancel from outside: like kill -9 for the peers (nothing
                # withdrawn), but no child of ours is left behind
                await _bounded(speaker.stop(StopMode.RESTART), STOP_TIMEOUT, "speaker_stop")
        log.info("event=stopped mode=%s", (self.stop_mode or StopMode.STOP).value)
        return self.stop_mode or StopMode.STOP

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
            if not self.queue.empty():  # under load: no timer, no task, no wake-up
                batch = [self.queue.get_nowait()]
            else:
                try:
                    async with asyncio.timeout(timeout):  # cheaper than wait_for: no new task
                        batch = [await self.queue.get()]
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
        """Hand the effects to each adapter's lane and return at once: a slow gobgpd delays
        its own lane, never MQTT ingestion or the data plane."""
        effects = coalesce(effects)
        self.counters["batches"] += 1
        self.counters["effects"] += len(effects)
        routing = [e for e in effects if isinstance(e, Advertise | Withdraw)]
        packet = [e for e in effects if not isinstance(e, Advertise | Withdraw)]
        # Data plane first: a withdrawn local instance must stop taking flows here too.
        if packet and "dataplane" in self.lanes:
            self.lanes["dataplane"].put(packet)
        if routing and "speaker" in self.lanes:
            self.lanes["speaker"].put(routing)
        self._watch()
        for listener in self.listeners:
            listener(batch, effects)

    def _watch(self) -> None:
        """Tell each cost source which egresses to measure, when that changed: those learned
        from BGP that the config gives to it (O(egresses) per batch, not O(paths))."""
        for source in self.adapters.costs:
            targets = self.engine.cost_targets(source.name)
            if targets != self._watched.get(source.name):
                self._watched[source.name] = targets
                source.watch(targets)

    def adapter_failed(self, lane: str, error: BaseException, bug: bool) -> None:
        """An adapter failed one operation: counted and logged; the lane goes on."""
        if bug:
            self.counters["adapter_bugs"] += 1
            log.error("event=adapter_bug adapter=%s error=%r", lane, error, exc_info=error)
        else:
            self.counters["adapter_errors"] += 1
            log.error("event=adapter_error adapter=%s error=%r", lane, error)

    def status(self) -> dict[str, Any]:
        a = self.adapters
        return {
            "version": __version__,
            "router": self.config.router.id,
            "roles": list(self.config.router.roles),
            "uptime": round(time.time() - self.started, 1),
            # flat over a soak, or something leaks (the exporter asks from its own thread)
            "tasks": len(asyncio.all_tasks(self._loop)) if self._loop is not None else 0,
            "services": len(self.engine.table),
            "local_instances": len(self.engine.rib.local),
            "remote_paths": len(self.engine.rib.remote),
            # stale paths held past their peer's End-of-RIB: their service has no other
            "stale_kept": self.engine.rib.stale_kept(),
            "refused_by_limit": dict(sorted(self.engine.rib.refused.items())),
            "engine": dict(self.engine.counters),
            "daemon": dict(self.counters),
            "queue": self.queue.qsize(),
            "lanes": {n: lane.status() for n, lane in self.lanes.items()},
            "metric_sources": [s.status() for s in a.sources],
            "cost_sources": [c.status() for c in a.costs],
            "responders": [r.status() for r in a.responders],
            "speaker": a.speaker.status() if a.speaker is not None else None,
            "dataplane": a.dataplane.status() if a.dataplane is not None else None,
        }

    # --- the read-only view (cand.view.DaemonView) for the API and the exporter -----------

    def rib_json(self) -> dict[str, Any]:
        return self.engine.rib.to_json()

    def services_json(self) -> list[dict[str, Any]]:
        costs = {row["egress"]: row for row in self.cost_json()}
        out = []
        for _, entry in sorted(self.engine.table.items()):
            data = entry.to_json()
            for inst in data["instances"]:
                row = costs.get(inst["egress"])
                inst["cost_source"] = "local" if inst["local"] else (row or {}).get("source")
                inst["cost_age"] = None if row is None else row.get("age")
                if not inst["local"] and row is not None and row.get("measured"):
                    inst["cost_measured"] = row["measured"]
            out.append(data)
        return out

    def routes_json(self) -> dict[str, Any]:
        sp = self.adapters.speaker
        rib = self.engine.rib.to_json()
        return {
            "advertised": sp.routes().get("advertised", []) if sp is not None else [],
            "received": rib["remote"],
            "local": rib["local"],
            "speaker": sp.routes() if sp is not None else None,
            "egresses": self.cost_json(),
        }

    def cost_json(self) -> list[dict[str, Any]]:
        """Per egress: its network cost, source, age and last raw samples."""
        rows = self.engine.cost_table(self.clock())
        details = {c.name: c.detail() for c in self.adapters.costs}
        for row in rows:
            got = details.get(row["source"], {}).get(row["egress"])
            if got is not None:
                row["measured"] = got
        return rows

    async def bindings_json(self) -> list[dict[str, Any]]:
        dp = self.adapters.dataplane
        if dp is None:
            return []
        return [
            {
                "flow": str(b.flow),
                "flow_key": b.flow.kind.value,
                "service": str(b.flow.service),
                "binding": str(b.binding),
                "egress": str(b.egress),
                "age": round(b.last_seen - b.created, 1),
                "timeout": b.timeout,
                **({"packets": b.packets, "bytes": b.bytes} if b.packets is not None else {}),
            }
            for b in await dp.bindings()
        ]

    def eligible(self) -> dict[str, int]:
        return {str(svc): len(e.eligible) for svc, e in self.engine.table.items()}


class _Stopped(Exception):
    """Leaves the TaskGroup after an orderly stop, cancelling what still runs."""


STOP_TIMEOUT = 15.0


async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks)


async def _bounded(coro: Any, timeout: float, what: str) -> None:
    """A stop step that may not hang the stop: it gets `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(coro)
    except TimeoutError:
        log.warning("event=stop_incomplete step=%s timeout=%gs", what, timeout)
    except AdapterError as e:
        log.warning("event=stop_incomplete step=%s error=%r", what, e)


def _speaker_apply(speaker: Speaker) -> Callable[[list[Effect]], Awaitable[None]]:
    async def apply(effects: list[Effect]) -> None:
        withdrawals = [e.key for e in effects if isinstance(e, Withdraw)]
        adverts = [e.route for e in effects if isinstance(e, Advertise)]
        if withdrawals:
            await speaker.withdraw(withdrawals)
        if adverts:
            await speaker.advertise(adverts)

    return apply
