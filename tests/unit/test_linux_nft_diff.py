"""The reconciliation's nftables difference (`linux_nft_diff`), against a listing that nft
1.0.6 printed for a table `linux_nft` wrote (tests/golden/nft_list_table.txt: base chains with
a probe, MSS clamping and a NAT rule; a 5-tuple service, a 3-tuple one and a dropping one)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cand.adapters import linux_nft as nft
from cand.adapters import linux_nft_diff as d
from cand.engine.service_table import DefaultAction
from cand.model import FlowKeyKind, ServiceId

LISTING = (Path(__file__).parent.parent / "golden" / "nft_list_table.txt").read_text()
M = nft.Marks()
S1, S2, S3 = (ServiceId.parse(f"2001:db8::{i}") for i in (1, 2, 3))


def written(
    weights: tuple[int, int] = (3, 1), services: tuple[ServiceId, ...] = (S1, S2, S3)
) -> list[str]:
    """The script that wrote the golden listing (with `weights` for S1's two slots)."""
    sids = {ipaddress.IPv6Address("fc00::5"): M.base | 7}
    nat = [nft.NatRule(M.base | 7, ipaddress.IPv6Address("2001:db8::9"),
                       ipaddress.IPv6Address("fd00::9"))]  # fmt: skip
    script = nft.base(
        "cand", M, sids, {s: nft.chain_name(s) for s in services}, nat, 1376,
        nft.ProbeIn("fc00::/48", 7777),
    )  # fmt: skip
    one = (nft.SteeredSlot(M.base | 1, weights[0], True),
           nft.SteeredSlot(M.base | 2, weights[1], False))  # fmt: skip
    chains = {
        S1: nft.SteeredService(S1, FlowKeyKind.FIVE_TUPLE, 30, DefaultAction.ROUTE, one),
        S2: nft.SteeredService(S2, FlowKeyKind.THREE_TUPLE, 30, DefaultAction.ROUTE,
                               (nft.SteeredSlot(M.base | 3, 1, True),)),
        S3: nft.SteeredService(S3, FlowKeyKind.FIVE_TUPLE, 30, DefaultAction.DROP, ()),
    }  # fmt: skip
    for s in services:
        script += nft.service("cand", chains[s])
    return script


def test_what_nft_printed_for_the_written_table_is_what_the_script_wants() -> None:
    have = d.parse_listing(LISTING, "cand")
    assert len(have.chains) == 7 and len(have.elems["services"]) == 3
    assert have.elems["sids"] == {"fc00::5": "0xca000007"}
    want = d.interpret(have, written(), "cand")
    assert want.same(have)
    assert d.plan(have, want, "cand") == d.Plan([], 0, 0)
    # from nothing, the same script's state is the same table
    assert d.interpret(d.Table(), written(), "cand").same(have)


def test_a_weight_change_rewrites_that_chain_alone() -> None:
    have = d.parse_listing(LISTING, "cand")
    want = d.interpret(have, written(weights=(1, 1)), "cand")
    p = d.plan(have, want, "cand")
    chain = nft.chain_name(S1)
    assert (p.chains, p.elements) == (1, 0)
    assert p.script[:2] == ["add table ip6 cand", f"flush chain ip6 cand {chain}"]
    assert all(line.startswith(f"add rule ip6 cand {chain} ") for line in p.script[2:])
    assert d.interpret(have, p.script, "cand").same(want)


def test_a_tampered_rule_and_a_lost_element_are_put_back() -> None:
    chain = nft.chain_name(S2)
    text = LISTING.replace("meta mark set numgen random mod 1 map { 0 : 0xca000003 }",
                           "meta mark set 0xca000009")  # fmt: skip
    text = text.replace("2001:db8::1,\n", "")  # out of the dsids set
    have = d.parse_listing(text, "cand")
    assert "2001:db8::1" not in have.elems["dsids"]
    p = d.plan(have, d.interpret(have, written(), "cand"), "cand")
    assert (p.chains, p.elements) == (1, 1)
    assert f"flush chain ip6 cand {chain}" in p.script
    assert p.script[-1] == "add element ip6 cand dsids { 2001:db8::1 }"


def test_a_service_gone_takes_its_elements_then_its_chain() -> None:
    have = d.parse_listing(LISTING, "cand")
    script = written(services=(S1, S2)) + nft.remove_service("cand", S3, had_affinity=False)
    p = d.plan(have, d.interpret(have, script, "cand"), "cand")
    gone = nft.chain_name(S3)
    assert p.script == [
        "add table ip6 cand",
        "delete element ip6 cand services { 2001:db8::3 }",
        "delete element ip6 cand dsids { 2001:db8::3 }",
        f"flush chain ip6 cand {gone}",
        f"delete chain ip6 cand {gone}",
    ]
    assert (p.chains, p.elements) == (1, 2)


def test_no_table_yet_is_written_whole() -> None:
    want = d.interpret(d.Table(), written(), "cand")
    p = d.plan(d.Table(), want, "cand")
    assert p.chains == 7 and p.elements == 7
    assert d.interpret(d.Table(), p.script, "cand").same(want)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "table ip cand {\n}",
        LISTING.replace("\tset dsids {", "\tflowtable f {\n\t}\n\tset dsids {"),
        LISTING.replace("fc00::5 : 0xca000007", "fc00::5 timeout 5s : 0xca000007"),
        LISTING[: LISTING.rindex("\t}")] + "}",  # the last chain not closed
    ],
)
def test_what_is_not_understood_is_not_trusted(text: str) -> None:
    with pytest.raises(d.Untrusted):
        d.parse_listing(text, "cand")


