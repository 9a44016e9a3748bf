"""Whole BGP UPDATE messages and the paths in them: framing, NLRI, next hops, received
attributes' flags and lengths (docs/wire-formats.md). The only parser of these in cand: the
ExaBGP speaker reads raw UPDATEs with `decode_update`, the GoBGP speaker reads gRPC paths
(NLRI and attributes as bytes) with `decode_path`, the wire-capture tests read captures.

Every function raises only `CodecError`, whatever the bytes, and checks each length against
what is left before reading. Errors follow RFC 7606: a message whose framing is broken is
refused whole (`reason="framing"`); a message whose attributes are malformed but whose NLRI
can be read is *treat-as-withdraw*: `Update.withdrawn` holds its NLRI and `Update.error`
says why. Prefixes that are not D-SIDs (not host routes, or addresses no service can have)
are not cand's: they are counted in `Update.foreign` and otherwise left alone.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cand.model import InstanceRoute, ModelError, RouterId, ServiceId
from cand.wire.bgp import (
    AS_PATH,
    DEFAULT_CAPABILITY,
    EDGE_METADATA,
    EDGE_METADATA_FLAGS,
    EXTENDED,
    LOCAL_PREF,
    MEMO_SIZE,
    MP_REACH_NLRI,
    MP_UNREACH_NLRI,
    NEXT_HOP,
    OPTIONAL,
    ORIGIN,
    REQUIRED_FLAGS,
    TRANSITIVE,
    Attribute,
    CodecError,
    decode_route,
)
from cand.wire.bgp import _metrics as bgp_metrics_memo

AFI_IP, AFI_IP6, SAFI_UNICAST = 1, 2, 1
MARKER = b"\xff" * 16
HEADER = 19
MAX_MESSAGE = 65535  # RFC 8654 extended messages; 4096 without them
UPDATE = 2

# flags a received attribute must carry (optional, transitive bits); lengths fixed by RFC 4271
RECEIVED_FLAGS = {**REQUIRED_FLAGS, NEXT_HOP: TRANSITIVE, LOCAL_PREF: TRANSITIVE}
RECEIVED_FLAGS[MP_UNREACH_NLRI] = OPTIONAL
FIXED_LENGTH = {ORIGIN: 1, NEXT_HOP: 4, LOCAL_PREF: 4}

Nlri = tuple[int, ServiceId]  # (ADD-PATH path identifier or 0, D-SID)


@dataclass(frozen=True, slots=True)
class Update:
    announced: list[tuple[int, ServiceId, RouterId]]
    withdrawn: list[Nlri]
    attributes: dict[int, Attribute]
    error: str | None = None  # treat-as-withdraw: why the announced NLRI are in `withdrawn`
    foreign: int = 0  # prefixes that are not D-SIDs, skipped

    @property
    def end_of_rib(self) -> bool:
        """RFC 4724: an UPDATE with nothing in it (IPv4), or an empty MP_UNREACH (others)."""
        if self.error or self.foreign or self.announced or self.withdrawn:
            return False
        return set(self.attributes) <= {MP_UNREACH_NLRI}


def parse_attributes(blob: bytes) -> dict[int, Attribute]:
    """A path-attribute block into {type: Attribute}; a duplicate or truncated one, a wrong
    flag or a wrong fixed length is a CodecError (reason "attribute" or "flags")."""
    out: dict[int, Attribute] = {}
    i = 0
    while i < len(blob):
        if i + 3 > len(blob):
            raise CodecError("truncated attribute header", "attribute")
        flags, typ = blob[i], blob[i + 1]
        if flags & EXTENDED:
            if i + 4 > len(blob):
                raise CodecError("truncated attribute header", "attribute")
            (length,) = struct.unpack_from("!H", blob, i + 2)
            i += 4
        else:
            length = blob[i + 2]
            i += 3
        if i + length > len(blob):
            raise CodecError(f"attribute {typ}: length {length} runs past the end", "attribute")
        if typ in out:
            raise CodecError(f"attribute {typ} appears twice", "attribute")
        out[typ] = Attribute(flags & ~EXTENDED, typ, blob[i : i + length])
        i += length
    check_received(out)
    return out


def check_received(attrs: Mapping[int, Attribute]) -> None:
    edge = attrs.get(EDGE_METADATA)
    if edge is not None and edge.flags != EDGE_METADATA_FLAGS:
        raise CodecError(f"attribute 42: flags {edge.flags:#04x}, must be 0x80 or 0x90", "flags")
    for t, a in attrs.items():
        want = RECEIVED_FLAGS.get(t)
        if want is not None and (a.flags & (OPTIONAL | TRANSITIVE)) != want:
            raise CodecError(
                f"attribute {t}: flags {a.flags:#04x}, must carry {want:#04x}", "flags"
            )
        size = FIXED_LENGTH.get(t)
        if size is not None and len(a.value) != size:
            raise CodecError(f"attribute {t}: {len(a.value)} bytes, must be {size}", "attribute")
    if AS_PATH in attrs and len(attrs[AS_PATH].value) % 2:
        raise CodecError("AS_PATH: odd length", "attribute")


def decode_nlri(blob: bytes, addpath: bool, afi: int) -> tuple[list[Nlri], int]:
    """NLRI prefixes into (D-SIDs with path ids, how many prefixes were not D-SIDs)."""
    if afi not in (AFI_IP, AFI_IP6):
        raise CodecError(f"AFI {afi}", "family")
    size = 16 if afi == AFI_IP6 else 4
    out: list[Nlri] = []
    foreign = 0
    i = 0
    while i < len(blob):
        pid = 0
        if addpath:
            if i + 4 > len(blob):
                raise CodecError("NLRI: truncated path identifier", "nlri")
            (pid,) = struct.unpack_from("!I", blob, i)
            i += 4
        if i >= len(blob):
            raise CodecError("NLRI: path identifier without a prefix", "nlri")
        plen = blob[i]
        if plen > size * 8:
            raise CodecError(f"NLRI: /{plen} is longer than the address", "nlri")
        n = (plen + 7) // 8
        if i + 1 + n > len(blob):
            raise CodecError(f"NLRI: /{plen} runs past the end", "nlri")
        raw = blob[i + 1 : i + 1 + n]
        i += 1 + n
        if plen != size * 8:
            foreign += 1  # not a host route: no D-SID
            continue
        addr = ipaddress.IPv6Address(raw) if afi == AFI_IP6 else ipaddress.IPv4Address(raw)
        try:
            out.append((pid, ServiceId(addr)))
        except ModelError:
            foreign += 1
    return out, foreign


def decode_mp_reach(value: bytes) -> tuple[int, RouterId, bytes]:
    """MP_REACH_NLRI (unicast only) into (AFI, next hop, NLRI bytes). IPv6 next hops are 16
    bytes or 32 (global then link-local: the global one is the egress)."""
    if len(value) < 5:
        raise CodecError("MP_REACH_NLRI: truncated", "mp_reach")
    afi, safi, nhlen = struct.unpack_from("!HBB", value, 0)
    if afi not in (AFI_IP, AFI_IP6) or safi != SAFI_UNICAST:
        raise CodecError(f"MP_REACH_NLRI: AFI {afi} SAFI {safi} is not unicast", "family")
    if 4 + nhlen + 1 > len(value):
        raise CodecError(f"MP_REACH_NLRI: next hop of {nhlen} bytes runs past the end", "mp_reach")
    nh = value[4 : 4 + nhlen]
    if nhlen in (16, 32):
        egress = _router(nh[:16])
    elif nhlen == 4 and afi == AFI_IP:
        egress = _router(nh)
    else:
        raise CodecError(f"MP_REACH_NLRI: a next hop of {nhlen} bytes for AFI {afi}", "next_hop")
    return afi, egress, value[5 + nhlen :]


@functools.lru_cache(maxsize=MEMO_SIZE)
def _router(packed: bytes) -> RouterId:
    """A next hop (4 or 16 bytes) as a RouterId: one object for every path from an egress."""
    return _egress(ipaddress.ip_address(packed))


def decode_mp_unreach(value: bytes) -> tuple[int, bytes]:
    if len(value) < 3:
        raise CodecError("MP_UNREACH_NLRI: truncated", "mp_unreach")
    afi, safi = struct.unpack_from("!HB", value, 0)
    if afi not in (AFI_IP, AFI_IP6) or safi != SAFI_UNICAST:
        raise CodecError(f"MP_UNREACH_NLRI: AFI {afi} SAFI {safi} is not unicast", "family")
    return afi, value[3:]


def _egress(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> RouterId:
    try:
        return RouterId(addr)
    except ModelError as e:
        raise CodecError(f"next hop: {e}", "next_hop") from None


def decode_update(msg: bytes, addpath: bool = True) -> Update:
    """A whole BGP UPDATE (marker included) into announced/withdrawn D-SIDs and attributes."""
    if len(msg) < HEADER + 4 or msg[:16] != MARKER or msg[18] != UPDATE:
        raise CodecError("not a BGP UPDATE", "framing")
    (length,) = struct.unpack_from("!H", msg, 16)
    if length != len(msg):
        raise CodecError(f"message length {length}, but {len(msg)} bytes", "framing")
    (wlen,) = struct.unpack_from("!H", msg, HEADER)
    if HEADER + 2 + wlen + 2 > len(msg):
        raise CodecError(f"withdrawn routes length {wlen} runs past the end", "framing")
    (alen,) = struct.unpack_from("!H", msg, HEADER + 2 + wlen)
    start = HEADER + 4 + wlen
    if start + alen > len(msg):
        raise CodecError(f"path attribute length {alen} runs past the end", "framing")
    withdrawn, foreign = decode_nlri(msg[HEADER + 2 : HEADER + 2 + wlen], addpath, AFI_IP)
    nlri4, f4 = decode_nlri(msg[start + alen :], addpath, AFI_IP)
    foreign += f4
    try:
        attrs = parse_attributes(msg[start : start + alen])
        mp = decode_mp_reach(attrs[MP_REACH_NLRI].value) if MP_REACH_NLRI in attrs else None
        mpu = decode_mp_unreach(attrs[MP_UNREACH_NLRI].value) if MP_UNREACH_NLRI in attrs else None
    except CodecError as e:
        # RFC 7606 treat-as-withdraw for what can be read; MP NLRI inside a broken attribute
        # block cannot be, and stay as they were until the peer says more
        return Update([], withdrawn + nlri4, {}, e.reason, foreign)
    if mpu is not None:
        gone, f = decode_nlri(mpu[1], addpath, mpu[0])
        withdrawn += gone
        foreign += f
    announced: list[tuple[int, ServiceId, RouterId]] = []
    if nlri4:
        if NEXT_HOP not in attrs:
            return Update([], withdrawn + nlri4, attrs, "next_hop", foreign)
        nh = _router(attrs[NEXT_HOP].value)
        announced += [(pid, svc, nh) for pid, svc in nlri4]
    if mp is not None:
        afi, nh, blob = mp
        reach, f = decode_nlri(blob, addpath, afi)
        foreign += f
        announced += [(pid, svc, nh) for pid, svc in reach]
    return Update(announced, withdrawn, attrs, None, foreign)


def decode_path(
    nlri: bytes,
    attributes: Sequence[bytes],
    afi: int,
    local_asn: int,
    edge_capability: int = DEFAULT_CAPABILITY,
) -> InstanceRoute:
    """One received path as a speaker's API hands it over (NLRI without path id, each
    attribute as wire bytes) into an InstanceRoute. What paths share (the D-SID of the NLRI,
    the next hop, ORIGIN, AS_PATH, LOCAL_PREF) is decoded once per distinct value (memoized
    on its bytes); the result is the same as decoding every path from scratch."""
    attrs: dict[int, Attribute] = {}
    for raw in attributes:
        items = _shared_attribute(raw) if raw[1:2] in _SHARED else _attribute(raw)
        for t, a in items:
            if t in attrs:
                raise CodecError(f"attribute {t} appears twice", "attribute")
            attrs[t] = a
    service = _path_service(nlri, afi)
    if MP_REACH_NLRI in attrs:
        _, egress, _ = _mp_reach(attrs[MP_REACH_NLRI].value)
    elif NEXT_HOP in attrs:
        egress = _router(attrs[NEXT_HOP].value)
    else:
        raise CodecError("no next hop", "next_hop")
    return decode_route(service, egress, attrs, local_asn, edge_capability)


# attributes every path of a peer, or of one D-SID, carries alike (GoBGP hands over one per
# element of pattrs_binary; its first byte is the flags, the second the type)
_SHARED = frozenset(bytes([t]) for t in (ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF, MP_REACH_NLRI))


def _attribute(raw: bytes) -> tuple[tuple[int, Attribute], ...]:
    return tuple(parse_attributes(raw).items())


_shared_attribute = functools.lru_cache(maxsize=MEMO_SIZE)(_attribute)
"""The same, memoized; a CodecError is raised each time, never remembered."""


@functools.lru_cache(maxsize=MEMO_SIZE)
def _path_service(nlri: bytes, afi: int) -> ServiceId:
    """The D-SID of a path's NLRI; one ServiceId object for all the paths of a D-SID."""
    found, foreign = decode_nlri(nlri, False, afi)
    if foreign or len(found) != 1:
        raise CodecError("the prefix is not a D-SID host route", "not_dsid")
    return found[0][1]


_mp_reach = functools.lru_cache(maxsize=MEMO_SIZE)(decode_mp_reach)
"""decode_mp_reach memoized: a D-SID's paths from one egress share one MP_REACH value, and
every path from an egress one RouterId object."""


_MEMOS = (_shared_attribute, _path_service, _mp_reach, _router, bgp_metrics_memo)


def memo_info() -> list[functools._CacheInfo]:
    """Hits, misses and sizes of the decoding memos (for tests and benchmarks)."""
    return [m.cache_info() for m in _MEMOS]


def clear_memos() -> None:
    """Empty every decoding memo (tests: decoding from scratch)."""
    for m in _MEMOS:
        m.cache_clear()
