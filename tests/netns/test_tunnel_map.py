"""Tunnels behind one BPF map on the real kernel: well over 65,535 tunnel slots (marks past 16
bits) with one ip rule and one route per D-SID; a steered connection through a slot above
0xFFFF; a restarted adapter adopts the map and installs nothing; an earlier cand's layout
(a table, a rule and a program per tunnel) is converted with the established flow kept.

Same lab as test_linux_dataplane (c1, c2 -> ingress ══ egress -> s1, s2)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cand.lab.netns import Topology
from tests.netns.test_linux_dataplane import (
    CLIENT,
    EGRESS,
    INGRESS,
    S1,
    S2,
    SID,
    VIP,
    Lab,
    build_lab,
    egress_spec,
    ingress_spec,
)

pytestmark = pytest.mark.netns
BASE = 0xCA000000


@pytest.fixture
def lab(topo: Topology) -> Lab:
    return build_lab(topo)


# In the ingress namespace: the adapter is handed `n` services of `k` remote instances each
# (SIDs under fc00:0:3::/48, routed to the egress), one with an unroutable SID, and last the
# lab's real VIP service, so the VIP's slots come after every other one: above 0xFFFF.
SCALE = """
import asyncio, ipaddress, json, sys, time
from cand_testbed.dataplane_driver import effects
from cand.adapters.linux import LinuxDataplane, LinuxOptions
from cand.model import RouterId

spec = json.loads(sys.argv[1])
services = []
for i in range(spec["n"]):
    choices = [[f"2001:db8:ff::{j + 1:x}", spec["egress"], f"fc00:0:3:{i:x}:{j:x}::1", 10,
                False, "up"] for j in range(spec["k"])]
    services.append({"sid": f"2001:db8:100::{i + 1:x}", "choices": choices})
if spec["n"]:
    services.append({"sid": "2001:db8:1ff::1", "choices": [
        ["2001:db8:ff::1", spec["egress"], "fc00:9::1", 10, False, "up"]]})  # no route
services += spec["services"]
todo, modes = effects({"services": services})
dp = LinuxDataplane(LinuxOptions(adopt_hold=0), RouterId.parse(spec["router"]), modes)
t0 = time.monotonic()
asyncio.run(dp.apply(todo))
took = time.monotonic() - t0
asyncio.run(dp.reconcile())
installed = dp.counters["installed"]
repair = {}
if spec.get("tamper"):  # someone else changes the map under the running adapter
    from cand.adapters import srv6_bpf
    fd = dp.tmap.map_fd
    before = srv6_bpf.map_dump(fd)
    victim = int(spec["tamper"], 16)
    other = next(m for m in sorted(before) if m != victim)
    srv6_bpf.map_delete(fd, [victim])
    srv6_bpf.map_update(fd, {other: bytes(srv6_bpf.VALUE_SIZE),
                             dp.marks.base | 0xFFFFF0: before[other]})
    removed = dp.counters["removed"]
    asyncio.run(dp.reconcile())
    repair = {"installed": dp.counters["installed"] - installed,
              "removed": dp.counters["removed"] - removed,
              "same": srv6_bpf.map_dump(fd) == before}
vip = {f"{m:#x}": str(ident[2]) for m, ident in dp.slots.by_mark.items()
       if ident[0] == "tunnel" and str(ident[1]) in {s["sid"] for s in spec["services"]}}
print(json.dumps({"status": dp.status(), "seconds": took, "vip": vip, "installed": installed,
                  "repair": repair, "max": max(dp.slots.by_mark, default=0)}))
