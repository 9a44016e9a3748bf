"""Load of a process or a cgroup, read from /proc and cgroup v2 files (Linux).

A collector is called every interval and returns metrics keyword arguments; CPU utilisation is
the share of the CPUs it may use, averaged since the previous call.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol


class Collector(Protocol):
    def sample(self) -> dict[str, float]: ...


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ProcessCollector:
    """CPU and memory of one process (default: this one) from /proc/<pid>/stat and statm."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.mem_total = os.sysconf("SC_PHYS_PAGES") * self.page
        self.cpus = _cpus()
        self._last: tuple[float, float] | None = None

    def _cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def sample(self) -> dict[str, float]:
        """Raises ProcessLookupError once the process is gone."""
        try:
            cpu_s = self._cpu_seconds()
            rss = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * self.page
        except FileNotFoundError:
            raise ProcessLookupError(self.pid) from None
        now = time.monotonic()
        out = {"memory": min(1.0, rss / self.mem_total)}
        if self._last is not None:
            dt = now - self._last[0]
            if dt > 0:
                out["cpu"] = min(1.0, max(0.0, (cpu_s - self._last[1]) / dt / self.cpus))
        self._last = (now, cpu_s)
        return out


class CgroupCollector:
    """CPU and memory of a cgroup v2 directory (cpu.stat, cpu.max, memory.current, memory.max)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "cpu.stat").exists():
            raise FileNotFoundError(f"{self.path} is not a cgroup v2 directory (no cpu.stat)")
        self._last: tuple[float, float] | None = None

    def _limit_cpus(self) -> float:
        try:
            quota, period = (self.path / "cpu.max").read_text().split()
            if quota != "max":
                return int(quota) / int(period)
        except (FileNotFoundError, ValueError):
            pass
        return float(_cpus())

    def sample(self) -> dict[str, float]:
        stat = dict(
            line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line
        )
        usage = int(stat["usage_usec"]) / 1e6
        now = time.monotonic()
        out: dict[str, float] = {}
        try:
            current = int((self.path / "memory.current").read_text())
            limit_s = (self.path / "memory.max").read_text().strip()
            limit = (
                os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                if limit_s == "max"
                else int(limit_s)
            )
            out["memory"] = min(1.0, current / limit)
        except FileNotFoundError:
            pass
        if self._last is not None:
            dt = now - self._last[0]
            if dt > 0:
                out["cpu"] = min(1.0, max(0.0, (usage - self._last[1]) / dt / self._limit_cpus()))
        self._last = (now, usage)
        return out
