"""The P4 client's reader queues: bounded, and a reader that ends is an error at the consumer
(the session reconnects) rather than a wait that never ends."""

from __future__ import annotations

import asyncio

import pytest
from cand_p4.switch import _next


def test_next_returns_what_is_queued_then_the_readers_end_as_an_error() -> None:
    async def main() -> None:
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=2)

        async def reader() -> None:
            await q.put(1)
            await q.put(2)
            raise ValueError("stream broke")

        task = asyncio.create_task(reader())
        assert await _next(q, task, "digest") == 1
        assert await _next(q, task, "digest") == 2  # what was queued comes first
        with pytest.raises(ConnectionError, match="digest reader ended") as info:
            await asyncio.wait_for(_next(q, task, "digest"), 2.0)
        assert isinstance(info.value.__cause__, ValueError)

    asyncio.run(main())


def test_next_waits_for_an_item_while_the_reader_runs() -> None:
    async def main() -> None:
        q: asyncio.Queue[str] = asyncio.Queue()
        stop = asyncio.Event()

        async def reader() -> None:
            await asyncio.sleep(0.05)
            q.put_nowait("later")
            await stop.wait()

        task = asyncio.create_task(reader())
        assert await asyncio.wait_for(_next(q, task, "idle"), 2.0) == "later"
        stop.set()
        await task
        with pytest.raises(ConnectionError, match="idle reader ended"):
            await _next(q, task, "idle")

    asyncio.run(main())
