"""Hostile BGP peers against an ingress cand (GoBGP, then ExaBGP) in namespaces: one raw peer
sends a valid path; a second sends paths that are valid BGP but not valid Dyncast, then a
valid one; a third sends messages that are not valid BGP at all. cand stays up, keeps the
valid paths, counts the rest by reason."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cand_testbed import raw_bgp_peer as raw
from cand_testbed.routers import SERVICE, cand_toml, received, start_cand, wait_api

from cand.api import request
from cand.lab.netns import Topology
from cand.model import BindingId, InstanceKey, InstanceRoute, Metrics, RouterId, ServiceId
from cand.wire import bgp

pytestmark = pytest.mark.netns
ASN = 65000
GOOD_A, GOOD_B, PEER_C = "fc00:a::3", "fc00:a::4", "fc00:a::5"


def route(egress: str, binding: str, cpu: float = 0.3) -> InstanceRoute:
    return InstanceRoute(
        InstanceKey(ServiceId.parse(SERVICE), BindingId.parse(binding)),
        RouterId.parse(egress),
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("fc00:0:99::")) + len(binding)),
        Metrics(cpu=cpu, capacity=100),
    )


def attrs_of(r: InstanceRoute) -> dict[int, bgp.Attribute]:
    a = {x.type: x for x in bgp.encode_attributes(r, ASN)}
    a[bgp.AS_PATH] = bgp.Attribute(bgp.TRANSITIVE, bgp.AS_PATH, b"")
    a[bgp.LOCAL_PREF] = bgp.Attribute(bgp.TRANSITIVE, bgp.LOCAL_PREF, struct.pack("!I", 100))
    return a


def line(r: InstanceRoute, a: dict[int, bgp.Attribute], prefix: bytes | None = None) -> str:
    return raw.template(list(a.values()), r.egress.packed, prefix or bgp.host_prefix(r.service))


def lc_words(value: bytes, code: int, new: int) -> bytes:
    words = [bytearray(value[i : i + 12]) for i in range(0, len(value), 12)]
    for w in words:
        if int.from_bytes(w[4:8], "big") == code:
            w[8:12] = new.to_bytes(4, "big")
    return b"".join(bytes(w) for w in words)


def not_dyncast(r: InstanceRoute) -> list[str]:
    """Valid BGP, wrong Dyncast: a BGP speaker passes these on, cand must refuse them."""
    out = []
    a = attrs_of(r)
    del a[bgp.LARGE_COMMUNITY]
    out.append(line(r, a))  # no metrics at all
    a = attrs_of(r)
    lc = a[bgp.LARGE_COMMUNITY]
    a[bgp.LARGE_COMMUNITY] = bgp.Attribute(lc.flags, lc.type, lc_words(lc.value, 2, 5000))
    out.append(line(r, a))  # cpu 5000 per-mille
    a = attrs_of(r)
    a[bgp.IPV6_EXTENDED_COMMUNITIES] = bgp.binding_community(BindingId.parse("2001:db8::99"))
    out.append(line(r, a))  # the two D-BID copies disagree
    a = attrs_of(r)
    lc = a[bgp.LARGE_COMMUNITY]
    a[bgp.LARGE_COMMUNITY] = bgp.Attribute(lc.flags, lc.type, lc_words(lc.value, 10, 7))
    out.append(line(r, a))  # state code 7
    prefix64 = bytes([64]) + r.service.packed[:8]
    out.append(line(r, attrs_of(r), prefix64))  # a /64 is not a D-SID
    return out


def not_bgp(r: InstanceRoute) -> list[str]:
    """Not valid BGP: the speaker may reset this session; nothing else may change."""
    good = raw.render(line(r, attrs_of(r)), True, 7)
    bad_len = bytearray(good)
    bad_len[25] = 0xFF  # first attribute claims more than the block
    nh4 = raw.template(list(attrs_of(r).values()), bytes([10, 0, 0, 5]), bgp.host_prefix(r.service))
    return [nh4, bytes(bad_len).hex(), (good + b"\x00\x00").hex()]


def peer(topo: Topology, ns: str, tmp: Path, name: str, src: str, lines: list[str]) -> Path:
    msgs = tmp / f"{name}.msgs"
    msgs.write_text("\n".join(lines) + "\n")
    log = tmp / f"{name}.jsonl"
    topo.spawn(
        ns,
        sys.executable,
        "-m",
        "cand_testbed.raw_bgp_peer",
        "--connect",
        "fc00:a::1",
        "--source",
        src,
        "--messages",
        str(msgs),
        "--every",
        "0.3",
        log=log,
    )
    return log


def events(log: Path) -> list[dict[str, Any]]:
    out = []
    for text in log.read_text().splitlines():
        if text.startswith("{"):
            out.append(json.loads(text))
    return out


def bindings(routes: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The paths learned from peers A and B. Peer C's are its speaker's business: GoBGP, for
    one, accepts an IPv6 MP_REACH with a 4-byte next hop and hands it on as a00:5:: (cand
    cannot tell that from a real next hop; ExaBGP passes the raw bytes and cand refuses it)."""
    return {(r["egress"], r["binding"]) for r in routes if r["egress"] in (GOOD_A, GOOD_B)}