def test_a_base_chain_of_another_hook_is_not_changed_in_place() -> None:
    text = LISTING.replace("priority raw; policy accept;", "priority raw; policy drop;")
    have = d.parse_listing(text, "cand")
    with pytest.raises(d.Untrusted):
        d.interpret(have, written(), "cand")


PRINTED = [  # as written by cand -> as nft 1.0.6 prints it
    ("meta mark and 0xff000000 == 0xca000000 return", "meta mark 0xca000000/8 return"),
    ("meta mark and 0xff00ff00 == 0xca000000 return", None),  # no prefix: as written
    ("ct mark { 0xca000001 } meta mark set ct mark return",
     "ct mark 0xca000001 meta mark set ct mark return"),
    ("ct mark { 0xca000001, 0xca000002 } return", None),
    ("ct mark { 0xca000009, 0xca000001, 0xca000005 } return",  # nft sorts them
     "ct mark { 0xca000001, 0xca000005, 0xca000009 } return"),
    ("meta l4proto != { tcp, udp } return", None),
    ("update @a { ip6 saddr timeout 90s : meta mark }",
     "update @a { ip6 saddr timeout 1m30s : meta mark }"),
    ("update @a { ip6 saddr timeout 86461s : meta mark }",
     "update @a { ip6 saddr timeout 1d1m1s : meta mark }"),
    ("ip6 daddr FC00:0:0::1/48 ip6 nexthdr 43 udp dport 1 notrack",
     "ip6 daddr fc00::/48 ip6 nexthdr ipv6-route udp dport 1 notrack"),
    ("ip6 daddr fc00::1/128 dnat to FD00::0:9", "ip6 daddr fc00::1 dnat to fd00::9"),
    ("meta mark set numgen random mod 4 map { 0-2 : 0xca000001, 3 : 0xca000002 }", None),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "shown"), PRINTED)
def test_printed_is_how_nft_shows_a_rule(rule: str, shown: str | None) -> None:
    shown = shown or rule
    assert d.printed(rule) == shown
    assert d.printed(shown) == shown


def test_nat_rules_read_from_text() -> None:
    have = d.parse_listing(LISTING, "cand")
    got = [nft.parse_nat_text(r) for r in have.chains["servicenat"].rules]
    assert got == [nft.NatRule(M.base | 7, ipaddress.IPv6Address("2001:db8::9"),
                               ipaddress.IPv6Address("fd00::9"))]  # fmt: skip
    assert nft.parse_nat_text("meta mark 0xca000007 ip6 daddr 2001:db8::9 drop") is None
