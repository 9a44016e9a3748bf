"""The daemon's local API: one JSON request per line on a unix socket, one JSON answer per line.

`cand status|routes|services|bindings` are clients of it, and so can be any script
(`echo '{"cmd":"services"}' | socat - UNIX:/run/cand/cand.sock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cand.ports import StopMode
from cand.view import DaemonView

log = logging.getLogger("cand.api")

COMMANDS = ("status", "routes", "services", "bindings", "rib", "stop", "restart")
MAX_REQUEST = 4096


class ApiError(RuntimeError):
    """The daemon could not be asked, or refused the request."""


class ApiServer:
    def __init__(self, daemon: DaemonView, path: Path) -> None:
        self.daemon = daemon
        self.path = path
        self.handlers: dict[str, Callable[[], Awaitable[Any]]] = {
            "status": self._status,
            "routes": self._routes,
            "services": self._services,
            "bindings": self._bindings,
            "rib": self._rib,
            "stop": self._stop,
            "restart": self._restart,
        }

    async def serve(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = await asyncio.start_unix_server(self._client, path=str(self.path))
        os.chmod(self.path, 0o660)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            answer = await self._answer(line)
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": "request too long"}
        try:
            req = json.loads(line)
            cmd = req["cmd"]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": 'expected {"cmd": "<command>"}'}
        handler = self.handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}"}
        return {"ok": True, "data": await handler()}

    async def _stop(self) -> Any:
        self.daemon.request_stop(StopMode.STOP)
        return {"stopping": "stop"}

    async def _restart(self) -> Any:
        self.daemon.request_stop(StopMode.RESTART)
        return {"stopping": "restart"}

    async def _status(self) -> Any:
        return self.daemon.status()

    async def _rib(self) -> Any:
        return self.daemon.rib_json()

    async def _services(self) -> Any:
        return self.daemon.services_json()

    async def _routes(self) -> Any:
        return self.daemon.routes_json()

    async def _bindings(self) -> Any:
        return await self.daemon.bindings_json()


async def request(path: Path, cmd: str, timeout: float = 5.0) -> Any:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=1 << 28), timeout
        )
    except (OSError, TimeoutError) as e:
        raise ApiError(f"cannot reach the daemon at {path}: {e} (is `cand run` running?)") from None
    try:
        writer.write(json.dumps({"cmd": cmd}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError) as e:
        raise ApiError(f"the daemon at {path} did not answer: {e!r}") from None
    finally:
        writer.close()
    answer = json.loads(line)
    if not answer.get("ok"):
        raise ApiError(answer.get("error", "unknown error"))
    return answer["data"]
