"""The P4 data plane's pure parts: the engine's entries as table rows (cand_p4.state), the
phases of Writes between what the switch holds and what is wanted, ids adopted from a
read-back, and `[dataplane.options]` for kind = "p4"."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import finsy as fy
import pytest
from cand_p4 import entries as e
from cand_p4 import names as n
from cand_p4 import state as st
from cand_p4.dataplane import P4Dataplane, parse, steered
from cand_p4.switch import Pipeline

from cand import plugins
from cand.engine.service_table import (
    Choice,
    DefaultAction,
    InstanceMode,
    ServiceEntry,
    ServiceSpec,
)
from cand.model import BindingId, FlowKeyKind, InstanceKey, InstanceState, RouterId, ServiceId

VIP = "2001:db8:5::1"
SA, SB, SC = e.ToSid("fc00:0:3::11"), e.ToSid("fc00:0:3::12"), e.ToSid("fc00:0:4::11")
STATIC = st.Static(
    routes={"fc00:0:3::/48": 2}, nexthops={2: st.Neighbour(2, "02:00:00:00:00:02", "02:aa::")}
)


def svc(weights: dict[e.Target, int], dsid: str = VIP) -> st.Steered:
    return st.Steered(dsid, False, False, tuple(weights.items()))


def want_for(ids: st.Ids, have: st.Tables, *services: st.Steered, budget: int = 64) -> st.Tables:
    return st.desired(list(services), {}, {}, STATIC, ids, have=have, budget=budget)


def kinds(phase: list[Any]) -> list[tuple[str, str]]:
    """(update type, entity kind or table) for each update of a phase."""
    out = []
    for u in phase:
        what = getattr(u, "table_id", "") or type(u).__name__
        out.append((_sign(u), what.rsplit(".", 1)[-1]))
    return out


def test_weights_become_replicated_members_of_one_group() -> None:
    ids, have = st.Ids(), st.Tables()
    want = want_for(ids, have, svc({SA: 750, SB: 250, SC: 0}))
    (sid,) = {r.service_id for r in want.services.values()}
    assert want.new_flow == {sid: sid}
    members = [want.members[m] for m in want.groups[sid]]
    assert members.count(SA) == 3 and members.count(SB) == 1 and SC not in members
    assert want.digest


def test_first_plan_orders_members_before_groups_before_entries() -> None:
    ids, have = st.Ids(), st.Tables()
    want = want_for(ids, have, svc({SA: 1, SB: 1}))
    p1, p2, p3 = st.plan(have, want, max_group_size=0)
    assert {k for _, k in kinds(p1)} == {"P4DigestEntry", "P4ActionProfileMember", "nexthop"}
    assert kinds(p2) == [("+", "P4ActionProfileGroup")]
    assert {k for _, k in kinds(p3)} == {"router", "service", "new_flow"}
    # once written, nothing is left to do
    assert st.plan(st.after(have, want), want, max_group_size=0) == []


def test_a_weight_change_is_one_group_update_with_members_added_before_and_removed_after() -> None:
    ids = st.Ids()
    before = want_for(ids, st.Tables(), svc({SA: 500, SB: 500}))
    have = st.after(st.Tables(), before)
    after = want_for(ids, have, svc({SA: 900, SB: 100}))
    phases = st.plan(have, after, max_group_size=0)
    groups = [u for ph in phases for u in ph if isinstance(_ent(u), fy.P4ActionProfileGroup)]
    assert len(groups) == 1  # the one atomic change new flows see
    adds = [p for p, ph in enumerate(phases) for u in ph if _is(u, "+", fy.P4ActionProfileMember)]
    grp = next(p for p, ph in enumerate(phases) if any(u in groups for u in ph))
    assert adds and max(adds) < grp
    assert not [u for ph in phases for u in ph if isinstance(_ent(u), fy.P4TableEntry)]
    (sid,) = after.groups
    targets = [after.members[m] for m in after.groups[sid]]
    assert targets.count(SA) == 9 and targets.count(SB) == 1
    # SA and SB keep their first members: the replicas only grew
    assert set(before.members) <= set(after.members)


def test_an_instance_removed_loses_its_members_after_the_group_update() -> None:
    ids = st.Ids()
    before = want_for(ids, st.Tables(), svc({SA: 500, SB: 500}))
    have = st.after(st.Tables(), before)
    after = want_for(ids, have, svc({SA: 1000}))
    phases = st.plan(have, after, max_group_size=0)
    grp = next(
        p for p, ph in enumerate(phases) if any(_is(u, "~", fy.P4ActionProfileGroup) for u in ph)
    )
    dels = [p for p, ph in enumerate(phases) for u in ph if _is(u, "-", fy.P4ActionProfileMember)]
    assert dels and min(dels) > grp
    assert set(after.members.values()) == {SA}


def test_a_service_without_instances_has_no_group_and_no_new_flow_entry() -> None:
    ids = st.Ids()
    before = want_for(ids, st.Tables(), svc({SA: 1}))
    have = st.after(st.Tables(), before)
    after = want_for(ids, have, svc({SA: 0}))
    assert after.groups == {} and after.new_flow == {} and VIP in after.services
    phases = st.plan(have, after, max_group_size=0)
    order = [(k, p) for p, ph in enumerate(phases) for k in kinds(ph)]
    nf = next(p for (t, k), p in order if k == "new_flow")
    grp = next(p for (t, k), p in order if k == "P4ActionProfileGroup")
    assert nf < grp  # the entry pointing at the group goes first


def test_ids_are_adopted_from_a_read_back() -> None:
    ids = st.Ids()
    want = want_for(ids, st.Tables(), svc({SA: 2, SB: 1}))
    device = st.after(st.Tables(), want)
    fresh = st.Ids()
    fresh.adopt(device)
    again = want_for(fresh, device, svc({SA: 2, SB: 1}))
    assert again == want
    assert st.plan(device, again, max_group_size=0) == []


def test_a_new_service_never_takes_an_id_the_switch_holds() -> None:
    ids = st.Ids()
    device = st.after(st.Tables(), want_for(ids, st.Tables(), svc({SA: 1}, dsid="2001:db8:6::1")))
    fresh = st.Ids()  # knows nothing: the device's member ids must still be avoided
    want = want_for(fresh, device, svc({SB: 1}))
    assert not set(want.members) & set(device.members)


def test_keep_unknown_holds_what_an_earlier_run_left() -> None:
    ids = st.Ids()
    old = st.after(st.Tables(), want_for(ids, st.Tables(), svc({SA: 1})))
    old.local_sids["fc00:0:1::11"] = st.LocalSid("2001:db8:a::10", True)
    held = st.keep_unknown(want_for(st.Ids(), old), old)
    assert held.services == old.services and held.groups == old.groups
    assert held.local_sids == old.local_sids
    assert st.plan(old, held, max_group_size=0) == []
    # without holding, all of it goes
    gone = st.plan(old, want_for(st.Ids(), old), max_group_size=0)
    deleted = {k for ph in gone for t, k in kinds(ph) if t == "-"}
    assert {"service", "new_flow", "local_sid"} <= deleted


def _ent(u: Any) -> Any:
    return u


def _sign(u: Any) -> str:
    """The update type an entity was given by +, ~ or -."""
    kind = getattr(u, "_update_type", None)
    return {"INSERT": "+", "MODIFY": "~", "DELETE": "-"}.get(getattr(kind, "name", ""), "?")


def _is(u: Any, sign: str, kind: type) -> bool:
    return isinstance(_ent(u), kind) and _sign(u) == sign


def test_read_back_entities_become_tables_and_bindings() -> None:
    member = fy.P4ActionProfileMember(
        n.INSTANCES,
        member_id=5,
        action=fy.P4TableAction("to_sid", sid=int(ipaddress.IPv6Address("fc00:0:3::11"))),
    )
    binding = fy.P4TableEntry(
        "binding",
        match=fy.P4TableMatch(
            src=int(ipaddress.IPv6Address("fc00:1::2")),
            dst=int(ipaddress.IPv6Address(VIP)),
            proto=6,
            sport=0,
            dport=0,
        ),
        action=fy.P4TableAction(
            "to_local", dbid=int(ipaddress.IPv6Address("2001:db8:a::10")), nat=1
        ),
    )
    route = fy.P4TableEntry(
        "router",
        match=fy.P4TableMatch(dst=(int(ipaddress.IPv6Address("fc00:2::")), 64)),
        action=fy.P4TableAction("route", nexthop_id=2),
    )
    nexthop = fy.P4TableEntry(
        "nexthop",
        match=fy.P4TableMatch(id=2),
        action=fy.P4TableAction("neighbour", port=2, dst_mac=0x020000000002, src_mac=1),
    )
    garbage = fy.P4TableEntry("nosuchtable", match=fy.P4TableMatch(x=1))
    have, bindings, bad = st.from_device([member, binding, route, nexthop, garbage])
    assert have.members == {5: SA}
    assert bindings == {e.FlowKey("fc00:1::2", VIP, 6, 0, 0): e.ToLocal("2001:db8:a::10", nat=True)}
    assert have.routes == {"fc00:2::/64": 2}
    assert have.nexthops == {2: st.Neighbour(2, "02:00:00:00:00:02", "00:00:00:00:00:01")}
    assert bad == 1  # counted, not raised


# --- from the engine's entries ---------------------------------------------------------------


def _choice(dbid: str, sid: str | None, w: int, **kw: Any) -> Choice:
    svc_ = ServiceId.parse(VIP)
    return Choice(
        InstanceKey(svc_, BindingId.parse(dbid)),
        RouterId.parse("fc00:1e::3"),
        ipaddress.IPv6Address(sid) if sid else None,
        w,
        kw.get("state", InstanceState.UP),
        0,
        10,
        1.0,
        kw.get("local", False),
    )


def test_steered_takes_live_instances_with_a_weight() -> None:
    spec = ServiceSpec(
        ServiceId.parse(VIP),
        flow_key=FlowKeyKind.THREE_TUPLE,
        default=DefaultAction.ROUTE,
        mode=InstanceMode.NAT,
    )
    entry = ServiceEntry(
        spec,
        (
            _choice("2001:db8:a::10", "fc00:0:3::11", 600),
            _choice("2001:db8:b::10", "fc00:0:3::12", 0),
            _choice("2001:db8:c::10", "fc00:0:3::13", 300, state=InstanceState.DOWN),
            _choice("2001:db8:d::10", None, 300),  # no SID: cannot be reached over SRv6
            _choice("2001:db8:e::10", "fc00:0:1::15", 100, local=True),
        ),
    )
    s = steered(entry, {})
    assert s.three_tuple and s.default_route
    assert s.weights == ((SA, 600), (e.ToLocal("2001:db8:e::10", nat=True), 100))


# --- options ---------------------------------------------------------------------------------

PORTS = [{"port": 1, "mac": "02:00:00:00:5e:01", "neighbour": "02:00:00:00:00:01",
          "prefixes": ["fc00:1::/64"]}]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"device_id": "1"}, "dataplane.options.device_id"),
        ({"election_id": 0}, "dataplane.options.election_id"),
        ({"idle_timeout": 0.1}, "dataplane.options.idle_timeout"),
        ({"max_members": 0}, "dataplane.options.max_members"),
        ({"address": "nowhere"}, "dataplane.options.address"),
        ({"p4info": "/x.txtpb"}, "dataplane.options.p4info"),
        ({"colour": "red"}, "dataplane.options: unknown options"),
        ({"ports": [{**PORTS[0], "mac": "zz"}]}, "dataplane.options.ports[0].mac"),
        ({"ports": [{**PORTS[0], "port": 999}]}, "dataplane.options.ports[0].port"),
        ({"ports": [{**PORTS[0], "prefixes": ["10.0.0.0/8"]}]}, "ports[0].prefixes[0]"),
        ({"ports": [PORTS[0], PORTS[0]]}, "dataplane.options.ports[1].port"),
        ({"ports": [{**PORTS[0], "vlan": 3}]}, "dataplane.options.ports[0]: unknown"),
    ],
)
def test_a_bad_option_is_named(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        parse(raw)


def test_good_options_and_the_entry_point(tmp_path: Any) -> None:
    opts, ports = parse(
        {"address": "unix:/run/p4.sock", "election_id": 3, "ports": PORTS, "idle_timeout": 30}
    )
    assert (opts.address, opts.election_id, opts.idle_timeout) == ("unix:/run/p4.sock", 3, 30)
    assert ports[0].prefixes == ("fc00:1::/64",)
    assert plugins.load("cand.dataplanes", "p4") is P4Dataplane
    (tmp_path / "cand.json").write_text("{}")
    (tmp_path / "cand.p4info.txtpb").write_text("")
    dp = P4Dataplane(opts, ports, RouterId.parse("fc00:1e::1"), pipeline=Pipeline.in_dir(tmp_path))
    assert dp.status()["connected"] is False and dp.source == "fc00:1e::1"
    with pytest.raises(ValueError, match="encap_source"):
        P4Dataplane(opts, ports, RouterId.parse("192.0.2.1"), pipeline=Pipeline.in_dir(tmp_path))


def test_from_config_reads_a_toml_dataplane_table(tmp_path: Any) -> None:
    """`[dataplane] kind = "p4"` as an operator writes it, through cand's own config loader."""
    import tomllib
    from pathlib import Path

    from cand import config

    data = tomllib.loads((Path(__file__).parents[2] / "examples" / "cand.toml").read_text())
    (tmp_path / "cand.json").write_text("{}")
    (tmp_path / "cand.p4info.txtpb").write_text("")
    p4 = tomllib.loads(
        f"""
        kind = "p4"
        [options]
        address = "unix:/run/cand/p4rt.sock"
        election_id = 7
        build_dir = "{tmp_path}"
        idle_timeout = 120
        [[options.ports]]
        port = 1
        mac = "02:00:00:00:5E:01"
        neighbour = "02:00:00:00:00:01"
        prefixes = ["fc00:1::/64", "fc00:0:3::/48"]
        """
    )
    data["dataplane"] = p4
    cfg = config.parse(data)
    dp = P4Dataplane.from_config(cfg)
    assert dp.opts.election_id == 7 and dp.opts.idle_timeout == 120
    assert dp.static.routes == {"fc00:1::/64": 1, "fc00:0:3::/48": 1}
    assert dp.static.nexthops[1] == st.Neighbour(1, "02:00:00:00:00:01", "02:00:00:00:5e:01")
    assert dp.pipeline == Pipeline.in_dir(tmp_path)
    for spec in cfg.service_specs().values():
        assert dp.modes[spec.service] is spec.mode
