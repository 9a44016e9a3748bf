"""cand stopped (its speaker task cancelled, what SIGTERM does) while the gobgpd it just started
has not answered yet: that gobgpd must not outlive cand. It did, and was found left behind by
`bench.soak_loopback`. A real gobgpd, started through the GoBGP speaker and its `Child`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from cand import config

gobgp = pytest.importorskip("cand_gobgp.speaker")

pytestmark = pytest.mark.skipif(shutil.which("gobgpd") is None, reason="needs gobgpd")


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_stop_while_gobgpd_starts_ends_it(tmp_path: Path) -> None:
    cfg = config.parse(
        {
            "router": {"id": "fc00:ff::3", "roles": ["egress"], "locator": "fc00:0:3::/48"},
            "bgp": {"speaker": "gobgp", "neighbors": [{"address": "fc00:a::1", "asn": 65000}]},
        }
    )
    sock = tmp_path / "gobgpd.sock"
    sp = gobgp.GobgpSpeaker(cfg, gobgp.GobgpOptions(socket=str(sock)))
    real_alive = sp._alive
    seen: dict[str, Any] = {"calls": 0, "answered": []}
    holder: dict[str, asyncio.Task[None]] = {}

    async def alive_then_stop() -> bool:
        """The real gRPC check against the real gobgpd; from the second call on (the first is
        the attach check, before any gobgpd is started) cand is told to stop right there."""
        seen["calls"] += 1
        up = await real_alive()
        if seen["calls"] >= 2:
            seen["answered"].append(up)
            seen["pid"] = int(Path(f"{sock}.pid").read_text())
            holder["task"].cancel()
            return False
        return up

    sp._alive = alive_then_stop

    async def emit(event: Any) -> None:
        return None

    async def main() -> None:
        holder["task"] = asyncio.create_task(sp.run(emit))
        with pytest.raises(asyncio.CancelledError):
            await holder["task"]

    try:
        asyncio.run(main())
        pid = seen.get("pid")
        assert pid is not None, "gobgpd was never started"
        assert sp.child is None  # the start never finished: nobody else could end it
        assert gone(pid), f"gobgpd pid {pid} still running after cand stopped during its start"
        assert not Path(f"{sock}.pid").exists()
    finally:
        pid = seen.get("pid")
        if pid is not None and not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
