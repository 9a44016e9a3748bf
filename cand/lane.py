"""One adapter's effects, applied in order by a task of its own.

The engine hands effects to a lane and goes on; the lane applies whatever has gathered since
its last call as one coalesced batch. So a slow adapter (a gobgpd busy with 120k paths, an
`ip -batch` of a big table) delays only its own work, and a backlog shrinks into fewer, larger
calls instead of growing into a queue of stale ones.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from cand.engine import Advertise, Effect, ProgramService, RemoveService, Withdraw
from cand.ports import AdapterError


class Owner(Protocol):
    def adapter_failed(self, lane: str, error: BaseException, bug: bool) -> None: ...


MAX_REST = 1.0
"""Longest pause a lane takes between two calls to keep to its duty (seconds)."""


class Lane:
    def __init__(
        self,
        name: str,
        apply: Callable[[list[Effect]], Awaitable[None]],
        owner: Owner,
        duty: float = 1.0,
    ) -> None:
        """`duty`: the share of the time this lane's calls may take while work keeps coming.
        After a call that took t seconds the next starts t * (1 - duty) / duty later (at
        most MAX_REST): what arrives meanwhile coalesces into that next call. A call whose
        cost grows with the whole table (the data plane's) then cannot crowd out, in the one
        event loop, the learning that feeds it; a call of a millisecond waits a millisecond."""
        if not 0 < duty <= 1:
            raise ValueError(f"lane {name}: duty must be in (0, 1], got {duty}")
        self.name = name
        self._apply = apply
        self._owner = owner
        self._duty = duty
        self._rest_until = 0.0
        self._pending: list[Effect] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.counters = {"batches": 0, "effects": 0, "failed": 0, "max_backlog": 0, "rests": 0}
        # when the last batch was handed to the adapter and when the adapter was done with it
        # (time.monotonic(), the clock of the rib's timestamps): `cand status` shows how long
        # an adapter takes, and a benchmark can split a change's path into its legs
        self.last_started: float | None = None
        self.last_done: float | None = None

    def put(self, effects: Sequence[Effect]) -> None:
        self._pending.extend(effects)
        self.counters["max_backlog"] = max(self.counters["max_backlog"], len(self._pending))
        self._idle.clear()
        self._wake.set()

    async def idle(self) -> None:
        """Until everything put so far has been applied (or has failed)."""
        await self._idle.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            rest = self._rest_until - loop.time()
            if rest > 0:
                self.counters["rests"] += 1
                await asyncio.sleep(rest)  # what is put meanwhile joins this batch
            self._wake.clear()
            start = loop.time()
            batch, self._pending = coalesce(self._pending), []
            self.counters["batches"] += 1
            self.counters["effects"] += len(batch)
            self.last_started = time.monotonic()
            try:
                await self._apply(batch)
            except AdapterError as e:
                self.counters["failed"] += 1
                self._owner.adapter_failed(self.name, e, bug=False)
            except Exception as e:  # the one supervisor of adapter calls: see below
                # A bug in an adapter must not take every flow's daemon down: it is logged
                # with its traceback and counted, and the adapter's reconciliation repairs
                # the state. Tests run with CAND_STRICT=1, where it fails the test instead.
                self.counters["failed"] += 1
                self._owner.adapter_failed(self.name, e, bug=True)
                if os.environ.get("CAND_STRICT") == "1":
                    raise
            finally:
                took = loop.time() - start
                self._rest_until = loop.time() + min(MAX_REST, took * (1 - self._duty) / self._duty)
                self.last_done = time.monotonic()
            if not self._pending:
                self._idle.set()

    def status(self) -> dict[str, Any]:
        return {
            "backlog": len(self._pending),
            **self.counters,
            "last_started": self.last_started,
            "last_done": self.last_done,
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
