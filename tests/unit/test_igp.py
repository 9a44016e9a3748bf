"""The igp cost source's pure parts: the kernel route table from netlink messages, zebra's
JSON, and which samples an evaluation sends (zebra replaced by a stub)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from cand.adapters.igp import IgpCostSource, RouteTable, parse_zebra
from cand.config import IgpCostConfig
from cand.engine import CostSampled
from tests.helpers import R2, R3

OSPF = 188


def msg(
    dst: str,
    plen: int,
    *,
    event: str = "RTM_NEWROUTE",
    proto: int = OSPF,
    prio: int = 20,
    kind: int = 1,
    table: int = 254,
) -> dict[str, object]:
    return {
        "event": event,
        "family": socket.AF_INET6,
        "dst": dst,
        "dst_len": plen,
        "priority": prio,
        "proto": proto,
        "type": kind,
        "table": table,
    }


def test_longest_prefix_of_the_igp_protocols_wins() -> None:
    t = RouteTable(254, [OSPF])
    t.apply(msg("fc00::", 16))
    t.apply(msg("fc00:0:2::", 48))
    t.apply(msg("::", 0, proto=3))  # a boot default route: not the IGP
    t.apply(msg("fc00:0:2::1", 128, table=100))  # another table
    got = t.lookup(ipaddress.IPv6Address("fc00:0:2::1"))
    assert got is not None and str(got.network) == "fc00:0:2::/48"
    assert t.lookup(ipaddress.IPv6Address("2001:db8::1")) is None
    t.apply(msg("fc00:0:2::", 48, event="RTM_DELROUTE"))
    got = t.lookup(ipaddress.IPv6Address("fc00:0:2::1"))
    assert got is not None and str(got.network) == "fc00::/16"


def test_an_unreachable_route_is_no_route() -> None:
    t = RouteTable(254, [OSPF])
    t.apply(msg("fc00::", 16))
    t.apply(msg("fc00:0:2::", 48, kind=7))  # RTN_UNREACHABLE
    assert t.lookup(ipaddress.IPv6Address("fc00:0:2::1")) is None


def test_zebra_json_one_object_per_command() -> None:
    text = (
        '{"fc00:ff::2/128":[{"protocol":"ospf6","selected":true,"metric":25},'
        '{"protocol":"connected","metric":0}]}\n'
        '{"::/0":[]}\n'
        '{"fc00:ff::3/128":[{"protocol":"ospf6","metric":99}]}'
    )
    assert parse_zebra(text) == {ipaddress.IPv6Network("fc00:ff::2/128"): 25}


class StubZebra(IgpCostSource):
    def __init__(self, cfg: IgpCostConfig, metrics: dict[str, int]) -> None:
        super().__init__(cfg)
        self.metrics = metrics
        self.asked: list[list[str]] = []

    async def _zebra(
        self, prefixes: list[ipaddress.IPv6Network]
    ) -> dict[ipaddress.IPv6Network, int]:
        self.asked.append([str(p) for p in prefixes])
        return {p: self.metrics[str(p)] for p in prefixes if str(p) in self.metrics}


def test_evaluate_reads_zebra_only_for_changed_routes_and_sends_only_changes() -> None:
    src = StubZebra(IgpCostConfig(scale=0.5, protocols=(OSPF,)), {"fc00:ff::2/128": 20})
    src.table.apply(msg("fc00:ff::2", 128))
    sid3 = ipaddress.IPv6Address("fc00:0:3::9")
    src.watch({R2: None, R3: sid3})  # R3 followed by its SID, which has no route
    first = asyncio.run(src.evaluate(set()))
    assert first == [CostSampled(R2, "igp", 10.0), CostSampled(R3, "igp", None)]
    assert asyncio.run(src.evaluate(set())) == []  # nothing touched, nothing asked or sent
    assert src.asked == [["fc00:ff::2/128"]]
    src.metrics["fc00:ff::2/128"] = 30  # cost changed, same path: netlink still tells
    touched = src.table.apply(msg("fc00:ff::2", 128))
    assert touched is not None
    assert asyncio.run(src.evaluate({touched})) == [CostSampled(R2, "igp", 15.0)]
    src.table.apply(msg("fc00:ff::2", 128, event="RTM_DELROUTE"))
    assert asyncio.run(src.evaluate(set())) == [CostSampled(R2, "igp", None)]


def test_kernel_metric_mode_needs_no_zebra() -> None:
    src = StubZebra(IgpCostConfig(metric="kernel", protocols=(OSPF,)), {})
    src.table.apply(msg("fc00:ff::2", 128, prio=42))
    src.watch({R2: None})
    assert asyncio.run(src.evaluate(set())) == [CostSampled(R2, "igp", 42.0)]
    assert src.asked == []
