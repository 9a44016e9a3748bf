"""The probe responder on real loopback sockets: it answers a well-formed probe with its
times filled in, and refuses malformed ones, spoofed senders and more than its rate."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from typing import Any

import pytest

from cand.adapters import probe as probe_adapter
from cand.adapters.probe import ProbeResponder
from cand.config import Config, ConfigError, ProbeCostConfig
from cand.wire import probe as wire
from cand.wiring import build_adapters, plan
from cand.wiring import check as wiring_check

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


def test_a_port_taken_is_an_error_counted_and_retried_not_the_end(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two daemons in one namespace, or a stray socket on the port: the responder logs the
    error once, counts each failed try, keeps trying, and binds once the port is free."""
    monkeypatch.setattr(probe_adapter, "RETRY", 0.02)
    port = free_port()
    r = ProbeResponder(ProbeCostConfig(port=port), LO)

    async def scenario() -> None:
        holder = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        holder.bind(("::1", port))
        task = asyncio.create_task(r.run())
        for _ in range(500):
            if r.counters["bind_failures"] >= 3:
                break
            await asyncio.sleep(0.01)
        assert not r.bound and not task.done()
        assert r.counters["bind_failures"] >= 3
        assert r.bind_error is not None and "EADDRINUSE" in r.bind_error
        assert r.status()["bind_error"] == r.bind_error
        errors = [m for m in caplog.messages if "probe_responder_bind_failed" in m]
        assert len(errors) == 1, errors  # the same error is not logged again on every try
        holder.close()
        for _ in range(500):
            if r.bound:
                break
            await asyncio.sleep(0.01)
        assert r.bound and r.bind_error is None
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.bind(("::1", 0))
            assert await exchange(s, b"\x00" * 10, port) is None
            good = wire.encode(wire.Probe(wire.Kind.PROBE, 1, 1, LO, time.time_ns()))
            assert await exchange(s, good, port) is not None
        assert r.counters["malformed"] == 1 and r.counters["answered"] == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="cand.probe"):
        asyncio.run(scenario())


@pytest.mark.parametrize(
    ("router", "responder", "runs"),
    [
        ({"id": "fc00:ff::2", "roles": ["egress"], "locator": "fc00:0:2::/48"}, "auto", True),
        ({"id": "fc00:ff::1", "roles": ["ingress"]}, "auto", False),
        ({"id": "10.0.0.1", "roles": ["ingress"]}, "auto", False),
        ({"id": "10.0.0.2", "roles": ["egress"], "locator": "fc00:0:2::/48"}, "auto", False),
        ({"id": "fc00:ff::1", "roles": ["ingress"]}, True, True),
        ({"id": "fc00:ff::2", "roles": ["egress"], "locator": "fc00:0:2::/48"}, False, False),
    ],
)
def test_the_responder_runs_at_egresses_by_default(
    router: dict[str, Any], responder: bool | str, runs: bool
) -> None:
    cfg = Config.model_validate(
        {"router": router, "network_cost": {"probe": {"responder": responder}}}
    )
    assert cfg.responds is runs
    assert any(isinstance(r, ProbeResponder) for r in build_adapters(cfg).responders) is runs
    assert plan(cfg)["probe_responder"] is runs
    wiring_check(cfg)  # an ingress with an IPv4 router id needs no responder: valid


def test_a_responder_asked_for_on_an_ipv4_router_id_is_refused_by_field() -> None:
    cfg = Config.model_validate(
        {"router": {"id": "10.0.0.1", "roles": ["ingress"]},
         "network_cost": {"probe": {"responder": True}}}
    )  # fmt: skip
    with pytest.raises(ConfigError) as e:
        wiring_check(cfg)
    assert "network_cost.probe" in str(e.value) and "IPv6 router id" in str(e.value)
