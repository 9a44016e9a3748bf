"""ExaBGP process-API text: the exact command for an instance, built from the shared codec."""

import pytest

from cand import config
from cand.adapters.exabgp import ExabgpOptions, ExabgpSpeaker, command, withdraw_command
from cand.wire import bgp
from tests.golden.test_bgp_codec import ROUTE


def test_announce_command_carries_the_codec_bytes() -> None:
    line = command(ROUTE, 65000, 48)
    attrs = {a.type: a for a in bgp.encode_attributes(ROUTE, 65000, 48)}
    assert line.startswith(
        "announce route 2001:db8:5::1/128 next-hop fc00:ff::3 "
        "path-information 107.241.139.29 origin igp "
    )
    for t in (25, 32, 40):
        assert f"attribute [ 0x{t:02x} 0xc0 0x{attrs[t].value.hex()} ]" in line
    assert "\n" not in line
    assert withdraw_command(ROUTE.key, ROUTE.egress) == (
        "withdraw route 2001:db8:5::1/128 next-hop fc00:ff::3 path-information 107.241.139.29"
    )


def test_generated_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = config.parse(
        {
            "router": {"id": "fc00:a::3", "roles": ["egress"], "locator": "fc00:0:3::/48"},
            "bgp": {
                "speaker": "exabgp",
                "router_id": "10.255.0.3",
                "neighbors": [{"address": "fc00:a::1", "asn": 65000, "password": "s3cret"}],
            },
        }
    )
    text = ExabgpSpeaker(cfg, ExabgpOptions()).render(tmp_path / "api.sock")
    assert "neighbor fc00:a::1 {" in text
    assert "capability { add-path send/receive; graceful-restart 120; }" in text
    assert "receive { packets; update; }" in text
    assert "md5-password 's3cret';" in text
    assert "cand.adapters.exabgp_bridge" in text


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match="nope"):
        ExabgpOptions.parse({"nope": 1})


def test_edge_metadata_goes_only_to_the_neighbours_that_asked_for_it() -> None:
    from cand.adapters.exabgp import commands

    with_42, plain = commands(ROUTE, 65000, 48, 0xFF01, ["fc00:a::1"], ["fc00:b::100"])
    assert with_42.startswith("neighbor fc00:a::1 announce route 2001:db8:5::1/128 ")
    assert with_42.endswith("attribute [ 0x2a 0x80 0x00010003ff01080002000202ee ]")
    assert plain.startswith("neighbor fc00:b::100 announce route ") and "0x2a" not in plain
    # nobody asked: the one command to every peer, as before
    assert commands(ROUTE, 65000, 48, 0xFF01, [], ["fc00:b::100"]) == [command(ROUTE, 65000, 48)]
    # some peers only (a neighbour that came with a reload): each line names them, even
    # when none takes attribute 42
    (only,) = commands(ROUTE, 65000, 48, 0xFF01, [], ["fc00:b::100"], everyone=False)
    assert only == command(ROUTE, 65000, 48, None, ["fc00:b::100"])
    assert only.startswith("neighbor fc00:b::100 announce route ")
    assert commands(ROUTE, 65000, 48, 0xFF01, [], [], everyone=False) == []


def test_edge_metadata_on_a_gobgp_neighbour_is_refused() -> None:
    base = {
        "router": {"id": "fc00:a::3", "roles": ["egress"], "locator": "fc00:0:3::/48"},
        "bgp": {"neighbors": [{"address": "fc00:a::1", "asn": 65000, "edge_metadata": True}]},
    }
    with pytest.raises(config.ConfigError) as e:
        config.parse(base)
    assert (
        "strips unknown optional non-transitive"
        in dict(e.value.problems)["bgp.neighbors[0].edge_metadata"]
    )
    base["bgp"]["speaker"] = "exabgp"  # type: ignore[index]
    cfg = config.parse(base)
    assert cfg.bgp is not None and cfg.bgp.edge_metadata_capability == 0xFF01
