"""A speaker child whose start is cut short (cancelled while waiting for it to answer, or its
readiness check failing) is ended, not left running: nobody but `Child.start` knows it yet.
The child is a real process (a python that never answers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from cand.speaker.child import Child

MARK = "cand-test-silent-child"


def silent_child(tmp: Path) -> Child:
    """A child that starts and never answers (what gobgpd is for its first ~1.5 s)."""
    return Child(
        name="silent",
        argv=[sys.executable, "-c", "import time, sys; time.sleep(120)", MARK],
        log_path=tmp / "silent.log",
        pid_path=tmp / "silent.pid",
        marker=MARK,
    )


def gone(pid: int) -> bool:
    """No process (not even a zombie) with this pid: it was ended and reaped."""
    return not Path(f"/proc/{pid}").exists()


def ensure_ended(pid: int | None) -> None:
    """So that a failing test leaves nothing behind."""
    if pid is not None and not gone(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_a_cancelled_start_ends_the_child(tmp_path: Path) -> None:
    child = silent_child(tmp_path)
    asked = asyncio.Event()

    async def never() -> bool:
        asked.set()
        return False

    async def main() -> int | None:
        task = asyncio.create_task(child.start(never, timeout=30.0))
        await asked.wait()  # the child runs and is being waited for
        pid = child.pid
        assert pid is not None and not gone(pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = None
    try:
        pid = asyncio.run(main())
        assert pid is not None
        assert gone(pid), f"pid {pid} still there after its start was cancelled"
        assert not child.pid_path.exists()
        assert not child.running
    finally:
        ensure_ended(pid if pid is not None else child.pid)


def test_a_readiness_check_that_raises_ends_the_child(tmp_path: Path) -> None:
    child = silent_child(tmp_path)
    calls = 0

    async def broken() -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            return False
        raise ConnectionResetError("the check itself failed")

    try:
        with pytest.raises(ConnectionResetError):
            asyncio.run(child.start(broken, timeout=30.0))
        pid = child.pid
        assert pid is not None and gone(pid)
        assert not child.pid_path.exists()
    finally:
        ensure_ended(child.pid)


def test_a_child_that_answers_is_left_running(tmp_path: Path) -> None:
    """The cleanup is for a start cut short only: one that came up stays up until stop()."""
    child = silent_child(tmp_path)

    async def yes() -> bool:
        return True

    async def main() -> tuple[int | None, bool, bool]:
        await child.start(yes, timeout=5.0)
        pid = child.pid
        up = child.running and child.pid_path.exists()
        await child.stop(grace=2.0)
        return pid, up, child.running

    pid = None
    try:
        pid, up, running_after = asyncio.run(main())
        assert up and not running_after
        assert pid is not None and gone(pid)
    finally:
        ensure_ended(pid)
