"""Failure: an instance is killed -> the last new flow that still reaches it.

    sudo .venv/bin/python -m bench.failure [--runs 20] [--spacing 12] [--reflector frr|gobgp]
                                           [--direct] [--freeze [drop|stop]] [--keepalive 10]

(`--reflector`, `--direct`: what carries the routes between the D-Routers, as in
bench.reaction; results in `failure.json`, `failure_gobgp.json` or `failure_direct.json`;
with `--freeze`, `failure_freeze[_stop][_gobgp|_direct][_ka<N>].json`.)

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

`--freeze`: web-3's host goes silent instead (the target: no new flow to it after 1.5 x the
instances' MQTT keepalive, `--keepalive`, 10 s in the lab). `drop` (default) drops every
packet in and out of web-3's namespace with nftables: neither the process nor the kernel
answers anything (no FIN, no RST, no SYN-ACK, no neighbour advertisement), as when a host
loses power or its link goes dark beyond the switch; `stop` SIGSTOPs the instance (HTTP
server and D-MA, one process), a hung process on a live host, whose kernel still completes
handshakes and acknowledges the broker's segments. Either way only the broker's keepalive
timer finds it: 1.5 x keepalive after the last packet it had from the D-MA (its heartbeat,
every 5 s, is the last one), the broker publishes the Last Will and the rest runs as after a
kill. The new flows steered to web-3 meanwhile time out (3 s). The split adds `heard`, the
broker's own timer (the D-MA's last message at the bare subscriber -> the Last Will), the
floor of any MQTT-driven reaction and the baseline here; the target is the freeze -> dr1's
kernel. After each run the table is deleted (or SIGCONT) and the run waits until dr1 steers
to web-3 again (`back`, seconds after the thaw).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

from cand_testbed.fig2 import WEB, Fig2

from bench.common import need_netns, save, summary, table
from bench.lablegs import Kernel, Lines, Watch, lane_started

PARTS = ("detection", "egress_hold", "bgp_withdraw", "kernel", "last_flow", "kernel_total")
FROZEN_PARTS = ("heard", *PARTS, "back")
FLOW_TIMEOUT = 3.0  # cand_testbed.load's, per connect and per answer
SILENT = """table inet bench_freeze {
  chain input { type filter hook input priority -400; policy drop; }
  chain output { type filter hook output priority -400; policy drop; }
}
"""


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
    rows = flows(out)
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


def freeze(lab: Fig2, how: str) -> None:
    """web-3's host goes silent: every packet dropped in its namespace, or its process stopped."""
    if how == "drop":
        subprocess.run(
            ["ip", "netns", "exec", lab.ns("web-3"), "nft", "-f", "-"],
            input=SILENT, text=True, check=True, capture_output=True,
        )  # fmt: skip
    else:
        for pid in lab.pids("web-3", "cand_testbed.instance"):
            os.kill(pid, signal.SIGSTOP)


def thaw(lab: Fig2, how: str) -> None:
    if how == "drop":
        lab.sh("web-3", "nft", "delete", "table", "inet", "bench_freeze")
    else:
        for pid in lab.pids("web-3", "cand_testbed.instance"):
            os.kill(pid, signal.SIGCONT)


