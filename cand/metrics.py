"""Prometheus metrics, prefix `cand_`: read from the daemon's counters at scrape time.

Labels are never per flow or per instance address of a large table; per service is the finest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from cand.normalize import CATEGORIES, band

BANDS = ("avoid", "medium", "preferred")

if TYPE_CHECKING:
    from cand.view import DaemonView


class DaemonCollector(Collector):
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Any]:
        st = self.daemon.status()
        for name, value in st["engine"].items():
            yield CounterMetricFamily(f"cand_engine_{name}", f"engine {name}", value=value)
        for name, value in st["daemon"].items():
            yield CounterMetricFamily(f"cand_daemon_{name}", f"daemon {name}", value=value)
        yield GaugeMetricFamily("cand_queue_depth", "events waiting", value=st["queue"])
        yield GaugeMetricFamily(
            "cand_local_instances", "instances reported here", value=st["local_instances"]
        )
        yield GaugeMetricFamily(
            "cand_remote_paths", "paths learned from peers", value=st["remote_paths"]
        )
        weights = GaugeMetricFamily(
            "cand_service_eligible_instances",
            "instances that may take new flows, per D-SID",
            labels=["service"],
        )
        for svc, n in self.daemon.eligible().items():
            weights.add_metric([svc], n)
        yield weights
        yield from self._scores()
        dropped = CounterMetricFamily(
            "cand_metric_messages_dropped",
            "metric messages dropped, by reason",
            labels=["source", "reason"],
        )
        accepted = CounterMetricFamily(
            "cand_metric_messages_accepted", "metric messages accepted", labels=["source"]
        )
        for i, src in enumerate(st["metric_sources"]):
            accepted.add_metric([str(i)], src.get("accepted", 0))
            for k, v in src.items():
                if k.startswith("dropped_"):
                    dropped.add_metric([str(i), k.removeprefix("dropped_")], v)
        yield accepted
        yield dropped
        rejected = CounterMetricFamily(
            "cand_bgp_paths_rejected", "received paths refused, by reason", labels=["reason"]
        )
        for reason, n in ((st.get("speaker") or {}).get("rejected") or {}).items():
            rejected.add_metric([reason], n)
        yield rejected

    def _scores(self) -> Iterator[Any]:
        """CATS L2 scores (0..10, higher is better) per D-SID: the best an eligible instance
        has, and how many live instances are in each of the draft's bands."""
        best = GaugeMetricFamily(
            "cand_service_l2_best",
            "highest CATS L2 score (0-10, higher is better) of an instance taking new flows",
            labels=["service"],
        )
        bands = GaugeMetricFamily(
            "cand_service_instances_by_l2_band",
            "instances not down, by CATS L2 band: avoid 0-3, medium 4-7, preferred 8-10",
            labels=["service", "band"],
        )
        l1_bands = GaugeMetricFamily(
            "cand_service_instances_by_l1_band",
            "instances not down, by CATS L1 category (computing, communication, service, "
            "composed) and band of their score; an instance without a category's score is in "
            "no band of it",
            labels=["service", "category", "band"],
        )
        for svc in self.daemon.services_json():
            live = [i for i in svc["instances"] if i["state"] != "down"]
            eligible = [i["l2"] for i in live if i["weight"] > 0]
            if eligible:
                best.add_metric([svc["service"]], max(eligible))
            for name in BANDS:
                bands.add_metric(
                    [svc["service"], name], sum(1 for i in live if band(i["l2"]) == name)
                )
            for category in CATEGORIES:
                scores = [i["l1"][category] for i in live if category in i.get("l1", {})]
                for name in BANDS:
                    l1_bands.add_metric(
                        [svc["service"], category, name], sum(1 for s in scores if band(s) == name)
                    )
        yield best
        yield bands
        yield l1_bands


async def serve(daemon: DaemonView, listen: str) -> None:
    """Serve /metrics until cancelled."""
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    try:
        await asyncio.Event().wait()
    finally:
        server.shutdown()
        with contextlib.suppress(RuntimeError):
            thread.join(timeout=2)
