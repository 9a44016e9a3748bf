"""A lane with a duty below 1 rests after each call, in proportion to how long it took, and
what is put meanwhile joins the next call; a lane with duty 1 never rests."""

from __future__ import annotations

import asyncio

import pytest

from cand.engine import Effect, RemoveService
from cand.lane import MAX_REST, Lane
from cand.model import ServiceId


class Owner:
    def adapter_failed(self, lane: str, error: BaseException, bug: bool) -> None:
        raise AssertionError(error)


_n = iter(range(1, 1 << 16))


def effect() -> Effect:
    """A removal of a D-SID of its own: effects about one D-SID would coalesce into one."""
    return RemoveService(ServiceId.parse(f"2001:db8:5::{next(_n):x}"))


async def run_lane(duty: float, took: float) -> tuple[list[float], list[int], Lane]:
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    sizes: list[int] = []

    async def apply(batch: list[Effect]) -> None:
        starts.append(loop.time())
        sizes.append(len(batch))
        await asyncio.sleep(took)

    lane = Lane("dp", apply, Owner(), duty=duty)
    task = asyncio.create_task(lane.run())
    lane.put([effect()])
    await asyncio.sleep(took / 2)  # the first call is under way
    lane.put([effect()])
    await asyncio.sleep(took / 10)
    lane.put([effect(), effect()])
    await asyncio.wait_for(lane.idle(), 5)
    task.cancel()
    return starts, sizes, lane


def test_a_half_duty_lane_rests_as_long_as_its_call_took() -> None:
    starts, sizes, lane = asyncio.run(run_lane(0.5, 0.1))
    assert len(starts) == 2 and sizes == [1, 3]  # the two put meanwhile: one call
    assert starts[1] - starts[0] >= 0.2 - 0.01  # the call (0.1 s), then as long again
    assert lane.status()["rests"] == 1


def test_a_full_duty_lane_goes_on_at_once() -> None:
    starts, sizes, lane = asyncio.run(run_lane(1.0, 0.1))
    assert len(starts) == 2
    assert starts[1] - starts[0] < 0.15
    assert lane.status()["rests"] == 0


def test_the_rest_is_bounded() -> None:
    starts = asyncio.run(_bounded())
    assert starts[1] - starts[0] <= 0.05 + MAX_REST + 0.1


async def _bounded() -> list[float]:
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def apply(batch: list[Effect]) -> None:
        starts.append(loop.time())
        await asyncio.sleep(0.05)

    lane = Lane("dp", apply, Owner(), duty=0.01)  # would rest 99 times the call: 5 s
    task = asyncio.create_task(lane.run())
    lane.put([effect()])
    await asyncio.sleep(0.06)
    lane.put([effect()])
    await asyncio.wait_for(lane.idle(), 5)
    task.cancel()
    return starts


@pytest.mark.parametrize("duty", [0.0, -0.5, 1.5])
def test_a_duty_outside_0_1_is_refused(duty: float) -> None:
    async def apply(batch: list[Effect]) -> None:
        return None

    with pytest.raises(ValueError, match="duty"):
        Lane("dp", apply, Owner(), duty=duty)
