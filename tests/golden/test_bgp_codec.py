"""The BGP encoding, version 1: exact bytes, and decode(encode(x)) == x."""

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
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
from cand.normalize import Scores
from cand.wire import bgp, bgp_update

ROUTE = InstanceRoute(
    key=InstanceKey(ServiceId.parse("2001:db8:5::1"), BindingId.parse("2001:db8:a::10")),
    egress=RouterId.parse("fc00:ff::3"),
    sid=ipaddress.IPv6Address("fc00:0:3:0:1:2:3:4"),
    metrics=Metrics(cpu=0.25, sessions=7, max_sessions=100, capacity=200),
    state=InstanceState.UP,
    seq=(5 << 32) | 9,
)


def test_prefix_sid_bytes() -> None:
    got = bgp.prefix_sid(ROUTE.sid, ROUTE.binding, 48)  # type: ignore[arg-type]
    assert got.hex() == (
        "05"
        "0022"  # SRv6 L3 Service TLV, 34 bytes
        "00"  # reserved
        "01"
        "001e"  # SID information sub-TLV, 30 bytes
        "00"
        "fc000000000300000001000200030004"
        "00"
        "0010"
        "00"  # SID, flags, End.DX6
        "01"
        "0006"
        "20"
        "10"
        "50"
        "00"
        "00"
        "00"  # structure: 32/16/80/0, no transposition
    )


# the large communities as an egress from before the CATS scores wrote them (codes 1-21)
LEGACY_LARGE_COMMUNITIES = (
    "0000fde8" "00000001" "000000fa"                               # load 250 per-mille
    "0000fde8" "00000002" "000000fa"                               # cpu 250 per-mille
    "0000fde8" "00000005" "00000007"                               # sessions 7
    "0000fde8" "00000006" "00000064"                               # max sessions 100
    "0000fde8" "00000009" "000000c8"                               # capacity 200
    "0000fde8" "0000000a" "00000000"                               # state up
    "0000fde8" "0000000b" "00000005"                               # seq high
    "0000fde8" "0000000c" "00000009"                               # seq low
    "0000fde8" "0000000d" "fc000000"                               # SID, high word first
    "0000fde8" "0000000e" "00030000"
    "0000fde8" "0000000f" "00010002"
    "0000fde8" "00000010" "00030004"
    "0000fde8" "00000011" "20010db8"                               # D-BID, high word first
    "0000fde8" "00000012" "000a0000"
    "0000fde8" "00000013" "00000000"
    "0000fde8" "00000014" "00000010"
)  # fmt: skip


def test_whole_attribute_block_is_golden() -> None:
    attrs = bgp.encode_attributes(ROUTE, asn=65000, locator_len=48)
    blob = b"".join(a.to_bytes() for a in attrs)
    assert [a.type for a in attrs] == [1, 25, 32, 40]
    # fmt: off
    assert blob.hex() == (
        "400101" "00"                                                  # ORIGIN IGP
        "c01914" "0003" "20010db8000a00000000000000000010" "0000"      # D-BID, route origin
        "c020e4"                  # 19 large communities (228 bytes), sorted by code
        + LEGACY_LARGE_COMMUNITIES +
        "0000fde8" "00000016" "00000008"                               # CATS L2 score 8
        "0000fde8" "00000017" "00000008"                               # L1 computing 8
        "0000fde8" "00000019" "00000009"                               # L1 service 9
        "c02825" + bgp.prefix_sid(ROUTE.sid, ROUTE.binding, 48).hex()  # type: ignore[arg-type]
    )
    # fmt: on
    parsed = bgp_update.parse_attributes(blob)
    assert bgp.decode_route(ROUTE.service, ROUTE.egress, parsed, 65000) == ROUTE


def test_scores_an_instance_computed_and_delay_are_golden() -> None:
    m = Metrics(cpu=0.25, capacity=200, delay=12.5, scores=Scores(l2=4, communication=6, service=4))
    r = InstanceRoute(ROUTE.key, ROUTE.egress, ROUTE.sid, m, seq=ROUTE.seq)
    lc = {a.type: a for a in bgp.encode_attributes(r, 65000)}[bgp.LARGE_COMMUNITY].value
    words = [lc[i : i + 12].hex() for i in range(0, len(lc), 12)]
    assert words[-4:] == [
        "0000fde80000001600000004",  # L2 4: the instance's own, not the default's 8
        "0000fde80000001800000006",  # L1 communication 6
        "0000fde80000001900000004",  # L1 service 4
        "0000fde80000001a000030d4",  # delay 12 500 microseconds
    ]
    back = bgp.decode_route(r.service, r.egress, lc_attrs(lc), 65000)
    assert back == r and back.metrics.l2 == 4 and back.metrics.load_permille == 250


