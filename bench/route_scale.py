"""Route scale: an ingress (cand + gobgpd + the Linux data plane) learns N D-SIDs x M instances.

    .venv/bin/python -m bench.route_scale [--sizes 100,1000,10000] [--instances 12]  (root)

The egress is a cand speaker fed by a generator (bench.route_feed), GoBGP or ExaBGP, in its own
namespace. The generator hands every path to the speaker first (`fed`); only then does the
receiver start, so what is timed from "session up" is the receiving side (plus the egress's own
UPDATE generation, which both receivers share). For each size, in the same run:

- baseline: a plain gobgpd (no cand) at the ingress address; paths counted in its adj-RIB-in
  (`GetTable`, ADJ_IN) until all are there: gobgpd's own receive rate;
- cand: the ingress daemon, until its rib holds every path and every D-SID has an entry (rib),
  and until its Linux data plane reports one installed tunnel slot per path (kernel: a tunnel
  map entry; before the tunnel map, a route and an ip rule each); the kernel state is then
  read back once (`ip -6 rule`, the tunnel table, the tunnel map's entries through bpf(2),
  `nft list chains`) to confirm it.

Also: the engine's recomputes per second while learning, the daemon's RSS (now and peak).
With `--profile`, py-spy records the ingress daemon while it learns (largest size only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cand_testbed.routers import cand_toml, start_cand, wait_api

from bench.common import RESULTS, need_netns, py_spy, save, table
from cand.api import ApiError, request
from cand.lab.netns import Topology

EGRESS, INGRESS = "fc00:a::3", "fc00:a::1"
TIMEOUT = 900.0


class KernelMiss(Exception):
    """The data plane gave up on what it was asked to install."""


def proc_kb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = TIMEOUT, every: float = 0.05
) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(every)
    raise TimeoutError(what)


def lab() -> tuple[Topology, str, str]:
    topo = Topology()
    e, i = topo.ns("egress"), topo.ns("ingress")
    topo.link(e, f"{EGRESS}/64", i, f"{INGRESS}/64")
    # the instances' SIDs (fc00:0:3::/48, bench.route_feed) are behind the egress
    topo.exec(i, "ip", "-6", "route", "add", "fc00::/16", "via", EGRESS)
    return topo, e, i


def feed(topo: Topology, e: str, tmp: Path, speaker: str, n: int, m: int) -> float:
    """Start the egress and hand it every path; the speaker's own time to take them."""
    econf = cand_toml(tmp, "e", EGRESS, [INGRESS], ["egress"], speaker=speaker)
    log = tmp / "feed.log"
    topo.spawn(e, sys.executable, "-m", "bench.route_feed", str(econf), str(n), str(m), log=log)
    fed: list[str] = []

    def done() -> bool:
        nonlocal fed
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("fed "):
                fed = line.split()
                return True
        return False

    wait_for(f"{speaker}: feeder", done, timeout=TIMEOUT, every=0.1)
    return float(fed[2])


def baseline(topo: Topology, i: str, tmp: Path, want: int) -> dict[str, float]:
    """A plain gobgpd at the ingress address: session up -> all paths in its adj-RIB-in."""
    import grpc
    from cand_gobgp.api import pb, pb_grpc

    sock = tmp / "plain-gobgpd.sock"
    topo.spawn(
        i,
        "gobgpd",
        "--api-hosts",
        f"unix://{sock}",
        "-l",
        "warn",
        "--pprof-disable",
        log=tmp / "plain-gobgpd.log",
    )
    ch = grpc.insecure_channel(f"unix://{sock}")
    stub = pb_grpc.GobgpApiStub(ch)

    def alive() -> bool:
        try:
            stub.GetBgp(pb.GetBgpRequest(), timeout=0.5)
            return True
        except grpc.RpcError:
            return False

    wait_for("plain gobgpd", alive, timeout=10)
    g = pb.Global(asn=65000, router_id="10.255.0.99", listen_port=179)
    stub.StartBgp(pb.StartBgpRequest(**{"global": g}))
    fam = pb.Family(afi=pb.Family.AFI_IP6, safi=pb.Family.SAFI_UNICAST)
    start = time.monotonic()
    stub.AddPeer(
        pb.AddPeerRequest(
            peer=pb.Peer(
                conf=pb.PeerConf(neighbor_address=EGRESS, peer_asn=65000),
                timers=pb.Timers(config=pb.TimersConfig(hold_time=9, keepalive_interval=3)),
                afi_safis=[
                    pb.AfiSafi(
                        config=pb.AfiSafiConfig(family=fam, enabled=True),
                        add_paths=pb.AddPaths(config=pb.AddPathsConfig(receive=True)),
                    )
                ],
            )
        )
    )

    def up() -> bool:
        for r in stub.ListPeer(pb.ListPeerRequest(address=EGRESS)):
            return bool(r.peer.state.session_state == pb.PeerState.ESTABLISHED)
        return False

    def count() -> int:
        req = pb.GetTableRequest(table_type=pb.ADJ_IN, family=fam, name=EGRESS)
        return int(stub.GetTable(req).num_path)

    t_up = wait_for("plain gobgpd: session", up, every=0.01)
    t_done = wait_for("plain gobgpd: paths", lambda: count() >= want, every=0.02)
    # how many UPDATE messages carried them (an egress packs NLRI only when attributes agree)
    updates = next(iter(stub.ListPeer(pb.ListPeerRequest(address=EGRESS)))).peer.state
    ch.close()
    return {
        "session_s": t_up - start,
        "converged_after_up_s": t_done - t_up,
        "updates_received": int(updates.messages.received.update),
    }


