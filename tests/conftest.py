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
# Under pytest-xdist the workers inherit the controller's mark, so that the controller's
# check finds what any worker left.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("CAND_TEST_SESSION"):
    SESSION_MARK = f"CAND_TEST_SESSION={os.environ['CAND_TEST_SESSION']}"
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


# --- two workers -----------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """What runs on one xdist worker, in order (`--dist loadgroup`): every test that brings up
    the Figure-2 lab (its namespaces and run directory have fixed names), and each namespace
    test module (its module-scoped fixtures are set up once). Everything else goes wherever
    a worker is free."""
    for item in items:
        if item.get_closest_marker("fig2"):
            item.add_marker(pytest.mark.xdist_group("fig2"))
        elif item.get_closest_marker("netns"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else ""))


# --- nothing left behind --------------------------------------------------------------------


def _leftovers(workers: bool = False) -> tuple[set[str], set[tuple[int, str]]]:
    """Network namespaces, and the processes this test session started (by their mark).
    `workers`: this process is xdist's controller, and its own children are its workers
    (still alive while this runs), not something a test left."""
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
            # the parent's pid is the second field after the command name in parentheses
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if workers and ppid == os.getpid():
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
    workers = session.config.pluginmanager.hasplugin("dsession")
    deadline = time.monotonic() + 5  # a process just signalled may take a moment to go
    while True:
        spaces, procs = _leftovers(workers)
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
