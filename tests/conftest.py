"""Shared fixtures: real daemons (mosquitto) on loopback, stopped by PID whatever happens."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cand_testbed.mosquitto import Mosquitto, free_port, stop_process

# An unexpected exception inside an adapter lane is re-raised, so a bug fails the test instead of
# being counted and logged as it is in production.
os.environ.setdefault("CAND_STRICT", "1")
# Every process the tests start inherits this, so the suite-end check below finds exactly
# those (and not a daemon someone else runs on the machine).
SESSION_MARK = f"CAND_TEST_SESSION={os.getpid()}-{time.time_ns()}"
os.environ["CAND_TEST_SESSION"] = SESSION_MARK.split("=", 1)[1]


def strict() -> bool:
    """In CI a missing tool or privilege is a failure, never a skip."""
    return os.environ.get("CAND_REQUIRE_NETNS") == "1" or os.environ.get("CI") == "true"


def need(condition: bool, why: str) -> None:
    if condition:
        return
    if strict():
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None and sig != signal.SIGTERM:
        proc.send_signal(sig)
    stop_process(proc)


Broker = Mosquitto  # the tests' name for it


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[type[Broker]]:
    need(shutil.which("mosquitto") is not None, "mosquitto is not installed (scripts/setup)")
    started: list[Broker] = []

    class _Factory(Broker):
        def __init__(self, **kw: object) -> None:
            d = tmp_path / f"broker{len(started)}"
            d.mkdir()
            super().__init__(dir=d, port=free_port(), **kw)  # type: ignore[arg-type]
            started.append(self)

    try:
        yield _Factory
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def broker(broker_factory: type[Broker]) -> Broker:
    b = broker_factory()
    b.start()
    return b


# --- nothing left behind --------------------------------------------------------------------


def _leftovers() -> tuple[set[str], set[tuple[int, str]]]:
    """Network namespaces, and the processes this test session started (by their mark)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    spaces = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    procs = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if SESSION_MARK.encode() in env:
            words = [a.decode(errors="replace") for a in argv if a]
            procs.add((int(entry.name), " ".join(words)[:120]))
    return spaces, procs


_AT_START: tuple[set[str], set[tuple[int, str]]] = (set(), set())


def pytest_sessionstart(session: pytest.Session) -> None:
    global _AT_START
    _AT_START = _leftovers()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite fails if a test left a namespace or a daemon behind (a fixture that cleans
    up only on success shows here, not on the next machine)."""
    if hasattr(session.config, "workerinput"):
        return
    deadline = time.monotonic() + 5  # a process just signalled may take a moment to go
    while True:
        spaces, procs = _leftovers()
        new_spaces = spaces - _AT_START[0]
        new_procs = procs - _AT_START[1]
        if not (new_spaces or new_procs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if new_spaces or new_procs:
        lines = [f"  namespace {n}" for n in sorted(new_spaces)]
        lines += [f"  pid {pid}: {cmd}" for pid, cmd in sorted(new_procs)]
        print("\nleft behind by the tests:\n" + "\n".join(lines))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
