"""A real service instance for labs: an HTTP server that answers with who served the request,
and reports its load through the metric agent (D-MA) like any service that imports it.

    python -m cand_testbed.instance --name web-2 --service 2001:db8:5::1 \\
        --binding 2001:db8:2a::10 --broker "mqtt://[2001:db8:2a::1]:1883" \\
        --control /run/cand/fig2/web-2.ctl

`GET /` answers `<name> <D-BID> <client address> <address the client used>`, and a
keep-alive connection is served as long as the client keeps it open, so long-lived flows can
be followed. The control socket (one line per command, `ok` back) changes what is reported:
`cpu 0.95`, `capacity 200`, `draining`, `up`. Sessions (open connections) are reported as
they change. Killing the process with kill -9 is what its broker's Last Will is for; a host
that goes silent is found by the MQTT keepalive (`--keepalive`: the broker fires the will
after 1.5 times it without a packet).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from cand.agent import MetricAgent
from cand.mqtt_client import BrokerSettings

log = logging.getLogger("cand_testbed.instance")


class Instance:
    def __init__(self, name: str, binding: str, agent: MetricAgent, cpu: float) -> None:
        self.name, self.binding, self.agent = name, binding, agent
        self.sessions = 0
        self.cpu = cpu
        self.served = 0

    async def report(self) -> None:
        await self.agent.report(cpu=self.cpu, sessions=self.sessions)

    async def http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        local = writer.get_extra_info("sockname")[0]
        self.sessions += 1
        await self.report()
        try:
            while True:
                request = await reader.readline()
                if not request:
                    break
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing here needs them
                self.served += 1
                body = f"{self.name} {self.binding} {peer} {local}\n".encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\nX-Served-By: {self.name}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.sessions -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await self.report()

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for line in reader:
            verb, *args = line.decode().split()
            try:
                if verb == "cpu":
                    self.cpu = float(args[0])
                    await self.report()
                elif verb == "capacity":
                    await self.agent.report(capacity=int(args[0]))
                elif verb == "draining":
                    await self.agent.draining()
                elif verb == "up":
                    await self.agent.up()
                elif verb == "served":
                    writer.write(f"{self.served}\n".encode())
                    continue
                else:
                    raise ValueError(f"unknown command {verb!r}")
                writer.write(b"ok\n")
            except (ValueError, IndexError) as e:
                writer.write(f"error {e}\n".encode())
            await writer.drain()
        writer.close()


async def main(args: argparse.Namespace) -> None:
    broker = BrokerSettings.from_url(args.broker, keepalive=args.keepalive)
    async with MetricAgent(broker, args.service, args.binding, heartbeat=5) as agent:
        inst = Instance(args.name, args.binding, agent, args.cpu)
        await inst.report()
        http = await asyncio.start_server(inst.http, host="::", port=args.port, reuse_address=True)
        servers = [http]
        if args.control:
            Path(args.control).unlink(missing_ok=True)
            servers.append(await asyncio.start_unix_server(inst.control, path=args.control))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("instance %s serving on port %d", args.name, args.port)
        await stop.wait()
        for s in servers:
            s.close()
        await agent.draining()


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m cand_testbed.instance", description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--service", required=True, help="the D-SID")
    p.add_argument("--binding", required=True, help="this instance's D-BID")
    p.add_argument("--broker", required=True, help="mqtt://host:port of the site's broker")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--cpu", type=float, default=0.1, help="the cpu load reported at start")
    p.add_argument("--control", help="unix socket for load changes")
    p.add_argument("--keepalive", type=int, default=10, help="MQTT keepalive, seconds")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
