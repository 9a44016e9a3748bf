"""The demo: two D-Routers in network namespaces, real mosquitto, gobgpd and cand.

    sudo .venv/bin/python -m cand.lab.demo      (scripts/demo sets up and runs it)

The egress hosts two instances of one service whose metric agents report load; the ingress
learns them over BGP and computes the weights its data plane would use for new flows. The
live table shows the ingress's view while one instance gets busy and is then killed with
kill -9. Namespaces and processes are removed at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cand.api import request
from cand.lab.agent_driver import AgentProcess
from cand.lab.netns import Topology, netns_available
from cand.lab.routers import SERVICE, cand_toml, start_cand, start_mosquitto, wait_api

INSTANCES = {"A": "2001:db8:a::10", "B": "2001:db8:a::11"}
PHASES = [
    (
        "both instances idle",
        {"A": "report cpu=0.1 capacity=100", "B": "report cpu=0.1 capacity=100"},
        6,
    ),
    ("A gets busy (cpu 0.8)", {"A": "report cpu=0.8"}, 6),
    ("B doubles its capacity", {"B": "report capacity=200"}, 6),
    ("A is overloaded (cpu 0.97): no new flows for it", {"A": "report cpu=0.97"}, 6),
    ("A recovers, B drains", {"A": "report cpu=0.2", "B": "draining"}, 6),
    ("A killed with kill -9 (its Last Will withdraws it)", {"A": "kill"}, 6),
]


def render(phase: str, services: list[dict[str, Any]], elapsed: float) -> str:
    names = {v: k for k, v in INSTANCES.items()}
    lines = [f"[{elapsed:5.1f}s] {phase}", ""]
    lines.append(f"  {'instance':<9}{'D-BID':<18}{'state':<10}{'L2':>5}{'weight':>8}  share")
    for svc in services:
        total = sum(i["weight"] for i in svc["instances"]) or 1
        for i in svc["instances"]:
            share = i["weight"] / total
            bar = "#" * round(share * 30)
            lines.append(
                f"  {names.get(i['binding'], '?'):<9}{i['binding']:<18}{i['state']:<10}"
                f"{i['l2']:>5}{i['weight']:>8}  {bar} {share:.0%}"
            )
        if not svc["instances"]:
            lines.append("  (no instance: new flows get the default action)")
    return "\n".join(lines)


async def show(isock: Path, phase: str, seconds: float, start: float) -> None:
    tty = sys.stdout.isatty()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        text = render(phase, await request(isock, "services"), time.monotonic() - start)
        print(("\x1b[H\x1b[J" if tty else "") + text + ("" if tty else "\n"), flush=True)
        await asyncio.sleep(1.0 if tty else 2.0)


def main() -> int:
    why = netns_available()
    if why is not None:
        print(f"demo: {why}", file=sys.stderr)
        return 2
    topo = Topology()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with tempfile.TemporaryDirectory(prefix="cand-demo-") as d:
            tmp = Path(d)
            e, i = topo.ns("egress"), topo.ns("ingress")
            topo.link(e, "fc00:a::3/64", i, "fc00:a::1/64")
            port = start_mosquitto(topo, e, tmp)
            econf = cand_toml(tmp, "e", "fc00:a::3", ["fc00:a::1"], ["egress"], mqtt_port=port)
            iconf = cand_toml(tmp, "i", "fc00:a::1", ["fc00:a::3"], ["ingress"])
            start_cand(topo, e, econf, tmp, "e")
            isock = start_cand(topo, i, iconf, tmp, "i")
            print("demo: egress and ingress D-Routers up, waiting for BGP ...", flush=True)
            agents = {n: AgentProcess(topo, e, port, SERVICE, b) for n, b in INSTANCES.items()}

            async def run() -> None:
                await wait_api(isock)
                start = time.monotonic()
                for phase, commands, seconds in PHASES:
                    for name, cmd in commands.items():
                        if cmd == "kill":
                            os.kill(agents[name].p.pid, signal.SIGKILL)
                        else:
                            await asyncio.to_thread(agents[name].say, cmd)
                    await show(isock, phase, seconds, start)

            asyncio.run(run())
            print("\ndemo: the ingress followed every change; `cand services` shows the same.")
            print(
                "demo: packet steering (SRv6, conntrack affinity) comes with the Linux data plane."
            )
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
    finally:
        topo.close()
        print("demo: namespaces and processes removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