def test_the_composed_l1_score_is_code_27_golden() -> None:
    """The draft's fourth L1 category, as an instance supplied it: code 27, after the delay
    (26), since 23-25 were taken by the other three categories before it existed."""
    m = Metrics(cpu=0.25, delay=40.0, scores=Scores(l2=3, computing=8, composed=3))
    r = InstanceRoute(ROUTE.key, ROUTE.egress, ROUTE.sid, m, seq=ROUTE.seq)
    lc = {a.type: a for a in bgp.encode_attributes(r, 65000)}[bgp.LARGE_COMMUNITY].value
    words = [lc[i : i + 12].hex() for i in range(0, len(lc), 12)]
    assert words[-4:] == [
        "0000fde80000001600000003",  # L2 3, the instance's own
        "0000fde80000001700000008",  # L1 computing 8
        "0000fde80000001a00009c40",  # delay 40 000 microseconds
        "0000fde80000001b00000003",  # L1 composed 3
    ]
    back = bgp.decode_route(r.service, r.egress, lc_attrs(lc), 65000)
    assert back == r and back.metrics.l1() == {"computing": 8, "composed": 3}
    # a receiver from before code 27 skips it and reads the rest of the path unchanged
    old = b"".join(lc[i : i + 12] for i in range(0, len(lc), 12) if lc[i + 7] != 27)
    before = bgp.decode_route(r.service, r.egress, lc_attrs(old), 65000)
    assert before.metrics.l1() == {"computing": 8} and before.metrics.l2 == 3


def lc_attrs(lc: bytes) -> dict[int, bgp.Attribute]:
    return {
        bgp.LARGE_COMMUNITY: bgp.Attribute(0xC0, bgp.LARGE_COMMUNITY, lc),
        bgp.PREFIX_SID: bgp.Attribute(
            0xC0,
            bgp.PREFIX_SID,
            bgp.prefix_sid(ROUTE.sid, ROUTE.binding, 48),  # type: ignore[arg-type]
        ),
    }


def test_a_route_from_an_egress_without_scores_still_decodes() -> None:
    """Mixed network during an upgrade: codes 1-21 only, as the previous encoder wrote them."""
    lc = bytes.fromhex(LEGACY_LARGE_COMMUNITIES)
    r = bgp.decode_route(ROUTE.service, ROUTE.egress, lc_attrs(lc), 65000)
    assert r == ROUTE
    assert r.metrics.scores is None  # scored here, under the default normalization
    assert (r.metrics.l2, r.metrics.l1()) == (8, {"computing": 8, "service": 9})
    assert r.metrics.load_permille == 250


def test_an_old_receiver_reads_the_new_encoding() -> None:
    """What a receiver of codes 1-21 sees of a new path: exactly the old route."""
    lc = {a.type: a for a in bgp.encode_attributes(ROUTE, 65000)}[bgp.LARGE_COMMUNITY].value
    old = b"".join(
        lc[i : i + 12] for i in range(0, len(lc), 12) if lc[i + 4 : i + 8][-1] in bgp.LEGACY_CODES
    )
    assert old.hex() == LEGACY_LARGE_COMMUNITIES


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({22: 11}, "l2 score 11"),
        ({22: 5, 23: 12}, "computing score 12"),
        ({23: 5}, "without an L2 score"),
        ({22: 5, 27: 11}, "composed score 11"),
        ({27: 5}, r"\['composed'\] without an L2 score"),
        ({22: 5, 26: 3_600_000_001}, r"metrics\.delay"),
    ],
)
def test_out_of_range_scores_refuse_the_path(extra: dict[int, int], message: str) -> None:
    lc = bytes.fromhex(LEGACY_LARGE_COMMUNITIES) + b"".join(
        struct.pack("!III", 65000, code, v) for code, v in extra.items()
    )
    with pytest.raises(bgp.CodecError, match=message):
        bgp.decode_route(ROUTE.service, ROUTE.egress, lc_attrs(lc), 65000)


