"""Prometheus metrics, prefix `cand_`: read from the daemon's counters at scrape time.

Labels are never per flow or per instance address of a large table; per service or per
egress router is the finest.
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
        yield from self._network_cost(st)

    def _network_cost(self, st: dict[str, Any]) -> Iterator[Any]:
        """Per egress: the cost the decision uses, and what the probes measured over their
        window; the probe source's and the responder's counters."""
        cost = GaugeMetricFamily(
            "cand_egress_network_cost_ms",
            "network cost in force to an egress (ms), by its source",
            labels=["egress", "source"],
        )
        reachable = GaugeMetricFamily(
            "cand_egress_reachable",
            "1 while new flows may go to an egress, 0 while its cost source says unreachable",
            labels=["egress"],
        )
        rtt = GaugeMetricFamily(
            "cand_probe_rtt_ms",
            "probe round trip to an egress over the probe window (ms), by percentile",
            labels=["egress", "quantile"],
        )
        jitter = GaugeMetricFamily(
            "cand_probe_jitter_ms",
            "mean difference of consecutive probe round trips over the window (ms)",
            labels=["egress"],
        )
        loss = GaugeMetricFamily(
            "cand_probe_loss_ratio", "probes lost over the window (0-1)", labels=["egress"]
        )
        per_egress = {
            k: CounterMetricFamily(f"cand_probe_{k}", help, labels=["egress"])
            for k, help in (
                ("sent", "probes sent to an egress"),
                ("answered", "probes answered in time"),
                ("lost", "probes not answered within the timeout"),
                ("late", "replies ignored: after the timeout, duplicated or unknown"),
            )
        }
        for row in self.daemon.cost_json():
            e = row["egress"]
            if row.get("cost") is not None:
                cost.add_metric([e, row.get("source") or ""], row["cost"])
            reachable.add_metric([e], 1 if row.get("reachable") else 0)
            m = row.get("measured") or {}
            if "loss" not in m:
                continue  # not probed (another source, or no SID yet)
            for q, key in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
                if m.get(key) is not None:
                    rtt.add_metric([e, q], m[key])
            if m.get("jitter") is not None:
                jitter.add_metric([e], m["jitter"])
            loss.add_metric([e], m["loss"])
            for k, src in (("sent", "sent"), ("answered", "received"), ("lost", "lost")):
                per_egress[k].add_metric([e], m.get(src, 0))
            per_egress["late"].add_metric([e], m.get("ignored", 0))
        yield from (cost, reachable, rtt, jitter, loss, *per_egress.values())
        probe = next((c for c in st.get("cost_sources", []) if c.get("kind") == "probe"), None)
        if probe is not None:
            yield CounterMetricFamily(
                "cand_probe_send_errors",
                "probes that could not be sent (no route, an ICMP error): not counted as lost",
                value=probe.get("send_errors", 0),
            )
            yield CounterMetricFamily(
                "cand_probe_held_by_cap",
                "probe sends put off by the total probe rate cap",
                value=probe.get("held_by_cap", 0),
            )
        responder = next(
            (r for r in st.get("responders", []) if r.get("kind") == "probe-responder"), None
        )
        if responder is None:
            return
        yield GaugeMetricFamily(
            "cand_probe_responder_bound",
            "1 while the probe responder listens, 0 while its bind fails (retried)",
            value=1 if responder.get("bound") else 0,
        )
        for k, help in (
            ("answered", "probes the responder answered"),
            ("rate_limited", "probes not answered: over the total or the per-sender rate"),
            ("malformed", "packets to the responder that are no well-formed probe"),
            ("bind_failures", "tries to bind the responder's socket that failed"),
        ):
            yield CounterMetricFamily(f"cand_probe_responder_{k}", help, value=responder.get(k, 0))
        refused = CounterMetricFamily(
            "cand_probe_responder_refused",
            "packets the responder refused, by reason (malformed ones by what was wrong)",
            labels=["reason"],
        )
        for reason, n in (responder.get("refused_by_reason") or {}).items():
            refused.add_metric([reason], n)
        yield refused

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
