"""Faults the Figure-2 lab can suffer, each with its repair: what `bench.faults` injects while
clients keep connections open. Every fault names the instances that may take no new flow
while it lasts (dead or draining), so the runner can count the flows that went there."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cand.api import ApiError
from cand_testbed.fig2 import Fig2

Action = Callable[[Fig2], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Action
    repair: Action
    unusable: frozenset[str] = field(default_factory=frozenset)
    """Instances that must get no new flow from shortly after `inject` until `repair`."""
    hold: float = 2.0
    """Seconds between inject and repair."""
    control_plane: bool = True
    """No established connection may break and no new one fail under it."""


def _pids(lab: Fig2, node: str, needle: str, unless: str | None = None) -> list[int]:
    but = set(lab.pids(node, unless)) if unless is not None else set()
    return [p for p in lab.pids(node, needle) if p not in but]


def _kill(lab: Fig2, node: str, needle: str, unless: str | None = None) -> None:
    pids = _pids(lab, node, needle, unless)
    if not pids:
        raise RuntimeError(f"{node}: no process matching {needle!r}")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


async def _answers(lab: Fig2, router: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await lab.api(router, "status")
            return
        except ApiError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _in(lab: Fig2, node: str, *cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", lab.ns(node), *cmd], check=True, capture_output=True)


def kill_cand(router: str) -> Fault:
    async def inject(lab: Fig2) -> None:
        _kill(lab, router, "cand.cli run")

    async def repair(lab: Fig2) -> None:
        lab.start_cand(router)
        await _answers(lab, router)

    return Fault(f"kill -9 cand ({router})", inject, repair)


def cand_restart(router: str) -> Fault:
    async def inject(lab: Fig2) -> None:
        await lab.restart_cand(router)

    async def repair(lab: Fig2) -> None:
        return None

    return Fault(f"cand restart ({router})", inject, repair, hold=0.5)


def kill_speaker(router: str, speaker: str) -> Fault:
    needle = "gobgpd" if speaker == "gobgp" else "exabgp"
    # ExaBGP only, not cand's relay it runs (`cand.adapters.exabgp_bridge`): that one ends
    # by itself when ExaBGP goes
    unless = "exabgp_bridge" if speaker == "exabgp" else None

    async def inject(lab: Fig2) -> None:
        _kill(lab, router, needle, unless)

    async def repair(lab: Fig2) -> None:  # cand starts a new one by itself
        deadline = time.monotonic() + 30
        while not _pids(lab, router, needle, unless):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{router}: {needle} not restarted by cand")
            await asyncio.sleep(0.1)

    return Fault(f"kill -9 {needle} ({router})", inject, repair, hold=3.0)


def kill_broker(router: str) -> Fault:
    async def inject(lab: Fig2) -> None:
        _kill(lab, router, "mosquitto")

    async def repair(lab: Fig2) -> None:
        log = lab.run / f"{router}-mosquitto.log"
        lab._spawn(router, "sh", "-c", f"exec mosquitto -c mosquitto.conf >>{log} 2>&1")

    return Fault(f"kill -9 + restart mosquitto ({router})", inject, repair, hold=3.0)


def _vtysh(lab: Fig2, command: str) -> None:
    _in(lab, "rr", "vtysh", "--vty_socket", str(lab.run / "rr-vty"), "-c", command)


def reset_sessions() -> Fault:
    async def inject(lab: Fig2) -> None:
        _vtysh(lab, "clear bgp *")

    async def repair(lab: Fig2) -> None:
        return None

    return Fault("BGP sessions reset by the reflector", inject, repair, hold=3.0)


def restart_reflector() -> Fault:
    async def inject(lab: Fig2) -> None:
        _kill(lab, "rr", "gobgpd" if lab.reflector == "gobgp" else "bgpd")

    async def repair(lab: Fig2) -> None:
        lab._spawn("rr", "./rr.sh")

    return Fault("route reflector killed and restarted", inject, repair, hold=2.0)


def core_link(seconds: float = 2.0) -> Fault:
    """rr <-> dr3 cut: every packet on rr's eth3 dropped, both ways. (Not `ip link set down`:
    that also flushes the link's IPv6 addresses and the routes through it, and they do not
    come back with the link.)"""
    rules = [
        "add table inet cand-fault",
        "add chain inet cand-fault cut_in { type filter hook prerouting priority -300; }",
        "add chain inet cand-fault cut_out { type filter hook output priority -300; }",
        "add chain inet cand-fault cut_fwd { type filter hook forward priority -300; }",
        'add rule inet cand-fault cut_in iifname "eth3" drop',
        'add rule inet cand-fault cut_out oifname "eth3" drop',
        'add rule inet cand-fault cut_fwd oifname "eth3" drop',
    ]

    async def inject(lab: Fig2) -> None:
        script = "\n".join(rules) + "\n"
        await asyncio.to_thread(
            subprocess.run,
            ["ip", "netns", "exec", lab.ns("rr"), "nft", "-f", "-"],
            input=script, text=True, check=True, capture_output=True,
        )  # fmt: skip

    async def repair(lab: Fig2) -> None:
        _in(lab, "rr", "nft", "delete table inet cand-fault")

    return Fault(
        f"core link rr-dr3 cut {seconds:g} s", inject, repair, hold=seconds, control_plane=False
    )


def kill_instance(name: str) -> Fault:
    async def inject(lab: Fig2) -> None:
        lab.kill_instance(name)

    async def repair(lab: Fig2) -> None:
        lab.start_instance(name)

    return Fault(f"kill -9 instance {name}", inject, repair, frozenset({name}), 3.0, False)


def drain_instance(name: str) -> Fault:
    async def inject(lab: Fig2) -> None:
        lab.control(name, "draining")

    async def repair(lab: Fig2) -> None:
        lab.control(name, "up")

    return Fault(f"drain instance {name}", inject, repair, frozenset({name}), 3.0)


def reload_policy(router: str = "dr1", policy: str = "min-cost") -> Fault:
    async def inject(lab: Fig2) -> None:
        conf = lab.run / f"{router}.toml"
        text = conf.read_text()
        (lab.run / f"{router}.toml.orig").write_text(text)
        conf.write_text(f'[decision]\npolicy = "{policy}"\n\n' + text)
        await lab.api(router, "reload")

    async def repair(lab: Fig2) -> None:
        orig = lab.run / f"{router}.toml.orig"
        (lab.run / f"{router}.toml").write_text(orig.read_text())
        orig.unlink()
        await lab.api(router, "reload")

    return Fault(f"cand reload, policy {policy} ({router})", inject, repair, hold=2.0)


def metric_burst(name: str = "web-2", reports: int = 100) -> Fault:
    """About ten times the lab's normal rate of reports from one instance, for a second."""

    async def inject(lab: Fig2) -> None:
        for i in range(reports):
            lab.control(name, f"cpu {0.1 + (i % 5) / 100:.2f}")
            await asyncio.sleep(1.0 / reports)

    async def repair(lab: Fig2) -> None:
        lab.control(name, "cpu 0.1")

    return Fault(f"burst of {reports} reports/s ({name})", inject, repair, hold=0.5)


def every_fault(speaker: str) -> list[Fault]:
    return [
        kill_cand("dr1"),
        kill_cand("dr3"),
        cand_restart("dr3"),
        kill_speaker("dr3", speaker),
        kill_broker("dr3"),
        reset_sessions(),
        restart_reflector(),
        core_link(),
        kill_instance("web-3"),
        drain_instance("web-3"),
        reload_policy(),
        metric_burst(),
    ]
