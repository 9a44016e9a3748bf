"""MetricAgent for services that do not run asyncio: the agent lives on its own thread."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self

from cand.agent.agent import MetricAgent


class SyncMetricAgent:
    """`with SyncMetricAgent(...) as agent: agent.report(cpu=0.3)` from any thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="d-ma")
        self.agent: MetricAgent | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        self.agent = self._call(self._start())
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._call(self._stop(), timeout=10.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)
            self._loop.close()

    async def _start(self) -> MetricAgent:
        agent = MetricAgent(*self._args, **self._kwargs)
        await agent.__aenter__()
        return agent

    async def _stop(self) -> None:
        if self.agent is not None:
            await self.agent.__aexit__(None, None, None)

    def _call(self, coro: Any, timeout: float = 5.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def _agent(self) -> MetricAgent:
        if self.agent is None:
            raise RuntimeError("use SyncMetricAgent in a with block")
        return self.agent

    def report(self, **values: Any) -> None:
        """Returns at once; raises ModelError for out-of-range values."""
        self._call(self._agent().report(**values))

    def draining(self) -> None:
        self._call(self._agent().draining())

    @property
    def published(self) -> int:
        return self._agent().published
