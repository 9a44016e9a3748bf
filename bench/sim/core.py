"""The simulator's event core: a time-ordered event queue and a FIFO single server.

Kept free of anything cand- or network-specific so it can be checked against queueing
arithmetic on its own (tests/unit/test_sim_core.py).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Action = Callable[[float], None]


class EventQueue:
    """Actions run in time order; ties run in the order they were scheduled, so a run
    never depends on how the heap breaks ties and is the same for the same seed."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, time: float, action: Action) -> None:
        if time < self.now:
            raise ValueError(f"cannot schedule at {time} before now ({self.now})")
        heapq.heappush(self._heap, (time, next(self._seq), action))

    def run(self, until: float = math.inf) -> None:
        """Run every action due up to `until` (all of them by default), each at its time."""
        while self._heap and self._heap[0][0] <= until:
            time, _, action = heapq.heappop(self._heap)
            self.now = time
            action(time)


@dataclass(slots=True)
class Job:
    """One request as a server sees it; times are filled in as it goes through."""

    id: int
    size: float
    """Work units; a server of rate r serves it in size / r seconds."""
    arrived: float = math.nan
    started: float = math.nan
    finished: float = math.nan

    @property
    def wait(self) -> float:
        return self.started - self.arrived


class FifoServer:
    """One instance: a single queue served first-in first-out at `rate` work units per second.

    The caller owns the clock: `arrive` and `complete` return the finish time of a job that
    has just started, which the caller schedules as the next `complete`.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("a server needs a positive rate")
        self.rate = rate
        self.waiting: deque[Job] = deque()
        self.current: Job | None = None
        self.waiting_work = 0.0  # seconds of service queued behind the current job
        self._busy = 0.0
        self._busy_since = 0.0

    def in_system(self) -> int:
        return len(self.waiting) + (self.current is not None)

    def arrive(self, job: Job, now: float) -> float | None:
        """Queue `job`; its finish time if it starts at once, else None."""
        job.arrived = now
        if self.current is None:
            return self._start(job, now)
        self.waiting.append(job)
        self.waiting_work += job.size / self.rate
        return None

    def complete(self, now: float) -> tuple[Job, float | None]:
        """The current job ends now; returns it, and the next job's finish time if any."""
        job = self.current
        if job is None:
            raise RuntimeError("complete() on an idle server")
        job.finished = now
        self._busy += now - self._busy_since
        self.current = None
        if not self.waiting:
            return job, None
        nxt = self.waiting.popleft()
        self.waiting_work = max(0.0, self.waiting_work - nxt.size / self.rate)
        return job, self._start(nxt, now)

    def backlog(self, now: float) -> float:
        """Seconds of work left in the system: what a new arrival would wait."""
        if self.current is None:
            return 0.0
        return max(0.0, self.current.finished - now) + self.waiting_work

    def busy_time(self, now: float) -> float:
        """Seconds spent serving since the start (for utilisation over an interval)."""
        return self._busy + (now - self._busy_since if self.current is not None else 0.0)

    def _start(self, job: Job, now: float) -> float:
        job.started = now
        job.finished = now + job.size / self.rate  # planned; `complete` confirms it
        self.current = job
        self._busy_since = now
        return job.finished
