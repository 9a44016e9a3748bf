"""Generator for bench.route_scale: runs a cand speaker (gobgp or exabgp) in the egress
namespace and announces N D-SIDs x M instances through it, then stays up until killed.

    python -m bench.route_feed CONFIG N M
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time

from cand import config as configmod
from cand.engine.events import Event
from cand.model import BindingId, InstanceKey, InstanceRoute, Metrics, RouterId, ServiceId
from cand.wiring import build_adapters


def routes(router: str, n: int, m: int) -> list[InstanceRoute]:
    out = []
    for s in range(n):
        svc = ServiceId(ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8:5::")) + s + 1))
        for i in range(m):
            bid = BindingId(
                ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8:a::")) + s * 16 + i + 1)
            )
            out.append(
                InstanceRoute(
                    key=InstanceKey(svc, bid),
                    egress=RouterId.parse(router),
                    sid=ipaddress.IPv6Address(
                        int(ipaddress.IPv6Address("fc00:0:3::")) + s * 16 + i + 1
                    ),
                    metrics=Metrics(cpu=(s * 7 + i) % 100 / 100, capacity=100),
                    seq=1,
                )
            )
    return out


async def main(path: str, n: int, m: int) -> None:
    cfg = configmod.load(path)
    speaker = build_adapters(cfg).speaker
    assert speaker is not None

    async def emit(_: Event) -> None:
        return None

    task = asyncio.create_task(speaker.run(emit))
    rs = routes(cfg.router.id, n, m)
    await asyncio.sleep(0.5)
    # ExaBGP reads what it is written long before it has parsed it: "fed" is when it has
    # answered the last command (GoBGP's AddPathStream has returned already), timed from when
    # its process has connected
    caught_up = getattr(speaker, "caught_up", None)
    for _ in range(300 if caught_up is not None else 0):
        if speaker.status()["connected"]:
            break
        await asyncio.sleep(0.1)
    start = time.monotonic()
    await speaker.advertise(rs)
    written = time.monotonic() - start
    if caught_up is not None and not await caught_up(600.0):
        print("feed: the speaker did not answer every command", flush=True)
    print(f"fed {len(rs)} {time.monotonic() - start:.3f} written {written:.3f}", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
