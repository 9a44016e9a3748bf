"""Shared fixtures: real daemons (mosquitto) on loopback, stopped by PID whatever happens."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Broker:
    """A mosquitto of our own on a free loopback port."""

    dir: Path
    port: int
    users: dict[str, str] = field(default_factory=dict)
    acl: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def url_for(self, user: str) -> str:
        return f"mqtt://{user}:{self.users[user]}@127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            # as root mosquitto would switch to its own user, who cannot read pytest's tmp dir
            "user root" if os.geteuid() == 0 else "",
            "persistence true",
            f"persistence_location {self.dir}/",
            "log_dest file " + str(self.dir / "mosquitto.log"),
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.users:
            pw = self.dir / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pw), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pw}"]
            if self.acl:
                (self.dir / "acl").write_text("\n".join(self.acl) + "\n")
                lines.append(f"acl_file {self.dir / 'acl'}")
        else:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


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
