"""The `igp` cost source: the IGP's metric of the route to each egress, followed live.

Netlink says when (an initial dump of the IPv6 routes, then route notifications: no polling);
the kernel says whether (an egress is reachable while a route of an IGP protocol covers its
address); the metric comes from where it is true. FRR's zebra installs every kernel route with
metric 20 whatever the OSPFv3 or IS-IS cost (measured here with ospf6d: a path of cost 20, 25,
30 was always `metric 20` in the kernel), so by default the metric is read from zebra itself,
`show ipv6 route PREFIX json`, each time netlink reports a change to the routes followed. zebra
reinstalls the kernel route when only the cost changes, so that change is notified too.

`RouteTable` and `parse_zebra` are pure and unit-tested; `IgpCostSource` is the thin shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cand.engine.events import CostSampled
from cand.model import RouterId
from cand.ports import Emit

if TYPE_CHECKING:
    from cand.config import Config, IgpCostConfig

log = logging.getLogger("cand.igp")

RTN_UNICAST = 1
SOURCE = "igp"
RETRY = 1.0
"""Seconds before zebra is asked again about a route it did not answer for."""

Network = ipaddress.IPv6Network
Address = ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class KernelRoute:
    network: Network
    priority: int
    proto: int
    kind: int
    """rtnetlink route type: 1 unicast; unreachable, blackhole and prohibit mean no way."""


RouteKey = tuple[Network, int]  # IPv6 routes are told apart by prefix and metric


class RouteTable:
    """The IGP's IPv6 routes in one kernel table, kept from netlink messages."""

    def __init__(self, table: int, protocols: Iterable[int]) -> None:
        self.table = table
        self.protocols = frozenset(protocols)
        self._by_len: dict[int, dict[Network, dict[int, KernelRoute]]] = {}

    def __len__(self) -> int:
        return sum(len(by_metric) for nets in self._by_len.values() for by_metric in nets.values())

    def apply(self, msg: Mapping[str, Any]) -> Network | None:
        """One RTM_NEWROUTE or RTM_DELROUTE (pyroute2's message, or a dict with the same
        fields); returns the prefix it changed, None when it is not one of ours."""
        event = msg.get("event")
        if event not in ("RTM_NEWROUTE", "RTM_DELROUTE"):
            return None
        if msg.get("family", socket.AF_INET6) != socket.AF_INET6:
            return None
        table = msg.get("table") or msg.get("rtm_table")
        if table != self.table or msg.get("proto") not in self.protocols:
            return None
        dst, dst_len = msg.get("dst"), int(msg.get("dst_len", 0))
        try:
            net = ipaddress.IPv6Network(f"{dst or '::'}/{dst_len}", strict=False)
        except ValueError:
            return None
        priority = int(msg.get("priority") or 0)
        nets = self._by_len.setdefault(net.prefixlen, {})
        if event == "RTM_NEWROUTE":
            route = KernelRoute(net, priority, int(msg["proto"]), int(msg.get("type", 1)))
            nets.setdefault(net, {})[priority] = route
        else:
            by_metric = nets.get(net)
            if by_metric is None or by_metric.pop(priority, None) is None:
                return None
            if not by_metric:
                del nets[net]
        return net

    def lookup(self, address: Address) -> KernelRoute | None:
        """The kernel's choice for `address` among the IGP's routes: longest prefix, then
        lowest metric; None when there is none or it leads nowhere (unreachable type)."""
        value = int(address)
        for plen in sorted(self._by_len, reverse=True):
            mask = ((1 << plen) - 1) << (128 - plen) if plen else 0
            net = Network((value & mask, plen))
            by_metric = self._by_len[plen].get(net)
            if by_metric:
                best = by_metric[min(by_metric)]
                return best if best.kind == RTN_UNICAST else None
        return None


def parse_zebra(text: str) -> dict[Network, int]:
    """Output of one or more `show ipv6 route PREFIX json` (vtysh prints them one after the
    other): per prefix, the metric of zebra's selected route."""
    out: dict[Network, int] = {}
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return out
        obj, pos = decoder.raw_decode(text, pos)
        if not isinstance(obj, dict):
            continue
        for prefix, routes in obj.items():
            try:
                net = ipaddress.IPv6Network(prefix)
            except ValueError:
                continue
            for r in routes if isinstance(routes, list) else ():
                metric = r.get("metric") if isinstance(r, dict) else None
                if r.get("selected") and isinstance(metric, int) and metric >= 0:
                    out[net] = metric


@dataclass(frozen=True, slots=True)
class _Followed:
    target: Address
    route: KernelRoute | None
    metric: int | None


