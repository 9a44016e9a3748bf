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
    from cand.daemon import Daemon


class DaemonCollector(Collector):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Any]:
        d = self.daemon
        for name, value in d.engine.counters.items():
            yield CounterMetricFamily(f"cand_engine_{name}", f"engine {name}", value=value)
        for name, value in d.counters.items():
            yield CounterMetricFamily(f"cand_daemon_{name}", f"daemon {name}", value=value)
        yield GaugeMetricFamily("cand_queue_depth", "events waiting", value=d.queue.qsize())
        yield GaugeMetricFamily(
            "cand_local_instances", "instances reported here", value=len(d.engine.rib.local)
        )
        yield GaugeMetricFamily(
            "cand_remote_paths", "paths learned from peers", value=len(d.engine.rib.remote)
        )
        weights = GaugeMetricFamily(
            "cand_service_eligible_instances",
            "instances that may take new flows, per D-SID",
            labels=["service"],
        )
        for svc, entry in d.engine.table.items():
            weights.add_metric([str(svc)], len(entry.eligible))
        yield weights
        dropped = CounterMetricFamily(
            "cand_metric_messages_dropped",
            "metric messages dropped, by reason",
            labels=["source", "reason"],
        )
        accepted = CounterMetricFamily(
            "cand_metric_messages_accepted", "metric messages accepted", labels=["source"]
        )
        for i, src in enumerate(d.adapters.sources):
            st = src.status()
            accepted.add_metric([str(i)], st.get("accepted", 0))
            for k, v in st.items():
                if k.startswith("dropped_"):
                    dropped.add_metric([str(i), k.removeprefix("dropped_")], v)
        yield accepted
        yield dropped


async def serve(daemon: Daemon, listen: str) -> None:
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
