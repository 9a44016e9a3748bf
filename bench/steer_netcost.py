"""Steering quality when the network changes: static network cost against cost from probes.

    .venv/bin/python -m bench.steer_netcost [--requests 200000] [--seed 1]
        [--step e2:20:0.3] [--drift e1:10:0.5:0.9] [--jitter-ms 0.5] [--loss 0.01]

The steering-quality simulation (bench/sim/, as `bench.steer_sim`), on a network whose delays
move: a step of `--step` ms one way on every path to one egress at a share of the run (a
reroute onto a longer path), a linear drift of `--drift` ms between two shares of the run (a
link filling up), exponential per-packet jitter of mean `--jitter-ms` on every packet. Each
policy in `cand.policies` runs twice on the same requests:

- `static`: every ingress was told the round trip to each egress once (`network_cost.static`,
  right at the start, stale after the step);
- `probe`: every ingress probes every egress with cand's `ProbeBook` at the daemon's default
  probe settings (5 a second, jitter, 1 s timeout, 5 s window, median RTT, loss penalty), each
  probe lost with probability `--loss`, and the samples reach the ingress `Engine` as
  `CostSampled`, smoothed by its own `CostSmoother` at the daemon's defaults (EWMA 2 s, 1 ms
  minimum change, 1 s minimum interval).

Baseline: the oracle, which knows every queue and every path's current delay at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import save, table
from bench.sim import steer
from bench.sim.netcost import Change, CostTrace, DynamicNetwork, Prober
from bench.sim.world import World, build, requests
from bench.steer_sim import ORACLE, figures, policies, quality_rows
from cand.config import ProbeCostConfig, SmoothingConfig
from cand.engine.cost import SmoothingParams
from cand.engine.policy import Policy

COSTS = ("static", "probe")
PROBE = ProbeCostConfig().params()
SMOOTHING = SmoothingParams(**SmoothingConfig().model_dump())
"""The daemon's defaults, from its configuration model: what a user gets by turning probes on."""


def parse_step(spec: str, span: float) -> Change:
    egress, ms, at = spec.split(":")
    return Change(egress, "step", float(ms), float(at) * span)


def parse_drift(spec: str, span: float) -> Change:
    egress, ms, start, end = spec.split(":")
    return Change(egress, "drift", float(ms), float(start) * span, float(end) * span)


def busiest(world: World) -> str:
    return max(world.demand, key=lambda i: world.demand[i])


def run_one(
    world: World,
    reqs: list[Any],
    policy: str,
    classes: dict[str, type[Policy]],
    cost: str,
    changes: list[Change],
    a: argparse.Namespace,
) -> tuple[steer.Result, CostTrace]:
    net = DynamicNetwork(world, changes, a.jitter_ms, a.seed + 3)
    sim = steer.Sim(world, net)
    steering = steer.CandSteering(
        sim, policy, classes, a.staleness, a.interval, a.seed + 2, cost, SMOOTHING
    )
    until = reqs[-1].time
    steering.start(until=until)
    counters: dict[str, int] = {}
    prober = None
    if cost == "probe":
        prober = Prober(steering, net, PROBE, a.loss, a.seed + 4)
        prober.start(until)
    trace = CostTrace(steering, net, busiest(world))
    trace.start(until)
    res = sim.run(reqs, steering)
    counters.update(steering.counters)
    if prober is not None:
        counters.update(prober.counters)
    res.counters = counters
    return res, trace


