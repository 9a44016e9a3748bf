"""Real routers in namespaces: cand + gobgpd, mosquitto, FRR, with configs written per run.
Used by the demo and the namespace tests."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from cand.api import ApiError, request
from cand.lab.netns import Topology
from cand_testbed.mosquitto import Mosquitto

SERVICE = "2001:db8:5::1"
CAND = [sys.executable, "-m", "cand.cli"]


def cand_toml(
    tmp: Path,
    name: str,
    router_id: str,
    neighbors: list[str],
    roles: list[str],
    *,
    mqtt_port: int | None = None,
    speaker: str = "gobgp",
    extra: str = "",
    edge_metadata: tuple[str, ...] = (),
) -> Path:
    n_tables = "".join(
        f'\n[[bgp.neighbors]]\naddress = "{n}"\nasn = 65000\nhold_time = 9\nkeepalive = 3\n'
        + ("edge_metadata = true\n" if n in edge_metadata else "")
        for n in neighbors
    )
    mqtt = f'\n[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n' if mqtt_port else ""
    options = (
        f'socket = "{tmp}/{name}-gobgpd.sock"'
        if speaker == "gobgp"
        else f'workdir = "{tmp}/{name}-exabgp"'
    )
    octet = int(router_id.rsplit(":", 1)[1] or "0", 16) % 250 + 1
    text = (
        f"""
[router]
id = "{router_id}"
asn = 65000
roles = {roles!r}
locator = "fc00:0:{octet:x}::/48"
{mqtt}
[bgp]
speaker = "{speaker}"
router_id = "10.255.0.{octet}"
graceful_restart = 30
[bgp.options]
{options}
{n_tables}
[damping]
min_interval = 0.0
threshold = 1

[[services]]
sid = "{SERVICE}"
name = "web"

[api]
socket = "{tmp}/{name}.sock"

[prometheus]
listen = ""

[log]
level = "debug"
{extra}
""".replace("['", '["')
        .replace("']", '"]')
        .replace("', '", '", "')
    )
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def start_cand(topo: Topology, ns: str, conf: Path, tmp: Path, name: str) -> Path:
    topo.spawn(ns, *CAND, "run", "-c", str(conf), log=tmp / f"{name}.log")
    return tmp / f"{name}.sock"


def start_mosquitto(topo: Topology, ns: str, tmp: Path, port: int = 1883) -> int:
    conf = Mosquitto(dir=tmp, port=port, persistence=False).write_conf(f"mosq-{ns}")
    topo.spawn(ns, "mosquitto", "-c", str(conf))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        probe = topo.exec(ns, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}", check=False)
        if probe.returncode == 0:
            return port
        time.sleep(0.05)
    raise TimeoutError("mosquitto did not start")


def start_frr_rr(topo: Topology, ns: str, tmp: Path, router_id: str, clients: list[str]) -> None:
    lines = [
        "hostname rr",
        "log stdout informational",
        "router bgp 65000",
        f" bgp router-id {router_id}",
        " no bgp default ipv4-unicast",
        " no bgp ebgp-requires-policy",
        " timers bgp 3 9",
    ]
    lines += [f" neighbor {c} remote-as 65000" for c in clients]
    lines += [" address-family ipv6 unicast"]
    for c in clients:
        lines += [
            f"  neighbor {c} activate",
            f"  neighbor {c} route-reflector-client",
            f"  neighbor {c} addpath-tx-all-paths",
        ]
    lines += [" exit-address-family", ""]
    conf = tmp / "frr-bgpd.conf"
    conf.write_text("\n".join(lines))
    vty = tmp / "frr-vty"
    vty.mkdir(exist_ok=True)
    topo.spawn(
        ns,
        "/usr/lib/frr/bgpd",
        "-f",
        str(conf),
        "-i",
        str(tmp / "bgpd.pid"),
        "-Z",
        "-S",
        "-n",
        "--vty_socket",
        str(vty),
        "-P",
        "0",
        log=tmp / "frr.log",
    )


async def wait_api(sock: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await request(sock, "status")
            return
        except ApiError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def received(sock: Path) -> list[dict[str, Any]]:
    data = await request(sock, "routes")
    return list(data["received"])
