"""RFC 8326 GRACEFUL_SHUTDOWN: the codec's bytes, the egress's marked copy of its RIB-out,
the ingress's decision (least preferred, not unusable) and the option's bounds."""

from __future__ import annotations

import dataclasses

import pytest

from cand import config
from cand.engine.decision import decide
from cand.engine.policy import PolicyParams, Weighted
from cand.engine.service_table import Candidate, ServiceSpec
from cand.model import InstanceRoute, InstanceState
from cand.speaker.adj_rib_out import AdjRibOut
from cand.wire import bgp, bgp_update
from tests.golden.test_bgp_codec import ROUTE
from tests.helpers import SVC, cand, route

SPEC = ServiceSpec(SVC)


def gshut(c: Candidate) -> Candidate:
    return c._replace(route=dataclasses.replace(c.route, graceful_shutdown=True))


def weights(entry):  # type: ignore[no-untyped-def]
    return {c.binding.address.packed[-1]: c.weight for c in entry.choices}


def test_the_community_is_c0_08_04_ffff0000_and_only_when_shutting_down() -> None:
    plain = bgp.encode_attributes(ROUTE, 65000, 48)
    assert bgp.COMMUNITIES not in {a.type for a in plain}
    marked = bgp.encode_attributes(dataclasses.replace(ROUTE, graceful_shutdown=True), 65000, 48)
    comm = [a for a in marked if a.type == bgp.COMMUNITIES]
    assert [a.to_bytes().hex() for a in comm] == ["c00804ffff0000"]
    # the other attributes are the same bytes, in type order with COMMUNITIES (8) first
    assert [a for a in marked if a.type != bgp.COMMUNITIES] == plain
    assert [a.type for a in marked] == sorted(a.type for a in marked)


def decoded(attrs: list[bgp.Attribute]) -> InstanceRoute:
    return bgp_update.decode_path(
        bgp.host_prefix(ROUTE.service),
        [bgp.mp_reach(ROUTE, addpath=False).to_bytes(), *(a.to_bytes() for a in attrs)],
        bgp_update.AFI_IP6,
        65000,
    )


def test_a_received_graceful_shutdown_path_decodes_as_such() -> None:
    marked = dataclasses.replace(ROUTE, graceful_shutdown=True)
    assert decoded(bgp.encode_attributes(marked, 65000, 48)) == marked
    assert decoded(bgp.encode_attributes(ROUTE, 65000, 48)) == ROUTE
    # among other communities (NO_EXPORT, 65000:7): still found; others alone: not
    attrs = bgp.encode_attributes(ROUTE, 65000, 48)
    others = bytes.fromhex("ffffff01fde80007")
    assert not decoded([*attrs, bgp.Attribute(0xC0, 8, others)]).graceful_shutdown
    both = others + bytes.fromhex("ffff0000")
    assert decoded([*attrs, bgp.Attribute(0xC0, 8, both)]).graceful_shutdown


def test_malformed_communities_are_refused() -> None:
    attrs = bgp.encode_attributes(ROUTE, 65000, 48)
    with pytest.raises(bgp.CodecError, match="multiple of 4"):
        decoded([*attrs, bgp.Attribute(0xC0, 8, b"\xff\xff\x00")])
    with pytest.raises(bgp.CodecError, match="flags"):
        decoded([*attrs, bgp.Attribute(0x40, 8, b"\xff\xff\x00\x00")])


def test_the_rib_out_hands_out_a_marked_copy_and_keeps_what_is_wanted() -> None:
    rib = AdjRibOut()
    rib.set(route(1))
    rib.set(route(2))
    marked = rib.graceful_shutdown()
    assert all(r.graceful_shutdown for r in marked.values())
    assert {k: dataclasses.replace(r, graceful_shutdown=False) for k, r in marked.items()} == (
        rib.routes()
    )
    assert not any(r.graceful_shutdown for r in rib.routes().values())


def test_a_graceful_shutdown_instance_takes_no_new_flow_while_another_can() -> None:
    p = Weighted(PolicyParams())
    before = decide(SPEC, [cand(1), cand(2)], p, None, 0.05)
    assert weights(before) == {1: 500, 2: 500}
    after = decide(SPEC, [gshut(cand(1)), cand(2)], p, before, 0.05)
    assert weights(after) == {1: 0, 2: 1000}
    # still in the entry: the data plane keeps the path its existing flows use
    assert [c.binding.address.packed[-1] for c in after.choices] == [1, 2]
    # a draining sibling cannot take new flows: the least preferred one still does
    alone = decide(SPEC, [gshut(cand(1)), cand(2, state=InstanceState.DRAINING)], p, None, 0.05)
    assert weights(alone) == {1: 1000, 2: 0}
    everyone = decide(SPEC, [gshut(cand(1)), gshut(cand(2))], p, None, 0.05)
    assert weights(everyone) == {1: 500, 2: 500}


def test_the_option_is_validated() -> None:
    base = {"router": {"id": "fc00:ff::3", "roles": ["egress"], "locator": "fc00:0:3::/48"}}
    assert config.parse({**base, "bgp": {}}).bgp.graceful_shutdown == 0  # type: ignore[union-attr]
    ok = config.parse({**base, "bgp": {"graceful_shutdown": 2.5}})
    assert ok.bgp is not None and ok.bgp.graceful_shutdown == 2.5
    for bad in (-1, 61, "soon"):
        with pytest.raises(Exception, match="graceful_shutdown"):
            config.parse({**base, "bgp": {"graceful_shutdown": bad}})
