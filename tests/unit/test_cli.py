import json
import subprocess
import sys
from pathlib import Path

import pytest

from cand.cli import main

EXAMPLE = Path(__file__).parents[2] / "examples" / "cand.toml"


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('sid = "2001:db8:5::2"', 'sid = "banana"'))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "services[1].sid" in err and "banana" in err


def test_plan_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-c", str(EXAMPLE), "--plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["roles"] == ["ingress", "egress"]
    assert "weighted" in plan["installed_plugins"]["cand.policies"]
    assert main(["version"]) == 0


def test_show_without_daemon_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "-s", str(tmp_path / "none.sock")]) == 1
    assert "is `cand run` running?" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cand.cli", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("cand ")


def test_plugin_options_name_their_table() -> None:
    from cand.adapters.linux import LinuxOptions
    from cand.plugins import parse_options

    with pytest.raises(
        ValueError, match=r"dataplane.options: unknown options for linux: \['prot'\]"
    ):
        parse_options(LinuxOptions, {"prot": 1}, "dataplane.options", "linux")