def ingress_conf(tmp: Path, want: int) -> Path:
    extra = (
        f"\n[limits]\nmax_instances_per_egress = {max(4096, want * 2)}\n"
        '\n[dataplane]\nkind = "linux"\n\n[dataplane.options]\nreconcile_interval = 600\n'
    )
    conf = cand_toml(tmp, "i", INGRESS, [EGRESS], ["ingress"], extra=extra)
    text = conf.read_text().replace('[log]\nlevel = "debug"', '[log]\nlevel = "warning"')
    text = text.replace("[[services]]", "[decision]\nsteer_unknown = true\n\n[[services]]")
    conf.write_text(text)
    return conf


# In the ingress namespace: the tunnel table's routes, and the entries of the map their program
# uses, read from the kernel (not from the daemon's status).
MAP_ENTRIES = """
import json, subprocess
from cand.adapters import srv6_bpf
from cand.adapters.linux_slots import map_prog_of
out = subprocess.run(["ip", "-j", "-6", "route", "show", "table", str(0xCA000000)],
                     capture_output=True, text=True).stdout
rows = json.loads(out) if out.strip() else []
entries = 0
for name in {map_prog_of(r.get("xmit", "")) for r in rows} - {None}:
    found = srv6_bpf.TunnelMap.find(name)
    if found is not None:
        entries = max(entries, len(srv6_bpf.map_dump(found.map_fd)))
        found.close()
print(json.dumps({"tunnel_table_routes": len(rows), "map_entries": entries}))
"""


def kernel_state(topo: Topology, i: str) -> dict[str, int]:
    rules = topo.exec(i, "ip", "-6", "rule", "show", "proto", "200").stdout.count("lookup")
    chains = topo.exec(i, "nft", "list", "table", "ip6", "cand", check=False).stdout
    got = topo.exec(i, sys.executable, "-c", MAP_ENTRIES).stdout
    tunnels: dict[str, int] = json.loads(got.strip().splitlines()[-1])
    return {"rules": rules, "service_chains": chains.count("chain svc_"), **tunnels}


def with_cand(
    topo: Topology, i: str, tmp: Path, n: int, m: int, profile: Path | None, kernel_timeout: float
) -> dict[str, Any]:
    want = n * m
    start = time.monotonic()
    isock = start_cand(topo, i, ingress_conf(tmp, want), tmp, "i")
    pid = topo.procs[-1].pid
    spy = None
    if profile is not None:
        spy = py_spy(pid, profile, 50)
    try:
        asyncio.run(wait_api(isock, timeout=30))
        st: dict[str, Any] = {}
        peak = 0.0

        def status() -> dict[str, Any]:
            nonlocal st, peak
            st = asyncio.run(request(isock, "status", timeout=30))
            peak = max(peak, proc_kb(pid, "VmRSS"))
            return st

        t_up = wait_for("cand: session", lambda: status()["speaker"]["peers_established"] > 0)
        before = st["engine"]["recomputes"]
        t_rib = wait_for(
            "cand: rib", lambda: status()["remote_paths"] >= want and st["services"] >= n
        )
        recomputes = st["engine"]["recomputes"] - before

        def kernel() -> bool:
            try:
                dp = status()["dataplane"]
            except ApiError:  # the loop is busy installing: ask again
                return False
            # one map entry per remote instance, one route and one nftables chain per D-SID
            done = (dp.get(k, 0) for k in ("tunnels", "tunnel_routes", "chains"))
            if all(got >= need for got, need in zip(done, (want, n, n), strict=True)):
                return True
            lane = st["lanes"]["dataplane"]
            if lane["failed"] and not lane["backlog"]:
                raise KernelMiss(f"data plane failed {lane['failed']} batches ({dp})")
            return False

        try:
            t_kernel = wait_for("cand: kernel", kernel, timeout=kernel_timeout, every=0.1)
            missed = ""
        except (KernelMiss, TimeoutError) as e:
            t_kernel, missed = float("nan"), f"{e}: {st['dataplane']}"
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes the flame graph and ends
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)
    dp = st["dataplane"]
    return {
        "session_s": t_up - start,
        "rib_after_up_s": t_rib - t_up,
        "kernel_after_up_s": t_kernel - t_up,
        "recomputes": recomputes,
        "recomputes_per_s": recomputes / max(t_rib - t_up, 1e-9),
        "batches": st["daemon"].get("batches"),
        "paths_read": st["speaker"].get("paths_read"),  # ListPath's paths, re-reads included
        "rss_mb": proc_kb(pid, "VmRSS"),
        "rss_peak_mb": max(peak, proc_kb(pid, "VmHWM")),
        "dataplane": {
            k: dp[k] for k in ("slots", "tunnels", "tunnel_routes", "chains", "installed", "errors")
        },
        "kernel": kernel_state(topo, i),
        "kernel_missed": missed,
    }


