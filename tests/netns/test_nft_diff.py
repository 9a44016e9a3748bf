"""A reconciliation on the real kernel writes only the nftables chains and elements that differ
from what it reads back: nothing when nothing changed (no transaction at all), exactly the
chain someone rewrote by hand, an element someone deleted, a stray chain of cand's table; and
the flows still steer afterwards. Same lab as test_linux_dataplane."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from cand.adapters.linux_nft import chain_name
from cand.lab.netns import Topology
from cand.model import ServiceId
from tests.netns.test_linux_dataplane import (
    EGRESS,
    INGRESS,
    SID,
    VIP,
    Lab,
    build_lab,
    egress_spec,
    ingress_spec,
)

pytestmark = pytest.mark.netns

# a running adapter: applies the spec, reconciles, then reconciles once per line on stdin,
# printing its status counters each time
RUN = """
import asyncio, json, sys
from cand_testbed.dataplane_driver import effects
from cand.adapters import linux_nft as nft
from cand.adapters.linux import LinuxDataplane, LinuxOptions
from cand.model import RouterId

spec = json.loads(sys.argv[1])
todo, modes = effects(spec)
probe = nft.ProbeIn(*spec["probe"]) if spec.get("probe") else None
dp = LinuxDataplane(LinuxOptions(adopt_hold=0), RouterId.parse(spec["router"]), modes,
                    probe=probe)

async def main():
    await dp.apply(todo)
    await dp.reconcile()
    print(json.dumps(dp.status()), flush=True)
    for _ in sys.stdin:
        await dp.reconcile()
        print(json.dumps(dp.status()), flush=True)

asyncio.run(main())
"""


class Adapter:
    def __init__(self, lab: Lab, spec: dict[str, Any]) -> None:
        self.proc = lab.topo.spawn(
            lab.i if spec["router"] == INGRESS else lab.e,
            sys.executable, "-c", RUN, json.dumps(spec),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.status = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the adapter ended"
        got: dict[str, Any] = json.loads(line)
        return got

    def reconcile(self) -> dict[str, int]:
        """One reconciliation; what it added to each counter."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        before, self.status = self.status, self._read()
        return {k: v - before[k] for k, v in self.status.items() if isinstance(v, int)}

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def lab(topo: Topology) -> Lab:
    return build_lab(topo)


def nft(lab: Lab, ns: str, *args: str) -> str:
    return lab.topo.exec(ns, "nft", *args).stdout


def ingress_with_more(lab: Lab) -> dict[str, Any]:
    """The VIP (to s1 only) and 20 more D-SIDs of 3 instances, half of them 3-tuple."""
    spec = ingress_spec(VIP, 1000, 0)
    for i in range(20):
        choices = [[f"2001:db8:ff::{j + 1:x}", EGRESS, f"fc00:0:3:{i + 1:x}:{j:x}::1", 10 + j,
                    False, "up"] for j in range(3)]  # fmt: skip
        flow_key = "3-tuple" if i % 2 else "5-tuple"
        spec["services"].append({"sid": f"2001:db8:100::{i + 1:x}", "choices": choices,
                                 "flow_key": flow_key, "timeout": 90})  # fmt: skip
    return spec


def test_reconcile_rewrites_only_what_was_changed_by_hand(lab: Lab) -> None:
    egress = Adapter(lab, {**egress_spec(), "probe": ["fc00:1e::/64", 40000]})
    ingress = Adapter(lab, ingress_with_more(lab))
    try:
        for a in (egress, ingress):  # nothing changed since the first reconciliation
            st = a.status
            assert st["nft_diff_fallbacks"] == 0 and st["nft_unparsed"] == 0, st
            got = a.reconcile()
            assert got["chains_written"] == 0 and got["elements_written"] == 0, got
            assert got["transactions"] == 0 and got["errors"] == 0, got
        assert lab.ask(lab.c1, VIP)[0] == "s1"
        listing = nft(lab, lab.i, "list", "table", "ip6", "cand")

        # someone rewrites the VIP's chain to drop every new flow
        chain = chain_name(ServiceId.parse(VIP))
        nft(lab, lab.i, "flush", "chain", "ip6", "cand", chain)
        nft(lab, lab.i, "add", "rule", "ip6", "cand", chain, "drop")
        assert "drop" in nft(lab, lab.i, "list", "chain", "ip6", "cand", chain)
        got = ingress.reconcile()
        assert got["chains_written"] == 1 and got["elements_written"] == 0, got
        assert got["transactions"] == 1 and got["nft_diff_fallbacks"] == 0, got
        assert nft(lab, lab.i, "list", "table", "ip6", "cand") == listing
        assert [lab.ask(lab.c1, VIP)[0] for _ in range(3)] == ["s1"] * 3

        # an element of the D-SID set lost, a chain of cand's table nothing wants
        nft(lab, lab.i, "delete", "element", "ip6", "cand", "dsids", f"{{ {VIP} }}")
        stray = chain_name(ServiceId.parse("2001:db8:100::ff"))
        nft(lab, lab.i, "add", "chain", "ip6", "cand", stray)
        got = ingress.reconcile()
        assert got["chains_written"] == 1 and got["elements_written"] == 1, got
        assert nft(lab, lab.i, "list", "table", "ip6", "cand") == listing
        # at the egress: its SID map and its untracked (probe) chain
        sid = SID[VIP, "2001:db8:a::10"]
        nft(lab, lab.e, "delete", "element", "ip6", "cand", "sids", f"{{ {sid} }}")
        nft(lab, lab.e, "flush", "chain", "ip6", "cand", "untracked")
        got = egress.reconcile()
        assert got["chains_written"] == 1 and got["elements_written"] == 1, got
        assert sid in nft(lab, lab.e, "list", "map", "ip6", "cand", "sids")
        assert "notrack" in nft(lab, lab.e, "list", "chain", "ip6", "cand", "untracked")
        assert lab.ask(lab.c1, VIP)[0] == "s1"
        got = ingress.reconcile()
        assert got["chains_written"] == 0 and got["transactions"] == 0, got
    finally:
        ingress.close()
        egress.close()
