/* cand.p4 — the Dyncast / CATS data plane of cand for a P4 switch (P4_16, v1model / BMv2).
 *
 * One program, both roles; the control plane (plugins/cand-p4) fills in the tables a role needs.
 *
 *   ingress (head-end):  service (D-SID -> service) -> binding (flow key -> instance; idle
 *                        timeout; direct counter) -> on a miss: new_flow (action selector over
 *                        the service's instances, hashed on the flow key) + digest new_flow_t
 *                        -> SRv6 H.Encaps towards the instance's SID (or H.Encaps.Red)
 *   egress:              local_sid (instance SID -> End.DX6 to the D-BID, optionally
 *                        ServiceNAT D-SID -> D-BID); nat_out (D-BID -> D-SID on replies)
 *   both:                router (IPv6 LPM -> next hop) -> nexthop (port and MAC rewrite;
 *                        neighbours are resolved by the control plane)
 *
 * Every table, action, field and digest name used by the control plane is listed in
 * plugins/cand-p4/src/cand_p4/names.py, and tests/p4/test_p4info.py checks both against the
 * P4Info p4c generates. Rename nothing here without changing names.py.
 *
 * Tofino: the parts that differ on TNA/T2NA are marked "TOFINO:"; everything else is plain
 * P4_16 match-action code.
 */

#include <core.p4>
#include <v1model.p4>   // TOFINO: <tna.p4>; the architecture's package and externs differ

const bit<16> ETHERTYPE_IPV6 = 0x86dd;
const bit<8>  PROTO_TCP      = 6;
const bit<8>  PROTO_UDP      = 17;
const bit<8>  PROTO_ROUTING  = 43;
const bit<8>  PROTO_IPV6     = 41;
const bit<8>  PROTO_ICMPV6   = 58;
const bit<8>  SRH_TYPE       = 4;    // RFC 8754 Segment Routing Header

#define MAX_SEGMENTS 4               // segments a received SRH may carry (we push one)

typedef bit<9>   port_t;             // TOFINO: PortId_t (bit<9> on Tofino 1, wider on Tofino 2)
typedef bit<48>  mac_t;
typedef bit<128> ip6_t;

/* ----------------------------------------------------------------------------------------- */
/* headers                                                                                   */

header ethernet_h {
    mac_t   dst;
    mac_t   src;
    bit<16> ether_type;
}

header ipv6_h {
    bit<4>  version;
    bit<8>  traffic_class;
    bit<20> flow_label;
    bit<16> payload_len;
    bit<8>  next_hdr;
    bit<8>  hop_limit;
    ip6_t   src;
    ip6_t   dst;
}

/* The fixed 8 bytes of the SRH; the segment list follows as a header stack. cand pushes no
 * TLVs and decapsulates only SRHs without them (hdr_ext_len == 2 * (last_entry + 1)). */
header srh_h {
    bit<8>  next_hdr;
    bit<8>  hdr_ext_len;
    bit<8>  routing_type;
    bit<8>  segments_left;
    bit<8>  last_entry;
    bit<8>  flags;
    bit<16> tag;
}

header segment_h {
    ip6_t sid;
}

header tcp_h {
    bit<16> sport;
    bit<16> dport;
    bit<32> seq;
    bit<32> ack;
    bit<4>  data_offset;
    bit<4>  reserved;
    bit<8>  flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgent;
}

header udp_h {
    bit<16> sport;
    bit<16> dport;
    bit<16> length;
    bit<16> checksum;
}

header icmp6_h {
    bit<8>  type;
    bit<8>  code;
    bit<16> checksum;
}

struct headers_t {
    ethernet_h ethernet;
    ipv6_h     ipv6;          // the outermost IPv6 header (after H.Encaps: the new outer one)
    srh_h      srh;
    segment_h[MAX_SEGMENTS] segments;
    ipv6_h     inner;         // the encapsulated packet's IPv6 header, if any
    tcp_h      tcp;           // the innermost packet's transport header
    udp_h      udp;
    icmp6_h    icmp6;
}

/* What the control plane learns about a new flow: its key as the binding table matches it,
 * and where the selector sent it. One digest per packet of a flow that has no binding yet:
 * the control plane installs the binding for the first and ignores repeats. */
struct new_flow_t {
    ip6_t   src;
    ip6_t   dst;
    bit<8>  proto;
    bit<16> sport;            // 0 for a 3-tuple service
    bit<16> dport;            // 0 for a 3-tuple service
    bit<16> service_id;
    ip6_t   target;           // the instance's SID (remote) or D-BID (local)
    bit<8>  kind;             // TARGET_SID or TARGET_LOCAL / TARGET_LOCAL_NAT
}

