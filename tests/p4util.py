"""P4 test scaffolding: the toolchain check, the compiled program, and a BMv2 switch in a
namespace, stopped by PID whatever the test does.

In CI (CI=true) or with CAND_REQUIRE_NETNS=1 a missing toolchain fails the test, as a missing
privilege does (tests.conftest.strict); elsewhere it skips, naming what is missing.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cand_p4 import toolchain

from cand.lab.netns import Topology
from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "p4" / "build"


def need_p4(*tools: str) -> None:
    why = toolchain.missing(*tools)
    need(why is None, why or "")


@dataclass(frozen=True)
class Program:
    json: Path
    p4info: Path
    output: str  # what p4c printed (warnings)


_BUILT: dict[bytes, Program] = {}


def compile_program(out: Path) -> Program:
    """Runs p4/build into `out`; a compile error fails the calling test with p4c's message.
    Compiled once per test session for the same program and build script (p4c takes seconds,
    and a dozen tests want it): a later call gets the first build's files."""
    need_p4("p4c-bm2-ss")
    key = hashlib.sha256((ROOT / "p4" / "cand.p4").read_bytes() + BUILD_SCRIPT.read_bytes())
    done = _BUILT.get(key.digest())
    if done is not None and done.json.exists() and done.p4info.exists():
        return done
    run = subprocess.run([str(BUILD_SCRIPT), str(out)], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        pytest.fail(f"p4/build failed ({run.returncode}):\n{run.stdout}{run.stderr}")
    program = Program(out / "cand.json", out / "cand.p4info.txtpb", run.stdout + run.stderr)
    _BUILT[key.digest()] = program
    return program


@dataclass
class Bmv2:
    """simple_switch_grpc in namespace `ns`, its P4Runtime server on a unix socket (reachable
    from the test's own namespace), its notifications socket and log in `dir`."""

    ns: str
    dir: Path
    ports: dict[int, str]
    proc: subprocess.Popen[bytes] | None = None
    log_level: str = "info"  # "off" for benchmarks: a log line per table hit costs throughput

    @property
    def socket(self) -> Path:
        return self.dir / "p4rt.sock"

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    @property
    def log(self) -> Path:
        return self.dir / "bmv2.log"

    def start(self, topo: Topology, device_id: int = 1) -> None:
        exe = toolchain.find("simple_switch_grpc")
        assert exe is not None
        args = [str(exe), "--device-id", str(device_id), "--no-p4"]
        args += ["--notifications-addr", f"ipc://{self.dir}/notify.ipc"]
        args += ["--log-file", str(self.dir / "bmv2"), "--log-flush", "-L", self.log_level]
        for port, ifname in sorted(self.ports.items()):
            args += ["-i", f"{port}@{ifname}"]
        args += ["--", "--grpc-server-addr", self.address]
        self.proc = topo.spawn(self.ns, *args, log=self.dir / "bmv2.out")
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"simple_switch_grpc exited: {self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"simple_switch_grpc: no P4Runtime socket after 10 s: {self.tail()}")
            time.sleep(0.05)

    def tail(self) -> str:
        text = ""
        for p in (self.dir / "bmv2.out", self.log):
            if p.exists():
                text += p.read_text(errors="replace")[-2000:]
        return text
