"""`cand lab` runs a containerlab file as namespaces and removes exactly what it made."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cand.lab import clab
from cand.lab.netns import netns_available
from tests.conftest import need

pytestmark = pytest.mark.netns

TOPOLOGY = """
name: {name}
topology:
  nodes:
    r1:
      kind: linux
      image: ghcr.io/example/cand:latest   # Docker only: ignored here
      exec:
        - ip -6 addr add fc00:9::1/64 dev eth1 nodad
      cmd: sleep 300
    r2:
      kind: linux
      exec:
        - ip -6 addr add fc00:9::2/64 dev eth1 nodad
        - {r2_extra}
  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
      mtu: 9000
"""


def cand(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cand.cli", "lab", *args], capture_output=True, text=True, env=env
    )


def netns() -> set[str]:
    return set(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    )


def test_up_exec_list_down(tmp_path: Path) -> None:
    why = netns_available()
    need(why is None, why or "")
    name = f"t{os.getpid() % 100000}"
    env = dict(os.environ, CAND_LAB_STATE=str(tmp_path / "state"))
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    (lab_dir / "t.clab.yml").write_text(TOPOLOGY.format(name=name, r2_extra="echo ok"))
    try:
        r = cand("up", str(lab_dir), env=env)
        assert r.returncode == 0, r.stderr
        assert {f"clab-{name}-r1", f"clab-{name}-r2"} <= netns()
        link = cand("exec", name, "r1", "--", "ip", "-o", "link", "show", "eth1", env=env)
        assert link.returncode == 0
        addr = subprocess.run(
            ["ip", "netns", "exec", f"clab-{name}-r2", "ip", "-6", "-o", "addr", "show", "eth1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "fc00:9::2/64" in addr
        mtu = subprocess.run(
            ["ip", "netns", "exec", f"clab-{name}-r1", "cat", "/sys/class/net/eth1/mtu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert mtu == "9000"
        assert name in cand("list", env=env).stdout
        assert cand("up", str(lab_dir), env=env).returncode == 2  # already up
    finally:
        r = cand("down", name, env=env)
    assert r.returncode == 0, r.stderr
    assert not any(n.startswith(f"clab-{name}-") for n in netns())
    assert cand("list", env=env).stdout.strip() == ""


def test_failed_up_leaves_nothing(tmp_path: Path) -> None:
    why = netns_available()
    need(why is None, why or "")
    name = f"f{os.getpid() % 100000}"
    env = dict(os.environ, CAND_LAB_STATE=str(tmp_path / "state"))
    (tmp_path / "t.clab.yml").write_text(TOPOLOGY.format(name=name, r2_extra="exit 3"))
    r = cand("up", str(tmp_path / "t.clab.yml"), env=env)
    assert r.returncode == 2
    assert "r2: `exit 3` failed" in r.stderr
    time.sleep(0.1)
    assert not any(n.startswith(f"clab-{name}-") for n in netns())


def test_bad_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "b.clab.yml"
    bad.write_text(
        'name: x\ntopology:\n  nodes: {r1: {}}\n  links:\n    - endpoints: ["r1:eth1", "r9:eth1"]\n'
    )
    with pytest.raises(clab.LabError, match=r"links\[0\]: bad endpoint 'r9:eth1'"):
        clab.load(bad)
    bad.write_text("name: x\ntopology:\n  nodes: {r1: {kinds: linux}}\n")
    with pytest.raises(clab.LabError, match=r"nodes.r1: unknown keys \['kinds'\]"):
        clab.load(bad)
