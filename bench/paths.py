"""What bench.dataplane_cost measures on every data plane, from one client to alternating paths
(the steered D-SID and a plain baseline): TCP connect() times to a bare listener and iperf3
bulk throughput. The client runs `python -m cand_testbed.fig2 connect` and `iperf3 -c`; only
how a command reaches the client's namespace differs between the labs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from bench.common import summary

SINK_PORT = 8080

Run = Callable[..., str]
"""Runs one command in the client's namespace, returns its stdout, raises if it fails."""


def connect_times(run: Run, targets: Mapping[str, str], n: int) -> dict[str, dict[str, Any]]:
    """`n` connects to each target, one at a time, the targets alternating: per path name,
    the summary of connect() times in microseconds and the count of failures."""
    out = run(sys.executable, "-m", "cand_testbed.fig2", "connect", *targets.values(),
              "-n", str(n), "--port", str(SINK_PORT))  # fmt: skip
    rows = {r["target"]: r for r in map(json.loads, out.splitlines())}
    return {k: summary(rows[t]["us"]) | {"failed": rows[t]["failed"]} for k, t in targets.items()}


def iperf(run: Run, target: str, seconds: float) -> float:
    """Bits per second received by the server, one TCP stream from the client."""
    out = run("iperf3", "-c", target, "-t", str(seconds), "-J", "--connect-timeout", "3000")
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def throughput(
    run: Run, targets: Mapping[str, str], seconds: float, reps: int
) -> dict[str, list[float]]:
    """`reps` iperf3 runs per path, the order of the paths rotating from one rep to the next."""
    names = list(targets)
    bps: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            bps[k].append(iperf(run, targets[k], seconds))
    return bps