def frozen_one(lab: Fig2, watch: Watch, kernel: Kernel, gap: float, how: str) -> dict[str, Any]:
    """One silent loss of web-3's host, measured as `one` measures a kill, and its return."""
    # mosquitto 2.0 sweeps its clients' keepalives every 6 s: freeze at a random phase of the
    # sweep, not at the one each run's fixed length would lock (the previous will was a sweep)
    time.sleep(random.uniform(0.0, 6.0))
    lead = random.uniform(0.8, 1.5)
    horizon = 1.5 * lab.keepalive + 10.0  # the will is due by 1.5 x keepalive; slack for it
    load = lab.load("c1", [WEB], rate=1 / gap, keep=0, duration=lead + horizon + FLOW_TIMEOUT)
    lines = Lines(load)  # read as it comes: a full pipe would stop the load at ~300 flows
    try:
        time.sleep(lead)
        freeze(lab, how)
        frozen = time.monotonic()
        last_heard, will = frozen, None
        while will is None:  # the D-MA's messages until its Last Will
            m = watch.next(horizon)
            if m["state"] == "down":
                will = m
            elif m["recv"] < frozen:
                last_heard = m["recv"]
        at, _ = kernel.until(lambda w: sum(v > 0 for v in w.values()) == 1, 5.0)
        time.sleep(0.01)
        dr3, dr1 = asyncio.run(lab.api("dr3", "status")), asyncio.run(lab.api("dr1", "status"))
        # every flow that started before dr1's kernel stopped steering to web-3 has ended
        # (answered or timed out) once its timeout has passed
        time.sleep(max(0.0, at + FLOW_TIMEOUT + 0.5 - time.monotonic()))
    finally:
        load.terminate()
        load.wait(30)
        lines.thread.join(30)
    thawed = time.monotonic()
    thaw(lab, how)
    until_both(lab)
    back = time.monotonic() - thawed
    rows = flows("\n".join(line for _, line in lines.drain()))
    before = [r for r in rows if r["at"] < frozen]
    after = [r for r in rows if r["start"] >= frozen]
    # a new flow whose SYN dr1 steered to web-3 is not answered: it fails (timed out, or
    # refused by dr3 once web-3's SID is gone), or a retransmitted SYN (1 s, 3 s) finds dr1
    # steering elsewhere and is answered there late; before the freeze every answer takes ms
    dead = [r for r in after if r["served_by"] in (None, "web-3") or r["ms"] >= 900]
    timed_out = [r for r in dead if r["ms"] >= FLOW_TIMEOUT * 1000 - 100]
    withdrawn, programmed = lane_started(dr3, "speaker"), lane_started(dr1, "dataplane")
    assert withdrawn is not None
    assert programmed is not None
    ms = 1000.0
    return {
        "heard": (will["recv"] - last_heard) * ms,
        "silent_before_freeze": (frozen - last_heard) * ms,
        "detection": (will["recv"] - frozen) * ms,
        "egress_hold": (withdrawn - will["recv"]) * ms,
        "bgp_withdraw": (programmed - withdrawn) * ms,
        "kernel": (at - programmed) * ms,
        "kernel_total": (at - frozen) * ms,
        "last_flow": (max((r["start"] for r in dead), default=frozen) - frozen) * ms,
        "back": back * ms,
        "flows_after_freeze": len(after),
        "flows_to_frozen": len(dead),
        "to_frozen_timed_out": len(timed_out),
        "to_frozen_refused": sum(r["served_by"] is None for r in dead) - len(timed_out),
        "to_frozen_answered_late": sum(r["served_by"] is not None for r in dead),
        "failed_before_freeze": sum(r["served_by"] is None for r in before),
        "served_by_web3_before": sum(r["served_by"] == "web-3" for r in before),
        "served_by_web3_after": sum(r["served_by"] == "web-3" for r in after),
    }


def flows(out: str) -> list[dict[str, Any]]:
    """The load's lines; `at` is when a flow ended, it started `ms` before."""
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for r in rows:
        r["start"] = r["at"] - r["ms"] / 1000
    return rows


