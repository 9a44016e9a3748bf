"""Delay probes (cand.wire.probe) against literal bytes: docs/wire-formats.md, byte for byte."""

from __future__ import annotations

import ipaddress

import pytest

from cand.wire.probe import SIZE, Kind, Probe, ProbeError, decode, encode

ING = ipaddress.IPv6Address("fc00:ff::1")
EGR = ipaddress.IPv6Address("fc00:ff::2")

# magic "CNDP", version 1, kind 1, flags 0, session 0xdeadbeef, seq 7, sender fc00:ff::1,
# t1 = 1_700_000_000_123_456_789 ns, t2 = t3 = 0, responder ::
PROBE_HEX = (
    "434e4450" "01" "01" "0000" "deadbeef" "00000007"
    "fc0000ff000000000000000000000001"
    "17979cfe3d85cd15"
    "0000000000000000"
    "0000000000000000"
    "00000000000000000000000000000000"
)  # fmt: skip
# the reply: kind 2, t2 = t1 + 1000 ns, t3 = t1 + 3000 ns, responder fc00:ff::2
REPLY_HEX = (
    "434e4450" "01" "02" "0000" "deadbeef" "00000007"
    "fc0000ff000000000000000000000001"
    "17979cfe3d85cd15"
    "17979cfe3d85d0fd"
    "17979cfe3d85d8cd"
    "fc0000ff000000000000000000000002"
)  # fmt: skip
T1 = 1_700_000_000_123_456_789


def probe() -> Probe:
    return Probe(Kind.PROBE, 0xDEADBEEF, 7, ING, T1)


def test_probe_golden_bytes() -> None:
    assert encode(probe()) == bytes.fromhex(PROBE_HEX)
    assert len(bytes.fromhex(PROBE_HEX)) == SIZE == 72
    assert decode(bytes.fromhex(PROBE_HEX)) == probe()


def test_reply_golden_bytes() -> None:
    reply = probe().answer(EGR, T1 + 1000, T1 + 3000)
    assert encode(reply) == bytes.fromhex(REPLY_HEX)
    assert decode(bytes.fromhex(REPLY_HEX)) == reply
    assert reply.kind is Kind.REPLY and reply.seq == 7 and reply.t1 == T1


def _patch(hexs: str, offset: int, new: str) -> bytes:
    b = bytearray(bytes.fromhex(hexs))
    raw = bytes.fromhex(new)
    b[offset : offset + len(raw)] = raw
    return bytes(b)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "length"),
        (bytes.fromhex(PROBE_HEX)[:-1], "length"),
        (bytes.fromhex(PROBE_HEX) + b"\0", "length"),
        (_patch(PROBE_HEX, 0, "434e4451"), "magic"),
        (_patch(PROBE_HEX, 4, "02"), "version"),
        (_patch(PROBE_HEX, 4, "00"), "version"),
        (_patch(PROBE_HEX, 5, "03"), "kind"),
        (_patch(PROBE_HEX, 5, "00"), "kind"),
        (_patch(PROBE_HEX, 6, "0001"), "flags"),
        (_patch(PROBE_HEX, 6, "8000"), "flags"),
        (_patch(PROBE_HEX, 16, "00" * 16), "sender"),
        (_patch(PROBE_HEX, 16, "ff02" + "00" * 13 + "01"), "sender"),
        (_patch(PROBE_HEX, 32, "00" * 8), "timestamp"),
        (_patch(PROBE_HEX, 40, "0000000000000001"), "probe_fields"),
        (_patch(PROBE_HEX, 48, "0000000000000001"), "probe_fields"),
        (_patch(PROBE_HEX, 71, "01"), "probe_fields"),
        (_patch(REPLY_HEX, 56, "00" * 16), "responder"),
        (_patch(REPLY_HEX, 40, "00" * 8), "timestamp"),
        (_patch(REPLY_HEX, 48, "17979cfe3d85d0fc"), "timestamp"),  # t3 before t2
    ],
)
def test_malformed_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ProbeError) as e:
        decode(data)
    assert e.value.reason == reason


def test_every_single_byte_change_is_refused_or_decodes_to_something_else() -> None:
    # no byte of the format is ignored: a change either is refused or changes the value
    good = bytes.fromhex(REPLY_HEX)
    base = decode(good)
    for i in range(SIZE):
        bad = bytearray(good)
        bad[i] ^= 0x01
        try:
            got = decode(bytes(bad))
        except ProbeError:
            continue
        assert got != base, f"byte {i} is ignored"


def test_out_of_range_fields_are_not_encoded() -> None:
    with pytest.raises(ProbeError):
        Probe(Kind.PROBE, 1 << 32, 0, ING, T1)
    with pytest.raises(ProbeError):
        Probe(Kind.PROBE, 0, 0, ING, 1 << 64)


def test_routing_header_golden_bytes() -> None:
    from cand.wire.probe import routing_header

    srh = routing_header(ipaddress.IPv6Address("fc00:0:2::10"), EGR)
    assert srh == bytes.fromhex(
        "00" "04" "04" "01" "01" "00" "0000"
        "fc0000ff000000000000000000000002"
        "fc000000000200000000000000000010"
    )  # fmt: skip
