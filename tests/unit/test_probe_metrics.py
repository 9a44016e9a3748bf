"""Prometheus exports what the probes measured per egress and the responder's counters,
read from the same producers `cand routes` and `cand status` read (`ProbeBook.stats`,
`ProbeResponder.status`), so a renamed field fails here."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from prometheus_client.registry import CollectorRegistry

from cand.adapters.probe import ProbeResponder
from cand.config import ProbeCostConfig
from cand.engine.probe import ProbeBook, ProbeParams
from cand.metrics import DaemonCollector
from cand.model import RouterId

E2, E3 = RouterId.parse("fc00:ff::2"), RouterId.parse("fc00:ff::3")


def _book() -> ProbeBook:
    """e2: four probes, three answered (10, 11, 14 ms), one lost, one late reply."""
    book = ProbeBook(ProbeParams(rate=10, jitter=0, timeout=1.0, window=10.0), random.Random(1))
    book.set_targets([E2], 0.0)
    now = 0.0
    sent: list[int] = []
    while len(sent) < 4:
        now += 0.05
        sent += [seq for _, seq in book.due_sends(now)]
    for seq, rtt in zip(sent[:3], (10.0, 11.0, 14.0), strict=True):
        book.reply(E2, seq, rtt, now)
    book.expire(now + 1.0)
    book.reply(E2, sent[3], 30.0, now + 1.1)  # after its timeout: late, ignored
    return book


class _View:
    def __init__(self) -> None:
        self.responder = ProbeResponder(ProbeCostConfig(), ipaddress.IPv6Address("fc00:ff::2"))
        self.responder.counters.update(answered=7, rate_limited=2, malformed=1, bind_failures=3)
        self.responder.refused = {"length": 1}
        self.measured = _book().stats(E2, 2.0)

    def status(self) -> dict[str, Any]:
        return {
            "engine": {}, "daemon": {}, "queue": 0, "local_instances": 0, "remote_paths": 0,
            "metric_sources": [],
            "cost_sources": [{"kind": "probe", "send_errors": 4, "held_by_cap": 0}],
            "responders": [self.responder.status()],
        }  # fmt: skip

    def eligible(self) -> dict[str, int]:
        return {}

    def services_json(self) -> list[dict[str, Any]]:
        return []

    def cost_json(self) -> list[dict[str, Any]]:
        return [
            {"egress": str(E2), "source": "probe", "cost": 11.2, "reachable": True,
             "measured": self.measured},
            {"egress": str(E3), "source": "igp", "cost": None, "reachable": False,
             "measured": {"metric": None}},
        ]  # fmt: skip


def test_probe_figures_per_egress_and_responder_counters() -> None:
    reg = CollectorRegistry()
    reg.register(DaemonCollector(_View()))  # type: ignore[arg-type]

    def v(name: str, **labels: str) -> float | None:
        return reg.get_sample_value(name, labels)

    e2 = {"egress": str(E2)}
    assert v("cand_egress_network_cost_ms", egress=str(E2), source="probe") == 11.2
    assert v("cand_egress_reachable", **e2) == 1
    assert v("cand_egress_reachable", egress=str(E3)) == 0
    assert v("cand_egress_network_cost_ms", egress=str(E3), source="igp") is None
    assert v("cand_probe_rtt_ms", quantile="0.5", **e2) == 11.0
    assert v("cand_probe_rtt_ms", quantile="0.99", **e2) == 14.0
    assert v("cand_probe_jitter_ms", **e2) == 2.0  # (1 + 3) / 2
    assert v("cand_probe_loss_ratio", **e2) == 0.25
    assert v("cand_probe_sent_total", **e2) == 4
    assert v("cand_probe_answered_total", **e2) == 3
    assert v("cand_probe_lost_total", **e2) == 1
    assert v("cand_probe_late_total", **e2) == 1
    assert v("cand_probe_rtt_ms", quantile="0.5", egress=str(E3)) is None  # not probed
    assert v("cand_probe_send_errors_total") == 4
    assert v("cand_probe_responder_bound") == 0
    assert v("cand_probe_responder_answered_total") == 7
    assert v("cand_probe_responder_rate_limited_total") == 2
    assert v("cand_probe_responder_malformed_total") == 1
    assert v("cand_probe_responder_bind_failures_total") == 3
    assert v("cand_probe_responder_refused_total", reason="length") == 1
