"""Metric ingestion: D-MA publish -> rib event latency, and sustained messages/s.

    .venv/bin/python -m bench.mqtt_ingest [--messages 10000] [--rate 1000] [--profile FILE.svg]

A publisher process sends reports for 10 services x 10 instances through a real mosquitto.
Measured twice in the same run: a bare aiomqtt subscriber (the baseline: broker and client
alone), then the cand daemon (validation, sequencing, engine, effects). Latency is receive
time minus the `ts` the publisher wrote, both from this machine's clock. Paced at --rate for
latency; then unpaced for throughput. The publisher acts as D-MAs do (per-instance seq,
retained reports), each phase under a topic prefix of its own. After each flood, "latest
state lost" is the share of instances whose newest report is not what the receiver ended with
(the rib, for cand, given up to RECOVER s for its resync after reports the broker dropped);
"CPU per message" is the receiving process's CPU time over the messages it took: the cost
alone, whatever else the machine runs. With --profile, py-spy records a daemon flood of
3 x --messages and writes a flame graph (py-spy is in the `bench` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from bench.common import mosquitto, save, summary, table
from bench.mqtt_publisher import last_seqs
from cand import config as configmod
from cand.daemon import Daemon
from cand.engine import Effect, Event, InstanceReported
from cand.model import InstanceKey
from cand.wire import mqtt as wire
from cand.wiring import build_adapters

SERVICES = 10
PER_SERVICE = 10
RECOVER = 5.0  # seconds cand is given after a flood to resync what the broker dropped


def publish(port: int, n: int, rate: float, run: Run) -> subprocess.Popen[bytes]:
    args = [str(port), str(n), str(rate), str(SERVICES), str(PER_SERVICE), str(run.epoch)]
    return subprocess.Popen([sys.executable, "-m", "bench.mqtt_publisher", *args, run.prefix])


@dataclass
class Run:
    """What one phase saw: latency per message and when each arrived."""

    sent: int
    epoch: int = field(default_factory=lambda: int(time.time() * 1000))
    prefix: str = field(default_factory=lambda: f"bench/{uuid.uuid4().hex[:12]}")
    latency: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    final: dict[InstanceKey, int] = field(default_factory=dict)
    """Each instance's seq as the receiver ended with it."""
    cpu: float = 0.0
    """The receiving process's CPU seconds from the first message to the last."""
    source: dict[str, object] = field(default_factory=dict)
    """cand's MQTT source status at the end: where reports were lost (broker: sequence
    gaps; cand: overflow)."""
    recovered: float | None = None
    """Seconds after the flood until the rib held every instance's newest report."""
    closed: bool = False
    """The flood is over: what arrives now (a resync) is not counted as delivered."""

    def add(self, origin_ts: float) -> None:
        if self.closed:
            return
        self.latency.append(time.time() - origin_ts)
        self.arrivals.append(time.monotonic())
        self.changed.set()

    @property
    def rate(self) -> float:
        span = self.arrivals[-1] - self.arrivals[0] if len(self.arrivals) > 1 else 0.0
        return len(self.arrivals) / span if span > 0 else float("nan")

    @property
    def delivered(self) -> float:
        return len(self.arrivals) / self.sent

    @property
    def latest_lost(self) -> float:
        """Share of instances whose newest report the receiver does not hold."""
        want = last_seqs(self.sent, self.epoch, SERVICES, PER_SERVICE)
        return sum(self.final.get(k) != seq for k, seq in want.items()) / len(want)

    @property
    def cpu_us(self) -> float:
        return self.cpu / len(self.arrivals) * 1e6 if self.arrivals else float("nan")

    async def until_done(self, proc: subprocess.Popen[bytes], idle: float = 1.0) -> None:
        """All messages arrived, or the publisher is done and nothing came for `idle` s
        (a broker drops QoS 1 messages beyond its queue limit for a slow subscriber)."""
        start = time.process_time()
        while len(self.arrivals) < self.sent:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), idle)
            except TimeoutError:
                if proc.poll() is not None:
                    break
        self.cpu = time.process_time() - start
        self.closed = True


async def baseline(port: int, n: int, rate: float) -> Run:
    run = Run(n)
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(wire.subscription(run.prefix), 1)

        async def consume() -> None:
            async for msg in c.messages:
                raw = msg.payload if isinstance(msg.payload, bytes) else b""
                report = wire.decode(wire.parse_topic(msg.topic.value, run.prefix), raw)
                run.final[report.key] = report.seq
                run.add(report.ts)

        reader = asyncio.create_task(consume())
        proc = publish(port, n, rate, run)
        try:
            await run.until_done(proc)
        finally:
            proc.wait()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return run


