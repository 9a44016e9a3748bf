"""Data-plane cost: what cand's steered SRv6 path costs a client, against plain IPv6.

    .venv/bin/python -m bench.dataplane_cost [--connects 3000] [--seconds 5] [--reps 3]  (root)

In the Figure-2 lab (real cand, gobgpd, FRR, kernel), web-2 is set draining so that every new
flow to the web D-SID is steered by dr1 to web-3 (nftables pick, SRv6 H.Encaps by eBPF, the
egress's decapsulation and delivery). The baseline, in the same run and the same namespaces:
the client connecting to web-3's own D-BID, routed natively over the same hops (c1, dr1, rr,
dr3, web-3). Measured: TCP connect() time to a bare listener (the two targets alternate, one
connect at a time) and iperf3 bulk throughput (one stream, the targets alternate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from cand_testbed.fig2 import INSTANCES, WEB, Fig2

from bench.common import need_netns, save, summary, table

SINK_PORT = 8080
D_BID = INSTANCES["web-3"][1]


async def only_web3(f: Fig2, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = (await f.weights("dr1")).get(WEB, {})
        if w.get(D_BID, 0) > 0 and all(v == 0 for b, v in w.items() if b != D_BID):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("web-2 still takes new flows at dr1")


def iperf(f: Fig2, target: str, seconds: float) -> float:
    """Bits per second received by the server, one TCP stream from c1."""
    out = f.sh("c1", "iperf3", "-c", target, "-t", str(seconds), "-J", "--connect-timeout", "3000")
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def measure(connects: int, seconds: float, reps: int) -> dict[str, Any]:
    f = Fig2()
    f.up()
    try:
        ready = asyncio.run(f.wait_ready())
        f.route_natively()
        if f.control("web-2", "draining") != "ok":
            raise RuntimeError("web-2 did not take `draining`")
        asyncio.run(only_web3(f))
        sink = f.probe("web-3", "sink", "--port", str(SINK_PORT))
        if sink.stdout is None or sink.stdout.readline().strip() != "listening":
            raise RuntimeError("the sink on web-3 did not start")
        f.spawn("web-3", "iperf3", "-s")
        time.sleep(0.3)
        targets = {"steered": WEB, "plain": D_BID}

        def connect(n: int) -> dict[str, dict[str, Any]]:
            p = f.probe("c1", "connect", WEB, D_BID, "-n", str(n), "--port", str(SINK_PORT))
            out, _ = p.communicate(timeout=60 + n * 0.05)
            rows = {r["target"]: r for r in map(json.loads, out.splitlines())}
            return {k: rows[t] for k, t in targets.items()}

        connect(min(100, connects))  # warm-up: caches, conntrack, the listener
        got = connect(connects)
        conn = {k: summary(v["us"]) | {"failed": v["failed"]} for k, v in got.items()}
        bps: dict[str, dict[str, list[float]]] = {}
        for offload in ("gso", "no_gso"):
            if offload == "no_gso":  # the client sends wire-sized packets, no GSO batches
                f.sh("c1", "ip", "link", "set", "eth1", "gso_max_segs", "1")
            bps[offload] = {k: [] for k in targets}
            for r in range(reps):
                for k in list(targets)[r % 2 :] + list(targets)[: r % 2]:
                    bps[offload][k].append(iperf(f, targets[k], seconds))
        return {"ready_s": ready, "connect_us": conn, "bits_per_s": bps}
    finally:
        f.down()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=3000, help="connections per path")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one iperf3 run")
    ap.add_argument("--reps", type=int, default=3, help="iperf3 runs per path")
    a = ap.parse_args()
    need_netns("dataplane_cost")
    m = measure(a.connects, a.seconds, a.reps)
    c, bps = m["connect_us"], m["bits_per_s"]
    gbit = {o: {k: sum(v) / len(v) / 1e9 for k, v in b.items()} for o, b in bps.items()}
    added_p50 = c["steered"]["p50"] - c["plain"]["p50"]
    rows = [
        ("connect p50 (us)", c["plain"]["p50"], c["steered"]["p50"]),
        ("connect p99 (us)", c["plain"]["p99"], c["steered"]["p99"]),
        ("connect mean (us)", c["plain"]["mean"], c["steered"]["mean"]),
        ("throughput (Gbit/s)", gbit["gso"]["plain"], gbit["gso"]["steered"]),
        ("throughput, client GSO off", gbit["no_gso"]["plain"], gbit["no_gso"]["steered"]),
    ]
    print(f"Data-plane cost: c1 -> web-3, {a.connects} connects and {a.reps} x {a.seconds:g} s")
    print(table(("figure", "plain IPv6", "cand SRv6", "ratio"), [(*r, r[2] / r[1]) for r in rows]))
    print(
        f"added at p50: {added_p50:.1f} us = {added_p50 / 10:.2f} % of a 1 ms metro RTT; "
        f"failed connects: plain {c['plain']['failed']}, steered {c['steered']['failed']}"
    )
    path = save(
        "dataplane_cost",
        {
            "command": "python -m bench.dataplane_cost " + " ".join(sys.argv[1:]),
            "connects": a.connects,
            "iperf_seconds": a.seconds,
            "reps": a.reps,
            **m,
            "throughput_gbit_s": gbit,
            "ratios": {
                "connect_p50": c["steered"]["p50"] / c["plain"]["p50"],
                "connect_p99": c["steered"]["p99"] / c["plain"]["p99"],
                "throughput": gbit["gso"]["steered"] / gbit["gso"]["plain"],
                "throughput_no_gso": gbit["no_gso"]["steered"] / gbit["no_gso"]["plain"],
            },
            "added_p50_us": added_p50,
            "added_p50_share_of_1ms_rtt": added_p50 / 1000,
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
