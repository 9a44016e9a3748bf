"""A speaker's child process (gobgpd, ExaBGP) that cand owns from start to reaping.

Every way a child can escape is closed here, once for both speakers: its output goes to a log
file (never cand's stdout, whose reader may be gone), a start that does not come up, or whose
wait is cancelled (a SIGTERM to cand in that window), is killed and reaped, a stop is SIGTERM
then SIGKILL and always waits for the exit, and a pid file lets the next cand find a child the
previous one left running (after a restart or a kill -9) and either adopt it (gobgpd keeps its
sessions) or end it (a stale ExaBGP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("cand.speaker")


class ChildError(RuntimeError):
    """The child could not be started, or did not come up in time."""


@dataclass
class Child:
    """One supervised process. `argv[0]` is the binary; `marker` must appear in the command line
    of a process found through the pid file before cand treats it as its own."""

    name: str
    argv: Sequence[str]
    log_path: Path
    pid_path: Path
    marker: str
    env: dict[str, str] | None = None
    new_session: bool = False
    proc: asyncio.subprocess.Process | None = field(default=None, init=False)
    adopted_pid: int | None = field(default=None, init=False)

    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        return self.adopted_pid

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.returncode is None
        return self.adopted_pid is not None and _alive(self.adopted_pid)

    def left_running(self) -> int | None:
        """The pid of a child an earlier cand started and left running, if it is still ours."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        return pid if self.marker in cmdline else None

    def adopt(self, pid: int) -> None:
        """Take over a child an earlier cand started: not ours to reap, but ours to stop."""
        self.adopted_pid = pid
        log.info("event=child_adopted child=%s pid=%d", self.name, pid)

    async def start(
        self, ready: Callable[[], Awaitable[bool]] | None = None, timeout: float = 5.0
    ) -> None:
        """Start the child; with `ready`, wait until it answers. A failed start leaves nothing."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:  # noqa: ASYNC230 (a local log file)
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self.env,
                    start_new_session=self.new_session,
                )
            except OSError as e:
                raise ChildError(f"{self.name}: cannot start {self.argv[0]}: {e}") from None
        self.adopted_pid = None
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.write_text(f"{self.proc.pid}\n")
        log.info(
            "event=child_started child=%s pid=%d log=%s", self.name, self.proc.pid, self.log_path
        )
        if ready is None:
            return
        try:
            up = await self._until_ready(ready, timeout)
        except BaseException:
            # cancelled (cand got SIGTERM while waiting) or `ready` raised: nobody else knows
            # this child yet, so it is ended here or it outlives cand
            await self._abandon()
            raise
        if up:
            return
        rc = self.proc.returncode
        await self.stop()
        raise ChildError(
            f"{self.name}: did not come up within {timeout:g} s"
            + (f" (exit code {rc})" if rc is not None else "")
            + f"; see {self.log_path}"
        )

    async def _until_ready(self, ready: Callable[[], Awaitable[bool]], timeout: float) -> bool:
        """True once `ready` says so; False at the deadline or when the child exits first."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc.returncode is not None:
                return False
            if await ready():
                return True
            await asyncio.sleep(0.05)
        return False

    async def _abandon(self) -> None:
        """End a child whose start was cut short. SIGKILL goes out before the first await, so a
        second cancellation during the reaping cannot leave it running; a child that has not
        answered yet has no peers configured, so it has no NOTIFICATION to send."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            log.warning("event=child_start_abandoned child=%s pid=%d", self.name, proc.pid)
        self._forget()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await asyncio.shield(proc.wait())

    async def wait(self) -> int | None:
        """Until the child exits: its exit code (None for an adopted child, not ours to reap)."""
        if self.proc is not None:
            return await self.proc.wait()
        pid = self.adopted_pid
        if pid is None:
            return None
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return None
        try:
            gone = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_reader(fd, gone.set)
            try:
                await gone.wait()
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)
        # after a re-exec in place the adopted child is still our child: reap it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG: never blocks)
        return None

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns once the child is gone."""
        await self._end(signal.SIGTERM, grace)

    async def kill(self) -> None:
        """SIGKILL at once: the child gets no chance to send a NOTIFICATION, so peers keep its
        paths under graceful restart (what a restart of cand wants)."""
        await self._end(signal.SIGKILL, 1.0)

    async def _end(self, sig: signal.Signals, grace: float) -> None:
        pid = self.pid
        if pid is None or not self.running:
            self._forget()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(self.wait())
        except TimeoutError:
            log.warning("event=child_kill child=%s pid=%d after=%gs", self.name, pid, grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(5.0):
                await asyncio.shield(self.wait())
        log.info("event=child_stopped child=%s pid=%d signal=%s", self.name, pid, sig.name)
        self._forget()

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        self.adopted_pid = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True
