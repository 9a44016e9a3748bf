"""`bgp_update.decode_path` memoizes what paths share (the D-SID of an NLRI, MP_REACH and its
next hop, ORIGIN, AS_PATH, LOCAL_PREF, equal metrics): the routes it returns must be equal to
those decoded with every memo empty, whatever came before, and a changed byte must never be
answered from a memo."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cand.model import InstanceKey, InstanceRoute, InstanceState, RouterId, ServiceId
from cand.wire import bgp, bgp_update
from tests.helpers import bid
from tests.property.strategies import metrics

ASN = 65000
EGRESSES = [RouterId.parse("fc00:a::3"), RouterId.parse("fc00:a::4")]
AS_PATH = bgp.Attribute(bgp.TRANSITIVE, bgp.AS_PATH, b"")  # iBGP: what gobgpd hands over
LOCAL_PREF = bgp.Attribute(bgp.TRANSITIVE, bgp.LOCAL_PREF, (100).to_bytes(4, "big"))


def gobgp_path(route: InstanceRoute) -> tuple[bytes, list[bytes]]:
    """A route as gobgpd's ListPath hands it on: NLRI bytes and one element per attribute."""
    attrs = [
        bgp.mp_reach(route, addpath=False),
        *bgp.encode_attributes(route, ASN),
        AS_PATH,
        LOCAL_PREF,
    ]
    attrs.sort(key=lambda a: a.type)
    return bgp.host_prefix(route.service), [a.to_bytes() for a in attrs]


def decode(path: tuple[bytes, list[bytes]]) -> InstanceRoute:
    return bgp_update.decode_path(path[0], path[1], bgp_update.AFI_IP6, ASN)


@st.composite
def tables(draw: st.DrawFn) -> list[InstanceRoute]:
    """Routes of a few D-SIDs from one or two egresses: many share attributes."""
    out = []
    for s in draw(st.lists(st.integers(1, 50), min_size=1, max_size=4, unique=True)):
        svc = ServiceId(ipaddress.IPv6Address(f"2001:db8:5::{s:x}"))
        for n in draw(st.lists(st.integers(1, 200), min_size=1, max_size=6, unique=True)):
            out.append(
                InstanceRoute(
                    key=InstanceKey(svc, bid(n)),
                    egress=draw(st.sampled_from(EGRESSES)),
                    sid=ipaddress.IPv6Address(f"fc00:0:3::{n:x}"),
                    metrics=draw(metrics),
                    state=draw(st.sampled_from([InstanceState.UP, InstanceState.DRAINING])),
                    seq=draw(st.integers(0, 2**64 - 1)),
                )
            )
    return out


@settings(max_examples=200)
@given(tables(), st.randoms(use_true_random=False))
def test_memoized_decoding_equals_decoding_from_scratch(table, rnd) -> None:  # type: ignore[no-untyped-def]
    paths = [gobgp_path(r) for r in table]
    warm = [decode(p) for p in paths]  # memos filled by this table (and earlier examples)
    order = list(range(len(paths)))
    rnd.shuffle(order)
    again = {i: decode(paths[i]) for i in order}  # read again, in another order
    bgp_update.clear_memos()
    cold = [decode(p) for p in paths]
    assert warm == cold == table
    assert [again[i] for i in range(len(paths))] == table


def test_paths_share_what_they_have_in_common() -> None:
    svc = ServiceId(ipaddress.IPv6Address("2001:db8:5::1"))
    routes = [
        InstanceRoute(
            InstanceKey(svc, bid(n)),
            EGRESSES[0],
            ipaddress.IPv6Address(f"fc00:0:3::{n:x}"),
            bgp.Metrics(cpu=0.5, capacity=100),
        )
        for n in (1, 2, 3)
    ]
    a, b, c = (decode(gobgp_path(r)) for r in routes)
    assert a.service is b.service is c.service
    assert a.egress is b.egress is c.egress
    assert a.metrics is b.metrics is c.metrics
    assert a.binding != b.binding


def test_a_changed_attribute_is_never_answered_from_a_memo() -> None:
    svc = ServiceId(ipaddress.IPv6Address("2001:db8:5::1"))
    r = InstanceRoute(
        InstanceKey(svc, bid(1)),
        EGRESSES[0],
        ipaddress.IPv6Address("fc00:0:3::1"),
        bgp.Metrics(cpu=0.5, capacity=100),
    )
    assert decode(gobgp_path(r)) == r
    # the same NLRI, ORIGIN, AS_PATH, LOCAL_PREF and MP_REACH: only the metrics changed
    busier = InstanceRoute(r.key, r.egress, r.sid, bgp.Metrics(cpu=0.9, capacity=100), seq=2)
    assert decode(gobgp_path(busier)) == busier
    # the same metrics, another next hop in MP_REACH
    moved = InstanceRoute(r.key, EGRESSES[1], r.sid, r.metrics)
    assert decode(gobgp_path(moved)) == moved
    assert decode(gobgp_path(r)) == r


def test_an_error_is_raised_every_time_never_remembered() -> None:
    svc = ServiceId(ipaddress.IPv6Address("2001:db8:5::1"))
    r = InstanceRoute(
        InstanceKey(svc, bid(1)), EGRESSES[0], ipaddress.IPv6Address("fc00:0:3::1"), bgp.Metrics()
    )
    nlri, attrs = gobgp_path(r)
    bad_origin = [a if a[1] != bgp.ORIGIN else bytes([0x80]) + a[1:] for a in attrs]  # flags
    for _ in range(2):
        with pytest.raises(bgp.CodecError) as e:
            decode((nlri, bad_origin))
        assert e.value.reason == "flags"
        with pytest.raises(bgp.CodecError) as e:
            decode((b"\x40" + bytes(8), attrs))  # a /64: no D-SID
        assert e.value.reason == "not_dsid"
    assert decode((nlri, attrs)) == r


def test_the_memos_are_bounded() -> None:
    for info in bgp_update.memo_info():
        assert info.maxsize == bgp.MEMO_SIZE