"""


def scale(
    lab: Lab, n: int, k: int, services: list[dict[str, Any]], tamper: str = ""
) -> dict[str, Any]:
    spec = {"router": INGRESS, "egress": EGRESS, "n": n, "k": k, "services": services}
    spec["tamper"] = tamper
    out = lab.topo.exec(lab.i, sys.executable, "-c", SCALE, json.dumps(spec)).stdout
    got: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return got


def cand_rules(lab: Lab) -> list[dict[str, Any]]:
    rules = json.loads(lab.topo.exec(lab.i, "ip", "-j", "-6", "rule", "show").stdout)
    return [r for r in rules if r.get("protocol") == "200"]


def tunnel_routes(lab: Lab) -> list[str]:
    out = lab.topo.exec(lab.i, "ip", "-6", "route", "show", "table", str(BASE)).stdout
    return out.splitlines()


class Conn:
    """One long TCP connection from c1 to the D-SID: each `talk` is one request and answer."""

    def __init__(self, lab: Lab) -> None:
        self.proc = lab.topo.spawn(
            lab.c1, sys.executable, "-c", CLIENT, VIP, "keep",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip

    def talk(self) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"x\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().decode().split()[0]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(5)


def conntrack_marks(lab: Lab) -> set[int]:
    out = lab.topo.exec(lab.i, "conntrack", "-L", "-f", "ipv6", "-d", VIP).stdout
    return {int(w[5:]) for w in out.split() if w.startswith("mark=")}


def test_tunnels_past_16_bits_one_rule_and_a_restart_installs_nothing(lab: Lab) -> None:
    n, k = 1000, 70  # 70,000 tunnel slots, and the VIP's two after them
    lab.drive(lab.e, egress_spec())
    vip = ingress_spec(VIP, 1000, 0)["services"]
    first = scale(lab, n, k, vip)
    st = first["status"]
    print(f"{n * k + 3} tunnel slots installed in {first['seconds']:.1f} s")
    assert st["tunnels"] == n * k + 2 and st["unroutable"] >= 1, st  # fc00:9::1 has no route
    assert st["errors"] == 0, st
    assert all(int(m, 16) & 0xFFFFFF > 0xFFFF for m in first["vip"]), first["vip"]
    # one rule for every tunnel, no per-slot rule; one route per D-SID in the tunnel table
    rules = cand_rules(lab)
    assert [(r["fwmark"], r["fwmask"], r["table"]) for r in rules] == [
        (f"{BASE:#x}", "0xff000000", str(BASE))
    ], rules
    assert len(tunnel_routes(lab)) == n + 1  # the unroutable service has none
    conn = Conn(lab)
    assert conn.talk() == "s1"  # through a slot above 16 bits, on the real kernel
    assert {lab.ask(lab.c2, VIP)[0] for _ in range(3)} == {"s1"}
    marks = conntrack_marks(lab)
    assert marks and all(m & 0xFFFFFF > 0xFFFF for m in marks), marks
    # a restarted adapter: adopts every slot with its number, rewrites no entry and no route;
    # then the map is changed under it (the flow's entry deleted, one entry overwritten, one
    # added): the next reconciliation puts it back as it was, and the flow goes on
    s1 = next(m for m, sid in first["vip"].items() if sid == SID[VIP, S1])
    second = scale(lab, n, k, vip, tamper=s1)
    assert second["vip"] == first["vip"]
    assert second["status"]["adopted"] == n * k + 2, second["status"]
    assert second["installed"] == 0, second
    assert second["repair"] == {"installed": 2, "removed": 1, "same": True}, second["repair"]
    assert conn.talk() == "s1"
    conn.close()
    # wanting nothing removes every entry, the routes and the rule
    gone = scale(lab, 0, 0, [])
    assert gone["status"]["tunnels"] == 0, gone["status"]
    assert cand_rules(lab) == [] and tunnel_routes(lab) == []


# In the ingress namespace: turn the tunnel map's slots into the layout an earlier cand left
# (per slot: a program with the header as constants, table N with the D-SID's route through
# it, `fwmark N lookup N`), then take the map's rule and table away.
LEGACY = """
import ipaddress, json, subprocess, sys, tempfile, uuid, ctypes
from pathlib import Path
from cand.adapters import srv6_bpf
from cand.adapters.linux_slots import prog_name
from tests.legacy_layout import encap_program

spec = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    fs = Path(tmp) / "bpf"
    srv6_bpf.ensure_bpffs(fs)
    try:
        for mark, (service, sid) in spec["slots"].items():
            mark, sid = int(mark, 16), ipaddress.IPv6Address(sid)
            pin = fs / uuid.uuid4().hex / prog_name(sid)
            pin.parent.mkdir()
            header = srv6_bpf.srh_header(ipaddress.IPv6Address(spec["source"]), [sid])
            srv6_bpf.load_and_pin(encap_program(header), "cand_h_encaps", pin)
            for cmd in (f"route add {service}/128 proto 200 table {mark} encap bpf xmit pinned "
                        f"{pin} dev {spec['dev']}",
                        f"rule add pref 1000 fwmark {mark:#x} lookup {mark} proto 200"):
                subprocess.run(["ip", "-6", *cmd.split()], check=True)
            pin.unlink()
            pin.parent.rmdir()
    finally:
        ctypes.CDLL(None).umount(str(fs).encode())
