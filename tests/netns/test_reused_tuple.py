"""A new connection that reuses the 5-tuple of an old, never answered one is steered by the
weights of now, not by the old flow's conntrack mark.

bench.failure, with captures: c1 opens 200 connections/s; a SYN sent to web-3 after it was
killed went unanswered and left a SYN_SENT conntrack entry at dr1 (120 s) with web-3's
mark. ~100 s later c1's ephemeral ports wrapped and a new SYN on the same 5-tuple matched
that entry (no new one: conntrack takes it for a retransmission), the `ct mark` restore
gave it web-3's slot again, and it was lost while web-3 was dead once more (new flows
failing 0.3-1.5 s after a kill, when dr1's weights no longer picked web-3).

    c1 (source port fixed) ── ingress ══core══ egress ─┬─ s1 (drops SYNs to 8082)
                                                       └─ s2 (nothing on 8082: refused)
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from cand.lab.netns import Topology
from tests.netns.test_linux_dataplane import (
    EGRESS,
    INGRESS,
    S1,
    S2,
    SID,
    VIP,
    build_lab,
    egress_spec,
)

pytestmark = pytest.mark.netns

KNOCK = """
import socket, sys, time
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 40000))
s.settimeout(float(sys.argv[2]))
t = time.monotonic()
try:
    s.connect((sys.argv[1], 8082))
    what = "open"
except ConnectionRefusedError:
    what = "refused"
except TimeoutError:
    what = "timeout"
print(what, round(time.monotonic() - t, 3))
"""


def ingress(s1: tuple[int, str], s2: tuple[int, str]) -> dict[str, Any]:
    choices = [[S1, EGRESS, SID[VIP, S1], *s1], [S2, EGRESS, SID[VIP, S2], *s2]]
    svc = {
        "sid": VIP,
        "flow_key": "5-tuple",
        "timeout": 60,
        "choices": [[b, e, sid, w, False, st] for b, e, sid, w, st in choices],
    }
    return {"router": INGRESS, "services": [svc]}


def test_a_reused_tuple_of_an_unanswered_flow_is_steered_anew(topo: Topology) -> None:
    lab = build_lab(topo)
    s1 = f"cand-{topo.tag}-s1"  # made by build_lab
    for rule in ("add table ip6 t", "add chain ip6 t in { type filter hook input priority 0; }",
                 "add rule ip6 t in tcp dport 8082 drop"):  # fmt: skip
        topo.exec(s1, "nft", rule)
    lab.drive(lab.e, egress_spec())
    lab.drive(lab.i, ingress((1000, "up"), (0, "up")))

    def knock(timeout: float) -> str:
        return topo.exec(lab.c1, sys.executable, "-c", KNOCK, VIP, str(timeout)).stdout.split()[0]

    assert knock(0.5) == "timeout"  # to s1, which never answers: a SYN_SENT entry stays
    ct = topo.exec(lab.i, "conntrack", "-L", "-p", "tcp", "--sport", "40000").stdout
    assert "SYN_SENT" in ct and "mark=" in ct, ct
    # s1 goes down; new flows go to s2 ...
    lab.drive(lab.i, ingress((0, "down"), (1000, "up")))
    # ... and so does a new SYN on the old 5-tuple (before: the old entry's mark took it to s1)
    assert knock(2.0) == "refused"
