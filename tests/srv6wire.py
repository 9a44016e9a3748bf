"""SRv6 packets as Wireshark's dissectors read them: a capture file decoded by `tshark -T json`
into plain records, and the H.Encaps check that the Linux and the P4 data plane tests share.

tshark is a second opinion on the wire format, independent of scapy (which the tests also use
to build what they send): a header that only scapy accepts would pass a scapy-only check.
In CI (or with CAND_REQUIRE_NETNS=1) a missing tshark fails the test; elsewhere it skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import need

ETHERNET, IPV6 = 14, 40


def need_tshark() -> None:
    need(shutil.which("tshark") is not None, "tshark is not installed (scripts/setup)")


@dataclass(frozen=True)
class Ip6:
    src: str
    dst: str
    nxt: int
    plen: int
    hlim: int
    flow: int
    tclass: int


@dataclass(frozen=True)
class Srh:
    nxt: int
    len: int  # in 8-octet units, not counting the first 8
    type: int
    segleft: int
    last_entry: int
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Decoded:
    """One frame: the dissector chain, the IPv6 headers outermost first, the routing header
    (if any), and the transport ports and checksum verdict of the innermost TCP or UDP."""

    protocols: str
    frame_len: int
    ip6: tuple[Ip6, ...]
    srh: Srh | None
    sport: int | None
    dport: int | None
    checksum_ok: bool | None  # None: tshark could not verify it
    malformed: bool


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _int(v: str) -> int:
    return int(v, 0)


def decode(pcap: Path) -> list[Decoded]:
    """Every frame of `pcap` as tshark decodes it (transport checksums verified)."""
    run = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "json", "--no-duplicate-keys",
         "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise AssertionError(f"tshark -r {pcap} failed ({run.returncode}): {run.stderr}")
    return [parse(frame["_source"]["layers"]) for frame in json.loads(run.stdout or "[]")]


def parse(layers: dict[str, Any]) -> Decoded:
    """One frame's `layers` object from `tshark -T json --no-duplicate-keys`."""
    ip6, srh = [], None
    for h in _list(layers.get("ipv6", [])):
        ip6.append(
            Ip6(h["ipv6.src"], h["ipv6.dst"], int(h["ipv6.nxt"]), int(h["ipv6.plen"]),
                int(h["ipv6.hlim"]), _int(h["ipv6.flow"]), _int(h["ipv6.tclass"]))
        )  # fmt: skip
        r = h.get("ipv6.routing")
        if r is not None and srh is None:
            srh = Srh(
                int(r["ipv6.routing.nxt"]), int(r["ipv6.routing.len"]),
                int(r["ipv6.routing.type"]), int(r["ipv6.routing.segleft"]),
                int(r["ipv6.routing.srh.last_entry"]),
                tuple(_list(r.get("ipv6.routing.srh.addr", []))),
            )  # fmt: skip
    l4 = layers.get("tcp") or layers.get("udp") or {}
    proto = "tcp" if "tcp" in layers else "udp"
    status = l4.get(f"{proto}.checksum.status")  # 0 bad, 1 good, 2 unverified
    sport, dport = l4.get(f"{proto}.srcport"), l4.get(f"{proto}.dstport")
    frame = layers["frame"]
    return Decoded(
        protocols=frame["frame.protocols"],
        frame_len=int(frame["frame.len"]),
        ip6=tuple(ip6),
        srh=srh,
        sport=int(sport) if sport is not None else None,
        dport=int(dport) if dport is not None else None,
        checksum_ok=None if status in (None, "2") else status == "1",
        malformed="_ws.malformed" in json.dumps(layers),  # at any depth
    )


def check_h_encaps(
    p: Decoded,
    *,
    source: str,
    segments: list[str] | None,
    hop_limit: int,
    inner_dst: str,
    inner_hop_limit: int,
    transport: str = "tcp",
) -> None:
    """`p` is an H.Encaps packet as RFC 8986 and RFC 8754 define it: outer IPv6 from `source`
    to the first segment, next header 43, a type-4 routing header with Segments Left and Last
    Entry pointing at the end of `segments` (in SRH order), next header 41, then the original
    packet whole, decodable down to its transport. `segments=None` is the reduced form with
    one segment: no SRH, the outer next header is 41. Payload lengths are checked against the
    frame's size, not only against each other."""
    want = f"eth:ethertype:ipv6:{'ipv6.routing:' if segments else ''}ipv6:{transport}"
    assert p.protocols == want and not p.malformed, (p.protocols, p.malformed)
    assert len(p.ip6) == 2, p.ip6
    outer, inner = p.ip6
    assert (outer.src, outer.hlim) == (source, hop_limit), outer
    assert outer.plen == p.frame_len - ETHERNET - IPV6, (outer.plen, p.frame_len)
    srh_bytes = 0
    if segments is None:
        assert p.srh is None and outer.nxt == 41, (outer, p.srh)
    else:
        assert outer.nxt == 43 and p.srh is not None, outer
        srh_bytes = 8 + 16 * len(segments)
        assert p.srh.type == 4 and p.srh.nxt == 41 and p.srh.len == 2 * len(segments), p.srh
        assert p.srh.segments == tuple(segments), p.srh
        assert p.srh.segleft == p.srh.last_entry == len(segments) - 1, p.srh
        assert outer.dst == segments[p.srh.segleft], (outer, p.srh)  # the active segment
    assert outer.plen == srh_bytes + IPV6 + inner.plen, (outer, inner)
    assert (inner.dst, inner.hlim) == (inner_dst, inner_hop_limit), inner
