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
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cand.ports import StopMode
from cand.reload import ReloadRefused
from cand.view import DaemonView

log = logging.getLogger("cand.api")

COMMANDS = ("status", "routes", "services", "bindings", "rib", "reload", "stop", "restart")
MAX_REQUEST = 4096  # bytes in one request line; every request is a few dozen
MAX_CLIENTS = 32  # connections served at once; more are told "busy" and closed
REQUEST_TIMEOUT = 5.0  # seconds a client may take to send its line
USAGE = 'expected one line {"cmd": "<command>"}'


class ApiError(RuntimeError):
    """The daemon could not be asked, or refused the request."""


class BadRequest(ValueError):
    """A request line that is not one JSON object `{"cmd": "<command>"}`."""


def decode_request(line: bytes) -> str:
    """One request line into its command, or BadRequest saying why: the only parser of what
    a local client sends, so nothing it sends can raise anything else."""
    if len(line) > MAX_REQUEST:
        raise BadRequest(f"request too long (more than {MAX_REQUEST} bytes)")
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"not JSON; {USAGE}") from None
    if not isinstance(req, dict) or set(req) != {"cmd"}:
        raise BadRequest(USAGE)
    cmd = req["cmd"]
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        shown = repr(cmd)[:40] if isinstance(cmd, str) else type(cmd).__name__
        raise BadRequest(f"unknown command {shown}; known: {', '.join(COMMANDS)}")
    return cmd


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
            "reload": self.daemon.reload,
            "stop": self._stop,
            "restart": self._restart,
        }
        self.clients = 0
        self.counters: Counter[str] = Counter()

    async def serve(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = await asyncio.start_unix_server(
            self._client, path=str(self.path), limit=MAX_REQUEST + 1
        )
        os.chmod(self.path, 0o660)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: one line in, one answer out. A slow, silent, oversized or
        disconnecting client costs at most one slot for REQUEST_TIMEOUT seconds."""
        self.clients += 1
        try:
            if self.clients > MAX_CLIENTS:
                self.counters["busy"] += 1
                answer: dict[str, Any] = {"ok": False, "error": "busy: too many API clients"}
            else:
                answer = await self._read_and_answer(reader)
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            self.counters["dropped"] += 1
        finally:
            self.clients -= 1
            writer.close()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                line = await reader.readline()
        except TimeoutError:
            self.counters["timeout"] += 1
            return {"ok": False, "error": f"no request line within {REQUEST_TIMEOUT:g} s"}
        except ValueError:  # the stream limit: LimitOverrunError inside readline
            line = b"x" * (MAX_REQUEST + 1)
        return await self._answer(line)

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            cmd = decode_request(line)
        except BadRequest as e:
            self.counters["bad_request"] += 1
            log.warning("event=api_bad_request why=%r", str(e))
            return {"ok": False, "error": str(e)}
        self.counters[cmd] += 1
        try:
            data = await self.handlers[cmd]()
        except ReloadRefused as e:
            return {"ok": False, "error": f"reload refused, the running configuration stays: {e}"}
        except Exception as e:  # a boundary: one failed answer must not end the API
            self.counters["failed"] += 1
            log.exception("event=api_failed cmd=%s", cmd)
            return {"ok": False, "error": f"{cmd} failed in the daemon: {e!r}"}
        return {"ok": True, "data": data}

    async def _stop(self) -> Any:
        self.daemon.request_stop(StopMode.STOP)
        return {"stopping": "stop"}

    async def _restart(self) -> Any:
        self.daemon.request_stop(StopMode.RESTART)
        return {"stopping": "restart"}

    async def _status(self) -> Any:
        return {**self.daemon.status(), "api": dict(self.counters)}

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
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 28)
    except (OSError, TimeoutError) as e:
        raise ApiError(f"cannot reach the daemon at {path}: {e} (is `cand run` running?)") from None
    try:
        writer.write(json.dumps({"cmd": cmd}).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(timeout):
            line = await reader.readline()
    except (OSError, TimeoutError) as e:
        raise ApiError(f"the daemon at {path} did not answer: {e!r}") from None
    finally:
        writer.close()
    try:
        answer = json.loads(line)
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict) or "ok" not in answer:
        why = "closed the connection" if not line else f"answered {line[:80]!r}"
        raise ApiError(f"the daemon at {path} {why} instead of a JSON answer")
    if not answer["ok"]:
        raise ApiError(str(answer.get("error", "unknown error")))
    return answer.get("data")
