"""What a reload applies in place and what it keeps until a restart."""

from cand.config import parse
from cand.model import RouterId
from cand.reload import plan_reload

BASE = {
    "router": {"id": "fc00:ff::1", "roles": ["ingress"]},
    "services": [{"sid": "2001:db8:5::1"}],
    "network_cost": {"static": {"fc00:ff::2": 5.0, "fc00:ff::3": 7.0}},
}


def test_nothing_changed_is_an_empty_plan() -> None:
    plan = plan_reload(parse(BASE), parse(BASE))
    assert plan.changed == [] and plan.needs_restart == [] and plan.costs == []


def test_static_costs_changed_added_and_removed() -> None:
    new = {**BASE, "network_cost": {"static": {"fc00:ff::2": 9.0, "fc00:ff::4": 1.0}}}
    plan = plan_reload(parse(BASE), parse(new))
    assert plan.changed == ["network_cost"]
    assert plan.costs == [
        (RouterId.parse("fc00:ff::2"), 9.0),
        (RouterId.parse("fc00:ff::3"), None),
        (RouterId.parse("fc00:ff::4"), 1.0),
    ]


def test_restart_only_sections_keep_their_running_values() -> None:
    new = {**BASE, "router": {"id": "fc00:ff::9", "roles": ["ingress"]}, "log": {"level": "debug"}}
    old = parse(BASE)
    plan = plan_reload(old, parse(new))
    assert plan.needs_restart == ["router"] and plan.changed == ["log"]
    assert plan.effective.router == old.router and plan.effective.log.level == "debug"
    assert str(plan.engine.router) == "fc00:ff::1"


N1 = {"address": "fc00:ff::2", "asn": 65000}
N2 = {"address": "fc00:ff::3", "asn": 65000, "passive": True}
WITH_BGP = {**BASE, "bgp": {"neighbors": [N1]}}


def test_neighbours_alone_change_in_place_when_the_speaker_can() -> None:
    new = {**BASE, "bgp": {"neighbors": [{**N1, "hold_time": 9}, N2]}}
    plan = plan_reload(parse(WITH_BGP), parse(new), live_neighbors=True)
    assert plan.changed == ["bgp.neighbors"] and plan.needs_restart == []
    assert plan.neighbors is not None
    assert [(n.address, n.hold_time) for n in plan.neighbors] == [
        ("fc00:ff::2", 9),
        ("fc00:ff::3", 90),
    ]
    assert plan.effective.bgp is not None and plan.effective.bgp.neighbors == plan.neighbors
    gone = plan_reload(parse(WITH_BGP), parse({**BASE, "bgp": {"neighbors": []}}), True)
    assert gone.neighbors == () and gone.changed == ["bgp.neighbors"]  # all removed is a change


def test_neighbours_wait_for_a_restart_when_the_speaker_cannot_or_more_of_bgp_changed() -> None:
    new = {**BASE, "bgp": {"neighbors": [N1, N2]}}
    plan = plan_reload(parse(WITH_BGP), parse(new), live_neighbors=False)
    assert plan.needs_restart == ["bgp"] and plan.neighbors is None
    assert plan.effective.bgp == parse(WITH_BGP).bgp
    both = {**BASE, "bgp": {"neighbors": [N1, N2], "listen_port": 1179}}
    plan = plan_reload(parse(WITH_BGP), parse(both), live_neighbors=True)
    assert plan.needs_restart == ["bgp"] and plan.neighbors is None
