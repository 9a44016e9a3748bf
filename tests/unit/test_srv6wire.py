"""The shared H.Encaps check (tests.srv6wire) on tshark's JSON layers, without tshark: a
well-formed packet passes, and each field the netns tests rely on fails it when wrong."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.srv6wire import check_h_encaps, parse

SID, SRC, VIP = "fc00:0:3::11", "fc00:1e::1", "2001:db8:5::1"


def ip6(src: str, dst: str, nxt: int, plen: int, hlim: int) -> dict[str, Any]:
    return {
        "ipv6.src": src, "ipv6.dst": dst, "ipv6.nxt": str(nxt), "ipv6.plen": str(plen),
        "ipv6.hlim": str(hlim), "ipv6.flow": "0x00012345", "ipv6.tclass": "0x00000028",
    }  # fmt: skip


def layers() -> dict[str, Any]:
    """What `tshark -T json --no-duplicate-keys` gives for a SYN of 20 bytes, encapsulated."""
    outer = ip6(SRC, SID, 43, 84, 64)
    outer["ipv6.routing"] = {
        "ipv6.routing.nxt": "41", "ipv6.routing.len": "2", "ipv6.routing.type": "4",
        "ipv6.routing.segleft": "0", "ipv6.routing.srh.last_entry": "0",
        "ipv6.routing.srh.addr": SID,
    }  # fmt: skip
    return {
        "frame": {
            "frame.protocols": "eth:ethertype:ipv6:ipv6.routing:ipv6:tcp",
            "frame.len": "138",
        },
        "ipv6": [outer, ip6("fc00:1::2", VIP, 6, 20, 63)],
        "tcp": {"tcp.srcport": "40000", "tcp.dstport": "80", "tcp.checksum.status": "1"},
    }


def check(raw: dict[str, Any]) -> None:
    check_h_encaps(
        parse(raw), source=SRC, segments=[SID], hop_limit=64, inner_dst=VIP, inner_hop_limit=63
    )


def test_a_well_formed_encapsulation_passes() -> None:
    p = parse(layers())
    assert p.srh is not None and p.srh.segments == (SID,)
    assert (p.sport, p.dport, p.checksum_ok, p.malformed) == (40000, 80, True, False)
    assert p.ip6[1].flow == 0x12345 and p.ip6[1].tclass == 0x28
    check(layers())


def _set(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(layers())
    node: Any = raw
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return raw


R = ("ipv6", 0, "ipv6.routing")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("ipv6", 0, "ipv6.nxt"), "41"),  # next header not 43
        ((*R, "ipv6.routing.type"), "3"),  # not a segment routing header
        ((*R, "ipv6.routing.segleft"), "1"),
        ((*R, "ipv6.routing.srh.last_entry"), "1"),
        ((*R, "ipv6.routing.srh.addr"), "fc00:0:3::12"),  # another instance's SID
        ((*R, "ipv6.routing.nxt"), "6"),
        ((*R, "ipv6.routing.len"), "4"),
        (("ipv6", 0, "ipv6.plen"), "83"),  # payload length off by one
        (("ipv6", 0, "ipv6.hlim"), "63"),
        (("ipv6", 0, "ipv6.src"), "fc00:1e::9"),
        (("ipv6", 1, "ipv6.hlim"), "64"),  # the inner hop limit not lowered
        (("frame", "frame.len"), "139"),  # the frame longer than the header says
        (("frame", "frame.protocols"), "eth:ethertype:ipv6:ipv6.routing:data"),  # no inner
    ],
)
def test_each_wrong_field_fails_the_check(path: tuple[Any, ...], value: str) -> None:
    with pytest.raises(AssertionError):
        check(_set(path, value))


def test_a_malformed_frame_fails_the_check() -> None:
    raw = layers()
    raw["tcp"]["_ws.malformed"] = {"_ws.expert": {}}
    with pytest.raises(AssertionError):
        check(raw)


def test_the_reduced_form_has_no_routing_header() -> None:
    raw = layers()
    del raw["ipv6"][0]["ipv6.routing"]
    raw["ipv6"][0].update({"ipv6.nxt": "41", "ipv6.plen": "60"})
    raw["frame"].update({"frame.protocols": "eth:ethertype:ipv6:ipv6:tcp", "frame.len": "114"})
    check_h_encaps(
        parse(raw), source=SRC, segments=None, hop_limit=64, inner_dst=VIP, inner_hop_limit=63
    )
    with pytest.raises(AssertionError):
        check(raw)  # a full SRH was wanted
