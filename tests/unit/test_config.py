import tomllib
from pathlib import Path
from typing import Any

import pytest

from cand import config
from cand.engine import DefaultAction, InstanceMode
from cand.model import FlowKeyKind, ServiceId

EXAMPLE = Path(__file__).parents[2] / "examples" / "cand.toml"


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text())


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(config.ConfigError) as e:
        config.parse(data, "t.toml")
    return dict(e.value.problems)


def test_example_is_valid_and_maps_to_engine_config() -> None:
    cfg = config.load(EXAMPLE)
    eng = cfg.engine_config()
    video = eng.services[ServiceId.parse("2001:db8:5::2")]
    assert video.flow_key is FlowKeyKind.THREE_TUPLE
    assert video.mode is InstanceMode.NAT and video.default is DefaultAction.DROP
    assert video.policy == "weighted"
    assert eng.ingress and eng.egress and eng.locator is not None
    # the example scores the video service's delay between 5 and 200 ms, worst category wins
    assert video.normalization.bounds["delay"] == (5.0, 200.0)
    assert video.normalization.bounds["cpu"] == (0.0, 1.0)
    assert video.normalization.method == "min-max" and video.normalization.composition == "min"


def test_every_cats_category_takes_a_weight() -> None:
    """The draft's four L1 categories, composed included, are the names `weights` knows."""
    d = example()
    weights = {"computing": 2, "communication": 0, "service": 1, "composed": 3}
    d["services"][0]["metrics"] = {"composition": "mean", "weights": weights}
    sid = ServiceId.parse(d["services"][0]["sid"])
    spec = config.parse(d, "t.toml").engine_config().services[sid]
    assert dict(spec.normalization.weights) == weights


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (lambda d: d["services"][1].update(sid="nope"), "services[1].sid", "not an IP address"),
        (lambda d: d["router"].update(rolez=1), "router.rolez", "unknown option"),
        (lambda d: d["damping"].update(threshold=5000), "damping.threshold", "less than"),
        (lambda d: d["router"].update(id="x"), "router.id", "not an IP address"),
        (lambda d: d["router"].update(locator="fc00::/96"), "router.locator", "longer than /64"),
        (lambda d: d["bgp"]["neighbors"][0].pop("asn"), "bgp.neighbors[0].asn", "missing"),
        (lambda d: d["services"][0].update(flow_key="4-tuple"), "services[0].flow_key", "5-tuple"),
        (lambda d: d["prometheus"].update(listen="nope"), "prometheus.listen", "HOST:PORT"),
        (lambda d: d["mqtt"].update(password="x"), "mqtt", "not both"),
        (
            lambda d: d["services"][1].update(sid=d["services"][0]["sid"]),
            "services[1].sid",
            "already services[0]",
        ),
        (lambda d: d["router"].pop("locator"), "router.locator", "needs an SRv6 locator"),
        (lambda d: d["services"][0].update(sid="10.0.0.1"), "services[0].sid", "IPv4 D-SID"),
        (lambda d: d["router"].update(id="10.9.9.9"), "router.id", "needs an IPv6 address"),
        (
            lambda d: d["services"][0].update(metrics={"bounds": {"fan": [0, 1]}}),
            "services[0].metrics.bounds",
            "'fan' is not an L0 value",
        ),
        (
            lambda d: d["services"][0].update(metrics={"bounds": {"delay": [200, 5]}}),
            "services[0].metrics.bounds.delay",
            "best < worst",
        ),
        (
            lambda d: d["services"][0].update(metrics={"method": "z-score"}),
            "services[0].metrics.method",
            "min-max",
        ),
        (
            lambda d: d["services"][0].update(metrics={"weights": {"service": 2}}),
            "services[0].metrics.weights",
            "composition",
        ),
        (
            lambda d: d["services"][0].update(
                metrics={"composition": "mean", "weights": {"network": 1}}
            ),
            "services[0].metrics.weights",
            "'network' is not a category (computing, communication, service, composed)",
        ),
    ],
)
def test_errors_name_the_field(edit: Any, field: str, reason: str) -> None:
    d = example()
    edit(d)
    found = problems(d)
    assert field in found, found
    assert reason in found[field]


