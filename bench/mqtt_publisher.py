"""Publisher process for bench.mqtt_ingest: N reports over many instances, optionally paced.

python -m bench.mqtt_publisher PORT COUNT RATE SERVICES INSTANCES_PER_SERVICE [BASE_SEQ]

Report i goes to instance `i % (SERVICES * INSTANCES_PER_SERVICE)` (`keys` order) with seq
BASE_SEQ + i (default: now in milliseconds), so the caller knows each instance's last seq.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiomqtt

from cand.model import BindingId, InstanceKey, InstanceState, Metrics, ServiceId
from cand.wire import mqtt as wire


def keys(services: int, per_service: int) -> list[InstanceKey]:
    return [
        InstanceKey(
            ServiceId.parse(f"2001:db8:5::{s:x}"), BindingId.parse(f"2001:db8:a:{s:x}::{i:x}")
        )
        for i in range(1, per_service + 1)
        for s in range(1, services + 1)
    ]


def last_seqs(n: int, base: int, services: int, per_service: int) -> dict[InstanceKey, int]:
    """Each instance's newest seq once `n` reports from `base` are published."""
    ks = keys(services, per_service)
    return {ks[i % len(ks)]: base + i for i in range(max(0, n - len(ks)), n)}


async def main(
    port: int, n: int, rate: float, services: int, per_service: int, base: int | None = None
) -> None:
    ks = keys(services, per_service)
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        start = time.monotonic()
        base = int(time.time() * 1000) if base is None else base
        for i in range(n):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            raw = wire.encode(
                InstanceState.UP, Metrics(cpu=(i % 1000) / 1000), base + i, time.time()
            )
            await c.publish(wire.topic(ks[i % len(ks)]), raw, qos=1)


if __name__ == "__main__":
    port, n, rate, services, per_service = sys.argv[1:6]
    base = int(sys.argv[6]) if len(sys.argv) > 6 else None
    asyncio.run(main(int(port), int(n), float(rate), int(services), int(per_service), base))
