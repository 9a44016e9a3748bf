"""The probe responder on real loopback sockets: it answers a well-formed probe with its
times filled in, and refuses malformed ones, spoofed senders and more than its rate."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time

from cand.adapters.probe import ProbeResponder
from cand.config import ProbeCostConfig
from cand.wire import probe as wire

LO = ipaddress.IPv6Address("::1")


def free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


async def exchange(sock: socket.socket, data: bytes, port: int) -> bytes | None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, data, ("::1", port))
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 200), 0.3)
    except TimeoutError:
        return None


def test_responder_answers_refuses_and_rate_limits() -> None:
    port = free_port()
    cfg = ProbeCostConfig(port=port, responder=True, responder_rate_per_sender=5)
    r = ProbeResponder(cfg, LO)

    async def scenario() -> None:
        task = asyncio.create_task(r.run())
        for _ in range(500):  # bounded: a responder that never binds fails the test
            if r.bound:
                break
            await asyncio.sleep(0.01)
        assert r.bound
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.bind(("::1", 0))
            t1 = time.time_ns()
            good = wire.encode(wire.Probe(wire.Kind.PROBE, 42, 1, LO, t1))
            got = await exchange(s, good, port)
            assert got is not None and len(got) == len(good)
            reply = wire.decode(got)
            assert reply.kind is wire.Kind.REPLY and reply.seq == 1 and reply.session == 42
            assert reply.responder == LO and t1 <= reply.t2 <= reply.t3 <= time.time_ns()

            assert await exchange(s, good[:-1], port) is None  # short
            assert await exchange(s, b"CNDP" + good[4:5] + b"\x02" + good[6:], port) is None
            spoofed = wire.Probe(wire.Kind.PROBE, 42, 2, ipaddress.IPv6Address("fc00::9"), t1)
            assert await exchange(s, wire.encode(spoofed), port) is None
            # a well-formed reply sent to a responder is not a probe: never answered
            assert await exchange(s, got, port) is None
            assert r.refused == {
                "length": 1,
                "responder": 1,
                "sender_not_source": 1,
                "not_probe": 1,
            }

            # a burst beyond the per-sender rate: the bucket's burst (1) answered, rest not
            for seq in range(3, 23):
                p = wire.Probe(wire.Kind.PROBE, 42, seq, LO, time.time_ns())
                await asyncio.get_running_loop().sock_sendto(s, wire.encode(p), ("::1", port))
            await asyncio.sleep(0.2)
            assert r.counters["rate_limited"] >= 15
            assert r.counters["answered"] <= 1 + 1 + 5  # first, the burst, 0.2 s of refill
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not r.bound

    asyncio.run(scenario())