class IgpCostSource:
    name = SOURCE

    def __init__(self, cfg: IgpCostConfig) -> None:
        self.cfg = cfg
        self.table = RouteTable(cfg.table, cfg.protocols)
        self._targets: dict[RouterId, Address] = {}
        self._followed: dict[RouterId, _Followed] = {}
        self._sent: dict[RouterId, float | None] = {}
        self._touched: set[Network] = set()
        self._dirty = asyncio.Event()
        self._unread: set[Network] = set()
        self.counters = {
            "route_events": 0,
            "evaluations": 0,
            "vtysh_calls": 0,
            "vtysh_errors": 0,
            "no_zebra_route": 0,
            "samples": 0,
            "resyncs": 0,
        }

    @classmethod
    def from_config(cls, config: Config) -> IgpCostSource:
        return cls(config.network_cost.igp)

    def watch(self, egresses: Mapping[RouterId, Address | None]) -> None:
        targets: dict[RouterId, Address] = {}
        for egress, sid in egresses.items():
            if self.cfg.follow == "locator" and sid is not None:
                targets[egress] = sid
            elif isinstance(egress.address, Address):
                targets[egress] = egress.address
        if targets != self._targets:
            for gone in set(self._targets) - set(targets):
                self._followed.pop(gone, None)
                self._sent.pop(gone, None)
            self._targets = targets
            self._dirty.set()

    def status(self) -> dict[str, Any]:
        return {
            "kind": SOURCE,
            "metric": self.cfg.metric,
            "routes": len(self.table),
            "watched": len(self._targets),
            **self.counters,
        }

    def detail(self) -> dict[str, dict[str, Any]]:
        return self.followed()

    def followed(self) -> dict[str, dict[str, Any]]:
        return {
            str(e): {
                "target": str(f.target),
                "prefix": str(f.route.network) if f.route else None,
                "metric": f.metric,
            }
            for e, f in sorted(self._followed.items())
        }

    async def run(self, emit: Emit) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._evaluate_forever(emit), name="igp-evaluate")
            while True:
                try:
                    await self._follow_routes()
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    # the kernel dropped notifications: what we hold may be wrong, dump again
                    self.counters["resyncs"] += 1
                    log.warning("event=igp_resync reason=enobufs")

    async def _follow_routes(self) -> None:
        from pyroute2 import AsyncIPRoute
        from pyroute2.netlink.rtnl import RTMGRP_IPV6_ROUTE

        async with AsyncIPRoute() as ipr:
            await ipr.bind(groups=RTMGRP_IPV6_ROUTE)
            fresh = RouteTable(self.cfg.table, self.cfg.protocols)
            async for msg in await ipr.route("dump", family=socket.AF_INET6):
                fresh.apply(msg)
            self.table = fresh
            log.info("event=igp_routes_dumped routes=%d", len(self.table))
            self._touched |= {f.route.network for f in self._followed.values() if f.route}
            self._dirty.set()
            async for msg in ipr.get():
                net = self.table.apply(msg)
                if net is not None:
                    self.counters["route_events"] += 1
                    self._touched.add(net)
                    self._dirty.set()

    async def _evaluate_forever(self, emit: Emit) -> None:
        while True:
            await self._dirty.wait()
            if self.cfg.settle:
                await asyncio.sleep(self.cfg.settle)  # let a delete-and-add burst end
            self._dirty.clear()
            touched, self._touched = self._touched, set()
            for event in await self.evaluate(touched):
                await emit(event)
            if self._unread:
                # zebra did not answer for some routes: ask again in a while, not in a loop
                await asyncio.sleep(RETRY)
                self._touched |= self._unread
                self._dirty.set()

    async def evaluate(self, touched: set[Network]) -> list[CostSampled]:
        """Resolve every watched egress; read zebra for those whose route is new or was
        touched. Returns the samples that differ from the last ones sent."""
        self.counters["evaluations"] += 1
        routes = {e: self.table.lookup(t) for e, t in self._targets.items()}
        metrics: dict[RouterId, int | None] = {}
        ask: dict[RouterId, Network] = {}
        for e, route in routes.items():
            if route is None:
                metrics[e] = None
                continue
            old = self._followed.get(e)
            if self.cfg.metric == "kernel":
                metrics[e] = route.priority
            elif old is None or old.route != route or route.network in touched:
                ask[e] = route.network
            else:
                metrics[e] = old.metric
        if ask:
            read = await self._zebra(sorted(set(ask.values())))
            for e, net in ask.items():
                metrics[e] = read.get(net)
                if metrics[e] is None:
                    self.counters["no_zebra_route"] += 1
        self._unread = {net for e, net in ask.items() if metrics.get(e) is None}
        out: list[CostSampled] = []
        for e, target in self._targets.items():
            route, metric = routes[e], metrics.get(e)
            if route is not None and metric is None:
                continue  # zebra did not say: keep what is in force
            self._followed[e] = _Followed(target, route, metric)
            value = None if metric is None else metric * self.cfg.scale
            if e in self._sent and self._sent[e] == value:
                continue
            self._sent[e] = value
            self.counters["samples"] += 1
            log.info("event=igp_cost egress=%s target=%s cost=%s", e, target, value)
            out.append(CostSampled(e, SOURCE, value))
        return out

    async def _zebra(self, prefixes: list[Network]) -> dict[Network, int]:
        args = [self.cfg.vtysh]
        if self.cfg.vty_socket is not None:
            args += ["--vty_socket", str(self.cfg.vty_socket)]
        for net in prefixes:
            args += ["-c", f"show ipv6 route {net} json"]
        self.counters["vtysh_calls"] += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as e:
            self.counters["vtysh_errors"] += 1
            log.error("event=igp_vtysh_failed error=%r", e)
            return {}
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.cfg.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            self.counters["vtysh_errors"] += 1
            log.error("event=igp_vtysh_failed error=timeout")
            return {}
        if proc.returncode != 0:
            self.counters["vtysh_errors"] += 1
            log.error("event=igp_vtysh_failed rc=%s stderr=%r", proc.returncode, err[:200])
            return {}
        try:
            return parse_zebra(out.decode(errors="replace"))
        except ValueError as e:
            self.counters["vtysh_errors"] += 1
            log.error("event=igp_vtysh_unparsable error=%r", e)
            return {}
