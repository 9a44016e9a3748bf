"""The Figure-2 lab (`labs/dyncast-fig2`) driven from Python: up and down, its daemons' APIs,
the instances' load, kill -9, a cand restart, and client traffic. The demo and the lab tests
both use it, so what the demo shows is what the tests check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
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
REFLECTORS = ("frr", "gobgp", "none")
INGRESSES = ("dr1", "dr2")
DATAPLANES = ("linux", "p4")


class Fig2:
    def __init__(
        self,
        speaker: str = "gobgp",
        name: str | None = None,
        reflector: str = "frr",
        dataplane: str = "linux",
        keepalive: int = 10,
    ) -> None:
        """`name` runs the lab under a name of its own (namespaces `clab-<name>-<node>`, run
        directory `/run/cand/<name>`), so that it can run beside another copy of the lab.
        `reflector` is what runs BGP on rr: "frr" (FRR's bgpd), "gobgp" (a plain gobgpd with
        the same sessions, `rr-gobgpd.toml`) or "none" (no reflector: dr1..dr3 peer with each
        other directly, a full iBGP mesh; rr only forwards). `dataplane` is dr1's, where c1's
        flows enter: "linux" (the kernel's, as every D-Router) or "p4" (a BMv2 switch running
        p4/cand.p4 on dr1's data ports, programmed by dr1's cand: `p4.sh`). `keepalive` is
        the instances' MQTT keepalive (seconds): what finds an instance whose host went
        silent."""
        if reflector not in REFLECTORS:
            raise ValueError(f"reflector {reflector!r}: one of {', '.join(REFLECTORS)}")
        if dataplane not in DATAPLANES:
            raise ValueError(f"dataplane {dataplane!r}: one of {', '.join(DATAPLANES)}")
        self.lab = clab.load(LAB_DIR)
        if name is not None:
            self.lab = dataclasses.replace(self.lab, name=name)
        self.run = clab.run_dir(self.lab.name)
        self.speaker = speaker
        self.reflector = reflector
        self.dataplane = dataplane
        self.keepalive = keepalive
        self.spawned: list[subprocess.Popen[bytes]] = []

    # --- the lab ----------------------------------------------------------------------------

    def up(self) -> None:
        os.environ["CAND_LAB_SPEAKER"] = self.speaker
        os.environ["CAND_LAB_REFLECTOR"] = self.reflector
        os.environ["CAND_LAB_DR1_DATAPLANE"] = self.dataplane
        os.environ["CAND_LAB_KEEPALIVE"] = str(self.keepalive)  # instance.sh, every instance
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
        """Until both ingresses steer both services to both instances (and a P4 switch has
        its tables written); returns the seconds. On a timeout the error says what each
        ingress saw last and ends with the tail of each cand log, so a CI log explains it."""
        start = time.monotonic()
        want = {WEB: 2, APP: 2}
        last: dict[str, object] = {}
        while True:
            ready = True
            for r in INGRESSES:
                try:
                    v = await self.weights(r)
                except (ApiError, OSError) as e:
                    last[r], ready = f"api: {e}", False
                    continue
                got = {s: sum(w > 0 for w in v.get(s, {}).values()) for s in want}
                last[r] = v
                ready = ready and got == want
            try:
                if ready and await self.switch_ready():
                    return time.monotonic() - start
            except (ApiError, OSError) as e:
                last["switch"] = f"api: {e}"
            if time.monotonic() - start > timeout:
                raise TimeoutError(
                    f"lab not converged after {timeout:.0f}s (logs: {self.run}); "
                    f"last seen: {last}\n{self.log_tails()}"
                )
            await asyncio.sleep(0.2)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every log in the run directory (for a failure message)."""
        out = []
        for f in sorted(self.run.glob("*.log")):
            with contextlib.suppress(OSError):
                tail = f.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {f.name}\n" + "\n".join(tail))
        return "\n".join(out)

    async def switch_ready(self) -> bool:
        """dr1's P4 switch is connected and holds both services (always true on Linux)."""
        if self.dataplane != "p4":
            return True
        dp = (await self.api("dr1", "status"))["dataplane"]
        return bool(dp.get("connected")) and dp.get("reconciled", 0) >= 1 and dp["services"] == 2

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

    # --- benchmark helpers --------------------------------------------------------------------

    def sh(self, node: str, *cmd: str) -> str:
        """Runs one command in a node and returns its output; fails if the command fails."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(node), *cmd], capture_output=True, text=True, check=True
        ).stdout

    def spawn(self, node: str, *cmd: str, text: bool = True) -> subprocess.Popen[Any]:
        """A long-running program in a node, its stdout piped back; `down` kills it."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), *cmd],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=text, start_new_session=True,
        )  # fmt: skip
        self.spawned.append(p)
        return p

    def probe(self, node: str, *args: str) -> subprocess.Popen[str]:
        """This module's own probes (`python -m cand_testbed.fig2 sink|connect|flows`) in a node."""
        return self.spawn(node, sys.executable, "-m", "cand_testbed.fig2", *args)

    def route_natively(self) -> None:
        """Routes the edge sites' instance subnets (the D-BIDs) on rr, so that a client can
        reach an instance by its own address with plain IPv6 forwarding, over the same hops as
        the steered path (client, ingress, rr, egress, instance): the benchmarks' baseline."""
        for router, uplink in (("dr2", "fc00:2::1"), ("dr3", "fc00:3::1")):
            for _, binding, where in INSTANCES.values():
                if where == router:
                    net = binding.rsplit("::", 1)[0] + "::/64"
                    self.sh("rr", "ip", "-6", "route", "replace", net, "via", uplink)


