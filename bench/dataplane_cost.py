"""Data-plane cost: what cand's steered SRv6 path costs a client, against plain IPv6.

    .venv/bin/python -m bench.dataplane_cost [--connects 3000] [--seconds 5] [--reps 3]
        [--bmv2-connects 500] [--planes linux,bmv2]  (root)

In the Figure-2 lab (real cand, gobgpd, FRR, kernel), web-2 is set draining so that every new
flow to the web D-SID is steered by dr1 to web-3 (nftables pick, SRv6 H.Encaps by eBPF, the
egress's decapsulation and delivery). The baseline, in the same run and the same namespaces:
the client connecting to web-3's own D-BID, routed natively over the same hops (c1, dr1, rr,
dr3, web-3). Measured: TCP connect() time to a bare listener (the two targets alternate, one
connect at a time) and iperf3 bulk throughput (one stream, the targets alternate).

The same clients and measurement through BMv2 (cand.p4 and the cand-p4 plugin) follow in the
same command, in the P4 tests' rig with its own plain baseline: bench.dataplane_bmv2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from cand_testbed.fig2 import INSTANCES, WEB, Fig2

from bench.common import need_netns, save, table
from bench.paths import SINK_PORT, connect_times, throughput

D_BID = INSTANCES["web-3"][1]


async def only_web3(f: Fig2, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = (await f.weights("dr1")).get(WEB, {})
        if w.get(D_BID, 0) > 0 and all(v == 0 for b, v in w.items() if b != D_BID):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("web-2 still takes new flows at dr1")


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

        def run(*cmd: str) -> str:
            return f.sh("c1", *cmd)

        connect_times(run, targets, min(100, connects))  # warm-up: caches, conntrack, listener
        conn = connect_times(run, targets, connects)
        bps = {"gso": throughput(run, targets, seconds, reps)}
        # the client sends wire-sized packets, no GSO batches
        f.sh("c1", "ip", "link", "set", "eth1", "gso_max_segs", "1")
        bps["no_gso"] = throughput(run, targets, seconds, reps)
        return {"ready_s": ready, "connect_us": conn, "bits_per_s": bps}
    finally:
        f.down()


def _mean_gbit(bps: dict[str, list[float]]) -> dict[str, float]:
    return {k: sum(v) / len(v) / 1e9 for k, v in bps.items()}


def _ratios(c: dict[str, Any], gbit: dict[str, float]) -> dict[str, float]:
    return {
        "connect_p50": c["steered"]["p50"] / c["plain"]["p50"],
        "connect_p99": c["steered"]["p99"] / c["plain"]["p99"],
        "throughput": gbit["steered"] / gbit["plain"],
    }


def _column(c: dict[str, Any] | None, gbit: dict[str, float] | None, path: str) -> list[Any]:
    """One path's figures in the table's row order ('-' for what was not measured)."""
    if c is None or gbit is None:
        return ["-"] * 4
    return [c[path]["p50"], c[path]["p99"], c[path]["mean"], gbit[path]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connects", type=int, default=3000, help="connections per path (Linux)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of one iperf3 run")
    ap.add_argument("--reps", type=int, default=3, help="iperf3 runs per path")
    ap.add_argument("--bmv2-connects", type=int, default=500, help="connections per path (BMv2)")
    ap.add_argument(
        "--planes", default="linux,bmv2", help="which to measure: linux, bmv2 or both (default)"
    )
    a = ap.parse_args()
    planes = set(a.planes.split(","))
    if not planes or planes - {"linux", "bmv2"}:
        raise SystemExit(f"dataplane_cost: --planes takes linux and/or bmv2, not {a.planes}")
    need_netns("dataplane_cost")
    if "bmv2" in planes:
        from bench import dataplane_bmv2

        why = dataplane_bmv2.missing()
        if why:
            raise SystemExit(f"dataplane_cost: {why} (p4/README.md)")
    out: dict[str, Any] = {
        "command": "python -m bench.dataplane_cost " + " ".join(sys.argv[1:]),
        "connects": a.connects,
        "iperf_seconds": a.seconds,
        "reps": a.reps,
    }
    c = gbit = bc = bgbit = None
    if "linux" in planes:
        m = measure(a.connects, a.seconds, a.reps)
        c, bps = m["connect_us"], m["bits_per_s"]
        gbit_all = {o: _mean_gbit(b) for o, b in bps.items()}
        gbit = gbit_all["gso"]
        added_p50 = c["steered"]["p50"] - c["plain"]["p50"]
        out |= {
            **m,
            "throughput_gbit_s": gbit_all,
            "ratios": _ratios(c, gbit)
            | {"throughput_no_gso": gbit_all["no_gso"]["steered"] / gbit_all["no_gso"]["plain"]},
            "added_p50_us": added_p50,
            "added_p50_share_of_1ms_rtt": added_p50 / 1000,
        }
    if "bmv2" in planes:
        from bench import dataplane_bmv2

        b = dataplane_bmv2.measure(a.bmv2_connects, a.seconds, a.reps)
        bc, bgbit = b["connect_us"], _mean_gbit(b["bits_per_s"])
        out["bmv2"] = {
            "connects": a.bmv2_connects,
            **b,
            "throughput_gbit_s": bgbit,
            "ratios": _ratios(bc, bgbit),
        }
    names = ["connect p50 (us)", "connect p99 (us)", "connect mean (us)", "throughput (Gbit/s)"]
    cols = [_column(c, gbit, "plain"), _column(c, gbit, "steered"),
            _column(bc, bgbit, "plain"), _column(bc, bgbit, "steered")]  # fmt: skip

    def ratio(x: Any, y: Any) -> Any:
        return y / x if isinstance(x, float) and isinstance(y, float) else "-"

    rows = [
        (n, p, s, ratio(p, s), bp, bs, ratio(bp, bs), ratio(s, bs))
        for n, p, s, bp, bs in zip(names, *cols, strict=True)
    ]
    if c is not None:
        g = out["throughput_gbit_s"]["no_gso"]
        rows.append(("throughput, client GSO off", g["plain"], g["steered"],
                     g["steered"] / g["plain"], "-", "-", "-", "-"))  # fmt: skip
    what = []
    if c is not None:
        what.append(f"Linux (Figure-2 lab, c1 -> web-3, {a.connects} connects)")
    if bc is not None:
        what.append(f"BMv2 (h1 -> sw -> h2, {a.bmv2_connects} connects)")
    print(f"Data-plane cost: {' and '.join(what)}; iperf3 {a.reps} x {a.seconds:g} s per path")
    heads = ("figure", "plain (Linux lab)", "Linux SRv6", "ratio",
             "plain via BMv2", "BMv2 SRv6", "ratio", "BMv2/Linux SRv6")  # fmt: skip
    print(table(heads, rows))
    if c is not None:
        added = out["added_p50_us"]
        print(
            f"Linux: added at p50 {added:.1f} us = {added / 10:.2f} % of a 1 ms metro RTT; "
            f"failed connects: plain {c['plain']['failed']}, steered {c['steered']['failed']}"
        )
    if bc is not None:
        print(
            f"BMv2: failed connects: plain {bc['plain']['failed']}, steered "
            f"{bc['steered']['failed']}; flows bound by digest {out['bmv2']['bound_flows']} "
            f"({out['bmv2']['digests']} digests). "
            "BMv2 is a software model: its absolute figures say nothing about Tofino."
        )
    name = "dataplane_cost" if planes == {"linux", "bmv2"} else f"dataplane_cost_{a.planes}"
    print(f"written: {save(name, out)}")


if __name__ == "__main__":
    main()
