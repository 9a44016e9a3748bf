"""Hostile BGP input: real UPDATEs as cand writes them, mutated; whatever the bytes, only
CodecError comes out of the decoders, and what they accept is what the bytes say."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cand.model import (
    BindingId,
    InstanceKey,
    InstanceRoute,
    InstanceState,
    Metrics,
    RouterId,
    ServiceId,
)
from cand.wire import bgp, bgp_update

ROUTE = InstanceRoute(
    key=InstanceKey(ServiceId.parse("2001:db8:5::1"), BindingId.parse("2001:db8:a::10")),
    egress=RouterId.parse("fc00:ff::3"),
    sid=ipaddress.IPv6Address("fc00:0:3:0:1:2:3:4"),
    metrics=Metrics(cpu=0.25, sessions=7, max_sessions=100, capacity=200),
    state=InstanceState.UP,
    seq=(5 << 32) | 9,
)


def message(attrs: list[bgp.Attribute], withdrawn: bytes = b"", nlri: bytes = b"") -> bytes:
    body = b"".join(a.to_bytes() for a in attrs)
    inner = struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(body)) + body
    inner += nlri
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(inner), 2) + inner


ANNOUNCE = message([bgp.mp_reach(ROUTE), *bgp.encode_attributes(ROUTE, 65000)])
PID = bgp.path_id(ROUTE.key)
UNREACH = struct.pack("!HB", 2, 1) + struct.pack("!I", PID) + bgp.host_prefix(ROUTE.service)
WITHDRAW = message([bgp.Attribute(bgp.OPTIONAL, bgp.MP_UNREACH_NLRI, UNREACH)])
EOR = message([])
BASES = [ANNOUNCE, WITHDRAW, EOR]


def decode_all(msg: bytes) -> None:
    """What a speaker does with one received UPDATE: only CodecError may escape."""
    try:
        upd = bgp_update.decode_update(msg)
    except bgp.CodecError:
        return
    for _pid, svc, egress in upd.announced:
        with contextlib.suppress(bgp.CodecError):
            bgp.decode_route(svc, egress, upd.attributes, 65000)


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 2000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 2000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 2000), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, 2000), st.just(0)),
)


def mutate(msg: bytes, ops: list[tuple[str, int, object]], fix_length: bool) -> bytes:
    b = bytearray(msg)
    for op, at, arg in ops:
        at %= max(len(b), 1)
        if op == "set" and b:
            b[at] = int(arg)  # type: ignore[call-overload]
        elif op == "insert":
            b[at:at] = bytes(arg)  # type: ignore[arg-type]
        elif op == "delete":
            del b[at : at + int(arg)]  # type: ignore[call-overload]
        elif op == "truncate":
            del b[at:]
    if fix_length and len(b) >= 19:
        b[16:18] = struct.pack("!H", min(len(b), 65535))  # get past the framing check
    return bytes(b)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(BASES), st.lists(mutation, min_size=1, max_size=6), st.booleans())
def test_mutated_updates_raise_only_codec_errors(base: bytes, ops, fix: bool) -> None:  # type: ignore[no-untyped-def]
    decode_all(mutate(base, ops, fix))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_after_a_valid_header(body: bytes) -> None:
    decode_all(b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 2) + body)


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=40),
    st.lists(st.binary(max_size=80), max_size=6),
    st.sampled_from([1, 2, 3, 25]),
)
def test_decode_path_raises_only_codec_errors(nlri: bytes, attrs: list[bytes], afi: int) -> None:
    with contextlib.suppress(bgp.CodecError):
        bgp_update.decode_path(nlri, attrs, afi, 65000)


@settings(max_examples=300, deadline=None)
@given(st.lists(mutation, min_size=1, max_size=4))
def test_an_accepted_announcement_says_what_its_bytes_say(ops) -> None:  # type: ignore[no-untyped-def]
    """Mutations that still decode as an announcement name a D-SID that is in the NLRI
    bytes and an egress that is in the next-hop bytes: nothing is made up or misread."""
    msg = mutate(ANNOUNCE, ops, True)
    try:
        upd = bgp_update.decode_update(msg)
    except bgp.CodecError:
        return
    for pid, svc, egress in upd.announced:
        assert struct.pack("!I", pid) + bgp.host_prefix(svc) in msg
        mp = upd.attributes[bgp.MP_REACH_NLRI].value
        nhlen = mp[3]
        assert nhlen in (16, 32) and mp[4:20] == egress.packed


# --- one regression test per finding of the hostile-input review (issue 14) ------------------


def _with_mp(value: bytes) -> bytes:
    return message(
        [
            bgp.Attribute(bgp.OPTIONAL, bgp.MP_REACH_NLRI, value),
            *bgp.encode_attributes(ROUTE, 65000),
        ]
    )


def _mp(afi: int, safi: int, nh: bytes, nlri: bytes) -> bytes:
    return struct.pack("!HBB", afi, safi, len(nh)) + nh + b"\x00" + nlri


NLRI = struct.pack("!I", PID) + bgp.host_prefix(ROUTE.service)


@pytest.mark.parametrize("nh", [b"\x0a\x00\x00\x01", bytes(20), bytes(15)])
def test_a_next_hop_of_the_wrong_size_is_refused(nh: bytes) -> None:
    upd = bgp_update.decode_update(_with_mp(_mp(2, 1, nh, NLRI)))
    assert upd.announced == [] and upd.error == "next_hop"


def test_a_link_local_second_next_hop_is_fine() -> None:
    nh = ROUTE.egress.packed + ipaddress.IPv6Address("fe80::1").packed
    upd = bgp_update.decode_update(_with_mp(_mp(2, 1, nh, NLRI)))
    assert upd.announced == [(PID, ROUTE.service, ROUTE.egress)]


def test_a_slash_64_is_not_a_d_sid() -> None:
    prefix64 = struct.pack("!I", PID) + bytes([64]) + ROUTE.service.packed[:8]
    upd = bgp_update.decode_update(_with_mp(_mp(2, 1, ROUTE.egress.packed, prefix64)))
    assert upd.announced == [] and upd.foreign == 1 and not upd.end_of_rib


@pytest.mark.parametrize("safi", [2, 4, 128])
def test_other_safis_are_not_unicast(safi: int) -> None:
    upd = bgp_update.decode_update(_with_mp(_mp(2, safi, ROUTE.egress.packed, NLRI)))
    assert upd.announced == [] and upd.error == "family"


def test_message_length_must_match() -> None:
    with pytest.raises(bgp.CodecError) as e:
        bgp_update.decode_update(ANNOUNCE + b"\x00")
    assert e.value.reason == "framing"


def test_attribute_length_beyond_the_block_is_treat_as_withdraw() -> None:
    m = bytearray(ANNOUNCE)
    m[25] = 0xFF  # the first attribute (MP_REACH, 1-byte length) claims 255 bytes
    upd = bgp_update.decode_update(bytes(m))
    assert upd.announced == [] and upd.error == "attribute"


@pytest.mark.parametrize(("code", "flags"), [(bgp.ORIGIN, 0xC0), (bgp.MP_REACH_NLRI, 0x40)])
def test_flags_are_checked_on_every_known_attribute(code: int, flags: int) -> None:
    attrs = [bgp.mp_reach(ROUTE), *bgp.encode_attributes(ROUTE, 65000)]
    attrs = [bgp.Attribute(flags, a.type, a.value) if a.type == code else a for a in attrs]
    upd = bgp_update.decode_update(message(attrs))
    assert upd.announced == [] and upd.error == "flags"


def test_a_withdrawal_stays_a_withdrawal_when_attributes_are_broken() -> None:
    """RFC 7606 treat-as-withdraw: IPv4 NLRI in a message whose attributes do not parse."""
    nlri4 = struct.pack("!I", 7) + bytes([32, 10, 9, 9, 9])
    m = message([bgp.Attribute(0x40, bgp.ORIGIN, b"\x00\x00")], nlri=nlri4)
    upd = bgp_update.decode_update(m)
    assert upd.error == "attribute" and [p for p, _ in upd.withdrawn] == [7]


def test_end_of_rib_is_recognised_and_nothing_else_is() -> None:
    assert bgp_update.decode_update(EOR).end_of_rib
    empty_unreach = message([bgp.Attribute(bgp.OPTIONAL, bgp.MP_UNREACH_NLRI, b"\x00\x02\x01")])
    assert bgp_update.decode_update(empty_unreach).end_of_rib
    assert not bgp_update.decode_update(WITHDRAW).end_of_rib
    assert not bgp_update.decode_update(ANNOUNCE).end_of_rib


@pytest.mark.parametrize(
    ("service", "binding", "egress"),
    [("10.0.0.1", "10.1.0.5", "fc00:ff::3"), ("2001:db8:5::1", "2001:db8:a::10", "10.255.0.3")],
)
def test_the_encoder_refuses_what_it_cannot_encode(service: str, binding: str, egress: str) -> None:
    """An IPv4 D-SID or an IPv4 egress once gave AFI 2 with a 4-byte next hop."""
    r = InstanceRoute(
        InstanceKey(ServiceId.parse(service), BindingId.parse(binding)),
        RouterId.parse(egress),
        ROUTE.sid,
        ROUTE.metrics,
        ROUTE.state,
        ROUTE.seq,
    )
    with pytest.raises(bgp.CodecError, match="only an IPv6 D-SID"):
        bgp.mp_reach(r)
