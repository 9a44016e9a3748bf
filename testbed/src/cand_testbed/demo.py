"""The demo: the Figure-2 lab with real clients steered to real instances, as a live table.

    sudo .venv/bin/python -m cand_testbed.demo      (scripts/demo sets up and runs it)

Two clients (c1 behind D-Router 1, c2 behind D-Router 2) open new HTTP connections to both
services several times a second and keep a few long-lived connections open. The table shows,
per service and instance, the weights each ingress programs into its kernel, which instance
served the new connections of the last seconds, where the long-lived ones are and whether
they still answer, and the binding table's size. Then an instance gets overloaded, recovers,
and one is killed with kill -9; at the end the lab is torn down (also on Ctrl-C or an error).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from typing import Any

from cand.lab.netns import netns_available
from cand_testbed.fig2 import APP, INSTANCES, WEB, Fig2

CLIENTS = ("c1", "c2")
WINDOW = 3.0
PHASES: list[tuple[str, list[tuple[str, str]], float]] = [
    ("all four instances idle", [], 8),
    ("web-3 overloaded (cpu 0.97, CATS L2 0: do not steer): no new flows, its connections stay",
     [("web-3", "cpu 0.97")], 8),
    ("web-3 recovers", [("web-3", "cpu 0.1")], 6),
    ("app-2 drains: existing clients stay, new ones go to app-3", [("app-2", "draining")], 6),
    ("app-2 back, web-2 killed with kill -9 (its broker's Last Will withdraws it)",
     [("app-2", "up"), ("web-2", "kill")], 8),
]  # fmt: skip


class Traffic:
    """Reads the load generators' lines; keeps the recent new flows and each long-lived one."""

    def __init__(self) -> None:
        self.new: deque[tuple[float, str, str, str | None]] = deque()
        self.long: dict[tuple[str, int], dict[str, Any]] = {}
        self.broken = 0
        self.lock = threading.Lock()

    def follow(self, client: str, lines: Any) -> None:
        for line in lines:
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            with self.lock:
                if r["kind"] == "new":
                    self.new.append((time.monotonic(), client, r["dsid"], r["served_by"]))
                else:
                    if r["served_by"] is None:
                        self.broken += 1
                    self.long[(client, r["conn"])] = {**r, "client": client}

    def recent(self) -> Counter[tuple[str, str, str | None]]:
        cut = time.monotonic() - WINDOW
        with self.lock:
            while self.new and self.new[0][0] < cut:
                self.new.popleft()
            return Counter((c, d, s) for _, c, d, s in self.new)


def render(
    phase: str, elapsed: float, weights: dict[str, dict[str, dict[str, int]]], t: Traffic,
    bindings: dict[str, int], scores: dict[str, dict[str, int]] | None = None,
) -> str:  # fmt: skip
    """The live table. `L2` is the CATS score as dr1 knows it: 0..10, higher is better
    (0-3 do not steer, 4-7 medium, 8-10 preferred)."""
    recent = t.recent()
    lines = [f"[{elapsed:5.1f}s] {phase}", ""]
    for dsid, label in ((WEB, "web  (vip, 5-tuple)"), (APP, "app  (ServiceNAT, 3-tuple)")):
        lines.append(f"  {label}  D-SID {dsid}")
        lines.append(
            f"    {'instance':<9}{'D-BID':<17}{'L2':>4}{'w@dr1':>6}{'w@dr2':>6}"
            f"   new flows, last {WINDOW:.0f}s: c1 | c2       long-lived"
        )
        for name, (svc, binding, _) in INSTANCES.items():
            if svc != dsid:
                continue
            w = [weights.get(r, {}).get(dsid, {}).get(binding) for r in ("dr1", "dr2")]
            ws = [f"{x:>6}" if x is not None else f"{'-':>6}" for x in w]
            score = (scores or {}).get(dsid, {}).get(binding)
            l2 = f"{score:>4}" if score is not None else f"{'-':>4}"
            counts = []
            for c in CLIENTS:
                total = sum(n for (cc, d, _), n in recent.items() if cc == c and d == dsid) or 1
                n = recent[(c, dsid, name)]
                counts.append(f"{'#' * round(10 * n / total):<10}{n:>3}")
            with t.lock:
                here = [r for r in t.long.values() if r["dsid"] == dsid and r["served_by"] == name]
            lines.append(
                f"    {name:<9}{binding:<17}{l2}{''.join(ws)}   {' | '.join(counts)}"
                f"   {len(here)} open"
            )
        failed = sum(n for (_, d, s), n in recent.items() if d == dsid and s is None)
        if failed:
            lines.append(f"    new connections that failed: {failed}")
        lines.append("")
    lines.append(
        f"  binding table (flows pinned in conntrack): dr1 {bindings.get('dr1', 0)}, "
        f"dr2 {bindings.get('dr2', 0)}; long-lived requests that failed: {t.broken}"
    )
    return "\n".join(lines)


async def show(lab: Fig2, t: Traffic, phase: str, seconds: float, start: float) -> None:
    tty = sys.stdout.isatty()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        weights = {r: await lab.weights(r) for r in ("dr1", "dr2")}
        bindings = {r: len(await lab.api(r, "bindings")) for r in ("dr1", "dr2")}
        scores = await lab.scores("dr1")
        text = render(phase, time.monotonic() - start, weights, t, bindings, scores)
        print(("\x1b[H\x1b[J" if tty else "") + text + ("" if tty else "\n"), flush=True)
        await asyncio.sleep(1.0 if tty else 2.0)


def main() -> int:
    why = netns_available()
    if why is not None:
        print(f"demo: {why}", file=sys.stderr)
        return 2
    lab = Fig2(os.environ.get("CAND_LAB_SPEAKER", "gobgp"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print("demo: bringing up labs/dyncast-fig2 (3 D-Routers, FRR, 4 instances, 2 clients)")
        lab.up()
        took = asyncio.run(lab.wait_ready())
        print(f"demo: BGP converged, both ingresses steer both services ({took:.1f} s)")
        duration = sum(p[2] for p in PHASES) + 5
        traffic = Traffic()
        for c in CLIENTS:
            p = lab.load(c, [WEB, APP], rate=4, keep=2, duration=duration)
            threading.Thread(target=traffic.follow, args=(c, p.stdout), daemon=True).start()

        async def run() -> None:
            start = time.monotonic()
            for phase, actions, seconds in PHASES:
                for instance, cmd in actions:
                    if cmd == "kill":
                        lab.kill_instance(instance)
                    else:
                        lab.control(instance, cmd)
                await show(lab, traffic, phase, seconds, start)

        asyncio.run(run())
        print("\ndemo: every new flow went where the weights said; long-lived flows stayed put.")
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
    finally:
        lab.down()
        print("demo: lab down, namespaces and processes removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
