"""Dyncast instance routes in BGP, encoding version 1 (docs/wire-formats.md, byte-exact).

One path per instance: NLRI = the D-SID as a host prefix, ADD-PATH path identifier =
a stable hash of (D-SID, D-BID), NEXT_HOP = the egress. cand owns three attributes, all
optional transitive (0xC0) so that every speaker and reflector carries them unchanged:

- BGP Prefix-SID (40): SRv6 L3 Service TLV with the instance's SID (End.DX6 / End.DX4) and
  the SID structure;
- the D-BID: an IPv6 address-specific extended community (25, RFC 5701) for an IPv6 D-BID,
  or an IPv4 address-specific extended community inside EXTENDED_COMMUNITIES (16) for IPv4,
  both sub-type 0x03 (Route Origin);
- on a stop, the well-known community GRACEFUL_SHUTDOWN (65535:0, RFC 8326) in COMMUNITIES
  (8): the path is about to be withdrawn, receivers send no new flows to it while another
  instance can take them;
- the metrics: large communities (32, RFC 8092) `<origin ASN>:<code>:<value>`, and the SID
  and the D-BID once more as 32-bit words among them (codes 13-21), because FRR 8.4, as a
  route reflector of IPv6 unicast, drops both the Prefix-SID and the IPv6 address-specific
  extended community (measured) and passes large communities through. The dedicated
  attributes win; a disagreement between the two copies refuses the path.

Pure: bytes in, values out. The same functions serve the GoBGP speaker (pattrs_binary), the
ExaBGP speaker (generic attributes) and the wire-capture tests.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cand.model import (
    BindingId,
    InstanceKey,
    InstanceRoute,
    InstanceState,
    Metrics,
    ModelError,
    RouterId,
    ServiceId,
)
from cand.normalize import SCORE_MAX, Scores

ENCODING_VERSION = 1

# path attribute type codes
ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF, COMMUNITIES = 1, 2, 3, 5, 8
MP_REACH_NLRI, MP_UNREACH_NLRI = 14, 15
EXTENDED_COMMUNITIES, IPV6_EXTENDED_COMMUNITIES = 16, 25
LARGE_COMMUNITY, PREFIX_SID = 32, 40
EDGE_METADATA = 42  # draft-ietf-idr-5g-edge-service-metadata: optional non-transitive

OPTIONAL, TRANSITIVE, PARTIAL, EXTENDED = 0x80, 0x40, 0x20, 0x10
OPT_TRANS = OPTIONAL | TRANSITIVE

# flags every attribute cand writes must carry (GoBGP accepts a wrong flag through its API and
# the receiver then resets the session: check before handing anything to a speaker)
REQUIRED_FLAGS = {
    ORIGIN: TRANSITIVE,
    AS_PATH: TRANSITIVE,
    MP_REACH_NLRI: OPTIONAL,
    COMMUNITIES: OPT_TRANS,
    EXTENDED_COMMUNITIES: OPT_TRANS,
    IPV6_EXTENDED_COMMUNITIES: OPT_TRANS,
    LARGE_COMMUNITY: OPT_TRANS,
    PREFIX_SID: OPT_TRANS,
    EDGE_METADATA: OPTIONAL,
}
EDGE_METADATA_FLAGS = OPTIONAL
"""Attribute 42's flags, exactly (0x90 on the wire when the length needs two octets): the
partial bit has no business on a non-transitive attribute."""

# Edge Metadata sub-TLVs as cand writes them: `type 2 | length 2 | value`
SUB_CAPABILITY = 1  # Service-Oriented Capability: capability code 2 | CATS L2 score 1
SUB_AVAILABLE = 2  # Service-Oriented Available Resource: available share, per-mille 2
DEFAULT_CAPABILITY = 0xFF01
"""The capability code the L2 score is filed under. The draft assigns none: configurable
(`bgp.edge_metadata_capability`), and both ends of a session must agree on it."""

ROUTE_ORIGIN_SUBTYPE = 0x03
GRACEFUL_SHUTDOWN = 0xFFFF0000  # 65535:0, RFC 8326 (well-known, RFC 1997 numbering)
SRV6_L3_SERVICE_TLV = 5
SRV6_SID_INFORMATION = 1
SRV6_SID_STRUCTURE = 1
END_DX6, END_DX4 = 0x0010, 0x0011

# large-community metric codes (local data part 1); docs/wire-formats.md lists them
CODE_LOAD_PERMILLE = 1  # called "L2" before the CATS scores (22-25) existed; same bytes
CODE_CPU = 2
CODE_GPU = 3
CODE_MEMORY = 4
CODE_SESSIONS = 5
CODE_MAX_SESSIONS = 6
CODE_QUEUE = 7
CODE_MAX_QUEUE = 8
CODE_CAPACITY = 9
CODE_STATE = 10
CODE_SEQ_HIGH = 11
CODE_SEQ_LOW = 12
CODE_SID = (13, 14, 15, 16)  # the SRv6 SID again, as four 32-bit words, most significant first
CODE_BID6 = (17, 18, 19, 20)  # an IPv6 D-BID again, likewise
CODE_BID4 = 21  # an IPv4 D-BID again
CODE_L2_SCORE = 22  # CATS L2, 0..10, higher is better
# CATS L1, 0..10; composed came after the delay took 26
CODE_L1_SCORES = {23: "computing", 24: "communication", 25: "service", 27: "composed"}
CODE_DELAY_US = 26  # L0 service delay, microseconds
CODES = range(1, 28)
LEGACY_CODES = range(1, 22)
"""What a receiver from before the CATS scores reads; it ignores codes it does not know."""
_PERMILLE = {CODE_CPU: "cpu", CODE_GPU: "gpu", CODE_MEMORY: "memory"}
_COUNTS = {
    CODE_SESSIONS: "sessions",
    CODE_MAX_SESSIONS: "max_sessions",
    CODE_QUEUE: "queue",
    CODE_MAX_QUEUE: "max_queue",
}
_STATES = {InstanceState.UP: 0, InstanceState.DRAINING: 1}


class CodecError(ValueError):
    """Bytes that are not a valid Dyncast route: the path is treated as withdrawn. `reason`
    is a short word to count it by (`cand status`, Prometheus)."""

    def __init__(self, message: str, reason: str = "dyncast") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Attribute:
    flags: int
    type: int
    value: bytes

    def to_bytes(self) -> bytes:
        if len(self.value) > 255:
            return (
                struct.pack("!BBH", self.flags | EXTENDED, self.type, len(self.value)) + self.value
            )
        return struct.pack("!BBB", self.flags & ~EXTENDED, self.type, len(self.value)) + self.value


def path_id(key: InstanceKey) -> int:
    """ADD-PATH path identifier: stable per (D-SID, D-BID) at its origin, never 0."""
    return key.stable_hash(4) or 1


def host_prefix(service: ServiceId) -> bytes:
    """NLRI prefix bytes: length in bits, then the address (a host route)."""
    return bytes([service.address.max_prefixlen]) + service.packed


# --- encoding --------------------------------------------------------------------------------


def sid_structure(locator_len: int) -> bytes:
    """Block = the first min(L, 32) bits of the locator, node = the rest, function = the
    remaining 128 - L bits (cand's function is a hash in the low bits), no argument."""
    block = min(locator_len, 32)
    return bytes([block, locator_len - block, 128 - locator_len, 0, 0, 0])


def prefix_sid(sid: ipaddress.IPv6Address, binding: BindingId, locator_len: int = 64) -> bytes:
    behavior = END_DX6 if binding.version == 6 else END_DX4
    structure = struct.pack("!BH", SRV6_SID_STRUCTURE, 6) + sid_structure(locator_len)
    info_value = b"\x00" + sid.packed + b"\x00" + struct.pack("!H", behavior) + b"\x00" + structure
    info = struct.pack("!BH", SRV6_SID_INFORMATION, len(info_value)) + info_value
    service_value = b"\x00" + info
    return struct.pack("!BH", SRV6_L3_SERVICE_TLV, len(service_value)) + service_value


def graceful_shutdown_community() -> Attribute:
    """COMMUNITIES (8, optional transitive) holding GRACEFUL_SHUTDOWN: `c0 08 04 ffff0000`."""
    return Attribute(OPT_TRANS, COMMUNITIES, struct.pack("!I", GRACEFUL_SHUTDOWN))


def has_graceful_shutdown(attrs: Mapping[int, Attribute]) -> bool:
    """Whether a path carries GRACEFUL_SHUTDOWN among its communities (others are ignored)."""
    a = attrs.get(COMMUNITIES)
    if a is None:
        return False
    if len(a.value) % 4:
        raise CodecError("communities: length not a multiple of 4")
    return any(
        struct.unpack_from("!I", a.value, i)[0] == GRACEFUL_SHUTDOWN
        for i in range(0, len(a.value), 4)
    )


def binding_community(binding: BindingId) -> Attribute:
    if binding.version == 6:
        value = bytes([0x00, ROUTE_ORIGIN_SUBTYPE]) + binding.packed + b"\x00\x00"
        return Attribute(OPT_TRANS, IPV6_EXTENDED_COMMUNITIES, value)
    value = bytes([0x01, ROUTE_ORIGIN_SUBTYPE]) + binding.packed + b"\x00\x00"
    return Attribute(OPT_TRANS, EXTENDED_COMMUNITIES, value)


def metric_values(route: InstanceRoute) -> list[tuple[int, int]]:
    m = route.metrics
    cats = m.cats
    out = [(CODE_LOAD_PERMILLE, m.load_permille), (CODE_L2_SCORE, cats.l2)]
    for code, category in CODE_L1_SCORES.items():
        v = getattr(cats, category)
        if v is not None:
            out.append((code, v))
    if m.delay is not None:
        out.append((CODE_DELAY_US, round(m.delay * 1000)))
    for code, name in _PERMILLE.items():
        v = getattr(m, name)
        if v is not None:
            out.append((code, round(v * 1000)))
    for code, name in _COUNTS.items():
        v = getattr(m, name)
        if v is not None:
            out.append((code, v))
    out.append((CODE_CAPACITY, m.capacity))
    if route.state not in _STATES:
        raise CodecError(f"{route.key}: a {route.state.value} instance is withdrawn, not encoded")
    out.append((CODE_STATE, _STATES[route.state]))
    out.append((CODE_SEQ_HIGH, route.seq >> 32))
    out.append((CODE_SEQ_LOW, route.seq & 0xFFFFFFFF))
    if route.sid is not None:
        # FRR 8.4 drops Prefix-SID and IPv6 ext communities when reflecting: keep copies here
        out += _words(CODE_SID, int(route.sid))
    if route.binding.version == 6:
        out += _words(CODE_BID6, int(route.binding.address))
    else:
        out.append((CODE_BID4, int(route.binding.address)))
    return out


def _words(codes: tuple[int, ...], value: int) -> list[tuple[int, int]]:
    return [(c, (value >> (32 * (len(codes) - 1 - i))) & 0xFFFFFFFF) for i, c in enumerate(codes)]


def _unwords(codes: tuple[int, ...], got: Mapping[int, int]) -> int | None:
    value = 0
    for c in codes:  # most significant first
        word = got.get(c)
        if word is None:
            return None
        value = (value << 32) | word
    return value


def large_communities(asn: int, values: Iterable[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack("!III", asn, code, value) for code, value in sorted(values))


def edge_metadata(route: InstanceRoute, capability: int = DEFAULT_CAPABILITY) -> Attribute:
    """Attribute 42 (0x80) for draft-aware direct peers: the CATS L2 score as a
    Service-Oriented Capability sub-TLV under `capability`, and the share of the instance
    that is free (1000 - load per-mille) as a Service-Oriented Available Resource sub-TLV.
    Non-transitive: a reflector that does not know it drops it, which is why the large
    communities stay the primary encoding and this is only ever a second copy."""
    if not 0 <= capability <= 0xFFFF:
        raise CodecError(f"edge metadata: capability code {capability} is not 0..65535")
    cap = struct.pack("!HB", capability, route.metrics.l2)
    free = struct.pack("!H", 1000 - route.metrics.load_permille)
    value = (
        struct.pack("!HH", SUB_CAPABILITY, len(cap))
        + cap
        + struct.pack("!HH", SUB_AVAILABLE, len(free))
        + free
    )
    return Attribute(EDGE_METADATA_FLAGS, EDGE_METADATA, value)


def decode_edge_metadata(
    value: bytes, capability: int = DEFAULT_CAPABILITY
) -> tuple[int | None, int | None]:
    """(L2 score under `capability`, available per-mille) from attribute 42, each None when
    absent. Sub-TLVs of other types, and capabilities under other codes, are skipped; a
    truncated or misshapen one, or one that appears twice, is a CodecError."""
    score: int | None = None
    free: int | None = None
    for typ, sub in _tlvs16(value):
        if typ == SUB_CAPABILITY:
            if len(sub) != 3:
                raise CodecError(
                    f"edge metadata capability: {len(sub)} bytes, must be 3", "edge_metadata"
                )
            code, v = struct.unpack("!HB", sub)
            if code != capability:
                continue
            if score is not None:
                raise CodecError(f"edge metadata: capability {code} appears twice", "edge_metadata")
            if v > SCORE_MAX:
                raise CodecError(f"edge metadata: L2 score {v} > {SCORE_MAX}", "edge_metadata")
            score = v
        elif typ == SUB_AVAILABLE:
            if len(sub) != 2:
                raise CodecError(
                    f"edge metadata available resource: {len(sub)} bytes, must be 2",
                    "edge_metadata",
                )
            if free is not None:
                raise CodecError("edge metadata: available resource appears twice", "edge_metadata")
            (free,) = struct.unpack("!H", sub)
            if free > 1000:
                raise CodecError(f"edge metadata: available {free} per-mille", "edge_metadata")
    return score, free


def _tlvs16(blob: bytes) -> Iterable[tuple[int, bytes]]:
    i = 0
    while i < len(blob):
        if i + 4 > len(blob):
            raise CodecError("edge metadata: truncated sub-TLV", "edge_metadata")
        typ, length = struct.unpack_from("!HH", blob, i)
        if i + 4 + length > len(blob):
            raise CodecError(
                f"edge metadata sub-TLV {typ}: length {length} runs past the end", "edge_metadata"
            )
        yield typ, blob[i + 4 : i + 4 + length]
        i += 4 + length


def encode_attributes(
    route: InstanceRoute,
    asn: int,
    locator_len: int = 64,
    edge_capability: int | None = None,
) -> list[Attribute]:
    """The attributes cand owns for one instance path, in type order (ORIGIN included);
    with `edge_capability`, the Edge Metadata attribute (42) too (`edge_metadata`)."""
    if route.sid is None:
        raise CodecError(f"{route.key}: no SRv6 SID to advertise")
    attrs = [
        Attribute(TRANSITIVE, ORIGIN, b"\x00"),
        binding_community(route.binding),
        Attribute(OPT_TRANS, LARGE_COMMUNITY, large_communities(asn, metric_values(route))),
        Attribute(OPT_TRANS, PREFIX_SID, prefix_sid(route.sid, route.binding, locator_len)),
    ]
    if route.graceful_shutdown:
        attrs.append(graceful_shutdown_community())
    if edge_capability is not None:
        attrs.append(edge_metadata(route, edge_capability))
    attrs.sort(key=lambda a: a.type)
    check_flags(attrs)
    return attrs


def mp_reach(route: InstanceRoute, addpath: bool = True) -> Attribute:
    """MP_REACH_NLRI (IPv6 unicast) with the egress as next hop. Anything else would need an
    encoding cand does not write (RFC 8950 next hops, IPv4-mapped ones): refused."""
    if route.service.address.version != 6 or route.egress.address.version != 6:
        raise CodecError(f"{route.key}: only an IPv6 D-SID with an IPv6 egress can be encoded")
    nlri = (struct.pack("!I", path_id(route.key)) if addpath else b"") + host_prefix(route.service)
    nh = route.egress.packed
    value = struct.pack("!HBB", 2, 1, len(nh)) + nh + b"\x00" + nlri
    return Attribute(OPTIONAL, MP_REACH_NLRI, value)


def check_flags(attrs: Iterable[Attribute]) -> None:
    for a in attrs:
        if a.type == EDGE_METADATA and a.flags & ~EXTENDED != EDGE_METADATA_FLAGS:
            raise CodecError(f"attribute 42: flags {a.flags:#04x}, must be 0x80 (or 0x90)", "flags")
        want = REQUIRED_FLAGS.get(a.type)
        if want is not None and (a.flags & (OPTIONAL | TRANSITIVE)) != want:
            raise CodecError(f"attribute {a.type}: flags {a.flags:#04x}, must carry {want:#04x}")


# --- decoding --------------------------------------------------------------------------------


def decode_prefix_sid(value: bytes) -> tuple[ipaddress.IPv6Address, int, bytes | None]:
    """(SID, endpoint behaviour, structure) from a Prefix-SID attribute's SRv6 L3 service TLV."""
    for typ, tlv in _tlvs(value, 2):
        if typ != SRV6_L3_SERVICE_TLV:
            continue
        if len(tlv) < 1:
            raise CodecError("SRv6 L3 service TLV: empty")
        for sub_type, sub in _tlvs(tlv[1:], 2):
            if sub_type != SRV6_SID_INFORMATION:
                continue
            if len(sub) < 21:
                raise CodecError(f"SRv6 SID information: {len(sub)} bytes, need 21")
            sid = ipaddress.IPv6Address(sub[1:17])
            (behavior,) = struct.unpack_from("!H", sub, 18)
            structure = None
            for ss_type, ss in _tlvs(sub[21:], 2):
                if ss_type == SRV6_SID_STRUCTURE:
                    if len(ss) != 6:
                        raise CodecError("SRv6 SID structure: length must be 6")
                    structure = ss
            return sid, behavior, structure
    raise CodecError("Prefix-SID without an SRv6 L3 service SID")


def _tlvs(blob: bytes, len_size: int) -> Iterable[tuple[int, bytes]]:
    i = 0
    while i < len(blob):
        if i + 1 + len_size > len(blob):
            raise CodecError("truncated TLV")
        typ = blob[i]
        length = int.from_bytes(blob[i + 1 : i + 1 + len_size], "big")
        start = i + 1 + len_size
        if start + length > len(blob):
            raise CodecError(f"TLV {typ}: length {length} runs past the end")
        yield typ, blob[start : start + length]
        i = start + length


def _binding(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> BindingId:
    try:
        return BindingId(addr)
    except ModelError as e:
        raise CodecError(str(e)) from None


def decode_binding(attrs: Mapping[int, Attribute]) -> BindingId:
    found: list[BindingId] = []
    v6 = attrs.get(IPV6_EXTENDED_COMMUNITIES)
    if v6 is not None:
        if len(v6.value) % 20:
            raise CodecError("IPv6 extended communities: length not a multiple of 20")
        for i in range(0, len(v6.value), 20):
            c = v6.value[i : i + 20]
            if c[0] == 0x00 and c[1] == ROUTE_ORIGIN_SUBTYPE:
                found.append(_binding(ipaddress.IPv6Address(c[2:18])))
    v4 = attrs.get(EXTENDED_COMMUNITIES)
    if v4 is not None:
        if len(v4.value) % 8:
            raise CodecError("extended communities: length not a multiple of 8")
        for i in range(0, len(v4.value), 8):
            c = v4.value[i : i + 8]
            if c[0] == 0x01 and c[1] == ROUTE_ORIGIN_SUBTYPE:
                found.append(_binding(ipaddress.IPv4Address(c[2:6])))
    if len(found) != 1:
        raise CodecError(f"expected one D-BID route-origin community, found {len(found)}")
    return found[0]


def decode_metrics(
    value: bytes, asn: int
) -> tuple[Metrics, InstanceState, int, ipaddress.IPv6Address | None]:
    return _metrics_from(_metric_words(value, asn), asn)


def _metric_words(value: bytes, asn: int) -> dict[int, int]:
    """The large communities of the origin AS with a Dyncast code, by code."""
    if len(value) % 12:
        raise CodecError("large communities: length not a multiple of 12")
    got: dict[int, int] = {}
    for ga, code, v in struct.iter_unpack("!III", value):
        if ga == asn and code in CODES:
            if code in got:
                raise CodecError(f"metric code {code} appears twice")
            got[code] = v
    return got


def _metrics_from(
    got: Mapping[int, int], asn: int
) -> tuple[Metrics, InstanceState, int, ipaddress.IPv6Address | None]:
    for need in (CODE_CAPACITY, CODE_STATE, CODE_SEQ_HIGH, CODE_SEQ_LOW):
        if need not in got:
            raise CodecError(f"metric code {need} missing (origin AS {asn})")
    kw: dict[str, object] = {"capacity": got[CODE_CAPACITY]}
    for code, name in _PERMILLE.items():
        if code in got:
            if got[code] > 1000:
                raise CodecError(f"{name}: {got[code]} per-mille")
            kw[name] = got[code] / 1000
    for code, name in _COUNTS.items():
        if code in got:
            kw[name] = got[code]
    if CODE_DELAY_US in got:
        kw["delay"] = got[CODE_DELAY_US] / 1000
    try:
        scores = tuple((c, got[c]) for c in _SCORE_CODES if c in got)
        metrics = _metrics(tuple(kw.items()), scores)
    except ModelError as e:
        raise CodecError(str(e)) from None
    if got[CODE_STATE] not in _STATE_OF:
        raise CodecError(f"state code {got[CODE_STATE]}")
    sid_int = _unwords(CODE_SID, got)
    sid = ipaddress.IPv6Address(sid_int) if sid_int is not None else None
    seq = (got[CODE_SEQ_HIGH] << 32) | got[CODE_SEQ_LOW]
    return metrics, _STATE_OF[got[CODE_STATE]], seq, sid


MEMO_SIZE = 16384
"""Entries of each decoding memo below: values many paths share (the same figures, the same
D-SID, the same next hop), so that each is built and validated once and held once in memory.
Values unique to one path (its D-BID, its SID) are not memoized: they would only take room."""


@functools.lru_cache(maxsize=MEMO_SIZE)
def _metrics(kw: tuple[tuple[str, object], ...], scores: tuple[tuple[int, int], ...]) -> Metrics:
    """Metrics are immutable values: paths reporting the same figures and scores share one
    object. A ModelError or CodecError is raised, not remembered."""
    return _with_scores(Metrics(**dict(kw)), dict(scores))  # type: ignore[arg-type]


_SCORE_CODES = (CODE_L2_SCORE, *CODE_L1_SCORES)


_STATE_OF = {v: k for k, v in _STATES.items()}


def _with_scores(metrics: Metrics, got: Mapping[int, int]) -> Metrics:
    """Attach the CATS scores (codes 22-25). A path without them comes from an egress that
    predates them: its scores are the default normalization of its L0 values."""
    l1 = {name: got[code] for code, name in CODE_L1_SCORES.items() if code in got}
    if CODE_L2_SCORE not in got:
        if l1:
            raise CodecError(f"L1 scores {sorted(l1)} without an L2 score (code 22)")
        return metrics
    for name, v in {"l2": got[CODE_L2_SCORE], **l1}.items():
        if v > SCORE_MAX:
            raise CodecError(f"{name} score {v} > {SCORE_MAX}")
    return metrics.with_scores(Scores(l2=got[CODE_L2_SCORE], **l1))


def binding_from_communities(value: bytes, asn: int) -> BindingId | None:
    """The D-BID copy carried in large communities (codes 17-21), if present."""
    got = {
        code: v
        for ga, code, v in (
            struct.unpack_from("!III", value, i) for i in range(0, len(value) - 11, 12)
        )
        if ga == asn
    }
    raw = _binding_words(got)
    return _binding(ipaddress.ip_address(raw)) if raw is not None else None


def _binding_words(got: Mapping[int, int]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    v6 = _unwords(CODE_BID6, got)
    if v6 is not None:
        return ipaddress.IPv6Address(v6)
    if CODE_BID4 in got:
        return ipaddress.IPv4Address(got[CODE_BID4])
    return None


def origin_asn(attrs: Mapping[int, Attribute], local_asn: int) -> int:
    """The AS that originated the path: the last AS of AS_PATH (4-octet ASNs), else ours."""
    a = attrs.get(AS_PATH)
    last = local_asn
    if a is None:
        return last
    i = 0
    v = a.value
    while i + 2 <= len(v):
        seg_type, count = v[i], v[i + 1]
        end = i + 2 + 4 * count
        if end > len(v):
            raise CodecError("AS_PATH: truncated segment")
        if seg_type == 2 and count:  # AS_SEQUENCE
            (last,) = struct.unpack_from("!I", v, end - 4)
        i = end
    return last


def decode_route(
    service: ServiceId,
    egress: RouterId,
    attrs: Mapping[int, Attribute],
    local_asn: int,
    edge_capability: int = DEFAULT_CAPABILITY,
) -> InstanceRoute:
    """A received path to an InstanceRoute; CodecError when anything Dyncast is off. An Edge
    Metadata attribute (42), when a direct draft-aware peer sent one, must agree with the
    large communities (the L2 score under `edge_capability`, the available share)."""
    check_flags(
        a
        for t, a in attrs.items()
        if t in (PREFIX_SID, LARGE_COMMUNITY, COMMUNITIES, EDGE_METADATA)
    )
    gshut = has_graceful_shutdown(attrs)
    if LARGE_COMMUNITY not in attrs:
        raise CodecError("no large communities")
    asn = origin_asn(attrs, local_asn)
    words = _metric_words(attrs[LARGE_COMMUNITY].value, asn)  # read once, for both uses
    metrics, state, seq, lc_sid = _metrics_from(words, asn)
    lc_binding = _binding_words(words)
    if EXTENDED_COMMUNITIES in attrs or IPV6_EXTENDED_COMMUNITIES in attrs or lc_binding is None:
        binding = decode_binding(attrs)
        if lc_binding is not None and lc_binding != binding.address:
            _binding(lc_binding)  # an invalid copy is refused as such
            raise CodecError(f"D-BID community {binding} and D-BID words {lc_binding} disagree")
    else:
        binding = _binding(lc_binding)
    if PREFIX_SID in attrs:
        sid, behavior, _ = decode_prefix_sid(attrs[PREFIX_SID].value)
        want = END_DX6 if binding.version == 6 else END_DX4
        if behavior != want:
            raise CodecError(f"endpoint behaviour {behavior:#06x}, expected {want:#06x}")
        if lc_sid is not None and lc_sid != sid:
            raise CodecError(f"Prefix-SID {sid} and SID communities {lc_sid} disagree")
    elif lc_sid is not None:
        sid = lc_sid
    else:
        raise CodecError("no SRv6 SID (neither Prefix-SID nor SID communities)")
    if EDGE_METADATA in attrs:
        score, free = decode_edge_metadata(attrs[EDGE_METADATA].value, edge_capability)
        if score is not None and score != metrics.l2:
            raise CodecError(
                f"edge metadata L2 {score} and L2 score {metrics.l2} disagree", "edge_metadata"
            )
        if free is not None and free != 1000 - metrics.load_permille:
            raise CodecError(
                f"edge metadata available {free} and load {metrics.load_permille} disagree",
                "edge_metadata",
            )
    try:
        return InstanceRoute(InstanceKey(service, binding), egress, sid, metrics, state, seq, gshut)
    except ModelError as e:
        raise CodecError(str(e)) from None
