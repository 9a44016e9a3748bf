"""bench.faults' accounting of one trial, without a lab: the injection's wall time and when
dr1 steered a service to no instance are in each JSON row (to find them in the daemons' logs)."""

from __future__ import annotations

import pytest

faults = pytest.importorskip("bench.faults")
from cand_testbed.faults import Fault  # noqa: E402
from cand_testbed.fig2 import APP, INSTANCES, WEB  # noqa: E402

ALL = {svc: {b for _, (s, b, _) in INSTANCES.items() if s == svc} for svc in (WEB, APP)}


async def nothing(lab: object) -> None:
    return None


def trial(tables: list[tuple[float, dict[str, set[str]]]]) -> object:
    t = faults.Trial("reflector restart", injected=10.0, repaired=12.0, wall_offset=1000.0)
    t.injected_wall = 1010.0
    t.tables = tables
    return t


def test_a_service_steered_to_nothing_is_recorded() -> None:
    tables = [
        (9.0, ALL),
        (10.5, {WEB: set(), APP: ALL[APP]}),  # web steered to nothing
        (10.6, {APP: ALL[APP]}),  # web absent: nothing either
        (11.0, ALL),
        (13.0, {WEB: ALL[WEB], APP: set()}),
        (13.5, ALL),
    ]
    row = faults.account(trial(tables), Fault("reflector restart", nothing, nothing))
    assert row["injected_wall"] == 1010.0
    assert row["empty_at"] == 1010.5
    assert row["empty_stretches"] == [(0.5, 0.6), (3.0, 3.0)]
    summary = faults.summarize([row])[0]
    assert summary["runs_steered_to_none"] == 1 and summary["empty_stretches"] == 2


def test_a_trial_that_always_steered_somewhere_has_no_empty_at() -> None:
    row = faults.account(trial([(9.0, ALL), (11.0, ALL)]), None)
    assert row["empty_at"] is None and row["empty_stretches"] == []
    base = faults.Trial("no fault (baseline)")
    assert faults.account(base, None)["injected_wall"] is None