def test_missing_router_table() -> None:
    assert problems({}) == {"router": "required option is missing"}


def test_syntax_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[router\n")
    with pytest.raises(config.ConfigError, match="syntax"):
        config.load(bad)
    with pytest.raises(config.ConfigError, match="No such file"):
        config.load(tmp_path / "none.toml")


def test_schema_lists_every_table() -> None:
    props = config.json_schema()["properties"]
    assert {"router", "mqtt", "bgp", "decision", "damping", "services"} <= set(props)


def test_every_option_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = []
    for model in (
        config.RouterConfig,
        config.MqttConfig,
        config.BgpConfig,
        config.NeighborConfig,
        config.DecisionConfig,
        config.DampingConfig,
        config.NetworkCostConfig,
        config.IgpCostConfig,
        config.SmoothingConfig,
        config.DataplaneConfig,
        config.ServiceConfig,
        config.ServiceMetricsConfig,
        config.ServiceDefaults,
        config.ApiConfig,
        config.PrometheusConfig,
        config.LogConfig,
    ):
        missing += [f"{model.__name__}.{f}" for f in model.model_fields if f"`{f}`" not in doc]
    from dataclasses import fields

    from cand.adapters.linux import LinuxOptions

    missing += [f"LinuxOptions.{f.name}" for f in fields(LinuxOptions) if f"`{f.name}`" not in doc]
    assert missing == []


@pytest.mark.parametrize(
    ("network_cost", "field", "reason"),
    [
        ({"source": "ospf"}, "network_cost.source", "'static', 'igp' or 'probe'"),
        ({"probe": {"rate": 0}}, "network_cost.probe.rate", "greater than 0"),
        ({"probe": {"rate": 1000}}, "network_cost.probe.rate", "less than or equal"),
        ({"probe": {"unusable_loss": 1.5}}, "network_cost.probe.unusable_loss", "less than"),
        ({"probe": {"port": 0}}, "network_cost.probe.port", "greater than"),
        ({"probe": {"timeout": 9, "window": 2}}, "network_cost.probe.timeout", "window"),
        ({"probe": {"jitter": 1}}, "network_cost.probe.jitter", "less than"),
        ({"sources": {"nope": "igp"}}, "network_cost.sources", "not an IP address"),
        ({"sources": {"fc00::2": "static"}}, "network_cost.sources", "no entry in"),
        ({"igp": {"scale": 0}}, "network_cost.igp.scale", "greater than 0"),
        ({"igp": {"follow": "sid"}}, "network_cost.igp.follow", "'locator' or 'router_id'"),
        ({"igp": {"protocols": []}}, "network_cost.igp.protocols", "at least one"),
        ({"smoothing": {"method": "mean"}}, "network_cost.smoothing.method", "'ewma'"),
        ({"smoothing": {"min_change": -1}}, "network_cost.smoothing.min_change", "greater"),
    ],
)
def test_network_cost_errors_name_the_field(
    network_cost: dict[str, Any], field: str, reason: str
) -> None:
    d = example()
    d["network_cost"] = network_cost
    found = problems(d)
    assert field in found, found
    assert reason in found[field], found


def test_network_cost_sources_reach_the_engine() -> None:
    d = example()
    d["network_cost"] = {"source": "igp", "static": {"fc00::3": 4.0}, "sources": {"fc00::4": "igp"}}
    eng = config.parse(d).engine_config()
    from cand.model import RouterId

    assert eng.source_for(RouterId.parse("fc00::3")) == "static"
    assert eng.source_for(RouterId.parse("fc00::4")) == "igp"
    assert eng.source_for(RouterId.parse("fc00::9")) == "igp"
