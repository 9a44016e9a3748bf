"""Reconciliation cost of the Linux data plane: the whole nftables rewrite against the diff.

    sudo .venv/bin/python -m bench.nft_reconcile [--sizes 1000,10000] [--instances 12]

In one namespace (routed to a peer, so every tunnel has a route), the adapter is handed N
D-SIDs of k remote instances each and installs them; then, in the same process and on the
same table, it reconciles with `nft_diff = false` (the whole table rewritten, as before),
with the diff and nothing changed, and with the diff after one service chain was rewritten by
hand (`nft` in the namespace). Measured per reconciliation: its wall time, the time spent in
`nft` (the read-back `nft list table`, and the write transaction), and the chains written.
The baseline is the whole rewrite in the same run; the ratio is whole / diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench.common import need_netns, save, table
from cand.lab.netns import Topology

INNER = """
import asyncio, dataclasses, json, subprocess, sys, time
from cand_testbed.dataplane_driver import effects
from cand.adapters import linux_kernel as k
from cand.adapters.linux import LinuxDataplane, LinuxOptions
from cand.adapters.linux_nft import chain_name
from cand.model import RouterId, ServiceId

spec = json.loads(sys.argv[1])
services = []
for i in range(spec["n"]):
    choices = [[f"2001:db8:ff::{j + 1:x}", "fc00:1e::3", f"fc00:0:3:{i:x}:{j:x}::1", 10 + j,
                False, "up"] for j in range(spec["k"])]
    services.append({"sid": f"2001:db8:100::{i + 1:x}", "choices": choices})
todo, modes = effects({"services": services})
dp = LinuxDataplane(LinuxOptions(adopt_hold=0), RouterId.parse("fc00:1e::1"), modes)
spent = {"read": 0.0, "write": 0.0}
real_run = k.run

async def timed_run(*cmd, **kw):
    t0 = time.monotonic()
    try:
        return await real_run(*cmd, **kw)
    finally:
        if cmd[0] == "nft":
            spent["write" if "-f" in cmd else "read"] += time.monotonic() - t0

k.run = timed_run

async def one(diff: bool) -> dict:
    dp.opts = dataclasses.replace(dp.opts, nft_diff=diff)
    before = dict(dp.counters)
    spent.update(read=0.0, write=0.0)
    t0 = time.monotonic()
    await dp.reconcile()
    wall = time.monotonic() - t0
    c = {key: dp.counters[key] - before[key] for key in before}
    assert c["errors"] == 0 and c["nft_diff_fallbacks"] == 0, c
    return {"wall_s": wall, "nft_read_s": spent["read"], "nft_write_s": spent["write"],
            "chains_written": c["chains_written"], "elements_written": c["elements_written"]}

async def main() -> None:
    t0 = time.monotonic()
    step = spec["batch"]
    for i in range(0, len(todo), step):  # as learning hands them over: a batch at a time
        await dp.apply(todo[i : i + step])
    install = time.monotonic() - t0
    out = {"install_s": install, "chains": len(dp.chains)}
    if spec["full"]:
        out["full"] = await one(diff=False)
    out["diff_unchanged"] = await one(diff=True)
    victim = chain_name(ServiceId.parse(services[len(services) // 2]["sid"]))
    subprocess.run(["nft", "flush", "chain", "ip6", "cand", victim], check=True)
    subprocess.run(["nft", "add", "rule", "ip6", "cand", victim, "drop"], check=True)
    out["diff_one_chain"] = await one(diff=True)
    out["diff_after"] = await one(diff=True)
    print(json.dumps(out))

asyncio.run(main())
"""


def measure(n: int, k: int, batch: int, full: bool) -> dict[str, Any]:
    t = Topology()
    try:
        ns, peer = t.ns("nftrec"), t.ns("nftpeer")
        t.link(ns, "fc00:1e::1/64", peer, "fc00:1e::3/64")
        t.exec(ns, "ip", "-6", "route", "add", "fc00:0:3::/48", "via", "fc00:1e::3")
        spec = json.dumps({"n": n, "k": k, "batch": batch, "full": full})
        out = t.exec(ns, sys.executable, "-c", INNER, spec).stdout
        got: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return got
    finally:
        t.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--instances", type=int, default=12)
    ap.add_argument("--batch", type=int, default=1000, help="D-SIDs per install batch")
    ap.add_argument(
        "--full-max", type=int, default=4000,
        help="the whole rewrite only up to this size (4,000 x 12 takes about a minute of nft, "
        "and it grows faster than the square)",
    )  # fmt: skip
    ap.add_argument("--out", default="nft_reconcile")
    a = ap.parse_args()
    need_netns("nft_reconcile")
    runs: dict[str, Any] = {}
    rows = []
    for n in (int(x) for x in a.sizes.split(",")):
        got = measure(n, a.instances, a.batch, n <= a.full_max)
        runs[str(n)] = got
        full = got.get("full")
        for case in ("full", "diff_unchanged", "diff_one_chain", "diff_after"):
            if (r := got.get(case)) is None:
                rows.append([f"{n:,} x {a.instances}", case, "not run", "", "", "", "", ""])
                continue
            nft_s = r["nft_read_s"] + r["nft_write_s"]
            ratios = ["", ""]
            if full is not None:
                ratios = [
                    f"{full['wall_s'] / r['wall_s']:.1f}",
                    f"{(full['nft_read_s'] + full['nft_write_s']) / nft_s:.1f}",
                ]
            rows.append([
                f"{n:,} x {a.instances}", case, f"{r['wall_s']:.2f} s",
                f"{r['nft_read_s']:.2f} s", f"{r['nft_write_s']:.3f} s", r["chains_written"],
                *ratios,
            ])  # fmt: skip
        print(f"{n:,} D-SIDs: install {got['install_s']:.1f} s", flush=True)
    print(table(["D-SIDs", "reconcile", "wall", "nft read", "nft write", "chains written",
                 "wall ratio (full/this)", "nft ratio (full/this)"], rows))  # fmt: skip
    print(save(a.out, {"instances": a.instances, "runs": runs}))


if __name__ == "__main__":
    main()
