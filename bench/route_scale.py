"""Route scale: an ingress (cand + gobgpd) learns N D-SIDs x M instances.

    .venv/bin/python -m bench.route_scale [--sizes 100,1000] [--instances 4]  (root)

The egress is a cand speaker fed by a generator (bench.route_feed), GoBGP and ExaBGP in turn,
each in its own pair of network namespaces. Measured: time from the first announcement until
the ingress rib holds every path, the feed time alone (the speaker's own rate: the baseline the
ingress is compared with), and the ingress daemon's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cand_testbed.routers import cand_toml, start_cand, wait_api

from bench.common import save, table
from cand.api import request
from cand.lab.netns import Topology, netns_available


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(speaker: str, n: int, m: int) -> dict[str, Any]:
    topo = Topology()
    try:
        with tempfile.TemporaryDirectory(prefix="cand-scale-") as d:
            tmp = Path(d)
            e, i = topo.ns("egress"), topo.ns("ingress")
            topo.link(e, "fc00:a::3/64", i, "fc00:a::1/64")
            iconf = cand_toml(tmp, "i", "fc00:a::1", ["fc00:a::3"], ["ingress"], extra="")
            text = iconf.read_text().replace('[log]\nlevel = "debug"', '[log]\nlevel = "warning"')
            text = text.replace("[[services]]", "[decision]\nsteer_unknown = true\n\n[[services]]")
            iconf.write_text(text)
            isock = start_cand(topo, i, iconf, tmp, "i")
            ingress_pid = topo.procs[-1].pid
            econf = cand_toml(tmp, "e", "fc00:a::3", ["fc00:a::1"], ["egress"], speaker=speaker)
            asyncio.run(wait_api(isock))
            time.sleep(1.0)
            base_rss = rss_mb(ingress_pid)
            start = time.monotonic()
            feeder = topo.spawn(
                e, sys.executable, "-m", "bench.route_feed", str(econf), str(n), str(m),
                stdout=__import__("subprocess").PIPE, stderr=None,
            )  # fmt: skip
            want = n * m

            async def converge() -> tuple[float, float]:
                deadline = time.monotonic() + 600
                up = None
                while time.monotonic() < deadline:
                    st = await request(isock, "status")
                    if up is None and st["speaker"]["peers_established"]:
                        up = time.monotonic()
                    if st["remote_paths"] >= want and st["services"] >= n:
                        done = time.monotonic()
                        return done - start, done - (up or start)
                    await asyncio.sleep(0.05)
                raise TimeoutError(f"{speaker} {n}x{m}: not converged")

            took, after_up = asyncio.run(converge())
            assert feeder.stdout is not None
            fed: list[str] = []
            for _ in range(1000):  # gobgpd's own log lines share the feeder's stdout
                line = feeder.stdout.readline().decode()
                if not line or line.startswith("fed "):
                    fed = line.split()
                    break
            return {
                "speaker": speaker,
                "services": n,
                "instances": m,
                "paths": want,
                "converged_s": took,
                "converged_after_session_up_s": after_up,
                "feed_s": float(fed[2]) if len(fed) == 3 else float("nan"),
                "paths_per_s": want / after_up,
                "ingress_rss_mb": rss_mb(ingress_pid),
                "ingress_rss_start_mb": base_rss,
            }
    finally:
        topo.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--instances", type=int, default=4)
    a = ap.parse_args()
    why = netns_available()
    if why:
        sys.exit(f"route_scale: {why}")
    rows = [
        one(sp, n, a.instances) for n in map(int, a.sizes.split(",")) for sp in ("gobgp", "exabgp")
    ]
    print(f"Route scale: ingress cand+gobgpd learns N D-SIDs x {a.instances} instances")
    print(
        table(
            (
                "egress speaker",
                "paths",
                "feed s",
                "from start s",
                "after session up s",
                "paths/s",
                "ingress RSS MB",
            ),
            [
                (
                    r["speaker"],
                    r["paths"],
                    r["feed_s"],
                    r["converged_s"],
                    r["converged_after_session_up_s"],
                    r["paths_per_s"],
                    r["ingress_rss_mb"],
                )
                for r in rows
            ],
        )
    )
    path = save(
        "route_scale",
        {"command": "python -m bench.route_scale " + " ".join(sys.argv[1:]), "rows": rows},
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
