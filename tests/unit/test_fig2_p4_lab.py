"""The Figure-2 lab's P4 variant without namespaces: dr1's config as router.sh assembles it
is valid for the P4 plugin, its MACs are the ones p4.sh puts on the wire, and the lab tools
refuse what they cannot do with a clear message."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from cand_p4.dataplane import parse as parse_p4
from cand_testbed import offload
from cand_testbed.fig2 import LAB_DIR, Fig2

from cand.config import parse


def dr1_p4(tmp_path: Path) -> Path:
    """dr1.toml with its [dataplane] tables replaced by dr1-p4.toml's, by router.sh's own
    commands (the lines that do it, run on a copy)."""
    script = (LAB_DIR / "router.sh").read_text()
    block = script[script.index('if [ "$name" = dr1 ]') :].splitlines()
    edits = [line.strip() for line in block if line.strip().startswith("sed")]
    assert len(edits) == 2, edits  # the delete of dr1.toml's tables, the append of dr1-p4's
    conf = tmp_path / "dr1.toml"
    text = (LAB_DIR / "dr1.toml").read_text()
    conf.write_text(text.replace("@RUN@", str(tmp_path)).replace("@SPEAKER@", "gobgp"))
    env = {"run": str(tmp_path), "name": "dr1", "PATH": "/usr/bin:/bin"}
    for cmd in edits:
        subprocess.run(["sh", "-c", cmd], cwd=LAB_DIR, env=env, check=True)
    return conf


def test_dr1_on_p4_is_a_valid_config_with_the_macs_p4_sh_sets(tmp_path: Path) -> None:
    conf = dr1_p4(tmp_path)
    data = tomllib.loads(conf.read_text())
    cfg = parse(data, str(conf))
    assert cfg.dataplane is not None and cfg.dataplane.kind == "p4"
    opts, ports = parse_p4(dict(cfg.dataplane.options))
    assert opts.address == f"unix:{tmp_path}/dr1-p4rt.sock"
    assert len(cfg.services) == 2  # dr1.toml's services and everything else kept
    sh = (LAB_DIR / "p4.sh").read_text()
    macs = dict(re.findall(r"^(\w+_MAC)=(\S+)", sh, re.MULTILINE))
    by_port = {p.port: p for p in ports}
    assert (by_port[1].mac, by_port[1].neighbour) == (macs["SW_CORE_MAC"], macs["RR_MAC"])
    assert (by_port[2].mac, by_port[2].neighbour) == (macs["SW_C1_MAC"], macs["C1_MAC"])
    assert "fc00:c1::/64" in by_port[2].prefixes and "::/0" in by_port[1].prefixes


def test_an_unknown_data_plane_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="dataplane 'dpdk': one of linux, p4"):
        Fig2(dataplane="dpdk")


def test_offload_names_a_missing_interface(capsys: pytest.CaptureFixture[str]) -> None:
    assert offload.main([]) == 2
    assert offload.main(["no-such-if0"]) == 1
    assert "no-such-if0" in capsys.readouterr().err
