"""A raw BGP peer for hostile-input tests: it opens one IPv6-unicast session and sends the
UPDATE messages it is given, byte for byte, however malformed; it checks nothing and builds
nothing beyond OPEN and KEEPALIVE. Not a speaker, a test tool: what a broken or hostile
router could put on the wire.

    python -m cand_testbed.raw_bgp_peer --connect ADDR --source ADDR --messages FILE

FILE holds one UPDATE per line in hex, with `{pid}` where the ADD-PATH path identifier goes
(4 bytes if the peer negotiated ADD-PATH receive, nothing otherwise). The peer logs each event
as a JSON line on stdout (`open`, `sent`, `notification`, `closed`) and keeps the session up
with KEEPALIVEs until it is killed.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from pathlib import Path

from cand.model import InstanceRoute
from cand.wire import bgp

MARKER = b"\xff" * 16
OPEN, UPDATE, NOTIFICATION, KEEPALIVE = 1, 2, 3, 4
PID = "{pid}"


def frame(kind: int, body: bytes) -> bytes:
    return MARKER + struct.pack("!HB", 19 + len(body), kind) + body


def open_message(asn: int, router_id: str, hold: int) -> bytes:
    caps = [
        (1, struct.pack("!HBB", 2, 0, 1)),  # multiprotocol IPv6 unicast
        (65, struct.pack("!I", asn)),  # 4-octet AS
        (69, struct.pack("!HBB", 2, 1, 3)),  # ADD-PATH IPv6 unicast, send and receive
    ]
    params = b"".join(bytes([2, len(v) + 2, c, len(v)]) + v for c, v in caps)
    ident = socket.inet_aton(router_id)
    body = struct.pack("!BHH", 4, asn if asn < 65536 else 23456, hold) + ident
    return frame(OPEN, body + bytes([len(params)]) + params)


def peer_adds_path_ids(open_body: bytes) -> bool:
    """Did the peer's OPEN say it receives ADD-PATH identifiers for IPv6 unicast?"""
    params = open_body[10 : 10 + open_body[9]]
    i = 0
    while i + 2 <= len(params):
        ptype, plen = params[i], params[i + 1]
        value = params[i + 2 : i + 2 + plen]
        if ptype == 2:
            j = 0
            while j + 2 <= len(value):
                code, clen = value[j], value[j + 1]
                cap = value[j + 2 : j + 2 + clen]
                if code == 69:
                    for k in range(0, len(cap) - 3, 4):
                        afi, safi, mode = struct.unpack_from("!HBB", cap, k)
                        if (afi, safi) == (2, 1) and mode & 1:
                            return True
                j += 2 + clen
        i += 2 + plen
    return False


def update_template(route: InstanceRoute, asn: int) -> str:
    """A valid UPDATE for one instance route as a template line (`{pid}` in the NLRI)."""
    attrs = [
        bgp.Attribute(bgp.TRANSITIVE, bgp.AS_PATH, b""),
        bgp.Attribute(bgp.TRANSITIVE, bgp.LOCAL_PREF, struct.pack("!I", 100)),
        *bgp.encode_attributes(route, asn),
    ]
    nh = route.egress.packed
    return template(attrs, nh, bgp.host_prefix(route.service))


def template(attrs: list[bgp.Attribute], next_hop: bytes, prefix: bytes) -> str:
    """Attributes, then MP_REACH with `next_hop` and one `{pid}`-prefixed NLRI, as hex."""
    head = struct.pack("!HBB", 2, 1, len(next_hop)) + next_hop + b"\x00"
    body_a = b"".join(a.to_bytes() for a in sorted(attrs, key=lambda a: a.type))
    # MP_REACH is written by hand: its length depends on whether a path id goes in
    return f"ATTRS:{body_a.hex()}:MP:{head.hex()}:{PID}:{prefix.hex()}"


def render(line: str, addpath: bool, path_id: int) -> bytes:
    """A template line into a whole UPDATE; a plain hex line is sent as it is."""
    line = line.strip()
    if not line.startswith("ATTRS:"):
        return bytes.fromhex(line)
    _, attrs_hex, _, head_hex, _, prefix_hex = line.split(":")
    pid = struct.pack("!I", path_id) if addpath else b""
    mp_value = bytes.fromhex(head_hex) + pid + bytes.fromhex(prefix_hex)
    mp = bgp.Attribute(bgp.OPTIONAL, bgp.MP_REACH_NLRI, mp_value).to_bytes()
    attrs = mp + bytes.fromhex(attrs_hex)
    return frame(UPDATE, b"\x00\x00" + struct.pack("!H", len(attrs)) + attrs)


def emit(event: str, **kw: object) -> None:
    print(json.dumps({"event": event, "t": round(time.time(), 3), **kw}), flush=True)


def recv_message(s: socket.socket) -> tuple[int, bytes]:
    head = _exactly(s, 19)
    length, kind = struct.unpack_from("!HB", head, 16)
    return kind, _exactly(s, length - 19)


def _exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--messages", type=Path, required=True)
    ap.add_argument("--asn", type=int, default=65000)
    ap.add_argument("--router-id", default="10.9.9.9")
    ap.add_argument("--every", type=float, default=0.2)
    args = ap.parse_args(argv)
    lines = [x for x in args.messages.read_text().splitlines() if x.strip()]
    deadline = time.monotonic() + 30
    while True:
        # a speaker that listens before its neighbour is configured (gobgpd between StartBgp
        # and AddPeer) closes the connection without an OPEN: try again, as a BGP peer would
        try:
            s = socket.create_connection(
                (args.connect, 179), timeout=5, source_address=(args.source, 0)
            )
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        try:
            s.sendall(open_message(args.asn, args.router_id, 9))
            kind, body = recv_message(s)
            break
        except (ConnectionError, OSError) as e:
            s.close()
            if time.monotonic() > deadline:
                raise
            emit("retry", error=str(e))
            time.sleep(0.5)
    try:
        if kind != OPEN:
            emit(
                "notification" if kind == NOTIFICATION else "unexpected", kind=kind, body=body.hex()
            )
            return 1
        addpath = peer_adds_path_ids(body)
        emit("open", addpath=addpath)
        s.sendall(frame(KEEPALIVE, b""))
        s.settimeout(0.05)
        sent = 0
        buf = b""
        next_ka = time.monotonic() + 3
        while True:
            if sent < len(lines):
                s.sendall(render(lines[sent], addpath, 100 + sent))
                emit("sent", n=sent)
                sent += 1
            if time.monotonic() > next_ka:
                s.sendall(frame(KEEPALIVE, b""))
                next_ka = time.monotonic() + 3
            end = time.monotonic() + args.every
            while time.monotonic() < end:
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    raise ConnectionError("closed by the peer")
                buf += chunk
                while len(buf) >= 19 and len(buf) >= struct.unpack_from("!H", buf, 16)[0]:
                    length, kind = struct.unpack_from("!HB", buf, 16)
                    body, buf = buf[19:length], buf[length:]
                    if kind == NOTIFICATION:
                        emit("notification", code=body[0], subcode=body[1], data=body[2:].hex())
                        return 0
    except (ConnectionError, OSError) as e:
        emit("closed", error=str(e))
        return 0
    finally:
        s.close()


if __name__ == "__main__":
    sys.exit(main())
