"""The reaction benchmark at a reduced size in the Figure-2 lab with a GoBGP route reflector
on rr instead of FRR (`bench.reaction --reflector gobgp`): the lab converges with it, every
change crosses it with all its legs seen, and rr ran gobgpd, not FRR's bgpd. No time is
asserted; under CAND_REQUIRE_NETNS=1 a missing namespace capability fails, not skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns.test_bench_reaction_failure import run


@pytest.mark.netns
@pytest.mark.fig2
def test_reaction_with_gobgp_reflector(tmp_path: Path) -> None:
    data = run(
        tmp_path,
        "bench.reaction",
        "--changes",
        "5",
        "--reflector",
        "gobgp",
        result="reaction_gobgp",
    )
    assert data["reflector"] == "gobgp"
    assert data["rr_bgp"] == "gobgpd"  # the lab really ran the GoBGP reflector
    rows = data["rows"]
    assert len(rows) == 5
    for r in rows:
        legs = [r[k] for k in ("mqtt", "egress", "bgp", "dataplane")]
        assert all(v >= 0 for v in legs), r
        assert abs(sum(legs) - r["total"]) < 0.01, r
    assert data["baseline_bgp_ms"] and data["baseline_nft_ms"]
