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
