"""The Figure-2 lab (`labs/dyncast-fig2`) driven from Python: up and down, its daemons' APIs,
the instances' load, kill -9, a cand restart, and client traffic. The demo and the lab tests
both use it, so what the demo shows is what the tests check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cand.api import ApiError, request
from cand.lab import clab

LAB_DIR = Path(__file__).resolve().parents[3] / "labs" / "dyncast-fig2"  # the repository's labs/
WEB, APP = "2001:db8:5::1", "2001:db8:5::2"
INSTANCES = {
    "web-2": (WEB, "2001:db8:2a::10", "dr2"),
    "web-3": (WEB, "2001:db8:3a::10", "dr3"),
    "app-2": (APP, "2001:db8:2b::10", "dr2"),
    "app-3": (APP, "2001:db8:3b::10", "dr3"),
}
ROUTERS = ("dr1", "dr2", "dr3")
INGRESSES = ("dr1", "dr2")


class Fig2:
    def __init__(self, speaker: str = "gobgp") -> None:
        self.lab = clab.load(LAB_DIR)
        self.run = clab.run_dir(self.lab.name)
        self.speaker = speaker
        self.spawned: list[subprocess.Popen[bytes]] = []

    # --- the lab ----------------------------------------------------------------------------

    def up(self) -> None:
        os.environ["CAND_LAB_SPEAKER"] = self.speaker
        with contextlib.suppress(clab.LabError):
            clab.down(self.lab.name)  # a lab left over by a killed run
        clab.up(self.lab)

    def down(self) -> None:
        for p in self.spawned:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        with contextlib.suppress(clab.LabError):
            clab.down(self.lab.name)

    def ns(self, node: str) -> str:
        return self.lab.netns(node)

    async def api(self, router: str, cmd: str) -> Any:
        return await request(self.run / f"{router}.sock", cmd)

    async def weights(self, router: str) -> dict[str, dict[str, int]]:
        """D-SID -> D-BID -> weight at one ingress."""
        out: dict[str, dict[str, int]] = {}
        for svc in await self.api(router, "services"):
            out[svc["service"]] = {i["binding"]: i["weight"] for i in svc["instances"]}
        return out

    async def scores(self, router: str) -> dict[str, dict[str, int]]:
        """D-SID -> D-BID -> CATS L2 score (0-10, higher is better) as one ingress knows it."""
        out: dict[str, dict[str, int]] = {}
        for svc in await self.api(router, "services"):
            out[svc["service"]] = {i["binding"]: i["l2"] for i in svc["instances"]}
        return out

    async def wait_ready(self, timeout: float = 90.0) -> float:
        """Until both ingresses steer both services to both instances; returns the seconds."""
        start = time.monotonic()
        want = {WEB: 2, APP: 2}
        while True:
            try:
                views = [await self.weights(r) for r in INGRESSES]
                if all(
                    {s: sum(w > 0 for w in v.get(s, {}).values()) for s in want} == want
                    for v in views
                ):
                    return time.monotonic() - start
            except ApiError:
                pass
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"lab not converged after {timeout:.0f}s (logs: {self.run})")
            await asyncio.sleep(0.2)

    # --- instances --------------------------------------------------------------------------

    def control(self, instance: str, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.run / f"{instance}.ctl"))
            s.sendall(line.encode() + b"\n")
            return s.makefile().readline().strip()

    def pids(self, node: str, needle: str) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.ns(node)], capture_output=True, text=True
        ).stdout.split()
        found = []
        for pid in out:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if needle.encode() in cmdline:
                    found.append(int(pid))
        return found

    def kill_instance(self, instance: str) -> None:
        for pid in self.pids(instance, "cand_testbed.instance"):
            os.kill(pid, signal.SIGKILL)

    def start_instance(self, instance: str) -> None:
        service, binding, _ = INSTANCES[instance]
        gw = binding.rsplit("::", 1)[0] + "::1"
        self._spawn(instance, "./instance.sh", instance, service, binding, gw)

    def stop_cand(self, router: str, sig: int = signal.SIGTERM) -> None:
        pids = self.pids(router, "cand.cli run")
        for pid in pids:
            os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.05)

    async def restart_cand(self, router: str, timeout: float = 30.0) -> None:
        """`cand restart` on one router: the daemon re-executes in place; returns once the new
        one answers (its uptime started again)."""
        before = (await self.api(router, "status"))["uptime"]
        await self.api(router, "restart")
        deadline = time.monotonic() + timeout
        while True:
            await asyncio.sleep(0.1)
            with contextlib.suppress(ApiError):
                if (await self.api(router, "status"))["uptime"] < before:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{router}: cand did not come back (log: {self.run})")

    def start_cand(self, router: str) -> None:
        conf, log = self.run / f"{router}.toml", self.run / f"{router}.log"
        run = f'exec "$CAND_LAB_PYTHON" -m cand.cli run -c {conf} >>{log} 2>&1'
        self._spawn(router, "sh", "-c", run)

    def _spawn(self, node: str, *cmd: str) -> None:
        self.spawned.append(
            subprocess.Popen(
                ["ip", "netns", "exec", self.ns(node), *cmd],
                cwd=self.lab.folder,
                env=clab.lab_env(self.lab),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    # --- clients ----------------------------------------------------------------------------

    def once(self, client: str, dsid: str) -> dict[str, Any]:
        out = subprocess.run(
            ["ip", "netns", "exec", self.ns(client), sys.executable, "-m", "cand_testbed.load",
             "--dsid", dsid, "--once"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return row

    def load(
        self,
        client: str,
        dsids: list[str],
        rate: float,
        keep: int,
        duration: float,
        every: float = 1.0,
    ) -> subprocess.Popen[str]:
        args = [a for d in dsids for a in ("--dsid", d)]
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(client), sys.executable, "-m", "cand_testbed.load",
             *args, "--rate", str(rate), "--keep", str(keep), "--duration", str(duration),
             "--every", str(every)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.spawned.append(p)  # type: ignore[arg-type]
        return p