def test_ipv4_binding_uses_ipv4_address_specific_community() -> None:
    r = InstanceRoute(
        key=InstanceKey(ServiceId.parse("198.51.100.1"), BindingId.parse("10.1.0.5")),
        egress=RouterId.parse("fc00:ff::3"),
        sid=ipaddress.IPv6Address("fc00:0:3::5"),
        metrics=Metrics(),
    )
    attrs = {a.type: a for a in bgp.encode_attributes(r, 65000)}
    assert attrs[16].value.hex() == "01030a0100050000"
    sid, behavior, _ = bgp.decode_prefix_sid(attrs[40].value)
    assert behavior == bgp.END_DX4
    assert bgp.decode_route(r.service, r.egress, attrs, 65000) == r


def test_mp_reach_with_addpath_and_update_decoding() -> None:
    mp = bgp.mp_reach(ROUTE)
    attrs = [mp, *bgp.encode_attributes(ROUTE, 65000)]
    body = b"".join(a.to_bytes() for a in attrs)
    msg = b"\xff" * 16 + struct.pack("!HB", 23 + len(body), 2) + b"\x00\x00"
    msg += struct.pack("!H", len(body)) + body
    upd = bgp_update.decode_update(msg)
    assert upd.announced == [(bgp.path_id(ROUTE.key), ROUTE.service, ROUTE.egress)]
    assert bgp.decode_route(ROUTE.service, ROUTE.egress, upd.attributes, 65000) == ROUTE


def _without_sid_words(a: bgp.Attribute) -> bgp.Attribute:
    v = a.value
    keep = [v[i : i + 12] for i in range(0, len(v), 12) if v[i + 7] not in bgp.CODE_SID]
    return bgp.Attribute(a.flags, a.type, b"".join(keep))


def _other_sid(a: bgp.Attribute) -> bgp.Attribute:
    v = bytearray(a.value)
    at = next(i for i in range(0, len(v), 12) if v[i + 7] == bgp.CODE_SID[-1])
    v[at + 11] ^= 1  # the SID's lowest bit
    return bgp.Attribute(a.flags, a.type, bytes(v))


def test_route_survives_a_reflector_that_drops_prefix_sid_and_ipv6_communities() -> None:
    attrs = {a.type: a for a in bgp.encode_attributes(ROUTE, 65000)}
    del attrs[bgp.PREFIX_SID], attrs[bgp.IPV6_EXTENDED_COMMUNITIES]
    assert bgp.decode_route(ROUTE.service, ROUTE.egress, attrs, 65000) == ROUTE


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: (a.pop(40), a.__setitem__(32, _without_sid_words(a[32]))), "no SRv6 SID"),
        (lambda a: a.__setitem__(32, _other_sid(a[32])), "disagree"),
        (lambda a: a.pop(32), "large communities"),
        (
            lambda a: a.__setitem__(25, bgp.binding_community(BindingId.parse("2001:db8::99"))),
            "disagree",
        ),
        (lambda a: a.__setitem__(40, bgp.Attribute(0x80, 40, a[40].value)), "flags"),
        (lambda a: a.__setitem__(40, bgp.Attribute(0xC0, 40, a[40].value[:-3])), "past the end"),
        (lambda a: a.__setitem__(32, bgp.Attribute(0xC0, 32, a[32].value[:-1])), "multiple of 12"),
    ],
)
def test_malformed_paths_are_refused(mutate, message) -> None:  # type: ignore[no-untyped-def]
    attrs = {a.type: a for a in bgp.encode_attributes(ROUTE, 65000)}
    mutate(attrs)
    with pytest.raises(bgp.CodecError, match=message):
        bgp.decode_route(ROUTE.service, ROUTE.egress, attrs, 65000)


def test_wrong_flags_never_reach_a_speaker() -> None:
    with pytest.raises(bgp.CodecError, match="flags"):
        bgp.check_flags([bgp.Attribute(0x80, bgp.LARGE_COMMUNITY, b"")])


def test_origin_asn_from_as_path() -> None:
    as_path = bgp.Attribute(0x40, 2, bytes([2, 2]) + struct.pack("!II", 65010, 65020))
    assert bgp.origin_asn({2: as_path}, 65000) == 65020
    assert bgp.origin_asn({}, 65000) == 65000


