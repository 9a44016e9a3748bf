"""The Figure-2 lab with ExaBGP as every D-Router's speaker instead of GoBGP: the same
clients reach the same instances over SRv6 (issue 6: one wire format, either speaker)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from cand_testbed.fig2 import APP, WEB, Fig2

from cand.lab.netns import netns_available
from tests.conftest import need
from tests.lab.test_fig2 import restart_under_load

pytestmark = [pytest.mark.netns, pytest.mark.fig2]


def test_lab_with_exabgp_steers_both_services() -> None:
    why = netns_available()
    need(why is None, why or "")
    lab = Fig2(speaker="exabgp")
    lab.up()
    try:
        took = asyncio.run(lab.wait_ready())
        print(f"\nExaBGP lab converged {took:.1f} s after up")
        web = Counter(lab.once("c1", WEB)["served_by"] for _ in range(10))
        app = Counter(lab.once("c2", APP)["served_by"] for _ in range(4))
        assert set(web) == {"web-2", "web-3"}, web
        assert None not in app and len(app) == 1, app  # 3-tuple: one instance for c2
        status = asyncio.run(lab.api("dr1", "status"))
        assert status["speaker"]["speaker"] == "exabgp"
        # a restart kills ExaBGP (no NOTIFICATION): FRR keeps the paths as graceful-restart
        # stale ones until the new cand announces them again and sends End-of-RIB
        restart_under_load(lab)
    finally:
        lab.down()