async def through_daemon(port: int, n: int, rate: float) -> Run:
    run = Run(n)
    with tempfile.TemporaryDirectory() as d:
        cfg = configmod.parse(
            {
                "router": {"id": "fc00:ff::2", "roles": ["egress"], "locator": "fc00:0:2::/48"},
                "mqtt": {"host": "127.0.0.1", "port": port, "topic_prefix": run.prefix},
                "services": [{"sid": f"2001:db8:5::{s:x}"} for s in range(1, SERVICES + 1)],
                "api": {"socket": str(Path(d) / "s")},
                "prometheus": {"listen": ""},
                "log": {"level": "warning"},
            }
        )
        daemon = Daemon(cfg, build_adapters(cfg))

        def listener(batch: Sequence[Event], effects: Sequence[Effect]) -> None:
            for e in batch:
                if isinstance(e, InstanceReported) and e.origin_ts is not None:
                    run.add(e.origin_ts)

        daemon.listeners.append(listener)
        task = asyncio.create_task(daemon.run())
        await daemon.ready.wait()
        while not daemon.adapters.sources[0].status()["connected"]:
            await asyncio.sleep(0.01)
        proc = publish(port, n, rate, run)
        try:
            await run.until_done(proc)
            await recover(run, daemon)
            run.source = daemon.adapters.sources[0].status()
        finally:
            proc.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return run


async def recover(run: Run, daemon: Daemon) -> None:
    """Up to RECOVER s for the rib to hold each instance's newest report: the daemon
    resubscribes once reports were lost, and the broker resends the retained ones."""
    start = time.monotonic()
    want = last_seqs(run.sent, run.epoch, SERVICES, PER_SERVICE)
    while True:
        run.final = {k: e.route.seq for k, e in daemon.engine.rib.local.items()}
        if all(run.final.get(k) == seq for k, seq in want.items()):
            run.recovered = time.monotonic() - start
            return
        if time.monotonic() - start > RECOVER:
            return
        await asyncio.sleep(0.05)


def profile(out: str, messages: int) -> None:
    """A daemon flood recorded by py-spy, as a flame graph at `out`."""
    me = [sys.executable, "-m", "bench.mqtt_ingest", "--messages", str(messages)]
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    spy = [py_spy, "record", "-r", "400", "-o", out, "--"]
    subprocess.run([*spy, *me, "--_profiled"], check=True)
    print(f"flame graph: {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--profile", help="write a py-spy flame graph of a daemon flood here")
    ap.add_argument("--_profiled", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._profiled:  # the process py-spy records: the daemon's flood only
        with mosquitto() as port:
            asyncio.run(through_daemon(port, a.messages, 0))
        return
    with mosquitto() as port:
        b_paced = asyncio.run(baseline(port, a.messages, a.rate))
        d_paced = asyncio.run(through_daemon(port, a.messages, a.rate))
        b_flood = asyncio.run(baseline(port, a.messages, 0))
        d_flood = asyncio.run(through_daemon(port, a.messages, 0))
    bs = summary([x * 1000 for x in b_paced.latency])
    ds = summary([x * 1000 for x in d_paced.latency])
    b_rate, d_rate = b_flood.rate, d_flood.rate
    rows = [
        ("publish -> event p50 (ms)", bs["p50"], ds["p50"], ds["p50"] / bs["p50"]),
        ("publish -> event p99 (ms)", bs["p99"], ds["p99"], ds["p99"] / bs["p99"]),
        ("delivered at the paced rate", b_paced.delivered, d_paced.delivered, ""),
        ("sustained messages/s (flood)", b_rate, d_rate, d_rate / b_rate),
        ("delivered in the flood", b_flood.delivered, d_flood.delivered, ""),
        ("latest state lost (flood)", b_flood.latest_lost, d_flood.latest_lost, ""),
        (
            "cand: resyncs, s until the rib is whole",
            "",
            d_flood.source.get("resyncs"),
            d_flood.recovered,
        ),
        (
            "CPU us per message (flood)",
            b_flood.cpu_us,
            d_flood.cpu_us,
            d_flood.cpu_us / b_flood.cpu_us,
        ),
    ]
    print(
        f"MQTT ingestion: {a.messages} messages, {SERVICES} services x {PER_SERVICE} instances, "
        f"paced at {a.rate}/s for latency, unpaced for messages/s"
    )
    print(table(("figure", "bare subscriber", "cand daemon", "ratio"), rows))
    path = save(
        "mqtt_ingest",
        {
            "command": "python -m bench.mqtt_ingest " + " ".join(sys.argv[1:]),
            "messages": a.messages,
            "rate": a.rate,
            "baseline_ms": bs,
            "daemon_ms": ds,
            "baseline_msgs_per_s": b_rate,
            "daemon_msgs_per_s": d_rate,
            "ratio_msgs_per_s": d_rate / b_rate,
            "delivered": {
                "baseline_paced": b_paced.delivered,
                "daemon_paced": d_paced.delivered,
                "baseline_flood": b_flood.delivered,
                "daemon_flood": d_flood.delivered,
            },
            "latest_state_lost": {
                "baseline_flood": b_flood.latest_lost,
                "daemon_flood": d_flood.latest_lost,
                "daemon_paced": d_paced.latest_lost,
            },
            "daemon_recovered_s": d_flood.recovered,
            "daemon_source_flood": d_flood.source,
            "cpu_us_per_message": {
                "baseline_flood": b_flood.cpu_us,
                "daemon_flood": d_flood.cpu_us,
            },
        },
    )
    print(f"written: {path}")
    if a.profile:
        profile(a.profile, 3 * a.messages)


if __name__ == "__main__":
    main()
