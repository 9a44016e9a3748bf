"""The reaction and failure benchmarks, once each at a reduced size in the Figure-2 lab: they
still run and their legs add up. No time is asserted (benchmarks print figures, tests do not
time anything); under CAND_REQUIRE_NETNS=1 a missing namespace capability fails, not skips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cand.lab.netns import netns_available
from tests.conftest import need

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.fig2  # every benchmark here runs in the Figure-2 lab


def run(tmp: Path, module: str, *args: str, result: str | None = None) -> dict[str, Any]:
    """Runs a benchmark module; returns its results file (`result`.json, default the
    module's name)."""
    why = netns_available()
    need(why is None, why or "")
    env = dict(os.environ, CAND_BENCH_RESULTS=str(tmp))
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    data: dict[str, Any] = json.loads((tmp / f"{result or module.split('.')[-1]}.json").read_text())
    return data


@pytest.mark.netns
def test_reaction_runs(tmp_path: Path) -> None:
    data = run(tmp_path, "bench.reaction", "--changes", "10")
    rows = data["rows"]
    assert len(rows) == 10
    for r in rows:  # every leg was seen, in order, and they make up the total
        legs = [r[k] for k in ("mqtt", "egress", "bgp", "dataplane")]
        assert all(v >= 0 for v in legs), r
        assert abs(sum(legs) - r["total"]) < 0.01, r
    assert data["baseline_bgp_ms"] and data["baseline_nft_ms"]


@pytest.mark.netns
def test_failure_runs(tmp_path: Path) -> None:
    data = run(tmp_path, "bench.failure", "--runs", "2", "--spacing", "10")
    assert len(data["runs"]) == 2
    for r in data["runs"]:
        assert r["failed_before_kill"] == 0, r  # nothing failed until the kill
        assert r["served_by_web3_before"] > 0, r  # web-3 took new flows until then
        assert r["flows_after_kill"] > 0
        assert r["kernel_total"] > 0  # dr1's kernel stopped steering to web-3


@pytest.mark.netns
@pytest.mark.parametrize("how", ["drop", "stop"])
def test_freeze_runs(tmp_path: Path, how: str) -> None:
    """web-3's host goes silent once (2-s keepalive: the will is due in seconds), is found by
    the broker's keepalive alone, and comes back once thawed."""
    data = run(
        tmp_path, "bench.failure", "--freeze", how, "--runs", "1", "--keepalive", "2",
        result="failure_freeze" + ("_stop" if how == "stop" else "") + "_ka2",
    )  # fmt: skip
    assert data["freeze"] == how and data["keepalive_s"] == 2
    (r,) = data["runs"]
    assert r["failed_before_freeze"] == 0, r  # nothing failed until the freeze
    assert r["served_by_web3_before"] > 0, r  # web-3 took new flows until then
    assert r["served_by_web3_after"] == 0, r  # and none once silent: nothing answers
    assert r["flows_to_frozen"] > 0, r  # dr1 still steered some there until the will
    legs = [r[k] for k in ("detection", "egress_hold", "bgp_withdraw", "kernel")]
    assert all(v >= 0 for v in legs), r
    assert abs(sum(legs) - r["kernel_total"]) < 0.01, r
    assert r["back"] > 0  # thawed, web-3 is steered to again
