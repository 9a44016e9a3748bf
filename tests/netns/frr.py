"""FRR OSPFv3 routers (zebra + ospf6d) in namespaces, for tests only.

FRR drops to its own user, so each router's config, pid files and vty sockets live in a
directory of its own under /tmp owned by `frr` (pytest's tmp directories are root's, mode
0700). The daemons are spawned through the Topology, so its close() stops them by PID.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cand.lab.netns import Topology

ZEBRA, OSPF6D = "/usr/lib/frr/zebra", "/usr/lib/frr/ospf6d"


def frr_available() -> str | None:
    if not (Path(ZEBRA).exists() and Path(OSPF6D).exists() and shutil.which("vtysh")):
        return "needs FRR's zebra, ospf6d and vtysh (scripts/setup)"
    return None


@dataclass
class Ospf6Router:
    topo: Topology
    ns: str
    dir: Path

    def vtysh(self, *commands: str) -> str:
        args = ["vtysh", "--vty_socket", str(self.dir)]
        for c in commands:
            args += ["-c", c]
        return self.topo.exec(self.ns, *args).stdout

    def metric(self, prefix: str) -> int | None:
        """zebra's metric for the selected route to `prefix`, None without one."""
        data: dict[str, list[dict[str, Any]]] = json.loads(
            self.vtysh(f"show ipv6 route {prefix} json")
        )
        for routes in data.values():
            for r in routes:
                if r.get("selected") and r.get("protocol") == "ospf6":
                    return int(r["metric"])
        return None

    def set_cost(self, ifname: str, cost: int) -> None:
        self.vtysh("configure terminal", f"interface {ifname}", f"ipv6 ospf6 cost {cost}")


def start_ospf6(
    topo: Topology, ns: str, name: str, router_id: str, interfaces: list[str], base: Path
) -> Ospf6Router:
    d = base / name
    d.mkdir()
    conf = [f"hostname {name}", "log stdout informational"]
    for ifname in interfaces:
        conf += [
            f"interface {ifname}",
            " ipv6 ospf6 area 0",
            " ipv6 ospf6 network point-to-point",
            " ipv6 ospf6 hello-interval 1",
            " ipv6 ospf6 dead-interval 4",
            " ipv6 ospf6 cost 10",
            "exit",
        ]
    conf += ["interface lo", " ipv6 ospf6 area 0", "exit"]
    conf += ["router ospf6", f" ospf6 router-id {router_id}", "exit", ""]
    (d / "ospf6d.conf").write_text("\n".join(conf))
    (d / "zebra.conf").write_text(f"hostname {name}\n")
    for p in (d, *d.iterdir()):
        shutil.chown(p, "frr", "frr")
    common = ["-z", str(d / "zserv.api"), "--vty_socket", str(d)]
    topo.spawn(
        ns, ZEBRA, "-f", str(d / "zebra.conf"), "-i", str(d / "zebra.pid"), *common,
        log=base / f"{name}-zebra.log",
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not (d / "zserv.api").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: zebra did not start")
        time.sleep(0.05)
    topo.spawn(
        ns, OSPF6D, "-f", str(d / "ospf6d.conf"), "-i", str(d / "ospf6d.pid"), *common,
        log=base / f"{name}-ospf6d.log",
    )  # fmt: skip
    return Ospf6Router(topo, ns, d)


def frr_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="cand-frr-"))
    base.chmod(0o755)
    return base
