"""Show commands, `--json` and Prometheus use the CATS names and directions: `l2` is the
score 0..10 (higher is better), `load_permille` the load (higher is worse)."""

from __future__ import annotations

import ipaddress
from typing import Any

from prometheus_client.registry import CollectorRegistry

from cand import show
from cand.engine.decision import decide
from cand.engine.policy import PolicyParams, Weighted
from cand.engine.service_table import Candidate, ServiceSpec
from cand.metrics import DaemonCollector
from cand.model import InstanceKey, InstanceRoute, Metrics
from cand.normalize import Scores
from tests.helpers import R2, R3, SVC, bid


def _route(n: int, **m: Any) -> InstanceRoute:
    return InstanceRoute(
        InstanceKey(SVC, bid(n)), R2 if n == 1 else R3, ipaddress.IPv6Address(f"fc00::{n}"),
        Metrics(**m),
    )  # fmt: skip


IDLE, BUSY, SELF = _route(1, cpu=0.1), _route(2, cpu=0.97), _route(3, scores=Scores(l2=5))
COMPOSED = _route(4, scores=Scores(l2=3, service=8, composed=3))  # scored itself, composed too


def test_route_json_has_the_draft_names_and_directions() -> None:
    j = BUSY.to_json()
    assert (j["l2"], j["l1"], j["load_permille"]) == (0, {"computing": 0}, 970)
    j = IDLE.to_json()
    assert (j["l2"], j["l1"], j["load_permille"]) == (9, {"computing": 9}, 100)
    j = SELF.to_json()
    assert (j["l2"], j["l1"], j["load_permille"]) == (5, {}, 500)


def _services() -> list[dict[str, Any]]:
    cands = [Candidate(r, 0.0, False) for r in (IDLE, BUSY, SELF, COMPOSED)]
    entry = decide(ServiceSpec(SVC), cands, Weighted(PolicyParams()), None, 0.05)
    return [entry.to_json()]


def test_show_services_and_routes_read_l2_as_a_score() -> None:
    text = show.services(_services())
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    head = text.splitlines()[1]
    assert "L2" in head and "load ‰" in head
    assert "9 preferred" in lines[str(IDLE.binding)] and "100" in lines[str(IDLE.binding)]
    assert "0 avoid" in lines[str(BUSY.binding)] and "970" in lines[str(BUSY.binding)]
    assert "5 medium" in lines[str(SELF.binding)]
    text = show.routes({"local": [BUSY.to_json()], "received": []})
    assert "0 avoid" in text and "computing=0" in text and "cpu=0.97" in text


class _View:
    def status(self) -> dict[str, Any]:
        return {"engine": {}, "daemon": {}, "queue": 0, "local_instances": 0,
                "remote_paths": 3, "metric_sources": []}  # fmt: skip

    def eligible(self) -> dict[str, int]:
        return {str(SVC): 2}

    def services_json(self) -> list[dict[str, Any]]:
        return _services()

    def cost_json(self) -> list[dict[str, Any]]:
        return []


def test_prometheus_exports_l2_scores_per_service() -> None:
    reg = CollectorRegistry()
    reg.register(DaemonCollector(_View()))  # type: ignore[arg-type]
    svc = str(SVC)
    assert reg.get_sample_value("cand_service_l2_best", {"service": svc}) == 9
    for band, n in (("avoid", 2), ("medium", 1), ("preferred", 1)):
        got = reg.get_sample_value(
            "cand_service_instances_by_l2_band", {"service": svc, "band": band}
        )
        assert got == n


def test_the_composed_l1_score_is_shown_and_exported_by_its_draft_name() -> None:
    j = COMPOSED.to_json()
    assert (j["l2"], j["l1"]) == (3, {"service": 8, "composed": 3})
    lines = {line.split()[0]: line for line in show.services(_services()).splitlines()[1:]}
    assert "L1" in lines["D-BID"]
    assert "3 avoid" in lines[str(COMPOSED.binding)]
    assert "service=8,composed=3" in lines[str(COMPOSED.binding)]
    assert "computing=9" in lines[str(IDLE.binding)]
    assert "composed=3" in show.routes({"local": [], "received": [{**j, "peer": "r2"}]})
    reg = CollectorRegistry()
    reg.register(DaemonCollector(_View()))  # type: ignore[arg-type]

    def n(category: str, band: str) -> float | None:
        labels = {"service": str(SVC), "category": category, "band": band}
        return reg.get_sample_value("cand_service_instances_by_l1_band", labels)

    assert (n("composed", "avoid"), n("composed", "medium"), n("composed", "preferred")) == (
        1,
        0,
        0,
    )
    assert (n("computing", "avoid"), n("computing", "preferred")) == (1, 1)  # BUSY 0, IDLE 9
    assert (n("service", "preferred"), n("communication", "avoid")) == (1, 0)
    assert n("network", "avoid") is None  # only the draft's four categories
