"""The speakers' use of the adj-RIB-out: ExaBGP gets the gap on every connection of its
process (everything after a restart of ExaBGP, withdrawals made while away after a relay
reconnect); the GoBGP option is checked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from cand import config
from cand.adapters.exabgp import ExabgpOptions, ExabgpSpeaker, command, withdraw_command
from tests.helpers import route

CFG = {
    "router": {"id": "fc00:ff::3", "roles": ["egress"], "locator": "fc00:0:3::/48"},
    "bgp": {"speaker": "exabgp", "neighbors": [{"address": "fc00:a::1", "asn": 65000}]},
}


@dataclass
class FakeWriter:
    lines: list[str] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self.lines += data.decode().splitlines()

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None


async def connect(sp: ExabgpSpeaker) -> list[str]:
    """One connection of ExaBGP's process that ends at once: what cand sent on it."""
    reader = asyncio.StreamReader()
    reader.feed_eof()
    writer = FakeWriter()
    await sp._bridge(reader, writer)  # type: ignore[arg-type]
    return writer.lines


class FakeChild:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def test_exabgp_gets_the_gap_on_every_connection() -> None:
    sp = ExabgpSpeaker(config.parse(CFG), ExabgpOptions())
    sp.child = FakeChild(100)  # type: ignore[assignment]

    async def main() -> None:
        await sp.advertise([route(1), route(2)])  # not connected: nothing sent yet
        assert sp.held == {}
        first = await connect(sp)
        assert first == [command(r, sp.asn, sp.locator_len) for r in (route(1), route(2))]
        # the relay reconnects to the same ExaBGP: withdrawn and changed while away
        await sp.withdraw([route(1).key])
        await sp.advertise([route(2, cpu=0.9)])
        again = await connect(sp)
        assert again == [
            withdraw_command(route(1).key, sp.egress),
            command(route(2, cpu=0.9), sp.asn, sp.locator_len),
        ]
        assert await connect(sp) == []  # nothing changed
        sp.child = FakeChild(101)  # type: ignore[assignment]  # a new ExaBGP holds nothing
        assert await connect(sp) == [command(route(2, cpu=0.9), sp.asn, sp.locator_len)]
        assert sp.status()["reannounced"] == 4

    asyncio.run(main())


def test_gobgp_rib_out_check_is_validated() -> None:
    gobgp = pytest.importorskip("cand_gobgp.speaker")
    assert gobgp.GobgpOptions.parse({}).rib_out_check == 30
    assert gobgp.GobgpOptions.parse({"rib_out_check": 0}).rib_out_check == 0
    for bad in (0.5, -1, 7200, "30", True):
        with pytest.raises(ValueError, match="rib_out_check"):
            gobgp.GobgpOptions.parse({"rib_out_check": bad})
