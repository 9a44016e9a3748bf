"""Runs a real Daemon inside a test's event loop and records what went through it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cand import config as configmod
from cand.daemon import Daemon
from cand.engine import Effect, Event, MetricsReachable
from cand.wiring import build_adapters


@dataclass
class Recorder:
    events: list[tuple[float, Event]] = field(default_factory=list)
    effects: list[tuple[float, Effect]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, batch: Sequence[Event], effects: Sequence[Effect]) -> None:
        now = time.monotonic()
        self.events += [(now, e) for e in batch]
        self.effects += [(now, e) for e in effects]
        self.changed.set()

    async def wait_for(
        self, pred: Callable[[Recorder], Any], timeout: float = 10.0, what: str = ""
    ) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                got = pred(self)
                if got:
                    return got
                self.changed.clear()
                await self.changed.wait()
        raise AssertionError(what)  # pragma: no cover

    def of(self, kind: type) -> list[Any]:
        return [e for _, e in self.events + self.effects if isinstance(e, kind)]


def daemon_config(tmp: Path, **tables: Any) -> configmod.Config:
    data: dict[str, Any] = {
        "router": {"id": "fc00:ff::2", "roles": ["ingress", "egress"], "locator": "fc00:0:2::/48"},
        "services": [{"sid": "2001:db8:5::1", "name": "web"}],
        "api": {"socket": str(tmp / "cand.sock")},
        "prometheus": {"listen": ""},
        "log": {"level": "debug"},
    }
    data.update(tables)
    return configmod.parse(data)


@contextlib.asynccontextmanager
async def running(
    cfg: configmod.Config, config_path: Path | None = None
) -> AsyncIterator[tuple[Daemon, Recorder]]:
    daemon = Daemon(cfg, build_adapters(cfg), config_path=config_path)
    rec = Recorder()
    daemon.listeners.append(rec)
    task = asyncio.create_task(daemon.run(), name="daemon-under-test")
    try:
        async with asyncio.timeout(10):
            await daemon.ready.wait()
        if cfg.mqtt is not None:  # subscribed: publishes from now on reach the daemon
            await rec.wait_for(lambda r: [e for e in r.of(MetricsReachable) if e.reachable])
        yield daemon, rec
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