const bit<8> TARGET_SID       = 1;
const bit<8> TARGET_LOCAL     = 2;
const bit<8> TARGET_LOCAL_NAT = 3;

const bit<8> NAT_NONE = 0;
const bit<8> NAT_DST  = 1;    // D-SID -> D-BID, towards the instance
const bit<8> NAT_SRC  = 2;    // D-BID -> D-SID, on the instance's replies

struct metadata_t {
    ip6_t   route_dst;        // the address the router table looks up
    bit<8>  parse_segments;   // parser loop counter
    // flow key, as the binding table and the selector see it
    ip6_t   fk_src;
    ip6_t   fk_dst;
    bit<8>  fk_proto;
    bit<16> fk_sport;
    bit<16> fk_dport;
    bit<16> l4_sport;         // the packet's own ports (0 without TCP/UDP)
    bit<16> l4_dport;
    bit<8>  l4_proto;
    // steering
    bit<16> service_id;
    bit<1>  three_tuple;
    bit<1>  default_route;    // no instance may take the new flow: 1 routes it, 0 drops it
    bit<8>  target_kind;      // 0: not steered
    ip6_t   target;
    // SRv6 head-end settings (encap table's default action)
    ip6_t   encap_src;
    bit<8>  encap_hop_limit;
    bit<1>  encap_reduced;
    // ServiceNAT
    bit<8>  nat;
    ip6_t   nat_addr;
}

/* ----------------------------------------------------------------------------------------- */
/* RFC 1624 incremental checksum update (eqn. 3: HC' = ~(~HC + ~m + m')), for a 128-bit
 * address m -> m' in the pseudo-header: 8 sixteen-bit words out, 8 in. The one's complement
 * sum is taken in 32 bits (17 terms of at most 0xffff cannot overflow) and folded twice.
 * Because only the difference is added, a checksum that was wrong stays wrong by exactly the
 * same amount, and a correct one stays correct (Srvcast, Algorithm 1).
 * TOFINO: the deparser's Checksum extern (subtract/add, then update) does this in hardware;
 * wide additions like these do not fit one stage. */

bit<32> words(in ip6_t a) {
    return (bit<32>)a[127:112] + (bit<32>)a[111:96] + (bit<32>)a[95:80] + (bit<32>)a[79:64]
         + (bit<32>)a[63:48] + (bit<32>)a[47:32] + (bit<32>)a[31:16] + (bit<32>)a[15:0];
}

bit<16> csum_replace(in bit<16> hc, in ip6_t old_addr, in ip6_t new_addr) {
    bit<32> acc = (bit<32>)(~hc) + words(~old_addr) + words(new_addr);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    return ~acc[15:0];
}

/* ----------------------------------------------------------------------------------------- */

parser CandParser(packet_in pkt, out headers_t hdr, inout metadata_t meta,
                  inout standard_metadata_t std) {
    state start {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_IPV6: parse_ipv6;
            default: accept;
        }
    }
    state parse_ipv6 {
        pkt.extract(hdr.ipv6);
        transition select(hdr.ipv6.next_hdr) {
            PROTO_ROUTING: parse_srh;
            PROTO_IPV6:    parse_inner;        // H.Encaps.Red with one segment: no SRH
            PROTO_TCP:     parse_tcp;
            PROTO_UDP:     parse_udp;
            PROTO_ICMPV6:  parse_icmp6;
            default: accept;
        }
    }
    state parse_srh {
        pkt.extract(hdr.srh);
        meta.parse_segments = hdr.srh.last_entry + 1;
        // more than MAX_SEGMENTS, TLVs or another routing type: not looked into (and not
        // decapsulated here); the packet is forwarded on its outer destination
        transition select(hdr.srh.routing_type,
                          hdr.srh.hdr_ext_len == (hdr.srh.last_entry + 1) << 1,
                          hdr.srh.last_entry) {
            (SRH_TYPE, true, 0 .. (MAX_SEGMENTS - 1)): parse_segment;
            default: accept;
        }
    }
    state parse_segment {
        // at most MAX_SEGMENTS (parse_srh checked last_entry). TOFINO: the parser loop is
        // unrolled by the compiler; keep MAX_SEGMENTS small there.
        pkt.extract(hdr.segments.next);
        meta.parse_segments = meta.parse_segments - 1;
        transition select(meta.parse_segments) {
            0: parse_after_srh;
            default: parse_segment;
        }
    }
    state parse_after_srh {
        transition select(hdr.srh.next_hdr) {
            PROTO_IPV6: parse_inner;
            default: accept;
        }
    }
    state parse_inner {
        pkt.extract(hdr.inner);
        transition select(hdr.inner.next_hdr) {
            PROTO_TCP:    parse_tcp;
            PROTO_UDP:    parse_udp;
            PROTO_ICMPV6: parse_icmp6;
            default: accept;
        }
    }
    state parse_tcp {
        pkt.extract(hdr.tcp);
        transition accept;
    }
    state parse_udp {
        pkt.extract(hdr.udp);
        transition accept;
    }
    state parse_icmp6 {
        pkt.extract(hdr.icmp6);
        transition accept;
    }
}

control CandVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply { }                                 // IPv6 has no header checksum; L4 is left alone
}

control CandIngress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {

    /* --- egress role: End.DX6 and ServiceNAT --------------------------------------------- */

    action drop() {
        mark_to_drop(std);                    // TOFINO: ig_dprsr_md.drop_ctl = 1
    }

    action decap() {
        hdr.ipv6 = hdr.inner;
        hdr.inner.setInvalid();
        hdr.srh.setInvalid();
        hdr.segments.pop_front(MAX_SEGMENTS);
    }

    /* End.DX6 (RFC 8986 4.6): drop the outer header and its SRH, forward the inner packet to
     * the instance's D-BID whatever its destination (the D-SID, which a `vip` instance
     * carries itself). */
    action end_dx6(ip6_t dbid) {
        decap();
        meta.route_dst = dbid;
    }

    /* End.DX6 plus ServiceNAT for a `nat` instance: the D-SID becomes the D-BID. */
    action end_dx6_nat(ip6_t dbid) {
        decap();
        meta.route_dst = dbid;
        meta.nat = NAT_DST;
        meta.nat_addr = dbid;
    }

    table local_sid {
        key = { hdr.ipv6.dst: exact @name("sid"); }
        actions = { end_dx6; end_dx6_nat; @defaultonly NoAction; }
        const default_action = NoAction();
        size = 4096;
    }

    /* A `nat` instance's reply leaves with the D-SID as its source: the client never sees the
     * D-BID. One D-BID answers for one `nat` D-SID (the control plane refuses more). */
    action nat_source(ip6_t dsid) {
        meta.nat = NAT_SRC;
        meta.nat_addr = dsid;
    }

    table nat_out {
        key = { hdr.ipv6.src: exact @name("dbid"); }
        actions = { nat_source; @defaultonly NoAction; }
        const default_action = NoAction();
        size = 4096;
    }

    /* --- ingress role: service, binding, new-flow selection, H.Encaps -------------------- */

    action steer(bit<16> service_id, bit<1> three_tuple, bit<1> default_route) {
        meta.service_id = service_id;
        meta.three_tuple = three_tuple;
        meta.default_route = default_route;
    }

    table service {
        key = { hdr.ipv6.dst: exact @name("dsid"); }
        actions = { steer; @defaultonly NoAction; }
        const default_action = NoAction();
        size = 16384;
    }

    /* Where a flow goes: to an instance behind another router (its SRv6 SID), or to an
     * instance attached to this router (its D-BID, with ServiceNAT for `nat` mode). The same
     * actions serve the binding table and the selector's members. */
    action to_sid(ip6_t sid) {
        meta.target_kind = TARGET_SID;
        meta.target = sid;
    }

    action to_local(ip6_t dbid, bit<1> nat) {
        meta.target_kind = (nat == 1) ? TARGET_LOCAL_NAT : TARGET_LOCAL;
        meta.target = dbid;
    }

    direct_counter(CounterType.packets_and_bytes) binding_counter;  // TOFINO: DirectCounter<>

    /* The Dyncast binding table: one entry per flow, installed by the control plane from the
     * digest, aged out by idle timeout (the service's affinity timeout). A hit pins the flow:
     * a weight change rewrites only the selector, never these entries. */
    /* TOFINO: a 296-bit exact key (two addresses, proto, two ports) fits an SRAM exact-match
     * table, but 65536 entries of it is a sizing decision per chip. */
    table binding {
        key = {
            meta.fk_src:   exact @name("src");
            meta.fk_dst:   exact @name("dst");
            meta.fk_proto: exact @name("proto");
            meta.fk_sport: exact @name("sport");
            meta.fk_dport: exact @name("dport");
        }
        actions = { to_sid; to_local; @defaultonly NoAction; }
        const default_action = NoAction();
        counters = binding_counter;
        support_timeout = true;               // TOFINO: idle_timeout = true
        size = 65536;
    }

    /* New flows: the service's instances as members of one selector group; the hash of the
     * flow key picks the member, so every packet of a flow picks the same one until its
     * binding is in. Weights: members are replicated in proportion (see p4/README.md).
     * TOFINO: ActionSelector(ActionProfile(size), Hash<bit<16>>(HashAlgorithm_t.CRC16),
     * SelectorMode_t.FAIR, max_group_size, groups) — and native member weights. */
    action_selector(HashAlgorithm.crc16, 32w16384, 32w16) instances;

    table new_flow {
        key = {
            meta.service_id: exact @name("service_id");
            meta.fk_src:     selector;
            meta.fk_dst:     selector;
            meta.fk_proto:   selector;
            meta.fk_sport:   selector;
            meta.fk_dport:   selector;
        }
        actions = { to_sid; to_local; }
        // no default action: v1model's selector tables take none (a miss runs NoAction)
        implementation = instances;
        size = 16384;
    }

    /* H.Encaps (RFC 8986 5.1) with one segment: outer IPv6 to the SID, SRH with Segments Left
     * 0 and the SID as Segment List[0]; H.Encaps.Red leaves the SRH out. */
    action encaps(ip6_t sid) {
        hdr.inner = hdr.ipv6;
        hdr.ipv6.src = meta.encap_src;
        hdr.ipv6.dst = sid;
        hdr.ipv6.hop_limit = meta.encap_hop_limit;
        // traffic class copied from the inner header (RFC 2473 3.1); flow label: a hash of
        // the inner packet's 5-tuple (RFC 6437 2, RFC 8986 5), stable for the whole flow
        hash(hdr.ipv6.flow_label, HashAlgorithm.crc32, 20w0,
             { hdr.inner.src, hdr.inner.dst, meta.l4_proto, meta.l4_sport, meta.l4_dport },
             32w0x100000);                     // TOFINO: Hash<bit<20>> extern
        if (meta.encap_reduced == 1) {
            hdr.ipv6.next_hdr = PROTO_IPV6;
            hdr.ipv6.payload_len = hdr.inner.payload_len + 40;
        } else {
            hdr.ipv6.next_hdr = PROTO_ROUTING;
            hdr.ipv6.payload_len = hdr.inner.payload_len + 40 + 24;
            hdr.srh.setValid();
            hdr.srh.next_hdr = PROTO_IPV6;
            hdr.srh.hdr_ext_len = 2;
            hdr.srh.routing_type = SRH_TYPE;
            hdr.srh.segments_left = 0;
            hdr.srh.last_entry = 0;
            hdr.srh.flags = 0;
            hdr.srh.tag = 0;
            hdr.segments[0].setValid();
            hdr.segments[0].sid = sid;
        }
    }

    /* The head-end's settings: the control plane sets the default action (no entries). */
    action set_encap(ip6_t source, bit<8> hop_limit, bit<1> reduced) {
        meta.encap_src = source;
        meta.encap_hop_limit = hop_limit;
        meta.encap_reduced = reduced;
    }

    table encap {
        key = { }
        actions = { set_encap; }
        default_action = set_encap(0, 64, 0);
        size = 1;
    }

    /* --- router ------------------------------------------------------------------------- */

    bit<16> nexthop_sel = 0;

    action route(bit<16> nexthop_id) {
        nexthop_sel = nexthop_id;
    }

    table router {
        key = { meta.route_dst: lpm @name("dst"); }
        actions = { route; drop; }
        const default_action = drop();
        size = 65536;
    }

    /* A neighbour: the port and the MACs to put on the frame (the control plane resolves
     * neighbours and writes them here). */
    action neighbour(port_t port, mac_t dst_mac, mac_t src_mac) {
        std.egress_spec = port;               // TOFINO: ig_tm_md.ucast_egress_port
        hdr.ethernet.dst = dst_mac;
        hdr.ethernet.src = src_mac;
    }

    table nexthop {
        key = { nexthop_sel: exact @name("id"); }
        actions = { neighbour; drop; }
        const default_action = drop();
        size = 4096;
    }

    apply {
        if (std.parser_error != error.NoError || !hdr.ipv6.isValid()) {
            drop();                           // neighbour discovery is the control plane's
            exit;
        }
        // every field read below is set here first: v1model zeroes metadata, P4_16 does not
        // promise it (TOFINO: metadata is not zeroed without @pa_auto_init_metadata)
        meta.route_dst = hdr.ipv6.dst;
        meta.l4_sport = 0;
        meta.l4_dport = 0;
        meta.fk_sport = 0;
        meta.fk_dport = 0;
        meta.target_kind = 0;
        meta.nat = NAT_NONE;
        bool decapsulated = false;

        if (hdr.srh.isValid() && hdr.srh.segments_left != 0) {
            // not the last segment: plain forwarding (cand's SIDs are all End.DX6)
        } else if (hdr.inner.isValid()) {
            decapsulated = local_sid.apply().hit;
        }

        // every packet forwarded has the hop limit of its (then) outermost header lowered
        // once; ICMPv6 Time Exceeded is left to the control plane's router (not sent here)
        if (hdr.ipv6.hop_limit <= 1) {
            drop();
            exit;
        }
        hdr.ipv6.hop_limit = hdr.ipv6.hop_limit - 1;

        if (hdr.tcp.isValid()) {
            meta.l4_sport = hdr.tcp.sport;
            meta.l4_dport = hdr.tcp.dport;
        } else if (hdr.udp.isValid()) {
            meta.l4_sport = hdr.udp.sport;
            meta.l4_dport = hdr.udp.dport;
        }
        meta.l4_proto = hdr.ipv6.next_hdr;

        if (!decapsulated && !hdr.inner.isValid() && !hdr.srh.isValid()) {
            nat_out.apply();
            if (service.apply().hit) {
                meta.fk_src = hdr.ipv6.src;
                meta.fk_dst = hdr.ipv6.dst;
                meta.fk_proto = hdr.ipv6.next_hdr;
                if (meta.three_tuple == 0) {
                    meta.fk_sport = meta.l4_sport;
                    meta.fk_dport = meta.l4_dport;
                }
                if (!binding.apply().hit) {
                    if (new_flow.apply().hit) {
                        // TOFINO: set ig_dprsr_md.digest_type here and pack the
                        // Digest<new_flow_t> extern in the ingress deparser
                        digest<new_flow_t>(1, {
                            meta.fk_src, meta.fk_dst, meta.fk_proto, meta.fk_sport,
                            meta.fk_dport, meta.service_id, meta.target, meta.target_kind });
                    } else if (meta.default_route == 0) {
                        drop();                // no instance may take it, and no fallback
                        exit;
                    }
                }
            }
        }

        if (meta.target_kind == TARGET_SID) {
            encap.apply();
            encaps(meta.target);
            meta.route_dst = meta.target;     // the outer destination: the SID
        } else if (meta.target_kind == TARGET_LOCAL) {
            meta.route_dst = meta.target;
        } else if (meta.target_kind == TARGET_LOCAL_NAT) {
            meta.route_dst = meta.target;
            meta.nat = NAT_DST;
            meta.nat_addr = meta.target;
        }

        // ServiceNAT: rewrite one address, then patch the transport checksum (RFC 1624)
        if (meta.nat != NAT_NONE) {
            ip6_t old_addr;
            if (meta.nat == NAT_DST) {
                old_addr = hdr.ipv6.dst;
                hdr.ipv6.dst = meta.nat_addr;
            } else {
                old_addr = hdr.ipv6.src;
                hdr.ipv6.src = meta.nat_addr;
            }
            if (hdr.tcp.isValid()) {
                hdr.tcp.checksum = csum_replace(hdr.tcp.checksum, old_addr, meta.nat_addr);
            } else if (hdr.udp.isValid() && hdr.udp.checksum != 0) {
                // a zero UDP checksum stays zero (and invalid in IPv6: bad stays bad); a
                // result of 0x0000 is sent as 0xffff, its other one's complement form
                hdr.udp.checksum = csum_replace(hdr.udp.checksum, old_addr, meta.nat_addr);
                if (hdr.udp.checksum == 0) {
                    hdr.udp.checksum = 0xffff;
                }
            } else if (hdr.icmp6.isValid()) {
                hdr.icmp6.checksum = csum_replace(hdr.icmp6.checksum, old_addr, meta.nat_addr);
            }
        }

        if (router.apply().hit) {
            nexthop.apply();
        }
    }
}

control CandEgress(inout headers_t hdr, inout metadata_t meta, inout standard_metadata_t std) {
    apply { }
}

control CandComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply { }                                 // transport checksums are patched incrementally
}

control CandDeparser(packet_out pkt, in headers_t hdr) {
    apply {
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.ipv6);
        pkt.emit(hdr.srh);
        pkt.emit(hdr.segments);
        pkt.emit(hdr.inner);
        pkt.emit(hdr.tcp);
        pkt.emit(hdr.udp);
        pkt.emit(hdr.icmp6);
    }
}

V1Switch(CandParser(), CandVerifyChecksum(), CandIngress(), CandEgress(), CandComputeChecksum(),
         CandDeparser()) main;