@given(
    st.integers(0, 1000),
    st.integers(1, 2**32 - 1),
    st.integers(0, 2**53 - 1),
    st.sampled_from([InstanceState.UP, InstanceState.DRAINING]),
    st.binary(),
)
def test_round_trip_and_garbage(cpu, cap, seq, state, garbage) -> None:  # type: ignore[no-untyped-def]
    r = InstanceRoute(
        ROUTE.key, ROUTE.egress, ROUTE.sid, Metrics(cpu=cpu / 1000, capacity=cap), state, seq
    )
    attrs = {a.type: a for a in bgp.encode_attributes(r, 4200000000)}
    assert bgp.decode_route(r.service, r.egress, attrs, 4200000000) == r
    with contextlib.suppress(bgp.CodecError):
        bgp.decode_route(r.service, r.egress, bgp_update.parse_attributes(garbage), 1)


# --- Edge Metadata (attribute 42), optional and off by default --------------------------------


def test_edge_metadata_attribute_is_golden() -> None:
    a = bgp.edge_metadata(ROUTE, capability=0xFF01)
    # fmt: off
    assert a.to_bytes().hex() == (
        "80" "2a" "0d"          # optional non-transitive, type 42, 13 bytes
        "0001" "0003"           # Service-Oriented Capability sub-TLV, 3 bytes
        "ff01" "08"             #   capability code 0xFF01 (configurable), CATS L2 score 8
        "0002" "0002"           # Service-Oriented Available Resource sub-TLV, 2 bytes
        "02ee"                  #   750 per-mille free (load 250)
    )
    # fmt: on
    assert bgp.decode_edge_metadata(a.value, 0xFF01) == (8, 750)
    assert bgp.decode_edge_metadata(a.value, 0x1234) == (None, 750)  # another capability
    attrs = bgp.encode_attributes(ROUTE, 65000, 48, edge_capability=0xFF01)
    assert [x.type for x in attrs] == [1, 25, 32, 40, 42]
    assert [x.type for x in bgp.encode_attributes(ROUTE, 65000, 48)] == [1, 25, 32, 40]  # off
    parsed = bgp_update.parse_attributes(b"".join(x.to_bytes() for x in attrs))
    assert bgp.decode_route(ROUTE.service, ROUTE.egress, parsed, 65000, 0xFF01) == ROUTE


def _update_with(edge: bytes) -> bytes:
    attrs = [bgp.mp_reach(ROUTE), *bgp.encode_attributes(ROUTE, 65000)]
    body = b"".join(a.to_bytes() for a in attrs) + edge
    msg = b"\xff" * 16 + struct.pack("!HB", 23 + len(body), 2) + b"\x00\x00"
    return msg + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize("flags", [0xC0, 0xA0, 0x40, 0xE0, 0x00])
def test_attribute_42_with_other_flags_is_treat_as_withdraw(flags: int) -> None:
    good = bgp.edge_metadata(ROUTE).value
    upd = bgp_update.decode_update(_update_with(bytes([flags, 42, len(good)]) + good))
    assert upd.error == "flags" and upd.announced == []
    # the extended-length form of the same attribute is fine
    ok = bgp_update.decode_update(_update_with(b"\x90\x2a" + struct.pack("!H", len(good)) + good))
    assert ok.error is None and ok.announced


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0001", "truncated sub-TLV"),
        ("00010009ff0108", "runs past the end"),
        ("00010002ff01", "must be 3"),
        ("00010003ff010b", "L2 score 11"),
        ("00010003ff010800010003ff0108", "twice"),
        ("00020003000001", "must be 2"),
        ("0002000203e9", "available 1001"),
        ("00010003ff0105", "disagree"),  # L2 5 against the communities' 8
        ("0002000200fa", "disagree"),  # 250 free against a load of 250
    ],
)
def test_malformed_edge_metadata_refuses_the_path(value: str, message: str) -> None:
    attrs = {a.type: a for a in bgp.encode_attributes(ROUTE, 65000)}
    attrs[42] = bgp.Attribute(0x80, 42, bytes.fromhex(value))
    with pytest.raises(bgp.CodecError, match=message) as e:
        bgp.decode_route(ROUTE.service, ROUTE.egress, attrs, 65000)
    assert e.value.reason == "edge_metadata"


def test_edge_metadata_unknown_sub_tlvs_are_skipped() -> None:
    attrs = {a.type: a for a in bgp.encode_attributes(ROUTE, 65000, edge_capability=7)}
    attrs[42] = bgp.Attribute(0x80, 42, bytes.fromhex("00630001ff") + attrs[42].value)
    assert bgp.decode_route(ROUTE.service, ROUTE.egress, attrs, 65000, 7) == ROUTE
