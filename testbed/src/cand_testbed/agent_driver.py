"""A metric agent driven line by line from stdin, for tests that need it inside a namespace.

report cpu=0.3 sessions=4 | draining | up | exit
report l2=4 l1.composed=4   (the instance's own scores: `l1.<category>=<score>`)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from cand.agent import MetricAgent
from cand.lab.netns import Topology


class AgentProcess:
    """The controlling side: an agent process in a namespace, one command per call."""

    def __init__(self, topo: Topology, ns: str, port: int, service: str, binding: str) -> None:
        self.p = topo.spawn(
            ns,
            sys.executable,
            "-m",
            "cand_testbed.agent_driver",
            f"mqtt://127.0.0.1:{port}",
            service,
            binding,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def say(self, line: str) -> None:
        assert self.p.stdin is not None
        assert self.p.stdout is not None
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()
        if line != "exit" and self.p.stdout.readline().strip() != b"ok":
            raise RuntimeError(f"agent did not acknowledge {line!r}")


async def main(broker: str, service: str, binding: str) -> None:
    loop = asyncio.get_running_loop()
    async with MetricAgent(broker, service, binding, heartbeat=30) as agent:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if not line or line == "exit":
                break
            verb, *args = line.split()
            if verb == "report":
                values: dict[str, Any] = {}
                for kv in args:
                    k, v = kv.split("=")
                    if k.startswith("l1."):
                        values.setdefault("l1", {})[k.removeprefix("l1.")] = int(v)
                    else:
                        values[k] = float(v) if "." in v else int(v)
                await agent.report(**values)
            elif verb == "draining":
                await agent.draining()
            elif verb == "up":
                await agent.up()
            n = agent.published
            await agent.wait_published(n + 1)
            print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
