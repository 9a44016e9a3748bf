"""Steering quality: cand's decision policies against an oracle, as metric reports go stale.

    .venv/bin/python -m bench.steer_sim [--requests 200000] [--seed 1] [--staleness 0,0.05,0.2,1]

A discrete-event simulation (bench/sim/): a 15-router ISP-like topology, 8 instances with a
16x spread of service rates behind 4 egresses, Zipf demand over 5 ingresses, Poisson
arrivals, exponential request sizes, load reports every --interval that reach the ingresses
--staleness later. Each policy installed in `cand.policies` is run by cand's own engines; the
baseline, in the same run on the same requests, is an oracle that knows every queue at once.
Figures: request completion (round trip + wait + service), mean and p99, and load imbalance
(max / mean of per-instance offered utilisation).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import pct, save, table
from bench.sim import steer
from bench.sim.world import build, requests
from cand.engine.policy import Policy
from cand.plugins import available

ORACLE = "oracle"


def policies() -> dict[str, type[Policy]]:
    """Every policy installed as a plugin: the simulator steers with what the daemon would."""
    return {name: ep.load() for name, ep in sorted(available("cand.policies").items())}


def figures(res: steer.Result, rates: list[float]) -> dict[str, Any]:
    util = res.utilisation(rates)
    peak, cv = steer.imbalance(util)
    return {
        "mean_ms": statistics.fmean(res.completions) * 1000,
        "p50_ms": pct(res.completions, 50) * 1000,
        "p99_ms": pct(res.completions, 99) * 1000,
        "imbalance_max_over_mean": peak,
        "imbalance_cv": cv,
        "utilisation": util,
        "measured": len(res.completions),
        "dropped": res.dropped,
        "counters": res.counters,
    }


def plot(path: Path, stalenesses: list[float], rows: list[dict[str, Any]], oracle: float) -> None:
    """p99 against staleness, one line per policy, the oracle flat (staleness means nothing
    to it); log y, since the load-blind baselines are orders of magnitude off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = list(range(len(stalenesses)))  # evenly spaced: the values span 0 to seconds
    for name in sorted({r["policy"] for r in rows}):
        by = {r["staleness_s"]: r["p99_ms"] for r in rows if r["policy"] == name}
        ax.plot(xs, [by[s] for s in stalenesses], marker="o", label=name)
    ax.plot(xs, [oracle] * len(xs), linestyle="--", color="black", label=ORACLE)
    ax.set_xticks(xs, [f"{s * 1000:g}" for s in stalenesses])
    ax.set_yscale("log")
    ax.set_xlabel("report staleness (ms)")
    ax.set_ylabel("p99 request completion (ms)")
    ax.set_title("Steering quality: p99 completion vs staleness")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--staleness", default="0,0.05,0.2,1", help="seconds, comma-separated")
    ap.add_argument("--interval", type=float, default=0.1, help="report interval, seconds")
    ap.add_argument("--load", type=float, default=0.7, help="offered load / total capacity")
    ap.add_argument("--out", type=Path, default=None, help="results directory")
    a = ap.parse_args(argv)
    if a.out is not None:
        os.environ["CAND_BENCH_RESULTS"] = str(a.out)
    stalenesses = [float(s) for s in a.staleness.split(",")]
    world = build(a.seed)
    reqs = requests(world, a.requests, a.load, a.seed + 1)
    rates = [i.rate for i in world.instances]
    classes = policies()
    started = time.monotonic()
    oracle = {
        "policy": ORACLE,
        "staleness_s": None,
        **figures(steer.run_oracle(world, reqs), rates),
    }
    rows: list[dict[str, Any]] = []
    for name in classes:
        for s in stalenesses:
            res = steer.run_policy(world, reqs, name, classes, s, a.interval, a.seed + 2)
            row = {"policy": name, "staleness_s": s, **figures(res, rates)}
            row["mean_over_oracle"] = row["mean_ms"] / oracle["mean_ms"]
            row["p99_over_oracle"] = row["p99_ms"] / oracle["p99_ms"]
            rows.append(row)
    took = time.monotonic() - started

    print(
        f"Steering quality: {a.requests:,} requests at load {a.load}, reports every "
        f"{a.interval * 1000:.0f} ms, seed {a.seed} ({took:.0f} s)"
    )
    head = (
        "policy",
        "staleness ms",
        "mean ms",
        "p99 ms",
        "max/mean util",
        "mean / oracle",
        "p99 / oracle",
    )
    print(table(head, quality_rows(oracle, rows, lambda r: f"{r['staleness_s'] * 1000:.0f}")))
    path = save(
        "steer_sim",
        {
            "command": "python -m bench.steer_sim "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "parameters": {
                "requests": a.requests,
                "seed": a.seed,
                "staleness_s": stalenesses,
                "report_interval_s": a.interval,
                "load": a.load,
                "warmup_share": steer.WARMUP,
                "routers": world.graph.number_of_nodes(),
                "links": world.graph.number_of_edges(),
                "ingress_demand": world.demand,
                "instances": [
                    {"name": i.name, "egress": i.egress, "rate_per_s": i.rate}
                    for i in world.instances
                ],
                "rtt_ms": {f"{i}-{e}": world.rtt(i, e) * 1000 for i, e in world.one_way},
            },
            "run_s": took,
            "oracle": oracle,
            "rows": rows,
        },
    )
    plot(path.with_suffix(".png"), stalenesses, rows, oracle["p99_ms"])
    print(f"written: {path} and {path.with_suffix('.png').name}")


def quality_rows(
    oracle: dict[str, Any], rows: list[dict[str, Any]], label: Callable[[dict[str, Any]], Any]
) -> list[tuple[Any, ...]]:
    """The table body of a steering-quality run: the oracle first, then a row per run,
    `label` giving its second column (staleness, cost source)."""
    figures_of = ("mean_ms", "p99_ms", "imbalance_max_over_mean")
    body: list[tuple[Any, ...]] = [(ORACLE, "-", *(oracle[k] for k in figures_of), 1.0, 1.0)]
    body += [
        (r["policy"], label(r), *(r[k] for k in figures_of), r["mean_over_oracle"],
         r["p99_over_oracle"])
        for r in rows
    ]  # fmt: skip
    return body


if __name__ == "__main__":
    main()
