"""Publisher process for bench.mqtt_ingest: N reports over many instances, optionally paced.

python -m bench.mqtt_publisher PORT COUNT RATE SERVICES INSTANCES_PER_SERVICE EPOCH PREFIX

As D-MAs publish (`cand.agent`): each instance's session starts at seq EPOCH and every
report of it takes the next seq, QoS 1, retained. Report i goes to instance
`i % (SERVICES * INSTANCES_PER_SERVICE)` (`keys` order), so the caller knows each instance's
newest seq (`last_seqs`); a report the broker drops shows as a gap in its instance's seqs.
Topics are under PREFIX, so a run sees no retained report of an earlier one.
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


def seq_of(i: int, epoch: int, instances: int) -> int:
    """The seq of report i: its instance's (i // instances + 1)-th report this session."""
    return epoch + 1 + i // instances


def last_seqs(n: int, epoch: int, services: int, per_service: int) -> dict[InstanceKey, int]:
    """Each instance's newest seq once `n` reports are published."""
    ks = keys(services, per_service)
    return {ks[i % len(ks)]: seq_of(i, epoch, len(ks)) for i in range(max(0, n - len(ks)), n)}


async def main(
    port: int, n: int, rate: float, services: int, per_service: int, epoch: int, prefix: str
) -> None:
    ks = keys(services, per_service)
    topics = [wire.topic(k, prefix) for k in ks]
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        start = time.monotonic()
        for i in range(n):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            seq = seq_of(i, epoch, len(ks))
            metrics = Metrics(cpu=(i % 1000) / 1000)
            raw = wire.encode(InstanceState.UP, metrics, seq, time.time(), epoch=epoch)
            await c.publish(topics[i % len(ks)], raw, qos=1, retain=True)


if __name__ == "__main__":
    port, n, rate, services, per_service, epoch, prefix = sys.argv[1:8]
    args = int(port), int(n), float(rate), int(services), int(per_service), int(epoch)
    asyncio.run(main(*args, prefix))
