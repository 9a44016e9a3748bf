"""p4/build compiles p4/cand.p4 with p4c, and every name the plugin writes by (cand_p4.names)
is in the P4Info p4c generated, with the same match fields, parameters and digest fields; and
nothing the program exposes is missing from names.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from cand_p4 import names as n
from finsy.proto import p4i
from google.protobuf import text_format

from tests.p4util import Program, compile_program


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Program:
    return compile_program(tmp_path_factory.mktemp("p4build"))


@pytest.fixture(scope="module")
def info(program: Program) -> p4i.P4Info:
    return text_format.Parse(program.p4info.read_text(), p4i.P4Info())


def test_build_writes_bmv2_json_and_p4info(program: Program) -> None:
    assert program.json.stat().st_size > 0 and program.p4info.stat().st_size > 0
    assert '"program"' in program.json.read_text()  # a BMv2 JSON, not an empty file
    assert "error" not in program.output.lower(), program.output


def test_build_refuses_a_broken_program(tmp_path: Path) -> None:
    """p4/build exits non-zero when p4c rejects the program (so CI cannot pass on a stale
    build): the same script run on a copy with a syntax error."""
    import shutil
    import subprocess

    from tests.p4util import BUILD_SCRIPT, need_p4

    need_p4("p4c-bm2-ss")  # without p4c the script exits 2 ("not found"): that proves nothing
    (tmp_path / "p4").mkdir()
    shutil.copy(BUILD_SCRIPT, tmp_path / "p4" / "build")
    source = (BUILD_SCRIPT.parent / "cand.p4").read_text()
    (tmp_path / "p4" / "cand.p4").write_text(source.replace("apply {", "apply {{", 1))
    run = subprocess.run(
        [str(tmp_path / "p4" / "build"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode not in (0, 2), run.stdout + run.stderr
    assert "cand.p4" in run.stdout + run.stderr  # p4c's own message names the file


def _tables(info: p4i.P4Info) -> dict[str, p4i.Table]:
    return {t.preamble.name: t for t in info.tables}


def _actions(info: p4i.P4Info) -> dict[str, p4i.Action]:
    return {a.preamble.name: a for a in info.actions}


def test_tables_match_fields_and_actions(info: p4i.P4Info) -> None:
    tables, actions = _tables(info), _actions(info)
    by_id = {a.preamble.id: a.preamble.name for a in info.actions}
    for table in n.TABLES:
        assert table.name in tables, f"{table.name} not in the P4Info: {sorted(tables)}"
        t = tables[table.name]
        assert tuple(f.name for f in t.match_fields) == table.keys, table.name
        allowed = {by_id[r.id] for r in t.action_refs}
        assert set(table.actions) <= allowed, (table.name, allowed)
    assert set(tables) == {t.name for t in n.TABLES}, "a table the plugin does not know"
    for action in n.ACTIONS:
        assert action.name in actions, f"{action.name} not in the P4Info"
        assert tuple(p.name for p in actions[action.name].params) == action.params, action.name


def test_binding_table_ages_out_and_counts(info: p4i.P4Info) -> None:
    binding = _tables(info)[n.BINDING.name]
    assert binding.idle_timeout_behavior == p4i.Table.NOTIFY_CONTROL
    counters = {c.preamble.id: c for c in info.direct_counters}
    names = {counters[i].preamble.name for i in binding.direct_resource_ids if i in counters}
    assert names == {n.BINDING_COUNTER}
    c = next(c for c in info.direct_counters if c.preamble.name == n.BINDING_COUNTER)
    assert c.spec.unit == p4i.CounterSpec.BOTH and c.direct_table_id == binding.preamble.id


def test_new_flow_is_a_selector_over_the_instances(info: p4i.P4Info) -> None:
    new_flow = _tables(info)[n.NEW_FLOW.name]
    profiles = {p.preamble.name: p for p in info.action_profiles}
    assert n.INSTANCES in profiles
    profile = profiles[n.INSTANCES]
    assert profile.with_selector
    assert new_flow.implementation_id == profile.preamble.id
    assert list(profile.table_ids) == [new_flow.preamble.id]


def test_new_flow_digest_fields(info: p4i.P4Info) -> None:
    digests = {d.preamble.name: d for d in info.digests}
    assert n.NEW_FLOW_DIGEST in digests
    struct = digests[n.NEW_FLOW_DIGEST].type_spec.struct.name
    members = info.type_info.structs[struct].members
    assert tuple(m.name for m in members) == n.NEW_FLOW_FIELDS
