"""Does a long-lived cand grow? One cand on loopback, no namespaces (so no shared lock):

    .venv/bin/python -m bench.soak_loopback --minutes 25 --broker-restart 180

A real mosquitto and a gobgpd (started by cand, no neighbours: nothing to peer with here),
data plane `none`, both roles, four instances of two services reporting their sessions at
the Figure-2 lab's rate (each new connection there is two reports: about 10 a second per
instance), and mosquitto killed with kill -9 and started again every `--broker-restart`
seconds. cand's RSS, open fds and asyncio tasks are sampled every `--every` seconds; the
growth is the slope of a least-squares line through the RSS samples after the first minute
(start-up allocations are not growth). Results: `results/soak_loopback.json`.

`--trace N`: the daemon runs inside this process instead (the same `Daemon`, built from the
same file), tracemalloc takes a snapshot after the first minute and at the end, and the N
source lines of `cand` whose allocations grew most are printed (the agents' own are left out).
Results then: `results/soak_loopback_trace.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from cand_testbed.mosquitto import Mosquitto, free_port, wait_port

from bench.common import save
from cand.agent import MetricAgent
from cand.api import ApiError, request

SERVICES = {
    "2001:db8:5::1": ("2001:db8:2a::10", "2001:db8:3a::10"),
    "2001:db8:6::1": ("2001:db8:2a::20", "2001:db8:3a::20"),
}


def config(tmp: Path, port: int) -> str:
    services = "".join(
        f'\n[[services]]\nsid = "{sid}"\nname = "s{i}"\n' for i, sid in enumerate(SERVICES)
    )
    return f"""
[router]
id = "fc00:ff::2"
roles = ["ingress", "egress"]
locator = "fc00:0:2::/48"

[mqtt]
host = "127.0.0.1"
port = {port}

[bgp]
speaker = "gobgp"
router_id = "10.255.0.2"
listen_port = 0
graceful_restart = 30
[bgp.options]
socket = "{tmp}/gobgpd.sock"

[damping]
min_interval = 0.1
threshold = 5
{services}
[api]
socket = "{tmp}/cand.sock"

[prometheus]
listen = ""

[log]
level = "info"
"""


def start_cand(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "cand.cli", "run", "-c", str(conf)], stdout=out, stderr=out
        )


async def in_process(conf: Path) -> tuple[asyncio.Task[Any], Any]:
    from cand import config as configmod
    from cand.daemon import Daemon
    from cand.wiring import build_adapters

    cfg = configmod.load(conf)
    daemon = Daemon(cfg, build_adapters(cfg), config_path=conf)
    return asyncio.create_task(daemon.run(), name="daemon-under-test"), daemon


def grown(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int) -> list[str]:
    """The lines of cand's daemon (not its agent library) whose live allocations grew most."""
    keep = [
        tracemalloc.Filter(True, "*/cand/*"),
        tracemalloc.Filter(False, "*/cand/agent/*"),
    ]
    stats = after.filter_traces(keep).compare_to(before.filter_traces(keep), "lineno")
    return [str(s) for s in stats[:top]]


