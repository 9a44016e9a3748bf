"""Helpers for benchmarks: own processes on loopback, percentiles, JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cand_testbed.mosquitto import running as broker_running

from cand.lab.netns import netns_available

RESULTS = Path(__file__).parent / "results"


def need_netns(bench: str) -> None:
    """Exit with the reason when this machine cannot make network namespaces (not root, no
    `ip`): the lab benchmarks need them and say so instead of failing halfway."""
    why = netns_available()
    if why:
        raise SystemExit(f"{bench}: {why}")


@contextmanager
def mosquitto() -> Iterator[int]:
    """A mosquitto of our own on a free loopback port; stopped by PID on the way out."""
    with broker_running(persistence=False) as broker:
        yield broker.port


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, headers))] + [[_fmt(v) for v in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = ["  ".join(c.rjust(w[i]) for i, c in enumerate(r)) for r in cells]
    out.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def save(name: str, data: dict[str, Any]) -> Path:
    """Results go to bench/results/, or to $CAND_BENCH_RESULTS (the CI smoke runs use a
    temporary directory so they never overwrite the figures of a real run)."""
    out = Path(os.environ.get("CAND_BENCH_RESULTS", RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        **data,
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def py_spy(pid: int, profile: Path, rate: int) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` into the flame graph `profile` (stopped by the caller)."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "-o", str(profile),
         "--pid", str(pid), "--rate", str(rate), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
