"""CPU cost of one metric report inside the daemon, without the broker.

    .venv/bin/python -m bench.ingest_cpu [--messages 50000] [--burst 8] [--profile FILE.svg]

The same reports (10 services x 10 instances) go through, in one process and one run:
`wire.decode` of the payload alone (the baseline: what any subscriber that checks what it
receives must do, with the topics parsed beforehand), then
the MQTT source's `handle` (topic, sequence, clock and address checks) and the engine (rib,
damping, SRv6 SID), --burst reports per engine pass as the daemon takes them in a flood (about
6 on average in bench.mqtt_ingest; 1: one report at a time). Best of --repeat runs each, so another
process on the machine costs a run, not the figure. With --profile, py-spy records the daemon
path and writes a flame graph (py-spy is in the `bench` extra).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import save, table
from cand import config as configmod
from cand.adapters.mqtt import MqttMetricSource
from cand.engine import Engine
from cand.model import BindingId, InstanceKey, InstanceState, Metrics, ServiceId
from cand.wire import mqtt as wire

SERVICES, PER_SERVICE = 10, 10


def reports(n: int) -> list[tuple[str, bytes]]:
    now = time.time()
    out = []
    for i in range(n):
        s, b = i % SERVICES + 1, (i // SERVICES) % PER_SERVICE + 1
        key = InstanceKey(
            ServiceId.parse(f"2001:db8:5::{s:x}"), BindingId.parse(f"2001:db8:a::{s:x}:{b:x}")
        )
        raw = wire.encode(InstanceState.UP, Metrics(cpu=i % 97 / 100), 1000 + i, now)
        out.append((wire.topic(key), raw))
    return out


def daemon_path(burst: int = 1) -> Callable[[list[tuple[str, bytes]]], int]:
    cfg = configmod.parse(
        {
            "router": {"id": "fc00:ff::2", "roles": ["egress"], "locator": "fc00:0:2::/48"},
            "mqtt": {},
            "services": [{"sid": f"2001:db8:5::{s:x}"} for s in range(1, SERVICES + 1)],
            "prometheus": {"listen": ""},
        }
    )
    assert cfg.mqtt is not None
    source = MqttMetricSource(cfg.mqtt, cfg.service_specs())
    engine = Engine(cfg.engine_config())

    def run(msgs: list[tuple[str, bytes]]) -> int:
        for i in range(0, len(msgs), burst):
            events = [source.handle(topic, payload, None) for topic, payload in msgs[i : i + burst]]
            engine.handle_many([e for e in events if e is not None], time.monotonic())
        return source.accepted

    return run


def decode_only(msgs: list[tuple[str, bytes]]) -> int:
    keys = {topic: wire.parse_topic(topic) for topic, _ in msgs}
    t = time.perf_counter()
    for topic, payload in msgs:
        wire.decode(keys[topic], payload)
    decode_only.took = time.perf_counter() - t  # type: ignore[attr-defined]
    return len(msgs)


def best(
    fn: Callable[[list[tuple[str, bytes]]], int], make: bool, n: int, repeat: int, burst: int = 1
) -> float:
    """Best per-report time in microseconds over `repeat` fresh runs."""
    times = []
    for _ in range(repeat):
        msgs = reports(n)
        run = daemon_path(burst) if make else fn
        t = time.perf_counter()
        done = run(msgs)
        took = time.perf_counter() - t if make else decode_only.took  # type: ignore[attr-defined]
        times.append(took / n * 1e6)
        assert done == n, f"{done} of {n} reports accepted"
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--burst", type=int, default=8, help="reports per engine pass")
    ap.add_argument("--profile", help="write a py-spy flame graph of the daemon path here")
    ap.add_argument("--_profiled", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._profiled:  # the process py-spy records: the daemon path only, long enough
        daemon_path(a.burst)(reports(a.messages))
        return
    base = best(decode_only, False, a.messages, a.repeat)
    cand = best(decode_only, True, a.messages, a.repeat, a.burst)
    rows = [
        ("us per report", base, cand, cand / base),
        ("reports/s on one core", 1e6 / base, 1e6 / cand, base / cand),
    ]
    print(f"ingestion CPU: {a.messages} reports, {a.burst} per engine pass, best of {a.repeat}")
    print(table(("figure", "decode only", "cand: handle + engine", "ratio"), rows))
    path = save(
        "ingest_cpu",
        {
            "command": "python -m bench.ingest_cpu " + " ".join(sys.argv[1:]),
            "messages": a.messages,
            "repeat": a.repeat,
            "burst": a.burst,
            "decode_us": base,
            "daemon_us": cand,
            "ratio": cand / base,
        },
    )
    print(f"written: {path}")
    if a.profile:
        me = [sys.executable, "-m", "bench.ingest_cpu", "--messages", str(a.messages)]
        me += ["--burst", str(a.burst)]
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        spy = [py_spy, "record", "-r", "400", "-o", a.profile, "--"]
        subprocess.run([*spy, *me, "--_profiled"], check=True)
        print(f"flame graph: {a.profile}")


if __name__ == "__main__":
    main()
