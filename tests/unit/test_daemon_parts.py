from cand.engine import Advertise, ProgramService, RemoveService, Withdraw
from cand.engine.service_table import ServiceEntry, ServiceSpec
from cand.lane import coalesce
from tests.helpers import SVC, SVC2, key, route


def test_coalesce_keeps_last_per_subject_in_order() -> None:
    e1 = ProgramService(ServiceEntry(ServiceSpec(SVC), ()))
    e2 = ProgramService(ServiceEntry(ServiceSpec(SVC2), ()))
    e3 = RemoveService(SVC)
    a = Advertise(route(1))
    w = Withdraw(key(1))
    a2 = Advertise(route(2))
    assert coalesce([e1, a, e2, a2, e3, w]) == [e2, a2, e3, w]
    assert coalesce([w, a]) == [a]


def test_a_lane_says_when_its_last_batch_started_and_ended() -> None:
    """`cand status` shows it; the reaction and failure benchmarks split a change by it."""
    import asyncio
    import time

    from cand.lane import Lane

    class Owner:
        def adapter_failed(self, lane: str, error: BaseException, bug: bool) -> None:
            raise AssertionError(error)

    async def main() -> dict[str, object]:
        async def apply(effects: object) -> None:
            await asyncio.sleep(0.01)

        lane = Lane("test", apply, Owner())
        assert lane.status()["last_started"] is None
        task = asyncio.create_task(lane.run())
        before = time.monotonic()
        lane.put([Withdraw(key(1))])
        await asyncio.sleep(0)
        await lane.idle()
        task.cancel()
        status = lane.status()
        assert isinstance(status["last_started"], float)
        assert isinstance(status["last_done"], float)
        assert before <= status["last_started"] <= status["last_done"]
        return status

    asyncio.run(main())
