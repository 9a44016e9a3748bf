"""One mosquitto of our own, for tests, benchmarks and labs alike: on a free loopback port or
inside a namespace, with users and an ACL when asked, stopped by PID whatever happens."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


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


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it does not go; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass
class Mosquitto:
    """A broker's directory, port and accounts; `start` runs it on loopback, `write_conf`
    alone serves a caller that runs it elsewhere (in a namespace, `cand_testbed.routers`)."""

    dir: Path
    port: int
    users: dict[str, str] = field(default_factory=dict)
    acl: list[str] = field(default_factory=list)
    persistence: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def url_for(self, user: str) -> str:
        return f"mqtt://{user}:{self.users[user]}@127.0.0.1:{self.port}"

    def write_conf(self, name: str = "mosquitto") -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            # as root mosquitto would switch to its own user, who cannot read a private tmp dir
            "user root" if os.geteuid() == 0 else "",
            "log_dest file " + str(self.dir / f"{name}.log"),
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/"]
        if self.users:
            pw = self.dir / f"{name}.passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pw), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pw}"]
            if self.acl:
                acl = self.dir / f"{name}.acl"
                acl.write_text("\n".join(self.acl) + "\n")
                lines.append(f"acl_file {acl}")
        else:
            lines.append("allow_anonymous true")
        conf = self.dir / f"{name}.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        conf = self.write_conf()
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@contextlib.contextmanager
def running(**kw: object) -> Iterator[Mosquitto]:
    """A broker on a free loopback port for the length of a `with` block."""
    with tempfile.TemporaryDirectory(prefix="cand-mosquitto-") as d:
        broker = Mosquitto(dir=Path(d), port=free_port(), **kw)  # type: ignore[arg-type]
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
