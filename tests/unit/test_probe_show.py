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
                     "results": 40, "sent": 42, "received": 38, "lost": 2, "ignored": 1},
    }  # fmt: skip
    text = show.egresses([row, {**row, "egress": "fc00:ff::3", "reachable": False}])
    assert "p50 10.4 p90 10.6 p99 11.0 jitter 0.1 loss 0.05 (40 probes;" in text
    assert "sent 42 answered 38 lost 2 late 1)" in text
    assert "10.4 -" in text and "unreachable" in text and "probe" in text


def test_services_show_the_probes_view_of_each_instance_egress() -> None:
    inst = {
        "binding": "2001:db8:a::2", "egress": "fc00:ff::2", "local": False,
        "sid": "fc00:0:2::10", "state": "up", "l2": 7, "l1": {}, "load_permille": 300,
        "network_cost": 10.4, "reachable": True, "cost_source": "probe", "cost_age": 0.1,
        "cost_measured": {"p50": 10.4, "p99": 12.5, "loss": 0.05}, "weight": 600,
    }  # fmt: skip
    local = {**inst, "binding": "2001:db8:a::1", "local": True, "cost_measured": None}
    svc = {"service": "2001:db8:5::1", "name": "web", "policy": "weighted",
           "flow_key": "5-tuple", "affinity_timeout": 60, "default": "drop",
           "instances": [inst, local]}  # fmt: skip
    text = show.services([svc])
    assert "probe p50/p99 loss" in text
    assert "10.4/12.5 ms 5%" in text