@pytest.mark.parametrize("speaker", ["gobgp", "exabgp"])
def test_malformed_paths_are_refused_and_valid_ones_kept(
    topo: Topology, tmp_path: Path, speaker: str
) -> None:
    p, i = topo.ns("peers"), topo.ns("ingress")
    pif, _ = topo.link(p, f"{GOOD_A}/64", i, "fc00:a::1/64")
    for extra in (GOOD_B, PEER_C):
        topo.exec(p, "ip", "-6", "addr", "add", f"{extra}/64", "dev", pif, "nodad")
    conf = cand_toml(
        tmp_path, "i", "fc00:a::1", [GOOD_A, GOOD_B, PEER_C], ["ingress"], speaker=speaker
    )
    sock = start_cand(topo, i, conf, tmp_path, "i")
    cand = topo.procs[-1]
    a, b = route(GOOD_A, "2001:db8:a::10"), route(GOOD_B, "2001:db8:a::11")
    want = {(GOOD_A, "2001:db8:a::10"), (GOOD_B, "2001:db8:a::11")}
    log_a = peer(topo, p, tmp_path, "a", GOOD_A, [line(a, attrs_of(a))])
    hostile = [*not_dyncast(route(GOOD_B, "2001:db8:a::12")), line(b, attrs_of(b))]
    log_b = peer(topo, p, tmp_path, "b", GOOD_B, hostile)
    log_c = peer(topo, p, tmp_path, "c", PEER_C, not_bgp(route(PEER_C, "2001:db8:a::13")))

    async def main() -> dict[str, Any]:
        await wait_api(sock)
        deadline = time.monotonic() + 40
        while bindings(await received(sock)) != want:
            assert cand.poll() is None, "cand died"
            assert time.monotonic() < deadline, bindings(await received(sock))
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # C's garbage has been sent meanwhile; nothing may change
        assert bindings(await received(sock)) == want
        return dict(await request(sock, "status"))

    status = asyncio.run(main())
    assert cand.poll() is None
    b_events = events(log_b)
    assert [e for e in b_events if e["event"] == "sent"][-1]["n"] == len(hostile) - 1
    assert not [e for e in b_events + events(log_a) if e["event"] in ("notification", "closed")]
    rejected = status["speaker"]["rejected"]
    print(f"\n{speaker}: rejected {rejected}; peer C: {[e['event'] for e in events(log_c)]}")
    if speaker == "exabgp":  # cand reads the raw UPDATEs: the 4-byte next hop is refused
        assert rejected.get("next_hop", 0) >= 1, rejected
    assert rejected.get("dyncast", 0) >= 4, rejected  # the four Dyncast-invalid paths
    assert status["daemon"].get("adapter_bugs", 0) == 0


@pytest.mark.parametrize("speaker", ["gobgp", "exabgp"])
def test_a_peer_that_comes_back_keeps_its_unchanged_paths(
    topo: Topology, tmp_path: Path, speaker: str
) -> None:
    """A session drops and comes back with the same path: the path is stale meanwhile, and
    must be fresh again after the resync, not dropped by it (the GoBGP speaker once only
    re-reported paths that had changed, so the PeerSynced after the resync dropped the rest)."""
    p, i = topo.ns("peers"), topo.ns("ingress")
    topo.link(p, f"{GOOD_A}/64", i, "fc00:a::1/64")
    conf = cand_toml(tmp_path, "i", "fc00:a::1", [GOOD_A], ["ingress"], speaker=speaker)
    sock = start_cand(topo, i, conf, tmp_path, "i")
    cand = topo.procs[-1]
    a = route(GOOD_A, "2001:db8:a::10")
    want = {(GOOD_A, "2001:db8:a::10")}

    async def until_paths(expected: set[tuple[str, str]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while bindings(await received(sock)) != expected:
            assert cand.poll() is None, "cand died"
            assert time.monotonic() < deadline, bindings(await received(sock))
            await asyncio.sleep(0.1)

    async def main() -> None:
        await wait_api(sock)
        peer(topo, p, tmp_path, "a1", GOOD_A, [line(a, attrs_of(a))])
        first = topo.procs[-1]
        await until_paths(want, 40)
        first.kill()  # the peer's process: its session ends with its socket
        await asyncio.sleep(2)
        deadline = time.monotonic() + 60
        n = 2
        while True:  # the speaker may hold the peer idle for a while after a reset
            log = peer(topo, p, tmp_path, f"a{n}", GOOD_A, [line(a, attrs_of(a))])
            for _ in range(100):
                kinds = {e["event"] for e in events(log)}
                if kinds & {"open", "closed", "notification"}:
                    break
                await asyncio.sleep(0.1)
            if "open" in kinds:
                break
            assert time.monotonic() < deadline, f"peer never came back: {kinds}"
            await asyncio.sleep(1)
            n += 1
        await until_paths(want, 20)
        # past the resync's quiet time and its PeerSynced: the path must stay, not go stale
        for _ in range(50):
            assert bindings(await received(sock)) == want
            await asyncio.sleep(0.1)
        rib = await request(sock, "rib")
        stale = [r for r in rib["remote"] if r["stale_until"] is not None]
        assert stale == [], stale

    asyncio.run(main())
