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
