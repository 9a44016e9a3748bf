"""`cand routes` shows what the probe source measured per egress."""

from __future__ import annotations

from cand import show


def test_routes_show_probe_statistics_beside_the_cost() -> None:
    row = {
        "egress": "fc00:ff::2",
        "cost": 10.4,
        "reachable": True,
        "source": "probe",
        "age": 0.1,
        "samples": [{"age": 0.1, "value": 10.4}, {"age": 0.3, "value": None}],
        "measured": {"p50": 10.4, "p90": 10.6, "p99": 11.0, "jitter": 0.1, "loss": 0.05,
                     "results": 40},
    }  # fmt: skip
    text = show.egresses([row, {**row, "egress": "fc00:ff::3", "reachable": False}])
    assert "p50 10.4 p90 10.6 p99 11.0 jitter 0.1 loss 0.05 (40 probes)" in text
    assert "10.4 -" in text and "unreachable" in text and "probe" in text