def until_both(lab: Fig2, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = asyncio.run(lab.weights("dr1")).get(WEB, {})
        if sum(v > 0 for v in w.values()) == 2:
            return
        time.sleep(0.1)
    raise TimeoutError("web-3 did not come back at dr1 (held down by the damper?)")


def measure(
    runs: int,
    gap: float,
    spacing: float,
    reflector: str = "frr",
    how: str | None = None,
    keepalive: int = 10,
) -> dict[str, Any]:
    """`runs` kills of web-3 (`how` None) or silent losses of its host (`how` "drop", "stop")."""
    lab = Fig2(reflector=reflector, keepalive=keepalive)
    lab.up()
    try:
        ready = asyncio.run(lab.wait_ready())
        kernel = Kernel(lab)
        rows = []
        for i in range(runs):
            started = time.monotonic()
            watch = Watch(lab, "web-3")  # before the kill; a new one for each instance
            if how is None:
                rows.append(one(lab, watch, kernel, gap))
            else:
                rows.append(frozen_one(lab, watch, kernel, gap, how))  # thawed and back
            watch.lines.proc.kill()
            watch.lines.proc.wait(5)
            print(json.dumps(rows[-1]), flush=True)
            if how is None:
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
    ap.add_argument(
        "--gap", type=float, help="seconds between new flows (default 0.005; 0.02 with --freeze)"
    )
    ap.add_argument("--spacing", type=float, default=12.0, help="seconds between kills")
    ap.add_argument(
        "--reflector", choices=("frr", "gobgp"), default="frr", help="the route reflector on rr"
    )
    ap.add_argument("--direct", action="store_true", help="no reflector: dr3 peers with dr1")
    ap.add_argument(
        "--freeze", nargs="?", const="drop", choices=("drop", "stop"),
        help="web-3's host goes silent instead of a kill: its packets dropped (default) or "
        "its process SIGSTOPped",
    )  # fmt: skip
    ap.add_argument(
        "--keepalive", type=int, default=10, help="the instances' MQTT keepalive, seconds"
    )
    a = ap.parse_args()
    need_netns("failure")
    reflector = "none" if a.direct else a.reflector
    gap = a.gap if a.gap is not None else (0.02 if a.freeze else 0.005)
    m = measure(a.runs, gap, a.spacing, reflector, a.freeze, a.keepalive)
    name = {"frr": "failure", "gobgp": "failure_gobgp", "none": "failure_direct"}[reflector]
    common = {
        "command": "python -m bench.failure " + " ".join(sys.argv[1:]),
        "reflector": reflector,
        "runs_asked": a.runs,
        "gap_s": gap,
        "keepalive_s": a.keepalive,
    }
    if a.freeze:
        name = name.replace("failure", "failure_freeze" + ("_stop" if a.freeze == "stop" else ""))
        if a.keepalive != 10:
            name += f"_ka{a.keepalive}"
        data = report_frozen(m, a.freeze, a.keepalive, gap)
    else:
        data = report_killed(m, a.runs, gap, a.spacing)
    path = save(name, {**common, **data, **m})
    print(f"written: {path}")


def report_killed(m: dict[str, Any], runs: int, gap: float, spacing: float) -> dict[str, Any]:
    parts = {k: summary([r[k] for r in m["runs"]]) for k in PARTS}
    base = parts["detection"]
    print(f"Failure: web-3 killed {runs} times; a new flow every {gap * 1000:g} ms")
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
    return {
        "spacing_s": spacing,
        "parts_ms": parts,
        "ratio_last_flow_to_detection": {
            p: parts["last_flow"][p] / base[p] for p in ("p50", "p99")
        },
    }


def report_frozen(m: dict[str, Any], how: str, keepalive: int, gap: float) -> dict[str, Any]:
    """The table against the target, 1.5 x keepalive, and against the broker's own timer."""
    target = 1.5 * keepalive * 1000
    parts = {k: summary([r[k] for r in m["runs"]]) for k in FROZEN_PARTS}
    base = parts["heard"]
    print(
        f"Silent host loss ({how}): web-3 frozen {len(m['runs'])} times; keepalive {keepalive} s,"
        f" target {target / 1000:g} s; a new flow every {gap * 1000:g} ms"
    )
    print(
        table(
            ("part (ms)", "p50", "p99", "max", "max / target", "x heard p50"),
            [
                (k, v["p50"], v["p99"], v["max"], v["max"] / target, v["p50"] / base["p50"])
                for k, v in parts.items()
            ],
        )
    )
    worst = max(parts["kernel_total"]["max"], parts["last_flow"]["max"])
    met = worst <= target
    print(
        "new flows to the frozen instance per run:",
        [r["flows_to_frozen"] for r in m["runs"]],
        "(timed out / refused / answered late:",
        [
            (r["to_frozen_timed_out"], r["to_frozen_refused"], r["to_frozen_answered_late"])
            for r in m["runs"]
        ],
        ")",
        f"; worst freeze -> no new flow: {worst:.0f} ms, target {target:.0f} ms:",
        "met" if met else "missed",
    )
    return {
        "freeze": how,
        "target_ms": target,
        "met": met,
        "parts_ms": parts,
        "ratio_to_target": {p: parts["kernel_total"][p] / target for p in ("p50", "p99", "max")},
    }


if __name__ == "__main__":
    main()
