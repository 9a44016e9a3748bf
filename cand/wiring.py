"""From a config to the adapters the daemon runs: plugins are found by entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cand import plugins
from cand.config import Config, ConfigError
from cand.daemon import Adapters
from cand.ports import CostSourcePlugin, DataplanePlugin, MetricSourcePlugin, SpeakerPlugin

if TYPE_CHECKING:  # the bundled plugins satisfy their ports, from_config included (mypy)
    from cand.adapters.exabgp import ExabgpSpeaker
    from cand.adapters.igp import IgpCostSource
    from cand.adapters.linux import LinuxDataplane
    from cand.adapters.mqtt import MqttMetricSource
    from cand.adapters.probe import ProbeCostSource

    _source: MetricSourcePlugin = MqttMetricSource
    _speaker: SpeakerPlugin = ExabgpSpeaker
    _dataplane: DataplanePlugin = LinuxDataplane
    _cost: CostSourcePlugin = IgpCostSource
    _probe: CostSourcePlugin = ProbeCostSource


def build_adapters(cfg: Config) -> Adapters:
    a = Adapters()
    if cfg.mqtt is not None and cfg.egress:
        source: MetricSourcePlugin = plugins.load("cand.metric_sources", "mqtt")
        a.sources.append(source.from_config(cfg))
    if cfg.ingress:
        for name in COST_SOURCES:
            if cfg.network_cost.uses(name):
                cost: CostSourcePlugin = plugins.load("cand.cost_sources", name)
                a.costs.append(cost.from_config(cfg))
    if cfg.responds:
        from cand.adapters.probe import ProbeResponder

        a.responders.append(ProbeResponder.from_config(cfg))
    if cfg.bgp is not None and cfg.bgp.speaker != "none":
        speaker: SpeakerPlugin = plugins.load("cand.speakers", cfg.bgp.speaker)
        a.speaker = speaker.from_config(cfg)
    if cfg.dataplane is not None and cfg.dataplane.kind != "none":
        dataplane: DataplanePlugin = plugins.load("cand.dataplanes", cfg.dataplane.kind)
        a.dataplane = dataplane.from_config(cfg)
    return a


COST_SOURCES = ("igp", "probe")
"""The `[network_cost]` sources that are adapters (`static` is the config itself)."""

_PLUGIN_FIELD = {
    "cand.speakers": "bgp.speaker",
    "cand.dataplanes": "dataplane.kind",
    "cand.cost_sources": "network_cost.source",
}


def check(cfg: Config, source: str = "<config>") -> None:
    """What `cand run` resolves before it starts anything: each plugin found, its options
    valid, each policy known. Raises ConfigError naming the field, as `config.load` does, so
    `cand validate` refuses what `cand run` could not start."""
    problems: list[tuple[str, str]] = []
    known = plugins.available("cand.policies")
    named: list[tuple[str, str | None]] = [("decision.policy", cfg.decision.policy)]
    named.append(("service_defaults.policy", cfg.service_defaults.policy))
    named += [(f"services[{i}].policy", s.policy) for i, s in enumerate(cfg.services)]
    for where, name in named:
        if name is not None and name not in known:
            problems.append(
                (where, f"no policy named {name[:60]!r} (installed: {', '.join(sorted(known))})")
            )
    try:
        build_adapters(cfg)
    except plugins.PluginNotFound as e:
        problems.append((_PLUGIN_FIELD.get(e.group, e.group), str(e)))
    except ValueError as e:
        # the plugins' option checks say "table.option: reason"
        head, sep, tail = str(e).partition(": ")
        problems.append((head, tail) if sep and " " not in head else ("(plugins)", str(e)))
    if problems:
        raise ConfigError(source, problems)


def plan(cfg: Config) -> dict[str, Any]:
    """What `cand run` would start, without starting it (`cand run --plan`)."""
    eng = cfg.engine_config()
    return {
        "router": cfg.router.id,
        "roles": list(cfg.router.roles),
        "metric_source": "mqtt" if cfg.mqtt is not None and cfg.egress else None,
        "cost_sources": [n for n in COST_SOURCES if cfg.ingress and cfg.network_cost.uses(n)],
        "probe_responder": cfg.responds,
        "speaker": cfg.bgp.speaker if cfg.bgp is not None else None,
        "dataplane": cfg.dataplane.kind if cfg.dataplane is not None else None,
        "installed_plugins": {g: sorted(plugins.available(g)) for g in plugins.GROUPS},
        "services": [
            {
                "sid": str(s.service),
                "name": s.name,
                "policy": s.policy,
                "flow_key": s.flow_key.value,
                "affinity_timeout": s.affinity_timeout,
                "default": s.default.value,
                "mode": s.mode.value,
            }
            for s in eng.services.values()
        ],
        "api_socket": str(cfg.api.socket),
    }
