"""Network namespaces and veth links for labs and tests, removed again whatever happens.

Every name carries a per-test prefix so parallel or leftover runs never collide, and only
namespaces this object made are ever deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@dataclass
class Topology:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    links: int = 0

    def ns(self, name: str) -> str:
        full = f"cand-{self.tag}-{name}"
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        self.exec(full, "ip", "link", "set", "lo", "up")
        self.exec(full, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        return full

    def exec(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, check=check)

    def link(self, a: str, addr_a: str, b: str, addr_b: str, mtu: int = 1500) -> tuple[str, str]:
        """A veth between two namespaces with one IPv6 address (/64, no DAD) on each end."""
        # a counter, not anything derived from the arguments: two links of one topology
        # must never get the same name (the tag keeps topologies apart)
        self.links += 1
        n = self.links
        ia, ib = f"v{self.tag[:4]}a{n}", f"v{self.tag[:4]}b{n}"
        sh(
            "ip",
            "link",
            "add",
            ia,
            "mtu",
            str(mtu),
            "netns",
            a,
            "type",
            "veth",
            "peer",
            "name",
            ib,
            "mtu",
            str(mtu),
            "netns",
            b,
        )
        for ns, ifname, addr in ((a, ia, addr_a), (b, ib, addr_b)):
            self.exec(ns, "ip", "addr", "add", addr, "dev", ifname, "nodad")
            self.exec(ns, "ip", "link", "set", ifname, "up")
        return ia, ib

    def spawn(
        self, ns: str, *cmd: str, log: Path | None = None, **kw: object
    ) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        kw.setdefault("stdout", out)
        kw.setdefault("stderr", subprocess.STDOUT if log is not None else subprocess.DEVNULL)
        p: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", ns, *cmd], **kw
        )
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(8)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for ns in self.namespaces:
            remove_namespace(ns)


def remove_namespace(ns: str) -> None:
    """Kill what still runs in a namespace (children such as gobgpd included), then delete it."""
    pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    sh("ip", "netns", "del", ns, check=False)
