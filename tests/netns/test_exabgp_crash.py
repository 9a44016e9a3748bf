"""kill -9 of the egress's ExaBGP: cand starts a new one, announces again, and no ingress ever
loses the path (graceful restart keeps it stale until the new session's End-of-RIB)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cand_testbed.agent_driver import AgentProcess
from cand_testbed.routers import SERVICE, cand_toml, received, start_cand, start_mosquitto

from cand.api import request
from cand.lab.netns import Topology

pytestmark = pytest.mark.netns
BINDING = "2001:db8:a::10"


def view(routes: list[dict[str, Any]]) -> tuple[tuple[str, int, str], ...]:
    return tuple(sorted((r["state"], r["load_permille"], r["l2"], r["binding"]) for r in routes))


async def until(sock: Path, want: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (v := view(await received(sock))) != want:
        assert time.monotonic() < deadline, f"{v} != {want}"
        await asyncio.sleep(0.05)


def test_exabgp_killed_is_restarted_and_no_ingress_loses_the_path(
    topo: Topology, tmp_path: Path
) -> None:
    e, i = topo.ns("egress"), topo.ns("ingress")
    topo.link(e, "fc00:a::3/64", i, "fc00:a::1/64")
    port = start_mosquitto(topo, e, tmp_path)
    econf = cand_toml(
        tmp_path, "e", "fc00:a::3", ["fc00:a::1"], ["egress"], mqtt_port=port, speaker="exabgp"
    )
    esock = start_cand(topo, e, econf, tmp_path, "e")
    iconf = cand_toml(tmp_path, "i", "fc00:a::1", ["fc00:a::3"], ["ingress"])
    isock = start_cand(topo, i, iconf, tmp_path, "i")
    pid_file = tmp_path / "e-exabgp" / "exabgp.pid"
    up300 = (("up", 300, 7, BINDING),)

    async def main() -> list[Any]:
        from cand_testbed.routers import wait_api

        await wait_api(isock)
        await wait_api(esock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await asyncio.to_thread(agent.say, "report cpu=0.3")
        await until(isock, up300)
        first = int(pid_file.read_text().split()[0])
        os.kill(first, 9)  # the namespace shares our pid space
        views: list[Any] = []
        deadline = time.monotonic() + 30
        while True:  # until a new ExaBGP has its session up again
            views.append(view(await received(isock)))
            st = (await request(esock, "status"))["speaker"]
            if st["restarts"] >= 1 and st["peers_up"] == 1:
                break
            assert time.monotonic() < deadline, st
            await asyncio.sleep(0.1)
        assert int(pid_file.read_text().split()[0]) != first
        # past the new session's End-of-RIB (eor_defer 5 s): stale paths not re-announced
        # would be dropped at the ingress now
        settle = time.monotonic() + 7
        while time.monotonic() < settle:
            views.append(view(await received(isock)))
            await asyncio.sleep(0.1)
        # fresh, not merely kept: the ingress keeps a service's last stale path past an
        # End-of-RIB, so only this shows that the new ExaBGP announced it again
        stale = [r for r in await received(isock) if r["stale_until"] is not None]
        assert stale == [], stale
        await asyncio.to_thread(agent.say, "report cpu=0.6")
        await until(isock, (("up", 600, 4, BINDING),))
        return views

    views = asyncio.run(main())
    assert views and all(v == up300 for v in views), set(views)
