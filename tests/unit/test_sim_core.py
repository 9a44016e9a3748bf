"""The steering simulator's event core against queueing arithmetic it must agree with."""

from __future__ import annotations

import functools
import math
import random

import pytest

from bench.sim.core import EventQueue, FifoServer, Job
from bench.sim.world import build, requests


def serve(arrivals: list[tuple[float, float]], rate: float) -> tuple[list[Job], FifoServer]:
    """Jobs (arrival time, size) through one server, driven by the event queue; the jobs in
    the order they finished."""
    q = EventQueue()
    server = FifoServer(rate)
    done: list[Job] = []

    def finish(t: float) -> None:
        job, nxt = server.complete(t)
        done.append(job)
        if nxt is not None:
            q.at(nxt, finish)

    def arrive(job: Job, t: float) -> None:
        start = server.arrive(job, t)
        if start is not None:
            q.at(start, finish)

    for n, (at, size) in enumerate(arrivals):
        q.at(at, functools.partial(arrive, Job(n, size)))
    q.run()
    return done, server


def test_fifo_by_hand() -> None:
    done, server = serve([(0.0, 2.0), (1.0, 1.0), (1.5, 1.0)], rate=1.0)
    assert [j.id for j in done] == [0, 1, 2]
    assert [j.finished for j in done] == [2.0, 3.0, 4.0]
    assert [j.wait for j in done] == [0.0, 1.0, 1.5]
    assert server.in_system() == 0 and server.busy_time(4.0) == 4.0


def test_rate_scales_service_and_idle_gaps_are_not_busy() -> None:
    done, server = serve([(0.0, 1.0), (5.0, 2.0)], rate=4.0)
    assert [j.finished for j in done] == [0.25, 5.5]
    assert server.busy_time(10.0) == pytest.approx(0.75)


def test_completion_is_arrival_plus_wait_plus_service_in_fifo_order() -> None:
    """Random M/M/1 traffic: every job matches Lindley's recursion
    (start = max(arrival, previous finish)) and leaves in the order it came."""
    rng = random.Random(7)
    t, arrivals = 0.0, []
    for _ in range(2000):
        t += rng.expovariate(8.0)
        arrivals.append((t, rng.expovariate(1.0)))
    rate = 10.0
    done, server = serve(arrivals, rate)
    assert [j.id for j in done] == list(range(len(arrivals)))
    prev = 0.0
    for job, (at, size) in zip(done, arrivals, strict=True):
        assert job.arrived == at
        assert job.started == pytest.approx(max(at, prev))
        assert job.finished == pytest.approx(job.arrived + job.wait + size / rate)
        prev = job.finished
    busy = sum(size for _, size in arrivals) / rate
    assert server.busy_time(prev) == pytest.approx(busy)


def test_mm1_mean_sojourn_is_near_theory() -> None:
    """lambda 7, mu 10: mean time in system 1 / (mu - lambda) = 333 ms (seeded, so exact
    on every run; the tolerance is for the finite sample)."""
    rng = random.Random(3)
    t, arrivals = 0.0, []
    for _ in range(50_000):
        t += rng.expovariate(7.0)
        arrivals.append((t, rng.expovariate(1.0)))
    done, _ = serve(arrivals, rate=10.0)
    mean = sum(j.finished - j.arrived for j in done) / len(done)
    assert mean == pytest.approx(1 / 3, rel=0.1)


def test_backlog_is_the_wait_of_the_next_arrival() -> None:
    server = FifoServer(2.0)
    assert server.arrive(Job(0, 2.0), 0.0) == 1.0
    assert server.arrive(Job(1, 1.0), 0.2) is None
    assert server.backlog(0.5) == pytest.approx(0.5 + 0.5)
    assert server.in_system() == 2


def test_queue_runs_in_time_order_ties_as_scheduled_and_refuses_the_past() -> None:
    q = EventQueue()
    seen: list[tuple[float, str]] = []

    def mark(name: str, t: float) -> None:
        seen.append((t, name))

    for name, at in (("b", 1.0), ("a", 0.5), ("c", 1.0), ("d", 3.0)):
        q.at(at, functools.partial(mark, name))
    q.run(until=2.0)
    assert seen == [(0.5, "a"), (1.0, "b"), (1.0, "c")] and len(q) == 1
    with pytest.raises(ValueError, match="before now"):
        q.at(0.9, lambda t: None)
    q.run()
    assert seen[-1] == (3.0, "d") and q.now == 3.0


def test_server_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        FifoServer(0.0)
    with pytest.raises(RuntimeError, match="idle"):
        FifoServer(1.0).complete(0.0)


def test_world_and_requests_are_a_function_of_the_seed() -> None:
    a, b, c = build(5), build(5), build(6)
    assert a.one_way == b.one_way and a.instances == b.instances and a.demand == b.demand
    assert a.one_way != c.one_way
    assert requests(a, 100, 0.7, 9) == requests(b, 100, 0.7, 9)
    assert math.isclose(sum(a.demand.values()), 1.0)
    assert 8 <= a.graph.number_of_nodes() <= 20