def end_gobgpd(pid_file: Path) -> None:
    """The gobgpd cand started, if it outlived cand (an in-process daemon is only cancelled)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


def sample(pid: int, tasks: int | None, t0: float) -> dict[str, Any]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return {"t": round(time.monotonic() - t0, 1), "rss_kb": rss, "fds": fds, "tasks": tasks}


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if den == 0 else 60 * sum((x - mx) * (y - my) for x, y in points) / den


async def reporter(
    broker: str, service: str, binding: str, rate: float, stop: asyncio.Event
) -> int:
    """One instance: sessions up and down at `rate` reports a second, through broker
    restarts (the agent reconnects by itself)."""
    sent = 0
    rnd = random.Random(binding)
    async with MetricAgent(broker, service=service, binding=binding) as agent:
        sessions = 0
        while not stop.is_set():
            sessions = max(0, sessions + rnd.choice((-1, 1)))
            with contextlib.suppress(Exception):  # a report lost while the broker is down
                await agent.report(cpu=0.2 + 0.05 * (sessions % 5), sessions=sessions)
                sent += 1
            await asyncio.sleep(1 / rate)
    return sent


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    broker = Mosquitto(dir=tmp, port=port, persistence=False)
    broker.start()
    conf = tmp / "cand.toml"
    conf.write_text(config(tmp, port))
    task, cand = None, None
    if args.trace:
        task, _ = await in_process(conf)
    else:
        cand = start_cand(conf, tmp / "cand.log")
    pid = os.getpid() if cand is None else cand.pid
    snaps: list[tracemalloc.Snapshot] = []
    sock = tmp / "cand.sock"
    samples: list[dict[str, Any]] = []
    restarts = 0
    stop = asyncio.Event()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                await request(sock, "status")
                break
            except ApiError:
                assert time.monotonic() < deadline, "cand did not start"
                await asyncio.sleep(0.1)
        url = f"mqtt://127.0.0.1:{port}"
        agents = [
            asyncio.create_task(reporter(url, sid, b, args.rate, stop))
            for sid, bindings in SERVICES.items()
            for b in bindings
        ]
        t0 = time.monotonic()
        end = t0 + 60 * args.minutes
        next_restart = t0 + args.broker_restart
        while time.monotonic() < end:
            await asyncio.sleep(args.every)
            if time.monotonic() >= next_restart and broker.proc is not None:
                os.kill(broker.proc.pid, signal.SIGKILL)
                broker.proc.wait()
                await asyncio.sleep(1.0)
                broker.proc = subprocess.Popen(
                    ["mosquitto", "-c", str(tmp / "mosquitto.conf")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                wait_port(port)
                restarts += 1
                next_restart += args.broker_restart
            st = await request(sock, "status")
            samples.append(sample(pid, st.get("tasks"), t0))
            if args.trace and not snaps and time.monotonic() - t0 >= 60:
                tracemalloc.start(args.frames)
                snaps.append(tracemalloc.take_snapshot())
            s = samples[-1]
            print(f"{s['t']:7.0f} s  rss {s['rss_kb']} kB  fds {s['fds']}  tasks {s['tasks']}")
        stop.set()
        sent = sum(await asyncio.gather(*agents))
        final = await request(sock, "status")
        if snaps:
            snaps.append(tracemalloc.take_snapshot())
            tracemalloc.stop()
    finally:
        stop.set()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if cand is not None:
            cand.terminate()
            try:
                cand.wait(20)
            except subprocess.TimeoutExpired:
                cand.kill()
                cand.wait()
        broker.stop()
        end_gobgpd(tmp / "gobgpd.sock.pid")
    late = [(s["t"], float(s["rss_kb"])) for s in samples if s["t"] >= 60]
    return {
        "minutes": args.minutes,
        "rate_per_instance": args.rate,
        "instances": sum(len(b) for b in SERVICES.values()),
        "reports_sent": sent,
        "broker_restarts": restarts,
        "samples": samples,
        "rss_kb_first_after_1min": late[0][1] if late else None,
        "rss_kb_last": samples[-1]["rss_kb"] if samples else None,
        "rss_kb_max": max(s["rss_kb"] for s in samples) if samples else None,
        "rss_kb_per_min_fit": round(slope_per_min(late), 2),
        "fds": sorted({s["fds"] for s in samples}),
        "tasks": sorted({s["tasks"] for s in samples if s["tasks"] is not None}),
        "status": final,
        "in_process": bool(args.trace),
        "tracemalloc_top_growth": grown(snaps[0], snaps[1], args.trace) if len(snaps) == 2 else [],
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak_loopback", description=__doc__)
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--rate", type=float, default=10.0, help="reports/s per instance")
    p.add_argument("--broker-restart", type=float, default=180.0, help="seconds between")
    p.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    p.add_argument("--trace", type=int, default=0, help="in process: top N growing lines")
    p.add_argument("--frames", type=int, default=1, help="tracemalloc frames per trace")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cand-soak-") as d:
        out = asyncio.run(run(args, Path(d)))
    print(
        f"RSS {out['rss_kb_first_after_1min']} -> {out['rss_kb_last']} kB "
        f"(max {out['rss_kb_max']}), fit {out['rss_kb_per_min_fit']} kB/min; "
        f"fds {out['fds']}, tasks {out['tasks']}; {out['reports_sent']} reports, "
        f"{out['broker_restarts']} broker restarts"
    )
    for line in out["tracemalloc_top_growth"]:
        print(line)
    print(save("soak_loopback_trace" if args.trace else "soak_loopback", out))


if __name__ == "__main__":
    main()
