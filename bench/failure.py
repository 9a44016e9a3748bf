"""Failure: an instance is killed -> the last new flow that still reaches it.

    sudo .venv/bin/python -m bench.failure [--runs 20] [--spacing 12] [--reflector frr|gobgp]
                                           [--direct]

(`--reflector`, `--direct`: what carries the routes between the D-Routers, as in
bench.reaction; results in `failure.json`, `failure_gobgp.json` or `failure_direct.json`.)

In the Figure-2 lab, c1 opens a new TCP connection to the web D-SID every `--gap` seconds
(one request each, each on its own: `python -m cand_testbed.load`, 3 s timeout) and records
when it started and which instance answered. web-3's process (its HTTP server and its D-MA)
is killed with kill -9 at a random moment; from then on a new flow that dr1 still steers to
web-3 fails (refused by web-3's kernel, or, once dr3 has removed web-3's SID, lost there and
timed out), so the last failed connection after the kill is the last new flow that reached
the dead instance. The time splits into:

    kill -> the broker's Last Will at a bare subscriber on dr3 (detection, the baseline)
    -> dr3's speaker lane withdraws the path (cand's `will_confirm` hold, 100 ms)
    -> dr1's data-plane lane starts the new table (BGP withdraw through the reflector)
    -> dr1's kernel has a pick rule without web-3 (`nft monitor`)

Baseline: detection only, the Last Will's arrival at a bare subscriber, the floor for any
reaction driven by MQTT. With no cand reaction at all the figure has no end: every second
new flow goes to the dead instance until someone acts. The instance is restarted between
runs; runs are `--spacing` seconds apart because each kill is a flap for the egress's damper
(penalty 1000, half-life 15 s, suppressed above 3000): closer kills would hold it down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from typing import Any

from cand_testbed.fig2 import WEB, Fig2

from bench.common import need_netns, save, summary, table
from bench.lablegs import Kernel, Watch, lane_started

PARTS = ("detection", "egress_hold", "bgp_withdraw", "kernel", "last_flow", "kernel_total")


def one(lab: Fig2, watch: Watch, kernel: Kernel, gap: float) -> dict[str, Any]:
    lead = random.uniform(0.8, 1.5)
    # new flows at a steady rate, each on its own (a flow that hangs holds up no other)
    load = lab.load("c1", [WEB], rate=1 / gap, keep=0, duration=lead + 1.5)
    time.sleep(lead)
    pids = lab.pids("web-3", "cand_testbed.instance")
    killed = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    will = watch.next(5.0, state="down")
    at, _ = kernel.until(lambda w: sum(v > 0 for v in w.values()) == 1, 5.0)
    time.sleep(0.01)
    dr3, dr1 = asyncio.run(lab.api("dr3", "status")), asyncio.run(lab.api("dr1", "status"))
    out, _ = load.communicate(timeout=30)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in rows:  # `at` is when the flow ended; it started `ms` before
        r["start"] = r["at"] - r["ms"] / 1000
    # a flow that had started but not ended when web-3 was killed may have been web-3's
    # (killed mid-request): it is neither "before" nor "after" the kill
    before = [r for r in rows if r["at"] < killed]
    in_flight = [r for r in rows if r["start"] < killed <= r["at"]]
    after = [r for r in rows if r["start"] >= killed]
    dead = [r for r in after if r["served_by"] in (None, "web-3")]
    withdrawn, programmed = lane_started(dr3, "speaker"), lane_started(dr1, "dataplane")
    assert withdrawn is not None
    assert programmed is not None
    last = max((r["start"] for r in dead), default=killed)
    ms = 1000.0
    return {
        "detection": (will["recv"] - killed) * ms,
        "egress_hold": (withdrawn - will["recv"]) * ms,
        "bgp_withdraw": (programmed - withdrawn) * ms,
        "kernel": (at - programmed) * ms,
        "kernel_total": (at - killed) * ms,
        "last_flow": (last - killed) * ms,
        "flows_after_kill": len(after),
        "flows_to_dead": len(dead),
        "to_dead_refused_ms": [r["ms"] for r in dead if r["ms"] < 900],
        "to_dead_timed_out": sum(r["ms"] >= 900 for r in dead),
        "failed_before_kill": sum(r["served_by"] is None for r in before),
        "in_flight_at_kill": len(in_flight),
        "in_flight_failed": sum(r["served_by"] is None for r in in_flight),
        "served_by_web3_before": sum(r["served_by"] == "web-3" for r in before),
    }


def until_both(lab: Fig2, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = asyncio.run(lab.weights("dr1")).get(WEB, {})
        if sum(v > 0 for v in w.values()) == 2:
            return
        time.sleep(0.1)
    raise TimeoutError("web-3 did not come back at dr1 (held down by the damper?)")


def measure(runs: int, gap: float, spacing: float, reflector: str = "frr") -> dict[str, Any]:
    lab = Fig2(reflector=reflector)
    lab.up()
    try:
        ready = asyncio.run(lab.wait_ready())
        kernel = Kernel(lab)
        rows = []
        for i in range(runs):
            started = time.monotonic()
            watch = Watch(lab, "web-3")  # before the kill; a new one for each instance
            rows.append(one(lab, watch, kernel, gap))
            watch.lines.proc.kill()
            watch.lines.proc.wait(5)
            print(json.dumps(rows[-1]), flush=True)
            lab.start_instance("web-3")
            until_both(lab)
            if i < runs - 1:
                time.sleep(max(0.0, spacing - (time.monotonic() - started)))
            kernel.lines.drain()
        return {"ready_s": ready, "runs": rows}
    finally:
        lab.down()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--gap", type=float, default=0.005, help="seconds between new flows")
    ap.add_argument("--spacing", type=float, default=12.0, help="seconds between kills")
    ap.add_argument(
        "--reflector", choices=("frr", "gobgp"), default="frr", help="the route reflector on rr"
    )
    ap.add_argument("--direct", action="store_true", help="no reflector: dr3 peers with dr1")
    a = ap.parse_args()
    need_netns("failure")
    reflector = "none" if a.direct else a.reflector
    m = measure(a.runs, a.gap, a.spacing, reflector)
    parts = {k: summary([r[k] for r in m["runs"]]) for k in PARTS}
    base = parts["detection"]
    print(f"Failure: web-3 killed {a.runs} times; a new flow every {a.gap * 1000:g} ms")
    print(
        table(
            ("part", "p50", "p99", "max", "x detection p50"),
            [(k, v["p50"], v["p99"], v["max"], v["p50"] / base["p50"]) for k, v in parts.items()],
        )
    )
    print(
        "new flows to the dead instance per run:",
        [r["flows_to_dead"] for r in m["runs"]],
        "of which timed out:",
        [r["to_dead_timed_out"] for r in m["runs"]],
    )
    name = {"frr": "failure", "gobgp": "failure_gobgp", "none": "failure_direct"}[reflector]
    path = save(
        name,
        {
            "command": "python -m bench.failure " + " ".join(sys.argv[1:]),
            "reflector": reflector,
            "runs_asked": a.runs,
            "gap_s": a.gap,
            "spacing_s": a.spacing,
            "parts_ms": parts,
            "ratio_last_flow_to_detection": {
                p: parts["last_flow"][p] / base[p] for p in ("p50", "p99")
            },
            **m,
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
