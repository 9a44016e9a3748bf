"""Linux data plane, egress half: one SRv6 SID per local instance (seg6local End.DX6).

Every route cand installs carries cand's own route protocol number (`proto`, default 200), so
cand reads back, changes and removes only its own routes and never anyone else's. Desired state
is kept here; `apply` installs the difference at once, and a periodic reconciliation re-installs
what is missing and removes cand routes nobody wants (after a restart, what the previous run
left is adopted: the SIDs are a hash of (D-SID, D-BID), so the same instance gets the same
route and established flows keep going).

The ingress half (per-flow selection in nftables, conntrack affinity, seg6 encap nexthops) is
not in this version: ingress effects are counted and reported in `cand status`, not carried
out, and the log says so once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cand.config import Config
from cand.engine.effects import (
    Effect,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RemoveService,
)
from cand.model import Binding, BindingId
from cand.plugins import parse_options
from cand.ports import Emit

log = logging.getLogger("cand.linux")


@dataclass(frozen=True)
class LinuxOptions:
    """`[dataplane.options]` for kind = "linux"."""

    proto: int = 200
    reconcile_interval: float = 30.0


class IpError(RuntimeError):
    pass


async def ip(*args: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise IpError(f"ip {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


class LinuxDataplane:
    def __init__(self, options: LinuxOptions) -> None:
        if not 1 <= options.proto <= 255 or options.proto in (2, 3, 4, 186, 187, 188, 189):
            raise ValueError(f"dataplane.options.proto: {options.proto} is reserved or invalid")
        self.opts = options
        self.sids: dict[ipaddress.IPv6Address, BindingId] = {}
        self.counters = {"installed": 0, "removed": 0, "errors": 0, "ingress_not_applied": 0}
        self._warned = False

    @classmethod
    def from_config(cls, config: Config) -> LinuxDataplane:
        raw = dict(config.dataplane.options) if config.dataplane is not None else {}
        return cls(parse_options(LinuxOptions, raw, "dataplane.options", "linux"))

    async def run(self, emit: Emit) -> None:
        while True:
            await asyncio.sleep(self.opts.reconcile_interval)
            await self.reconcile()

    async def apply(self, effects: Sequence[Effect]) -> None:
        lines: list[str] = []
        for e in effects:
            if isinstance(e, ProgramLocalInstance):
                self.sids[e.sid] = e.key.binding
                lines.append(await self._route_line("replace", e.sid, e.key.binding))
            elif isinstance(e, RemoveLocalInstance):
                if self.sids.pop(e.sid, None) is not None:
                    lines.append(f"route del {e.sid}/128 proto {self.opts.proto}")
            elif isinstance(e, ProgramService | RemoveService):
                self.counters["ingress_not_applied"] += 1
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "event=linux_ingress_missing (this version programs the egress only)"
                    )
        await self._batch(lines)

    async def _route_line(self, verb: str, sid: ipaddress.IPv6Address, nh: BindingId) -> str:
        """End.DX6 towards the instance, out of the interface the kernel would use for it."""
        got = json.loads(await ip("-json", "-6", "route", "get", str(nh)))
        dev = got[0]["dev"]
        return (
            f"route {verb} {sid}/128 proto {self.opts.proto} "
            f"encap seg6local action End.DX6 nh6 {nh} dev {dev}"
        )

    async def _batch(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            await ip("-batch", "-", stdin="\n".join(lines) + "\n")
            self.counters["installed"] += sum(" replace " in f" {x} " for x in lines)
            self.counters["removed"] += sum(" del " in f" {x} " for x in lines)
        except IpError as e:
            self.counters["errors"] += 1
            log.error("event=linux_batch_failed error=%r (reconciliation retries)", str(e))

    async def installed(self) -> dict[ipaddress.IPv6Address, BindingId]:
        """cand's own SID routes as the kernel has them (our protocol number only)."""
        rows = json.loads(await ip("-json", "-6", "route", "show", "proto", str(self.opts.proto)))
        out = {}
        for r in rows:
            if r.get("encap") == "seg6local" and r.get("action") == "End.DX6":
                dst = r["dst"].split("/")[0]
                out[ipaddress.IPv6Address(dst)] = BindingId.parse(r["nh6"])
        return out

    async def reconcile(self) -> None:
        """Install what is missing or different, remove cand routes nobody wants."""
        try:
            have = await self.installed()
        except IpError as e:
            self.counters["errors"] += 1
            log.error("event=linux_read_failed error=%r", str(e))
            return
        lines = [
            f"route del {sid}/128 proto {self.opts.proto}" for sid in have if sid not in self.sids
        ]
        for sid, nh in self.sids.items():
            if have.get(sid) != nh:
                try:
                    lines.append(await self._route_line("replace", sid, nh))
                except IpError as e:
                    self.counters["errors"] += 1
                    log.error("event=linux_no_route_to_instance binding=%s error=%r", nh, str(e))
        await self._batch(lines)

    async def bindings(self) -> list[Binding]:
        return []  # flows are pinned at the ingress, which this version does not program

    def status(self) -> dict[str, Any]:
        return {"dataplane": "linux", "sids": len(self.sids), **self.counters}
