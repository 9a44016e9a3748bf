"""Egress data plane on the real kernel: cand's End.DX6 SID delivers a client's TCP connection,
carried over SRv6 from the ingress, to the instance; reconciliation touches only cand's routes."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cand.lab.netns import Topology

pytestmark = pytest.mark.netns

DSID, DBID = "2001:db8:5::1", "2001:db8:a::10"

DRIVER = """
import asyncio, ipaddress, sys
from cand.adapters.linux import LinuxDataplane, LinuxOptions
from cand.engine.effects import ProgramLocalInstance, RemoveLocalInstance
from cand.model import BindingId, InstanceKey, ServiceId
verb, sid = sys.argv[1], ipaddress.IPv6Address(sys.argv[2])
key = InstanceKey(ServiceId.parse(sys.argv[3]), BindingId.parse(sys.argv[4]))
async def main():
    dp = LinuxDataplane(LinuxOptions())
    if verb == "program":
        await dp.apply([ProgramLocalInstance(key, sid)])
    elif verb == "reconcile":  # a fresh daemon that wants nothing: removes only cand's routes
        await dp.reconcile()
    print(sorted(map(str, (await dp.installed()))), dp.counters)
asyncio.run(main())
"""

SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8080)); s.listen(8)
while True:
    c, peer = s.accept(); c.sendall((sys.argv[1] + " " + peer[0]).encode()); c.close()
"""

CLIENT = """
import socket
import sys
c = socket.create_connection((sys.argv[1], 8080), timeout=5); print(c.recv(100).decode())
"""


def test_sid_delivers_over_srv6_and_reconcile_is_selective(topo: Topology, tmp_path: Path) -> None:
    c, i, e, s = topo.ns("client"), topo.ns("ingress"), topo.ns("egress"), topo.ns("inst")
    _, ic = topo.link(c, "fc00:c::2/64", i, "fc00:c::1/64")
    ie, ei = topo.link(i, "fc00:1e::1/64", e, "fc00:1e::3/64")
    _es, _se = topo.link(e, "2001:db8:a::1/64", s, f"{DBID}/64")
    topo.exec(c, "ip", "-6", "route", "add", "default", "via", "fc00:c::1")
    topo.exec(i, "ip", "-6", "route", "add", "fc00:0:3::/48", "via", "fc00:1e::3")
    topo.exec(e, "ip", "-6", "route", "add", "fc00:c::/64", "via", "fc00:1e::1")
    topo.exec(s, "ip", "-6", "addr", "add", f"{DSID}/128", "dev", "lo")  # vip mode
    topo.exec(s, "ip", "-6", "route", "add", "default", "via", "2001:db8:a::1")
    sid = str(ipaddress.IPv6Address("fc00:0:3::") + 0x1234)
    # the ingress's steering is not in this version: a static seg6 encap route stands in
    topo.exec(i, "ip", "-6", "route", "add", f"{DSID}/128", "encap", "seg6", "mode", "encap",
              "segs", sid, "dev", ie)  # fmt: skip
    # a route that is not cand's must survive cand's reconciliation
    topo.exec(e, "ip", "-6", "route", "add", "fc00:0:3::99/128", "encap", "seg6local", "action",
              "End.DX6", "nh6", DBID, "dev", _es)  # fmt: skip
    topo.spawn(s, sys.executable, "-c", SERVER, DBID)
    time.sleep(0.5)
    driver = [sys.executable, "-c", DRIVER]
    ids = [DSID, DBID]
    out = topo.exec(e, *driver, "program", sid, *ids).stdout
    assert sid in out
    dump = tmp_path / "core.pcap"
    cap = topo.spawn(
        i, "tcpdump", "--immediate-mode", "-i", ie, "-U", "-w", str(dump), "ip6 proto 43"
    )
    time.sleep(0.5)
    reply = topo.exec(c, sys.executable, "-c", CLIENT, DSID).stdout.split()
    assert reply == [DBID, "fc00:c::2"]  # the instance answered, and saw the real client
    cap.terminate()
    cap.wait(5)
    from scapy.all import IPv6, IPv6ExtHdrSegmentRouting, rdpcap

    srh = [p for p in rdpcap(str(dump)) if IPv6ExtHdrSegmentRouting in p]
    assert srh, "no segment routing header on the ingress-egress link"
    assert srh[0][IPv6].dst == sid
    # a daemon that wants nothing removes its own route and leaves the foreign one
    out = topo.exec(e, *driver, "reconcile", sid, *ids).stdout
    assert sid not in out
    routes = topo.exec(e, "ip", "-6", "route", "show", "fc00:0:3::99").stdout
    assert "End.DX6" in routes
    assert (
        subprocess.run(
            ["ip", "netns", "exec", c, sys.executable, "-c", CLIENT, DSID],
            capture_output=True,
            timeout=20,
        ).returncode
        != 0
    )  # no SID, no service