# --- probes, run inside a node by Fig2.probe ----------------------------------------------------


def sink(port: int) -> None:
    """A bare TCP listener: accepts and closes, so that a connection's set-up is all the kernel's
    (no server work, no load report on every connection as the lab instances make)."""
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(4096)
        print("listening", flush=True)
        while True:
            c, _ = s.accept()
            c.close()


def connect_times(targets: list[str], n: int, port: int, gap: float) -> None:
    """`n` rounds of one TCP connect to each target in turn (the order rotates every round, so
    that no target always goes first); prints one JSON line per target with the connect()
    times in microseconds and the count of failures. Each connection is reset on close (no
    TIME_WAIT left behind)."""
    times: dict[str, list[float]] = {t: [] for t in targets}
    failed = dict.fromkeys(targets, 0)
    linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    for i in range(n):
        k = i % len(targets)
        for t in targets[k:] + targets[:k]:
            with socket.socket(socket.AF_INET6) as s:
                s.settimeout(2.0)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                start = time.perf_counter_ns()
                try:
                    s.connect((t, port))
                except OSError:
                    failed[t] += 1
                    continue
                times[t].append((time.perf_counter_ns() - start) / 1000)
        if gap:
            time.sleep(gap)
    for t in targets:
        print(json.dumps({"target": t, "us": times[t], "failed": failed[t]}), flush=True)


def flows(dsid: str, gap: float, port: int) -> None:
    """New connections one after the other, a request on each, until killed: one JSON line
    per connection with its start (`time.monotonic()`, the same clock in every namespace) and
    the instance that answered (null on failure)."""
    from cand_testbed.load import once

    async def run() -> None:
        while True:
            t = time.monotonic()
            got = await once(dsid, port, timeout=1.0)
            print(json.dumps({"t": t, "served_by": got.get("served_by")}), flush=True)
            await asyncio.sleep(max(0.0, gap - (time.monotonic() - t)))

    asyncio.run(run())


def mqtt_watch(topic: str, host: str, port: int) -> None:
    """A bare MQTT v5 subscriber: one JSON line per message on `topic` (retained ones left
    out) with its seq, state, the publisher's `ts` and the receive time, both also on the
    monotonic clock of every namespace (`pub`, `recv`): the benchmarks' MQTT baseline, and
    their record of when a D-MA published."""
    import aiomqtt

    async def run() -> None:
        v5 = aiomqtt.ProtocolVersion.V5
        async with aiomqtt.Client(host, port, protocol=v5) as c:
            await c.subscribe(topic, 1)
            print("subscribed", flush=True)
            async for m in c.messages:
                recv, wall = time.monotonic(), time.time()
                if m.retain:
                    continue
                body = json.loads(bytes(m.payload))
                row = {"recv": recv, "pub": body["ts"] - (wall - recv), "seq": body["seq"],
                       "state": body["state"], "ms": (wall - body["ts"]) * 1000}  # fmt: skip
                print(json.dumps(row), flush=True)

    asyncio.run(run())


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m cand_testbed.fig2", description="lab probes")
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--port", type=int, default=8080)
    c = sub.add_parser("connect")
    c.add_argument("targets", nargs="+")
    c.add_argument("-n", type=int, default=1000)
    c.add_argument("--port", type=int, default=8080)
    c.add_argument("--gap", type=float, default=0.0)
    f = sub.add_parser("flows")
    f.add_argument("dsid")
    f.add_argument("--gap", type=float, default=0.005)
    f.add_argument("--port", type=int, default=80)
    m = sub.add_parser("mqtt-watch")
    m.add_argument("topic")
    m.add_argument("--host", default="::1")
    m.add_argument("--port", type=int, default=1883)
    a = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        if a.what == "sink":
            sink(a.port)
        elif a.what == "connect":
            connect_times(a.targets, a.n, a.port, a.gap)
        elif a.what == "mqtt-watch":
            mqtt_watch(a.topic, a.host, a.port)
        else:
            flows(a.dsid, a.gap, a.port)


if __name__ == "__main__":
    cli()