def one(
    speaker: str, n: int, m: int, profile: Path | None, kernel_timeout: float = TIMEOUT
) -> dict[str, Any]:
    want = n * m
    row: dict[str, Any] = {"speaker": speaker, "services": n, "instances": m, "paths": want}
    for phase in ("baseline", "cand"):
        topo, e, i = lab()
        try:
            with tempfile.TemporaryDirectory(prefix="cand-scale-") as d:
                tmp = Path(d)
                row[f"{phase}_feed_s"] = feed(topo, e, tmp, speaker, n, m)
                if phase == "baseline":
                    row["baseline"] = baseline(topo, i, tmp, want)
                else:
                    row["cand"] = with_cand(topo, i, tmp, n, m, profile, kernel_timeout)
        finally:
            topo.close()
    b, c = row["baseline"]["converged_after_up_s"], row["cand"]["rib_after_up_s"]
    row["baseline_paths_per_s"] = want / b
    row["cand_paths_per_s"] = want / c
    row["ratio"] = b / c  # cand's receive rate as a share of gobgpd's own
    return row


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, mem) = plt.subplots(1, 2, figsize=(10, 4))
    for speaker in sorted({r["speaker"] for r in rows}):
        rs = sorted((r for r in rows if r["speaker"] == speaker), key=lambda r: r["services"])
        xs = [r["services"] for r in rs]
        ax.plot(xs, [r["cand"]["rib_after_up_s"] for r in rs], "o-", label=f"{speaker}: rib")
        ax.plot(xs, [r["cand"]["kernel_after_up_s"] for r in rs], "s--", label=f"{speaker}: kernel")
        ax.plot(
            xs,
            [r["baseline"]["converged_after_up_s"] for r in rs],
            "^:",
            label=f"{speaker}: plain gobgpd",
        )
        mem.plot(xs, [r["cand"]["rss_peak_mb"] for r in rs], "o-", label=f"{speaker}: peak RSS")
    m = rows[0]["instances"]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=f"D-SIDs (x {m} instances)",
        ylabel="seconds after session up",
        title="convergence at the ingress",
    )
    mem.set(
        xscale="log", xlabel=f"D-SIDs (x {m} instances)", ylabel="MB", title="ingress daemon RSS"
    )
    for a in (ax, mem):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,3000,10000")
    ap.add_argument("--instances", type=int, default=12)
    ap.add_argument("--speakers", default="gobgp,exabgp")
    ap.add_argument("--exabgp-max", type=int, default=1000, help="largest N fed through ExaBGP")
    ap.add_argument("--profile", action="store_true", help="py-spy the ingress, largest N, GoBGP")
    ap.add_argument("--out", default="route_scale", help="results name in bench/results/")
    ap.add_argument(
        "--kernel-timeout", type=float, default=TIMEOUT, help="give up on the kernel after this"
    )
    a = ap.parse_args()
    need_netns("route_scale")
    sizes = sorted(map(int, a.sizes.split(",")))
    rows = []
    for n in sizes:
        for sp in a.speakers.split(","):
            if sp == "exabgp" and n > a.exabgp_max:
                continue
            last = a.profile and n == sizes[-1] and sp == "gobgp"
            prof = RESULTS / f"{a.out}_ingress.svg" if last else None
            rows.append(one(sp, n, a.instances, prof, a.kernel_timeout))
            r = rows[-1]
            save(a.out, {"command": "(partial)", "rows": rows})  # a later crash keeps these
            print(
                f"{sp} {r['paths']}: cand {r['cand']['rib_after_up_s']:.2f}s, "
                f"plain gobgpd {r['baseline']['converged_after_up_s']:.2f}s",
                flush=True,
            )
    print(f"Route scale: an ingress learns N D-SIDs x {a.instances} instances")
    print(
        table(
            (
                "egress",
                "paths",
                "feed s",
                "plain gobgpd s",
                "cand rib s",
                "cand kernel s",
                "ratio",
                "recomputes/s",
                "RSS peak MB",
            ),
            [
                (
                    r["speaker"],
                    r["paths"],
                    r["cand_feed_s"],
                    r["baseline"]["converged_after_up_s"],
                    r["cand"]["rib_after_up_s"],
                    r["cand"]["kernel_after_up_s"],
                    r["ratio"],
                    r["cand"]["recomputes_per_s"],
                    r["cand"]["rss_peak_mb"],
                )
                for r in rows
            ],
        )
    )
    path = save(
        a.out,
        {"command": "python -m bench.route_scale " + " ".join(sys.argv[1:]), "rows": rows},
    )
    png = path.with_suffix(".png")
    plot(rows, png)
    print(f"written: {path}, {png}")


if __name__ == "__main__":
    main()
