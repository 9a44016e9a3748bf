"""Reaction: a D-MA changes an instance's load -> the ingress kernel's weights change.

    sudo .venv/bin/python -m bench.reaction [--changes 200] [--gap 0.3] [--reflector frr|gobgp]
                                            [--direct]

`--reflector` picks what reflects the routes on rr (FRR's bgpd, the default, or a plain
gobgpd with the same sessions); `--direct` runs no reflector: dr1..dr3 peer with each other
(a full iBGP mesh over rr's forwarding). Results go to `reaction.json` (FRR),
`reaction_gobgp.json` or `reaction_direct.json`.

In the Figure-2 lab (real cand, gobgpd, FRR reflector, mosquitto, kernel), web-3's own D-MA
reports cpu 0.1 and 0.6 in turn (through the instance's control socket), so dr1's weights for
the web D-SID move between 500/500 and about 690/310 on every change: far past the egress
damper's threshold (5 per-mille of L2) and the ingress hysteresis (5 % of the weight scale).
Changes are `--gap` seconds apart (more than the damper's 0.2 s `min_interval`, which would
otherwise hold the update back). Each change is followed through:

    publish (the payload's ts) -> dr3's rib has it (rib `updated_at`)          MQTT
    -> dr3's speaker lane hands it to gobgpd (lane `last_started`)             egress damper+lane
    -> dr1's rib has it (rib `learned_at`)                                     BGP
    -> dr1's kernel has the new pick rule (`nft monitor` in dr1)               data plane

Baselines in the same run: a bare MQTT subscriber on the same broker, receiving the same
messages (publish -> received); raw path propagation between the same two gobgpd (AddPath at
dr3's -> WatchEvent(ADJIN) at dr1's, through the same reflector); one `nft -f` transaction in
dr1 from a fresh process, as cand makes one.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import subprocess
import sys
import time
from typing import Any

from cand_testbed.fig2 import INSTANCES, Fig2

from bench.common import need_netns, save, summary, table
from bench.lablegs import Kernel, Watch, lane_started

WEB3 = INSTANCES["web-3"][1]
DR3 = "fc00:3::1"
LEGS = ("mqtt", "egress", "bgp", "dataplane", "total")


def rib_entry(rib: dict[str, Any], part: str, seq: int) -> dict[str, Any] | None:
    for e in rib[part]:
        if e["binding"] == WEB3 and e["egress"] == DR3 and e["seq"] == seq:
            return dict(e)
    return None


def change(lab: Fig2, watch: Watch, kernel: Kernel, cpu: float, prev: dict[int, int]) -> Any:
    # a report that came in unasked (the D-MA's heartbeat) would otherwise be taken for this
    # change's, and every later change for the one before it: all of them superseded
    watch.lines.drain()
    if lab.control("web-3", f"cpu {cpu}") != "ok":
        raise RuntimeError("web-3 did not take the load change")
    msg = watch.next(5.0)
    at, weights = kernel.until(lambda w: w != prev and any(w.values()), 5.0)
    time.sleep(0.01)  # let dr1's lane record its end
    dr3_rib, dr3 = asyncio.run(lab.api("dr3", "rib")), asyncio.run(lab.api("dr3", "status"))
    dr1_rib = asyncio.run(lab.api("dr1", "rib"))
    local, remote = (
        rib_entry(dr3_rib, "local", msg["seq"]),
        rib_entry(dr1_rib, "remote", msg["seq"]),
    )
    sent = lane_started(dr3, "speaker")
    if local is None or remote is None or sent is None:
        return weights, None  # superseded (a heartbeat came in between): not counted
    row = {
        "seq": msg["seq"],
        "cpu": cpu,
        "bare_mqtt": msg["recv"] - msg["pub"],
        "mqtt": local["updated_at"] - msg["pub"],
        "egress": sent - local["updated_at"],
        "bgp": remote["learned_at"] - sent,
        "dataplane": at - remote["learned_at"],
        "total": at - msg["pub"],
    }
    return weights, {
        k: v * 1000 if isinstance(v, float) and k != "cpu" else v for k, v in row.items()
    }


async def bgp_baseline(run: str, n: int) -> list[float]:
    """AddPath at dr3's gobgpd -> the path in dr1's gobgpd adj-RIB-in (its watch stream)."""
    import grpc
    from cand_gobgp.api import pb, pb_grpc
    from cand_gobgp.speaker import FAMILIES, _prefix_service

    from cand.model import BindingId, InstanceKey, InstanceRoute, Metrics, RouterId, ServiceId
    from cand.wire import bgp

    svc = ServiceId.parse("2001:db8:5::ff")  # not a configured service: dr1 steers nothing
    key = InstanceKey(svc, BindingId.parse("2001:db8:3a::99"))
    out: list[float] = []
    async with (
        grpc.aio.insecure_channel(f"unix://{run}/dr3-gobgpd.sock") as c3,
        grpc.aio.insecure_channel(f"unix://{run}/dr1-gobgpd.sock") as c1,
    ):
        s3, s1 = pb_grpc.GobgpApiStub(c3), pb_grpc.GobgpApiStub(c1)
        F = pb.WatchEventRequest.Table.Filter
        req = pb.WatchEventRequest(table=pb.WatchEventRequest.Table(filters=[F(type=F.ADJIN)]))
        seen: asyncio.Queue[float] = asyncio.Queue()

        async def watch() -> None:
            async for ev in s1.WatchEvent(req):
                if ev.HasField("table"):
                    for p in ev.table.paths:
                        if _prefix_service(p) == svc and not p.is_withdraw:
                            seen.put_nowait(time.monotonic())

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.5)
        afi, safi = FAMILIES[6]
        path = None
        for i in range(n):
            route = InstanceRoute(
                key,
                RouterId.parse(DR3),
                ipaddress.IPv6Address("fc00:0:3::99"),
                Metrics(cpu=0.1 if i % 2 else 0.6, capacity=100),
                seq=i + 1,
            )
            attrs = [bgp.mp_reach(route, addpath=False), *bgp.encode_attributes(route, 65000, 48)]
            path = pb.Path(
                family=pb.Family(afi=afi, safi=safi),
                nlri_binary=bgp.host_prefix(svc),
                pattrs_binary=[a.to_bytes() for a in attrs],
                identifier=bgp.path_id(key),
            )
            t0 = time.monotonic()
            await s3.AddPath(pb.AddPathRequest(table_type=pb.GLOBAL, path=path))
            out.append((await asyncio.wait_for(seen.get(), 5.0) - t0) * 1000)
            await asyncio.sleep(random.uniform(0.05, 0.1))
        if path is not None:
            await s3.DeletePath(
                pb.DeletePathRequest(table_type=pb.GLOBAL, family=path.family, path=path)
            )
        task.cancel()
    return out


def nft_baseline(lab: Fig2, n: int) -> list[float]:
    """One `nft -f` transaction (flush and write one pick rule) in dr1, from a new process."""
    out = []
    rule = "meta mark set numgen random mod 1000 map { 0-499 : 0x1, 500-999 : 0x2 }"
    for _ in range(n):
        script = (
            f"add table ip6 benchscratch\nadd chain ip6 benchscratch c\n"
            f"flush chain ip6 benchscratch c\nadd rule ip6 benchscratch c {rule}\n"
        )
        t0 = time.monotonic()
        subprocess.run(
            ["ip", "netns", "exec", lab.ns("dr1"), "nft", "-f", "-"],
            input=script,
            text=True,
            check=True,
        )
        out.append((time.monotonic() - t0) * 1000)
    subprocess.run(
        ["ip", "netns", "exec", lab.ns("dr1"), "nft", "delete", "table", "ip6", "benchscratch"],
        check=False,
    )
    return out


def rr_bgp(lab: Fig2) -> str | None:
    """Which BGP daemon runs on rr: "bgpd" (FRR), "gobgpd", or None (no reflector)."""
    if lab.pids("rr", "/usr/lib/frr/bgpd"):
        return "bgpd"
    return "gobgpd" if lab.pids("rr", "gobgpd") else None


def work_queues(lab: Fig2) -> str | None:
    """FRR's `show work-queues` on rr (each queue's hold time, runs and items), or None."""
    try:
        return lab.sh(
            "rr", "vtysh", "--vty_socket", str(lab.run / "rr-vty"), "-c", "show work-queues"
        )
    except (subprocess.CalledProcessError, OSError):
        return None


def measure(changes: int, gap: float, reflector: str = "frr") -> dict[str, Any]:
    lab = Fig2(reflector=reflector)
    lab.up()
    try:
        ready = asyncio.run(lab.wait_ready())
        watch, kernel = Watch(lab, "web-3"), Kernel(lab)
        prev, _ = change(lab, watch, kernel, 0.6, {})  # warm-up, not counted
        rows: list[dict[str, Any]] = []
        superseded = 0
        cpu = 0.6
        while len(rows) < changes:
            time.sleep(gap + random.uniform(0, gap / 3))
            cpu = 0.1 if cpu == 0.6 else 0.6
            prev, row = change(lab, watch, kernel, cpu, prev)
            if row is None:
                superseded += 1
            else:
                rows.append(row)
        bgp_base = asyncio.run(bgp_baseline(str(lab.run), min(changes, 50)))
        nft_base = nft_baseline(lab, min(changes, 50))
        return {
            "ready_s": ready,
            "rr_bgp": rr_bgp(lab),
            "rr_work_queues": work_queues(lab) if reflector == "frr" else None,
            "rows": rows,
            "superseded": superseded,
            "baseline_bgp_ms": bgp_base,
            "baseline_nft_ms": nft_base,
        }
    finally:
        lab.down()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between changes (> 0.2)")
    ap.add_argument(
        "--reflector", choices=("frr", "gobgp"), default="frr", help="the route reflector on rr"
    )
    ap.add_argument("--direct", action="store_true", help="no reflector: dr3 peers with dr1")
    a = ap.parse_args()
    need_netns("reaction")
    reflector = "none" if a.direct else a.reflector
    m = measure(a.changes, a.gap, reflector)
    legs = {k: summary([r[k] for r in m["rows"]]) for k in (*LEGS, "bare_mqtt")}
    base = {
        "mqtt": legs["bare_mqtt"],
        "bgp": summary(m["baseline_bgp_ms"]),
        "dataplane": summary(m["baseline_nft_ms"]),
    }
    base["total"] = {
        p: sum(base[k][p] for k in ("mqtt", "bgp", "dataplane")) for p in ("p50", "p99")
    }
    rows = []
    for k in LEGS:
        b = base.get(k)
        rows.append(
            (
                k,
                legs[k]["p50"],
                legs[k]["p99"],
                legs[k]["max"],
                b["p50"] if b else "",
                b["p99"] if b else "",
                legs[k]["p50"] / b["p50"] if b else "",
                legs[k]["p99"] / b["p99"] if b else "",
            )
        )
    via = {"frr": "FRR reflector", "gobgp": "GoBGP reflector", "none": "direct sessions"}
    print(
        f"Reaction: {len(m['rows'])} load changes at web-3 -> dr1's kernel (ms), {via[reflector]}"
    )
    print(table(("leg", "p50", "p99", "max", "base p50", "base p99", "x p50", "x p99"), rows))
    name = {"frr": "reaction", "gobgp": "reaction_gobgp", "none": "reaction_direct"}[reflector]
    path = save(
        name,
        {
            "command": "python -m bench.reaction " + " ".join(sys.argv[1:]),
            "reflector": reflector,
            "changes": a.changes,
            "gap_s": a.gap,
            "legs_ms": legs,
            "baseline_ms": base,
            **m,
            "ratios": {k: {p: legs[k][p] / base[k][p] for p in ("p50", "p99")} for k in base},
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