def plot(
    path: Path,
    rows: list[dict[str, Any]],
    oracle: dict[str, Any],
    trace: CostTrace,
    static_costs: dict[str, float],
) -> None:
    """Left: p99 per policy, static vs probe cost, the oracle dashed (log y). Right: one
    ingress's view of each egress over the run: true mean RTT, the probe-derived cost in its
    rib, and the static cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = sorted({r["policy"] for r in rows})
    xs = list(range(len(names)))
    for k, cost in enumerate(COSTS):
        by = {r["policy"]: r["p99_ms"] for r in rows if r["cost"] == cost}
        ax.bar([x + (k - 0.5) * 0.38 for x in xs], [by[n] for n in names], 0.38, label=cost)
    ax.axhline(oracle["p99_ms"], linestyle="--", color="black", label=ORACLE)
    ax.set_xticks(xs, names)
    ax.set_yscale("log")
    ax.set_ylabel("p99 request completion (ms)")
    ax.set_title("Steering quality: static vs probe network cost")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    for n, e in enumerate(sorted(trace.cost)):
        color = f"C{n}"
        bx.plot(trace.times, trace.true_rtt[e], color=color, alpha=0.35, linewidth=3)
        probed = [float("nan") if c is None else c for c in trace.cost[e]]
        bx.plot(trace.times, probed, color=color, label=f"{e} probe cost")
        bx.axhline(static_costs[e], color=color, linestyle=":", linewidth=1)
    bx.set_xlabel("simulated time (s)")
    bx.set_ylabel(f"cost at {trace.ingress} (ms)")
    bx.set_title("thick: true mean RTT; line: probe cost; dotted: static")
    bx.grid(True, alpha=0.3)
    bx.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--step", default="e2:20:0.3", help="egress:one-way ms:share of the run")
    ap.add_argument("--drift", default="e1:10:0.5:0.9", help="egress:one-way ms:from:to shares")
    ap.add_argument("--jitter-ms", type=float, default=0.5, help="mean per-packet jitter")
    ap.add_argument("--loss", type=float, default=0.01, help="probe loss probability")
    ap.add_argument("--staleness", type=float, default=0.0, help="report staleness, seconds")
    ap.add_argument("--interval", type=float, default=0.1, help="report interval, seconds")
    ap.add_argument("--load", type=float, default=0.7, help="offered load / total capacity")
    ap.add_argument("--out", type=Path, default=None, help="results directory")
    a = ap.parse_args(argv)
    if a.out is not None:
        os.environ["CAND_BENCH_RESULTS"] = str(a.out)
    world = build(a.seed)
    reqs = requests(world, a.requests, a.load, a.seed + 1)
    span = reqs[-1].time
    changes = [parse_step(a.step, span)] if a.step else []
    changes += [parse_drift(a.drift, span)] if a.drift else []
    for c in changes:
        if c.egress not in world.egresses:
            ap.error(f"{c.egress}: no such egress (there are {', '.join(world.egresses)})")
    rates = [i.rate for i in world.instances]
    classes = policies()
    started = time.monotonic()
    net = DynamicNetwork(world, changes, a.jitter_ms, a.seed + 3)
    oracle_sim = steer.Sim(world, net)
    oracle = {
        "policy": ORACLE,
        "cost": None,
        **figures(oracle_sim.run(reqs, steer.Oracle(oracle_sim)), rates),
    }
    rows: list[dict[str, Any]] = []
    probe_trace: CostTrace | None = None
    for name in classes:
        for cost in COSTS:
            res, trace = run_one(world, reqs, name, classes, cost, changes, a)
            if cost == "probe" and probe_trace is None:
                probe_trace = trace
            row = {"policy": name, "cost": cost, **figures(res, rates)}
            row["mean_over_oracle"] = row["mean_ms"] / oracle["mean_ms"]
            row["p99_over_oracle"] = row["p99_ms"] / oracle["p99_ms"]
            rows.append(row)
    took = time.monotonic() - started

    print(
        f"Steering quality, static vs probe network cost: {a.requests:,} requests at load "
        f"{a.load} over {span:.0f} s, step {a.step or '-'}, drift {a.drift or '-'}, jitter "
        f"{a.jitter_ms} ms, probe loss {a.loss:.0%}, seed {a.seed} ({took:.0f} s)"
    )
    head = ("policy", "cost", "mean ms", "p99 ms", "max/mean util", "mean / oracle", "p99 / oracle")
    print(table(head, quality_rows(oracle, rows, lambda r: r["cost"])))
    static_costs = {e: world.rtt(busiest(world), e) * 1000 for e in world.egresses}
    path = save(
        "steer_netcost",
        {
            "command": "python -m bench.steer_netcost "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "parameters": {
                "requests": a.requests,
                "seed": a.seed,
                "span_s": span,
                "load": a.load,
                "staleness_s": a.staleness,
                "report_interval_s": a.interval,
                "warmup_share": steer.WARMUP,
                "changes": [
                    {
                        "egress": c.egress,
                        "kind": c.kind,
                        "one_way_ms": c.ms,
                        "start_s": c.start,
                        "end_s": c.end,
                    }
                    for c in changes
                ],
                "jitter_mean_ms": a.jitter_ms,
                "probe_loss": a.loss,
                "probe": asdict(PROBE),
                "smoothing": asdict(SMOOTHING),
                "rtt_ms": {f"{i}-{e}": world.rtt(i, e) * 1000 for i, e in world.one_way},
            },
            "run_s": took,
            "oracle": oracle,
            "rows": rows,
            "trace": None
            if probe_trace is None
            else {
                "ingress": probe_trace.ingress,
                "every_s": probe_trace.every,
                "static_cost_ms": static_costs,
                "probe_cost_ms": probe_trace.cost,
                "true_mean_rtt_ms": {
                    e: [round(v, 3) for v in vs] for e, vs in probe_trace.true_rtt.items()
                },
            },
        },
    )
    if probe_trace is not None:
        plot(path.with_suffix(".png"), rows, oracle, probe_trace, static_costs)
    print(f"written: {path} and {path.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