base = spec["base"]
subprocess.run(["ip", "-6", "rule", "del", "pref", "1001", "fwmark", f"{base:#x}/0xff000000",
                "lookup", str(base), "proto", "200"], check=True)
subprocess.run(["ip", "-6", "route", "flush", "table", str(base), "proto", "200"], check=True)
"""


def test_an_earlier_layout_is_converted_and_its_flow_kept(lab: Lab) -> None:
    lab.drive(lab.e, egress_spec())
    first = lab.drive(lab.i, ingress_spec(VIP, 1000, 0))
    conn = Conn(lab)
    assert conn.talk() == "s1"
    slots = {m: ident[1:] for m, ident in first["slots"].items() if ident[0] == "tunnel"}
    assert sorted(map(tuple, slots.values())) == [(VIP, SID[VIP, S1]), (VIP, SID[VIP, S2])]
    spec = {"slots": slots, "source": INGRESS, "dev": lab.core, "base": BASE}
    lab.topo.exec(lab.i, sys.executable, "-c", LEGACY, json.dumps(spec))
    rules = cand_rules(lab)
    assert {r["priority"] for r in rules} == {1000} and len(rules) == 2, rules
    assert tunnel_routes(lab) == []
    assert conn.talk() == "s1"  # the flow now runs through the earlier layout
    # the current cand starts on it: same slots, each now a map entry; tables and rules gone
    second = lab.drive(lab.i, ingress_spec(VIP, 1000, 0))
    assert second["slots"] == first["slots"]
    assert second["status"]["adopted"] == 2 and second["status"]["tunnels"] == 2
    rules = cand_rules(lab)
    assert [(r["priority"], r.get("fwmask")) for r in rules] == [(1001, "0xff000000")], rules
    for mark in slots:
        table = str(int(mark, 16))
        assert lab.topo.exec(lab.i, "ip", "-6", "route", "show", "table", table).stdout == ""
    assert conn.talk() == "s1"  # the established flow survived the conversion
    assert lab.ask(lab.c2, VIP)[0] == "s1"
    conn.close()


# In the ingress namespace: the outer source of every tunnel entry in the map its routes use.
SOURCES = """
import ipaddress, json, subprocess, sys
from cand.adapters import srv6_bpf
spec = int(sys.argv[1])
routes = subprocess.run(["ip", "-6", "route", "show", "table", str(spec)], capture_output=True,
                        text=True, check=True).stdout
name = routes.split("encap bpf xmit ")[1].split(":")[0].split()[0]
tmap = srv6_bpf.TunnelMap.find(name)
values = srv6_bpf.map_dump(tmap.map_fd)
print(json.dumps(sorted({str(ipaddress.IPv6Address(srv6_bpf.parse_tunnel_value(v)[1][8:24]))
                         for v in values.values()})))
"""


def test_a_restart_with_another_encap_source_keeps_each_slot_and_rewrites_its_entry(
    lab: Lab,
) -> None:
    """An entry in other bytes than this run would write is still the same tunnel: its mark
    must stay with it (the marks in conntrack lead there), and its bytes are rewritten."""
    lab.drive(lab.e, egress_spec())
    first = lab.drive(lab.i, ingress_spec(VIP, 1000, 0))
    conn = Conn(lab)
    assert conn.talk() == "s1"
    sources = json.loads(lab.topo.exec(lab.i, sys.executable, "-c", SOURCES, str(BASE)).stdout)
    assert sources == [INGRESS]
    other = "fc00:1e::99"
    second = lab.drive(lab.i, {**ingress_spec(VIP, 1000, 0), "encap_source": other})
    assert second["slots"] == first["slots"]
    assert second["status"]["adopted"] == 2 and second["status"]["errors"] == 0, second
    sources = json.loads(lab.topo.exec(lab.i, sys.executable, "-c", SOURCES, str(BASE)).stdout)
    assert sources == [other]
    assert conn.talk() == "s1"  # the established flow kept its instance
    conn.close()
