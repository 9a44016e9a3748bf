"""Each benchmark runs once at a reduced size, only to prove it still runs (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cand.lab.netns import netns_available
from cand.plugins import available
from tests.conftest import need, strict

ROOT = Path(__file__).parents[2]


def run(tmp: Path, *args: str) -> dict[str, object]:
    env = dict(os.environ, CAND_BENCH_RESULTS=str(tmp))
    out = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    name = args[0].split(".")[-1]
    if "--planes" in args and args[args.index("--planes") + 1] == "linux":
        name += "_linux"  # bench.dataplane_cost with one data plane only
    return json.loads((tmp / f"{name}.json").read_text())


def test_mqtt_ingest_runs(tmp_path: Path, broker_factory: object) -> None:
    data = run(tmp_path, "bench.mqtt_ingest", "--messages", "300", "--rate", "500")
    assert data["daemon_ms"]["n"] == 300  # type: ignore[index]


@pytest.mark.netns
def test_route_scale_runs(tmp_path: Path) -> None:
    why = netns_available()
    need(why is None, why or "")
    data = run(tmp_path, "bench.route_scale", "--sizes", "5", "--instances", "2")
    rows = data["rows"]
    assert [r["paths"] for r in rows] == [10, 10]  # type: ignore[index, union-attr]


def test_exabgp_take_runs(tmp_path: Path) -> None:
    pytest.importorskip("exabgp")
    data = run(tmp_path, "bench.exabgp_take", "--services", "5", "--instances", "2")
    rows: list[dict[str, Any]] = data["rows"]  # type: ignore[assignment]
    assert [(r["how"], r["answered"], r["errors"]) for r in rows] == [
        ("before", 10, 0),
        ("after", 10, 0),
    ]


def test_ingest_cpu_runs(tmp_path: Path) -> None:
    data = run(tmp_path, "bench.ingest_cpu", "--messages", "500", "--repeat", "1")
    assert data["daemon_us"] > 0 and data["decode_us"] > 0  # type: ignore[operator]


@pytest.mark.netns
@pytest.mark.fig2
def test_fault_runner_runs_each_fault_once(tmp_path: Path) -> None:
    """One repetition of every fault in the Figure-2 lab: the runner works and, as a fact
    about cand rather than about speed, no control-plane fault broke a connection."""
    why = netns_available()
    need(why is None, why or "")
    env = dict(os.environ, CAND_BENCH_RESULTS=str(tmp_path))
    args = ["--repeat", "1", "--duration", "9", "--rate", "4", "--keep", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.faults", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    data = json.loads((tmp_path / "faults.json").read_text())
    summary = {s["fault"]: s for s in data["summary"]}
    assert len(summary) == 13  # the baseline and twelve faults
    for name, s in summary.items():
        assert s["established"] > 0, name
        if s["control_plane"]:  # cand, speakers, broker, sessions, reflector, reload
            assert s["established_broken"] == 0, (name, s)


@pytest.mark.netns
@pytest.mark.fig2
def test_dataplane_cost_runs(tmp_path: Path) -> None:
    """Linux and BMv2 (the BMv2 part only where the P4 toolchain is, and always in CI)."""
    from cand_p4 import toolchain

    why = netns_available()
    need(why is None, why or "")
    no_p4 = toolchain.missing("p4c-bm2-ss", "simple_switch_grpc")
    if no_p4 and strict():
        pytest.fail(f"required in CI: {no_p4}")
    planes = "linux" if no_p4 else "linux,bmv2"
    args = ["--connects", "50", "--seconds", "1", "--reps", "1", "--bmv2-connects", "20"]
    data = run(tmp_path, "bench.dataplane_cost", *args, "--planes", planes)
    conn = data["connect_us"]
    for path in ("steered", "plain"):
        assert conn[path]["n"] == 50 and conn[path]["failed"] == 0  # type: ignore[index]
        assert 0 < conn[path]["p50"] <= conn[path]["p99"]  # type: ignore[index]
    assert data["throughput_gbit_s"]["no_gso"]["plain"] > 0  # type: ignore[index]
    if no_p4:
        return
    bmv2: Any = data["bmv2"]
    for path in ("steered", "plain"):
        assert bmv2["connect_us"][path]["n"] == 20 and bmv2["connect_us"][path]["failed"] == 0
        assert bmv2["throughput_gbit_s"][path] > 0
    assert bmv2["bound_flows"] >= 20  # every steered connect was a new flow, bound by digest


def test_steer_sim_runs_and_the_oracle_is_the_floor(tmp_path: Path) -> None:
    """Tiny size; every installed policy and the oracle are there, and with fresh reports no
    policy beats the oracle on mean completion (it knows every queue at once: if a policy
    did, the simulator or the oracle would be wrong)."""
    data = run(tmp_path, "bench.steer_sim", "--requests", "3000", "--staleness", "0,0.2")
    rows: list[dict[str, Any]] = data["rows"]  # type: ignore[assignment]
    oracle: dict[str, Any] = data["oracle"]  # type: ignore[assignment]
    assert {r["policy"] for r in rows} == set(available("cand.policies"))
    assert oracle["policy"] == "oracle" and oracle["measured"] > 2000
    fresh = [r for r in rows if r["staleness_s"] == 0]
    assert len(fresh) == len(available("cand.policies"))
    for r in fresh:
        assert oracle["mean_ms"] <= r["mean_ms"], r["policy"]
    assert (tmp_path / "steer_sim.png").stat().st_size > 0


def test_steer_netcost_runs_and_probes_follow_the_step(tmp_path: Path) -> None:
    """Small size; every policy runs with static and with probe cost, the probes were sent,
    lost and turned into samples, and at the end of the run the probe cost of the egress whose
    path got 20 ms slower (one way) has risen by most of the 40 ms round trip, while the
    static cost stayed where it was."""
    data = run(
        tmp_path, "bench.steer_netcost", "--requests", "8000", "--step", "e2:20:0.3",
        "--loss", "0.05",
    )  # fmt: skip
    rows: list[dict[str, Any]] = data["rows"]  # type: ignore[assignment]
    assert {(r["policy"], r["cost"]) for r in rows} == {
        (p, c) for p in available("cand.policies") for c in ("static", "probe")
    }
    for r in rows:
        if r["cost"] == "probe":
            counters = r["counters"]
            assert counters["probes"] > 0 and counters["samples"] > 0, r["policy"]
            assert 0 < counters["probes_lost"] < counters["probes"], r["policy"]
        else:
            assert "probes" not in r["counters"], r["policy"]
    trace: dict[str, Any] = data["trace"]  # type: ignore[assignment]
    last = trace["probe_cost_ms"]["e2"][-1]
    assert last is not None and last > trace["static_cost_ms"]["e2"] + 30
    assert (tmp_path / "steer_netcost.png").stat().st_size > 0
