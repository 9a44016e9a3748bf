"""cand.toml: one file, validated into frozen typed objects.

Every error names the field as a path (`services[1].sid`) and says why, so an operator can fix
a file without reading code. `docs/configuration.md` documents each option; keep them in step.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cand.engine.cost import SmoothingParams
from cand.engine.damping import DampingParams
from cand.engine.engine import EngineConfig
from cand.engine.policy import PolicyParams
from cand.engine.probe import ProbeParams
from cand.engine.rib import RibLimits
from cand.engine.service_table import DefaultAction, InstanceMode, ServiceSpec
from cand.model import FlowKeyKind, ModelError, RouterId, ServiceId
from cand.normalize import CATEGORIES, L0_NAMES, Normalization
from cand.wire.mqtt import AGENT_MAX_RECONNECT


class ConfigError(ValueError):
    """A config file that cannot be used; `problems` lists (field path, reason)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {why}" for path, why in problems)
        super().__init__(f"{source}: invalid configuration\n{lines}")


class _Model(BaseModel):
    # inf and nan are valid TOML floats, but no timer, cost or ratio here can be infinite
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Seconds = Annotated[float, Field(ge=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
Asn = Annotated[int, Field(ge=1, le=4294967295)]


def _ip(value: object) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


class RouterConfig(_Model):
    id: str = Field(description="This router's address: BGP next hop and egress identity")
    asn: Asn = 65000
    roles: tuple[Literal["ingress", "egress"], ...] = ("ingress", "egress")
    locator: str | None = Field(
        default=None, description="SRv6 locator (IPv6 prefix, /64 or shorter) for instance SIDs"
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _ip(v)

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one of 'ingress', 'egress'")
        if len(set(v)) != len(v):
            raise ValueError("a role is listed twice")
        return v

    @field_validator("locator")
    @classmethod
    def _locator(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            net = ipaddress.IPv6Network(v)
        except ValueError as e:
            raise ValueError(f"{v!r} is not an IPv6 prefix ({e})") from None
        if net.prefixlen > 64:
            raise ValueError(f"{v} is longer than /64: no room for instance functions")
        return str(net)


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "dyncast/v1"
    client_id: str | None = None
    keepalive: Annotated[int, Field(ge=2, le=65535)] = 10
    max_payload: Annotated[int, Field(ge=64, le=1 << 20)] = 4096
    default_expiry: Seconds = 30.0
    """How long a report stays true when the publisher set no message expiry."""
    will_confirm: Seconds = 0.1
    """How long a live Last Will waits before it takes effect: brokers publish every will
    when they shut down, and a will followed by our own connection dropping is discarded."""
    will_grace: Seconds = 10.0
    """How long a retained Last Will found on (re)subscribing waits for a newer report from
    the instance (it reconnecting after a broker restart) before it takes effect. Longer
    than the agent's longest reconnect delay, or a live instance is removed."""
    max_expiry: Annotated[float, Field(gt=0)] = 300.0
    """No report stays true longer than this, whatever message expiry its publisher set."""
    max_clock_skew: Annotated[float, Field(gt=0)] = 300.0
    """A report whose seq (milliseconds) or ts is further ahead of our clock is refused:
    a seq from the future would pin the instance and lock out its real reports."""
    max_instances: Annotated[int, Field(ge=1, le=1 << 20)] = 4096
    """Instances this source tracks at most; reports of further ones are refused (`limit`)."""
    max_queue: Annotated[int, Field(ge=16, le=1 << 22)] = 8192
    """Messages received and not yet handled, at most: a flood beyond is dropped (`overflow`).
    At least `max_instances`, for the burst of retained reports on (re)subscribing."""

    @model_validator(mode="after")
    def _secret(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.topic_prefix.endswith("/") or "+" in self.topic_prefix or "#" in self.topic_prefix:
            raise ValueError("topic_prefix: no wildcards and no trailing '/'")
        if self.will_grace <= AGENT_MAX_RECONNECT:
            raise ValueError(
                f"will_grace: {self.will_grace} s is not longer than the agent's longest "
                f"reconnect delay ({AGENT_MAX_RECONNECT} s): live instances would be removed"
            )
        if self.max_queue < self.max_instances:
            raise ValueError("max_queue: smaller than max_instances (the retained burst)")
        if self.default_expiry > self.max_expiry:
            raise ValueError("default_expiry: longer than max_expiry")
        return self


class NeighborConfig(_Model):
    address: str
    asn: Asn
    password: str | None = None
    hold_time: Annotated[int, Field(ge=0, le=65535)] = 90
    keepalive: Annotated[int, Field(ge=0, le=21845)] = 30
    passive: bool = False
    route_reflector_client: bool = False
    bfd: bool = False
    description: str = ""
    edge_metadata: bool = False
    """Also send the Edge Metadata attribute (42, draft-ietf-idr-5g-edge-service-metadata) to
    this neighbour: only for a direct session with a draft-aware speaker (reflectors drop it)."""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _ip(v)


GRACEFUL_SHUTDOWN_MAX = 60.0


class BgpConfig(_Model):
    speaker: str = "gobgp"
    router_id: str | None = Field(default=None, description="BGP identifier (IPv4 dotted quad)")
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 179
    graceful_restart: Annotated[int, Field(ge=0, le=4095)] = 120
    graceful_shutdown: Annotated[float, Field(ge=0, le=GRACEFUL_SHUTDOWN_MAX)] = 0.0
    """On a stop, announce every path with GRACEFUL_SHUTDOWN (RFC 8326) this many seconds
    before withdrawing it; 0: withdraw at once."""
    neighbors: tuple[NeighborConfig, ...] = ()
    edge_metadata_capability: Annotated[int, Field(ge=0, le=65535)] = 0xFF01
    """The capability code of the Service-Oriented Capability sub-TLV that carries the CATS L2
    score in attribute 42. The draft assigns none: set it to what the peers expect."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Speaker-specific settings, passed to the speaker plugin as they are."""

    @model_validator(mode="after")
    def _edge_metadata(self) -> BgpConfig:
        for i, n in enumerate(self.neighbors):
            if n.edge_metadata and self.speaker == "gobgp":
                raise ValueError(
                    f"bgp.neighbors[{i}].edge_metadata: gobgpd strips unknown optional"
                    ' non-transitive attributes before sending (measured); use speaker = "exabgp"'
                )
        return self

    @field_validator("router_id")
    @classmethod
    def _rid(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 dotted quad") from None


_POLICY = PolicyParams()


class DecisionConfig(_Model):
    policy: str = "weighted"
    hysteresis: Annotated[float, Field(ge=0, le=1)] = 0.05
    # the defaults are the core's (cand.engine.policy.PolicyParams, which says why)
    cost_scale: Annotated[float, Field(gt=0)] = _POLICY.cost_scale
    network_weight: Annotated[float, Field(ge=0)] = _POLICY.network_weight
    overload: Annotated[float, Field(gt=0, le=1)] = 0.95
    steer_unknown: bool = False


class DampingConfig(_Model):
    threshold: Annotated[int, Field(ge=0, le=1000)] = 50
    min_interval: Seconds = 1.0
    refresh_interval: Annotated[float, Field(gt=0)] = 60.0
    penalty: Annotated[float, Field(gt=0)] = 1000.0
    suppress_above: Annotated[float, Field(gt=0)] = 3000.0
    reuse_below: Annotated[float, Field(gt=0)] = 750.0
    half_life: Annotated[float, Field(gt=0)] = 15.0

    @model_validator(mode="after")
    def _order(self) -> DampingConfig:
        if self.reuse_below >= self.suppress_above:
            raise ValueError("reuse_below must be lower than suppress_above")
        return self


CostSourceName = Literal["static", "igp", "probe"]


class IgpCostConfig(_Model):
    """`[network_cost.igp]`: the cost is the IGP's metric of the route to the egress."""

    scale: Annotated[float, Field(gt=0, le=1e6)] = 1.0
    """Milliseconds per unit of IGP metric."""
    follow: Literal["locator", "router_id"] = "locator"
    """The address whose route is followed: the egress's SRv6 locator (one of its instance
    SIDs, what the tunnels are routed by), or its router id. Without a SID: the router id."""
    metric: Literal["zebra", "kernel"] = "zebra"
    """Where the metric is read: FRR's zebra (through vtysh; FRR installs every kernel route
    with the same metric, 20) or the kernel route's own metric (other routing daemons)."""
    protocols: tuple[Annotated[int, Field(ge=1, le=255)], ...] = (188, 187, 42)
    """Kernel route protocols that count as the IGP (rtnetlink numbers: 188 ospf, 187 isis,
    42 babel): an egress without such a route is unreachable."""
    table: Annotated[int, Field(ge=1, le=4294967295)] = 254
    """The kernel routing table looked in (254: main)."""
    vtysh: str = "vtysh"
    vty_socket: Path | None = None
    """Directory of FRR's vty sockets (vtysh --vty_socket), when not the default."""
    settle: Annotated[float, Field(ge=0, le=10)] = 0.05
    """Seconds a burst of route changes is given to end before the routes are read: FRR
    replaces a route by a delete and an add, and the moment between is not an outage."""
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    """Seconds a vtysh call may take."""

    @field_validator("protocols")
    @classmethod
    def _protocols(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("give at least one route protocol number")
        return v


class ProbeCostConfig(_Model):
    """`[network_cost.probe]`: the cost is the RTT measured by probes over the SRv6 path."""

    port: Annotated[int, Field(ge=1, le=65535)] = 8620
    """UDP port of the responders (`auto`: every egress with an IPv6 router id runs one)."""
    responder: bool | Literal["auto"] = "auto"
    """Answer probes here: `auto` at every egress with an IPv6 router id (what ingresses
    probe), `true` always (an IPv4 router id is then an error), `false` never."""
    rate: Annotated[float, Field(gt=0, le=100)] = 5.0
    """Probes a second to each egress."""
    jitter: Annotated[float, Field(ge=0, le=0.9)] = 0.2
    """Each send time moves by up to this fraction of the interval, either way."""
    max_total_rate: Annotated[float, Field(gt=0, le=10000)] = 200.0
    """Probes a second to all egresses together, at most."""
    timeout: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Seconds after which an unanswered probe is lost."""
    window: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """Seconds of results the RTT percentiles, jitter and loss are taken over."""
    percentile: Annotated[float, Field(gt=0, le=100)] = 50.0
    """The RTT percentile that is the cost."""
    loss_penalty: Annotated[float, Field(ge=0, le=1e6)] = 100.0
    """Milliseconds added to the cost at 100 % loss (in proportion below)."""
    unusable_loss: Annotated[float, Field(gt=0, le=1)] = 0.5
    """At this loss fraction over the window (or above) the egress is unusable."""
    min_probes: Annotated[int, Field(ge=1, le=100000)] = 3
    """Results needed in the window before loss may make an egress unusable."""
    report_interval: Annotated[float, Field(gt=0, le=3600)] = 0.5
    """Seconds between two samples of one egress to the engine, at least."""
    responder_rate: Annotated[float, Field(gt=0, le=100000)] = 1000.0
    """Probes a second the responder answers, at most, all senders together."""
    responder_rate_per_sender: Annotated[float, Field(gt=0, le=100000)] = 100.0
    """Probes a second the responder answers to one sender address, at most."""

    @model_validator(mode="after")
    def _bounds(self) -> ProbeCostConfig:
        if self.timeout > self.window:
            raise ValueError("timeout: must not be longer than window (a loss would never count)")
        return self

    def params(self) -> ProbeParams:
        return ProbeParams(
            rate=self.rate,
            jitter=self.jitter,
            max_total_rate=self.max_total_rate,
            timeout=self.timeout,
            window=self.window,
            percentile=self.percentile,
            loss_penalty=self.loss_penalty,
            unusable_loss=self.unusable_loss,
            min_probes=self.min_probes,
            report_interval=self.report_interval,
        )


class SmoothingConfig(_Model):
    """`[network_cost.smoothing]`: how raw samples become the cost (cand.engine.cost)."""

    method: Literal["ewma", "median", "none"] = "ewma"
    tau: Annotated[float, Field(gt=0, le=3600)] = 2.0
    window: Annotated[float, Field(gt=0, le=3600)] = 5.0
    min_change: Annotated[float, Field(ge=0)] = 1.0
    min_interval: Annotated[float, Field(ge=0, le=3600)] = 1.0


class NetworkCostConfig(_Model):
    default: Annotated[float, Field(ge=0)] = 0.0
    static: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    source: CostSourceName = "static"
    """Where the cost to an egress comes from, unless `sources` or `static` names it."""
    sources: dict[str, CostSourceName] = Field(default_factory=dict)
    """Per egress address: its source, overriding `source`."""
    igp: IgpCostConfig = IgpCostConfig()
    probe: ProbeCostConfig = ProbeCostConfig()
    smoothing: SmoothingConfig = SmoothingConfig()

    @field_validator("static", "sources")
    @classmethod
    def _keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for k, c in v.items():
            addr = _ip(k)
            if addr in out:
                raise ValueError(f"{k!r} and {spelled[addr]!r} are the same router {addr}")
            out[addr], spelled[addr] = c, k
        return out

    @model_validator(mode="after")
    def _static_named(self) -> NetworkCostConfig:
        for egress, source in self.sources.items():
            if source == "static" and egress not in self.static:
                raise ValueError(
                    f"sources: {egress} is given the static source but has no entry in"
                    " network_cost.static"
                )
        return self

    def source_for(self) -> dict[str, str]:
        """Per named egress, its source: `sources`, else `static` for one with a static cost."""
        named = {e: "static" for e in self.static}
        named.update(self.sources)
        return named

    def uses(self, source: str) -> bool:
        return self.source == source or source in self.source_for().values()


class DataplaneConfig(_Model):
    kind: str = "linux"
    options: dict[str, Any] = Field(default_factory=dict)


class ServiceMetricsConfig(_Model):
    """How an egress scores this service's instances: L0 -> CATS L1/L2 (`cand.normalize`)."""

    method: Literal["min-max", "log"] = "min-max"
    composition: Literal["min", "mean"] = "min"
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Per L0 value: [best, worst]; the others keep their defaults."""
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    """Per category, for `composition = "mean"`."""

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (best, worst) in v.items():
            if name not in L0_NAMES:
                raise ValueError(f"{name!r} is not an L0 value ({', '.join(L0_NAMES)})")
            if not 0 <= best < worst:
                raise ValueError(f"{name}: need 0 <= best < worst, got [{best}, {worst}]")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            if name not in CATEGORIES:
                raise ValueError(f"{name!r} is not a category ({', '.join(CATEGORIES)})")
        return v

    @model_validator(mode="after")
    def _mean(self) -> ServiceMetricsConfig:
        if self.weights and self.composition != "mean":
            raise ValueError('weights: only used with composition = "mean"')
        return self

    def normalization(self) -> Normalization:
        return Normalization(
            method=self.method,
            bounds=self.bounds,
            composition=self.composition,
            weights=self.weights,
        )


class ServiceConfig(_Model):
    sid: str
    name: str = ""
    flow_key: FlowKeyKind = FlowKeyKind.FIVE_TUPLE
    affinity_timeout: Seconds = 300.0
    policy: str | None = None
    default: DefaultAction = DefaultAction.DROP
    mode: InstanceMode = InstanceMode.VIP
    metrics: ServiceMetricsConfig = ServiceMetricsConfig()

    @field_validator("sid")
    @classmethod
    def _sid(cls, v: str) -> str:
        try:
            sid = ServiceId.parse(v)
        except ModelError as e:
            raise ValueError(str(e)) from None
        if sid.address.version != 6:
            # the SRv6 data plane and the BGP encoding (AFI 2, IPv6 next hop) carry IPv6 D-SIDs
            raise ValueError(f"{v}: an IPv4 D-SID is not supported, D-SIDs are IPv6 addresses")
        return str(sid)


class ServiceDefaults(_Model):
    flow_key: FlowKeyKind = FlowKeyKind.FIVE_TUPLE
    affinity_timeout: Seconds = 300.0
    policy: str | None = None
    default: DefaultAction = DefaultAction.ROUTE


class ApiConfig(_Model):
    socket: Path = Path("/run/cand/cand.sock")


class PrometheusConfig(_Model):
    listen: str | None = "127.0.0.1:9530"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        _, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not HOST:PORT")
        return v


class LimitsConfig(_Model):
    max_instances_per_service: Annotated[int, Field(ge=1, le=1 << 20)] = 1024
    """Instances (paths from one egress) of one D-SID held at most, local or learned."""
    max_instances_per_egress: Annotated[int, Field(ge=1, le=1 << 20)] = 4096
    """Instances held at most from one egress router (this router's own included)."""


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class Config(_Model):
    router: RouterConfig
    mqtt: MqttConfig | None = None
    bgp: BgpConfig | None = None
    decision: DecisionConfig = DecisionConfig()
    damping: DampingConfig = DampingConfig()
    network_cost: NetworkCostConfig = NetworkCostConfig()
    dataplane: DataplaneConfig | None = None
    services: tuple[ServiceConfig, ...] = ()
    service_defaults: ServiceDefaults = ServiceDefaults()
    api: ApiConfig = ApiConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    limits: LimitsConfig = LimitsConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _cross(self) -> Config:
        seen: dict[str, int] = {}
        for i, s in enumerate(self.services):
            if s.sid in seen:
                raise ValueError(f"services[{i}].sid: {s.sid} is already services[{seen[s.sid]}]")
            seen[s.sid] = i
        if "egress" in self.router.roles and self.router.locator is None:
            raise ValueError("router.locator: an egress needs an SRv6 locator for its instances")
        if self.egress and self.bgp is not None and ":" not in self.router.id:
            raise ValueError(
                f"router.id: {self.router.id} is IPv4, but an egress is the BGP next hop of its"
                " IPv6 D-SIDs' paths: it needs an IPv6 address"
            )
        return self

    @property
    def ingress(self) -> bool:
        return "ingress" in self.router.roles

    @property
    def egress(self) -> bool:
        return "egress" in self.router.roles

    @property
    def responds(self) -> bool:
        """Whether this router runs the probe responder: `auto` answers where ingresses
        probe, an egress, and only with an IPv6 router id (probes are IPv6 over SRv6)."""
        r = self.network_cost.probe.responder
        if r == "auto":
            return self.egress and ":" in self.router.id
        return bool(r)

    def service_specs(self) -> dict[ServiceId, ServiceSpec]:
        return {
            ServiceId.parse(s.sid): ServiceSpec(
                service=ServiceId.parse(s.sid),
                flow_key=s.flow_key,
                affinity_timeout=s.affinity_timeout,
                policy=s.policy or self.decision.policy,
                default=s.default,
                mode=s.mode,
                name=s.name,
                normalization=s.metrics.normalization(),
            )
            for s in self.services
        }

    def engine_config(self) -> EngineConfig:
        d, dm, sd = self.decision, self.damping, self.service_defaults
        default_spec = ServiceSpec(
            service=ServiceId.parse("::1"),  # placeholder, replaced per D-SID
            flow_key=sd.flow_key,
            affinity_timeout=sd.affinity_timeout,
            policy=sd.policy or d.policy,
            default=sd.default,
        )
        return EngineConfig(
            router=RouterId.parse(self.router.id),
            ingress=self.ingress,
            egress=self.egress,
            locator=ipaddress.IPv6Network(self.router.locator) if self.router.locator else None,
            services=self.service_specs(),
            steer_unknown=d.steer_unknown,
            default_spec=default_spec,
            policy=PolicyParams(
                cost_scale=d.cost_scale,
                network_weight=d.network_weight,
                overload=d.overload,
                hysteresis=d.hysteresis,
            ),
            damping=DampingParams(**dm.model_dump()),
            default_cost=self.network_cost.default,
            cost_source=self.network_cost.source,
            cost_sources={
                RouterId.parse(e): src for e, src in self.network_cost.source_for().items()
            },
            cost_smoothing=SmoothingParams(**self.network_cost.smoothing.model_dump()),
            limits=RibLimits(
                per_service=self.limits.max_instances_per_service,
                per_egress=self.limits.max_instances_per_egress,
            ),
        )


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-after") or part in ("tagged-union",):
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _reason(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        return "unknown option (check the spelling; docs/configuration.md lists them all)"
    if err["type"] == "missing":
        return "required option is missing"
    return msg


def parse(data: Mapping[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems: list[tuple[str, str]] = []
        for err in e.errors():
            path, reason = _path(err["loc"]), _reason(err)
            # cross-field checks carry the field in their message: "x.y: reason"
            head, sep, tail = reason.partition(": ")
            if sep and " " not in head:
                if path == "(top level)" or head.startswith(path + "."):
                    path, reason = head, tail
                elif head.isidentifier() and head.islower():
                    path, reason = f"{path}.{head}", tail  # a table's check names its option
            problems.append((path, reason))
        raise ConfigError(source, problems) from None


MAX_FILE = 1 << 20
"""A cand.toml larger than this is refused before it is parsed (a real one is a few KiB)."""


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE + 1)
    except OSError as e:
        raise ConfigError(str(p), [("(file)", e.strerror or str(e))]) from None
    if len(raw) > MAX_FILE:
        raise ConfigError(str(p), [("(file)", f"larger than {MAX_FILE} bytes")])
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [("(syntax)", f"not UTF-8: {e}")]) from None
    except RecursionError:
        raise ConfigError(str(p), [("(syntax)", "arrays or tables nested too deeply")]) from None
    except ValueError as e:
        # TOMLDecodeError, and the ValueError of an integer of more than 4,300 digits
        raise ConfigError(str(p), [("(syntax)", str(e)[:300])]) from None
    return parse(data, str(p))


def json_schema() -> dict[str, Any]:
    return Config.model_json_schema()
