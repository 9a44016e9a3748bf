"""Drives the Linux data plane in one namespace, the way the daemon would, from one JSON argument.

Each run is a fresh adapter (as after a daemon restart): it is handed the whole wanted state,
reads what the kernel holds and adopts it, and prints its status, slots and bindings as JSON.

    {"router": "fc00:0:1::1", "hold": 0,
     "local": [[d_sid, d_bid, sid, "vip"|"nat"], ...],
     "services": [{"sid": d_sid, "flow_key": "5-tuple", "timeout": 30, "default": "drop",
                   "choices": [[d_bid, egress, sid, weight, local, state], ...]}]}
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from typing import Any

from cand.adapters.linux import LinuxDataplane, LinuxOptions
from cand.engine.effects import Effect, ProgramLocalInstance, ProgramService
from cand.engine.service_table import (
    Choice,
    DefaultAction,
    InstanceMode,
    ServiceEntry,
    ServiceSpec,
)
from cand.model import (
    BindingId,
    FlowKeyKind,
    InstanceKey,
    InstanceState,
    RouterId,
    ServiceId,
)


def effects(spec: dict[str, Any]) -> tuple[list[Effect], dict[ServiceId, InstanceMode]]:
    out: list[Effect] = []
    modes: dict[ServiceId, InstanceMode] = {}
    for dsid, dbid, sid, mode in spec.get("local", []):
        key = InstanceKey(ServiceId.parse(dsid), BindingId.parse(dbid))
        modes[key.service] = InstanceMode(mode)
        out.append(ProgramLocalInstance(key, ipaddress.IPv6Address(sid)))
    for s in spec.get("services", []):
        service = ServiceId.parse(s["sid"])
        choices = tuple(
            Choice(
                key=InstanceKey(service, BindingId.parse(dbid)),
                egress=RouterId.parse(egress),
                sid=ipaddress.IPv6Address(sid),
                weight=weight,
                state=InstanceState(state),
                load_permille=0,
                l2=10,
                network_cost=0.0,
                local=local,
            )
            for dbid, egress, sid, weight, local, state in s["choices"]
        )
        svc = ServiceSpec(
            service,
            flow_key=FlowKeyKind(s.get("flow_key", "5-tuple")),
            affinity_timeout=float(s.get("timeout", 30)),
            default=DefaultAction(s.get("default", "drop")),
        )
        out.append(ProgramService(ServiceEntry(svc, choices)))
    return out, modes


async def main() -> None:
    spec = json.loads(sys.argv[1])
    todo, modes = effects(spec)
    opts = LinuxOptions(
        adopt_hold=float(spec.get("hold", 0)), encap_source=spec.get("encap_source")
    )
    dp = LinuxDataplane(opts, RouterId.parse(spec["router"]), modes)
    await dp.apply(todo)  # the first call reads the kernel and adopts what is there
    await dp.reconcile()  # and what `run` does every interval: nothing should change
    bindings = [
        {"flow": str(b.flow), "binding": str(b.binding), "egress": str(b.egress)}
        for b in await dp.bindings()
    ]
    slots = {f"{m:#x}": list(map(str, ident)) for m, ident in dp.slots.by_mark.items()}
    print(json.dumps({"status": dp.status(), "slots": slots, "bindings": bindings}))


if __name__ == "__main__":
    asyncio.run(main())
