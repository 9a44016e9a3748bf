"""Client load for labs: new HTTP connections at a steady rate, and long-lived keep-alive
connections that make one request a second, each answer printed as one JSON line.

    python -m cand_testbed.load --dsid 2001:db8:5::1 --rate 5 --keep 2 --duration 30
    {"t": 0.21, "dsid": "2001:db8:5::1", "kind": "new", "conn": 3, "served_by": "web-2",
     "peer": "2001:db8:5::1", "local": "2001:db8:5::1", "ms": 1.4}

`served_by` is null when the request failed (and `error` says why). A long-lived connection
that breaks is reported once and reopened, so a broken flow is always visible.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from typing import Any

_ids = itertools.count(1)


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dsid: str
) -> dict[str, Any]:
    writer.write(f"GET / HTTP/1.1\r\nHost: [{dsid}]\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    if not status.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"bad status {status!r}")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    name, binding, client, local = (await reader.readexactly(length)).decode().split()
    return {"served_by": name, "binding": binding, "client": client, "local": local}


async def once(dsid: str, port: int = 80, timeout: float = 3.0) -> dict[str, Any]:
    """One new connection, one request; the answer and the peer the client's socket saw."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(dsid, port), timeout)
        try:
            got = await asyncio.wait_for(_request(reader, writer, dsid), timeout)
            got["peer"] = writer.get_extra_info("peername")[0]
        finally:
            writer.close()
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
        return {"served_by": None, "error": repr(e), "ms": _ms(start)}
    return {**got, "ms": _ms(start)}


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 2)


def emit(t0: float, dsid: str, kind: str, conn: int, got: dict[str, Any]) -> None:
    now = time.monotonic()  # one clock for every namespace: `at` lines up with the lab's events
    row = {"t": round(now - t0, 3), "at": round(now, 4), "dsid": dsid, "kind": kind, "conn": conn}
    print(json.dumps({**row, **got}), flush=True)


async def new_flows(dsid: str, rate: float, t0: float, until: float, port: int) -> None:
    gap = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        emit(t0, dsid, "new", next(_ids), await once(dsid, port))

    while time.monotonic() < until:
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(gap)
    if pending:
        await asyncio.wait(pending)


async def long_lived(dsid: str, every: float, t0: float, until: float, port: int) -> None:
    while time.monotonic() < until:
        conn = next(_ids)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(dsid, port), 3)
        except (OSError, TimeoutError) as e:
            emit(t0, dsid, "long", conn, {"served_by": None, "error": repr(e)})
            await asyncio.sleep(every)
            continue
        try:
            while time.monotonic() < until:
                start = time.monotonic()
                got = await asyncio.wait_for(_request(reader, writer, dsid), 3)
                emit(t0, dsid, "long", conn, {**got, "ms": _ms(start)})
                await asyncio.sleep(every)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
            emit(t0, dsid, "long", conn, {"served_by": None, "error": repr(e)})
        finally:
            writer.close()


async def main(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    until = t0 + args.duration
    async with asyncio.TaskGroup() as tg:
        for dsid in args.dsid:
            if args.rate > 0:
                tg.create_task(new_flows(dsid, args.rate, t0, until, args.port))
            for _ in range(args.keep):
                tg.create_task(long_lived(dsid, args.every, t0, until, args.port))


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m cand_testbed.load", description=__doc__)
    p.add_argument("--dsid", action="append", required=True, help="a D-SID (repeatable)")
    p.add_argument("--rate", type=float, default=5.0, help="new connections per second")
    p.add_argument("--keep", type=int, default=0, help="long-lived connections per D-SID")
    p.add_argument("--every", type=float, default=1.0, help="seconds between long-lived requests")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--once", action="store_true", help="one request per D-SID, then exit")
    args = p.parse_args()
    if args.once:
        for dsid in args.dsid:
            print(json.dumps({"dsid": dsid, **asyncio.run(once(dsid, args.port))}), flush=True)
        return
    try:
        asyncio.run(main(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
