"""The reconciliation's nftables plan, over arbitrary read-back and wanted tables: played onto
what was read back (by `interpret`, the same model the adapter builds its wanted state with),
it gives the wanted table; it rewrites exactly the chains that differ; a table already as
wanted gives an empty plan. Against the real nft: tests/netns/test_linux_dataplane.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.adapters import linux_nft_diff as d

HEADERS = {
    "prerouting": "type filter hook prerouting priority mangle; policy accept;",
    "forward": "type filter hook forward priority mangle; policy accept;",
}
CHAINS = ["prerouting", "forward", "svc_a", "svc_b", "svc_c"]
RULES = [
    "return",
    "drop",
    "meta mark set 0xca000001 ct mark set meta mark",
    "ct mark 0xca000002 meta mark set ct mark return",
    "meta mark set numgen random mod 4 map { 0-2 : 0xca000001, 3 : 0xca000002 }",
]
SETS = {"sids": "map", "services": "map", "dsids": "set", "aff_a_tcp": "map", "aff_b_tcp": "map"}
DECL = {"map": "type ipv6_addr : mark;", "set": "type ipv6_addr;"}
KEYS = [f"2001:db8::{i:x}" for i in range(1, 7)]
VALUES = {
    "sids": st.sampled_from(["0xca000001", "0xca000002", "0xca000003"]),
    "services": st.sampled_from(["jump svc_a", "jump svc_b", "jump svc_c"]),
    "dsids": st.just(""),
}


@st.composite
def tables(draw: st.DrawFn, declared: bool) -> d.Table:
    t = d.Table()
    for name in draw(st.lists(st.sampled_from(CHAINS), unique=True)):
        t.chains[name] = d.Chain(HEADERS.get(name), draw(st.lists(st.sampled_from(RULES))))
    for name in draw(st.lists(st.sampled_from(sorted(SETS)), unique=True)):
        kind = SETS[name]
        t.sets[name] = (kind, DECL[kind] if declared else None)
        if name in VALUES:
            t.elems[name] = draw(st.dictionaries(st.sampled_from(KEYS), VALUES[name]))
    return t


@settings(max_examples=400, deadline=None)
@given(tables(declared=False), tables(declared=True))
def test_the_plan_played_onto_the_read_back_table_is_the_wanted_table(
    have: d.Table, want: d.Table
) -> None:
    p = d.plan(have, want, "cand")
    got = d.interpret(have, p.script, "cand")
    assert got.same(want)
    differ = {
        n for n in set(have.chains) | set(want.chains) if have.chains.get(n) != want.chains.get(n)
    }
    assert p.chains == len(differ)
    # and the table it leaves needs nothing more
    assert d.plan(got, want, "cand").script == []


@settings(max_examples=200, deadline=None)
@given(tables(declared=True))
def test_a_table_as_wanted_gives_an_empty_plan(t: d.Table) -> None:
    assert d.plan(t, t.copy(), "cand") == d.Plan([], 0, 0)
    # the same table read back (declarations unknown) is as wanted too
    read = t.copy()
    read.sets = {n: (k, None) for n, (k, _) in t.sets.items()}
    assert d.plan(read, t, "cand").script == []
