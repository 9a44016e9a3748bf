"""Without the P4 toolchain the P4 tests skip with the reason, except in CI
(CAND_REQUIRE_NETNS=1 or CI=true), where they fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from cand_p4 import toolchain

from tests.p4util import need_p4


@pytest.fixture
def no_toolchain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(toolchain, "PREFIXES", (tmp_path / "none",))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("CAND_REQUIRE_NETNS", raising=False)


def test_missing_toolchain_skips_naming_the_tools(no_toolchain: None) -> None:
    with pytest.raises(pytest.skip.Exception, match="p4c-bm2-ss, simple_switch_grpc"):
        need_p4("p4c-bm2-ss", "simple_switch_grpc")


@pytest.mark.parametrize("var", ["CAND_REQUIRE_NETNS=1", "CI=true"])
def test_missing_toolchain_fails_in_ci(
    no_toolchain: None, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    name, value = var.split("=")
    monkeypatch.setenv(name, value)
    with pytest.raises(pytest.fail.Exception, match="required in CI: P4 toolchain"):
        need_p4("simple_switch_grpc")


def test_found_on_path_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "simple_switch_grpc"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert toolchain.find("simple_switch_grpc") == tool
    assert toolchain.missing("simple_switch_grpc") is None
