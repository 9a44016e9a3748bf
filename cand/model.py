"""Domain values of Dyncast: what a service, an instance, a route and a flow are.

Everything here is immutable, hashable and validated when it is made, so the rest of the core
never has to ask whether a value is well-formed.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any, Self

from cand.normalize import SCORE_MAX, Scores, normalize

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ModelError(ValueError):
    """A domain value was built from something it cannot be."""


MAX_ADDRESS_TEXT = 45  # the longest IPv6 text form (with an embedded IPv4 address)


def _parse_ip(kind: str, value: object) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if not isinstance(value, str):
        raise ModelError(f"{kind}: expected an IP address string, got {type(value).__name__}")
    if len(value) > MAX_ADDRESS_TEXT or "%" in value:
        # a zone index (fe80::1%eth0) names an interface, not a host: never a D-SID, D-BID or
        # router; refusing it (and overlong text) before parsing keeps hostile text out
        raise ModelError(f"{kind}: {value[:60]!r} is not a plain IP address")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ModelError(f"{kind}: {value!r} is not an IP address") from None


def _not_an_instance(a: IPAddress) -> str | None:
    """Why `a` cannot be where an instance is reached from other routers (None: it can)."""
    if a.is_unspecified:
        return "unspecified"
    if a.is_loopback:
        return "loopback"
    if a.is_link_local:
        return "link-local"
    if a.is_multicast:
        return "multicast"
    if isinstance(a, ipaddress.IPv4Address) and a == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return "IPv4-mapped"
    return None


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class _Address:
    """An IP address with a domain name; ordered IPv4 first, then IPv6, then by value."""

    address: IPAddress
    _hash: int = field(init=False, repr=False, compare=False)

    KIND = "address"

    @classmethod
    def parse(cls, value: object) -> Self:
        return cls(_parse_ip(cls.KIND, value))

    def __post_init__(self) -> None:
        given: object = self.address  # callers may pass text: ServiceId("2001:db8::1")
        if not isinstance(given, ipaddress.IPv4Address | ipaddress.IPv6Address):
            object.__setattr__(self, "address", _parse_ip(self.KIND, given))
        # ipaddress hashes through hex(); these keys are hashed on every event, so keep it
        object.__setattr__(self, "_hash", hash((type(self).__name__, int(self.address))))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        # every dict lookup of an instance key ends here; the cached hash settles a mismatch
        # without touching ipaddress (whose __eq__ is the costliest step of a report)
        if self is other:
            return True
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _Address)
        return self._hash == other._hash and self.address == other.address

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, _Address):
            return NotImplemented
        return (self.address.version, int(self.address)) < (
            other.address.version,
            int(other.address),
        )

    @property
    def version(self) -> int:
        return self.address.version

    @property
    def packed(self) -> bytes:
        return self.address.packed

    def __str__(self) -> str:
        return str(self.address)


class ServiceId(_Address):
    """D-SID: the anycast address a service is reached at, whichever instance serves it."""

    KIND = "D-SID"

    def __post_init__(self) -> None:
        _Address.__post_init__(self)
        if self.address.is_unspecified or self.address.is_multicast:
            raise ModelError(f"D-SID: {self.address} cannot be an anycast service address")


class BindingId(_Address):
    """D-BID: the unicast address of one service instance."""

    KIND = "D-BID"

    def __post_init__(self) -> None:
        _Address.__post_init__(self)
        why = _not_an_instance(self.address)
        if why is not None:
            raise ModelError(f"D-BID: {self.address} is {why}, not an instance address")


class RouterId(_Address):
    """A D-Router, named by the address other routers use as its BGP next hop."""

    KIND = "router"


class InstanceState(enum.StrEnum):
    """An instance takes new flows only when `up`; `draining` keeps existing flows."""

    UP = "up"
    DRAINING = "draining"
    DOWN = "down"


class FlowKeyKind(enum.StrEnum):
    """What identifies a flow for affinity (Dyncast draft, section 4.2)."""

    FIVE_TUPLE = "5-tuple"  # src, dst, proto, sport, dport
    THREE_TUPLE = "3-tuple"  # src, dst (the D-SID), proto: all of a client's flows stick together


def _ratio(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelError(f"metrics.{name}: expected a finite number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ModelError(f"metrics.{name}: utilisation must be within 0..1, got {value}")
    return round(float(value), 3)


def _count(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"metrics.{name}: expected a whole number, got {value!r}")
    if not 0 <= value <= 0xFFFFFFFF:
        raise ModelError(f"metrics.{name}: must be within 0..4294967295, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class ResourceLoads:
    """How busy an instance is, per resource, in 0..1 (None where it did not say). Higher is
    busier: these are loads, not CATS scores (see `Metrics.scores` for those)."""

    compute: float | None
    memory: float | None
    sessions: float | None
    queue: float | None

    def bottleneck(self) -> float | None:
        """The most loaded resource: an instance is as busy as its scarcest one."""
        known = [v for v in (self.compute, self.memory, self.sessions, self.queue) if v is not None]
        return max(known) if known else None


MAX_DELAY_MS = 3_600_000.0  # an hour: anything longer is not a service delay


def _delay(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelError(f"metrics.delay: expected a finite number, got {value!r}")
    if not 0.0 <= value <= MAX_DELAY_MS:
        raise ModelError(f"metrics.delay: milliseconds within 0..{MAX_DELAY_MS:.0f}, got {value}")
    return round(float(value), 3)


_L0_FIELDS = (
    "cpu",
    "gpu",
    "memory",
    "sessions",
    "max_sessions",
    "queue",
    "max_queue",
    "capacity",
    "delay",
)


@dataclass(frozen=True, slots=True, eq=False)
class Metrics:
    """What a D-MA reports about one instance, in the CATS levels.

    L0 are the raw values: utilisations in 0..1 with per-mille precision, counts as integers,
    `delay` the service's response delay in milliseconds (microsecond precision). `capacity`
    is how much work the instance can take relative to its siblings (any unit, the same for
    every instance of one service); it is what makes a big idle instance worth more than a
    small idle one.

    `scores` are the L1/L2 scores (0..10, higher is better) when someone computed them: the
    instance itself, or the egress under the service's normalization, and then they travel
    on the wire. Without them, `l2` and `l1` are computed under the default normalization
    (`cand.normalize`). The decision engine shares new flows by the fine-grained `load`
    (0..1, higher is busier); `load_permille` is what the wire carries of it.
    """

    cpu: float | None = None
    gpu: float | None = None
    memory: float | None = None
    sessions: int | None = None
    max_sessions: int | None = None
    queue: int | None = None
    max_queue: int | None = None
    capacity: int = 100
    delay: float | None = None
    scores: Scores | None = None
    _load: float = field(init=False, repr=False, compare=False, default=0.0)
    _derived: Scores | None = field(init=False, repr=False, compare=False, default=None)
    _ident: tuple[object, ...] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        for name in ("cpu", "gpu", "memory"):
            object.__setattr__(self, name, _ratio(name, getattr(self, name)))
        for name in ("sessions", "max_sessions", "queue", "max_queue"):
            _count(name, getattr(self, name))
        _count("capacity", self.capacity)
        if self.capacity == 0:
            raise ModelError("metrics.capacity: must be at least 1")
        for limit in ("max_sessions", "max_queue"):
            if getattr(self, limit) == 0:
                raise ModelError(f"metrics.{limit}: must be at least 1 when given")
        object.__setattr__(self, "delay", _delay(self.delay))
        if self.scores is not None and not isinstance(self.scores, Scores):
            raise ModelError("metrics.scores: not a Scores value")
        object.__setattr__(self, "_load", self._load_with(self.scores))

    def _load_with(self, scores: Scores | None) -> float:
        load = self.loads().bottleneck()
        if load is None:
            # no resource load reported: an instance that gave only its L2 is as busy as
            # its score says (10 idle, 0 saturated); one that gave nothing is idle
            load = (SCORE_MAX - scores.l2) / SCORE_MAX if scores is not None else 0.0
        return load

    def loads(self) -> ResourceLoads:
        compute_parts = [v for v in (self.cpu, self.gpu) if v is not None]
        return ResourceLoads(
            compute=max(compute_parts) if compute_parts else None,
            memory=self.memory,
            sessions=_fill(self.sessions, self.max_sessions),
            queue=_fill(self.queue, self.max_queue),
        )

    @property
    def load(self) -> float:
        """Bottleneck utilisation in 0..1 (higher is busier)."""
        return self._load

    @property
    def load_permille(self) -> int:
        """The bottleneck load in per-mille, 0 idle .. 1000 saturated (higher is worse)."""
        return round(self._load * 1000)

    @property
    def cats(self) -> Scores:
        """L1/L2 scores: the ones given, else computed under the default normalization."""
        if self.scores is not None:
            return self.scores
        if self._derived is None:
            object.__setattr__(self, "_derived", normalize(self))
        assert self._derived is not None
        return self._derived

    @property
    def l2(self) -> int:
        """CATS L2: one score 0..10 for this instance, higher is better."""
        return self.cats.l2

    def l1(self) -> dict[str, int]:
        """CATS L1: the known category scores 0..10, higher is better."""
        return self.cats.l1()

    def with_scores(self, scores: Scores | None) -> Metrics:
        """The same L0 values with other scores. They were checked when this was made, so
        only what depends on the scores is computed again (the egress does this for every
        report: a second full validation was a third of the cost of one)."""
        if scores is not None and not isinstance(scores, Scores):
            raise ModelError("metrics.scores: not a Scores value")
        new = object.__new__(Metrics)
        for name in _FIELDS:
            object.__setattr__(new, name, getattr(self, name))
        object.__setattr__(new, "scores", scores)
        object.__setattr__(new, "_derived", None)
        object.__setattr__(new, "_ident", None)
        object.__setattr__(new, "_load", self._load_with(scores))
        return new

    def _identity(self) -> tuple[object, ...]:
        # frozen, so computed once: the damper compares each report with the last one sent
        if self._ident is None:
            ident = (*(getattr(self, k) for k in _L0_FIELDS), self.cats)
            object.__setattr__(self, "_ident", ident)
            return ident
        return self._ident

    def __eq__(self, other: object) -> bool:
        """The same L0 values and the same L1/L2 scores, however the scores came about: a
        report scored under the default normalization equals one that carries those scores."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Metrics)
        return self is other or self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    @property
    def spare(self) -> float:
        """Capacity left, in the instance's capacity units."""
        return self.capacity * (1.0 - self.load)

    def to_json(self) -> dict[str, Any]:
        """The L0 values given (what the MQTT payload's `metrics` object carries)."""
        return {k: getattr(self, k) for k in _L0_FIELDS if getattr(self, k) is not None}


_FIELDS = tuple(f.name for f in dataclasses.fields(Metrics))


def _fill(value: int | None, limit: int | None) -> float | None:
    if value is None or limit is None:
        return None
    return min(1.0, value / limit)


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class InstanceKey:
    """One instance of one service, wherever it runs. Ordered by D-SID, then D-BID."""

    service: ServiceId
    binding: BindingId
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.service, self.binding)))

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, InstanceKey):
            return NotImplemented
        # built when compared, not held: a tuple per key was 17 MB at 120,000 instances
        s, b, os_, ob = (
            self.service.address,
            self.binding.address,
            other.service.address,
            other.binding.address,
        )
        return (s.version, int(s), b.version, int(b)) < (os_.version, int(os_), ob.version, int(ob))

    def __str__(self) -> str:
        return f"{self.service}/{self.binding}"

    def stable_hash(self, size: int) -> int:
        """A value in [0, 2**(8*size)) that every router computes the same for this instance.

        Used for the ADD-PATH path identifier and the SRv6 function, so both survive a restart
        without any state on disk.
        """
        digest = hashlib.sha256(self.service.packed + b"|" + self.binding.packed).digest()
        return int.from_bytes(digest[:size], "big")


@dataclass(frozen=True, slots=True)
class InstanceRoute:
    """What one egress says about one instance: the unit BGP carries, one path each."""

    key: InstanceKey
    egress: RouterId
    sid: ipaddress.IPv6Address | None
    metrics: Metrics
    state: InstanceState = InstanceState.UP
    seq: int = 0
    graceful_shutdown: bool = False
    """The egress is stopping and announced the path with GRACEFUL_SHUTDOWN (RFC 8326): least
    preferred, no new flows while another instance can take them; existing flows stay."""

    def __post_init__(self) -> None:
        if self.key.service.version != self.key.binding.version:
            raise ModelError(
                f"instance {self.key}: D-SID and D-BID must be the same IP version "
                "(ServiceNAT and End.DX6 translate within one family)"
            )
        if self.seq < 0:
            raise ModelError(f"instance {self.key}: sequence must not be negative")

    @property
    def service(self) -> ServiceId:
        return self.key.service

    @property
    def binding(self) -> BindingId:
        return self.key.binding

    def to_json(self) -> dict[str, Any]:
        out = {
            "service": str(self.service),
            "binding": str(self.binding),
            "egress": str(self.egress),
            "sid": str(self.sid) if self.sid is not None else None,
            "state": self.state.value,
            "seq": self.seq,
            "load_permille": self.metrics.load_permille,
            "l2": self.metrics.l2,
            "l1": self.metrics.l1(),
            "metrics": self.metrics.to_json(),
        }
        if self.graceful_shutdown:
            out["graceful_shutdown"] = True
        return out


@dataclass(frozen=True, slots=True, order=True)
class FlowKey:
    """The part of a packet that names a flow for affinity; ports are None for a 3-tuple."""

    client: IPAddress
    service: ServiceId
    proto: int
    client_port: int | None = None
    service_port: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.proto <= 255:
            raise ModelError(f"flow key: protocol {self.proto} is not 0..255")
        ports = (self.client_port, self.service_port)
        if (ports[0] is None) != (ports[1] is None):
            raise ModelError("flow key: give both ports (5-tuple) or neither (3-tuple)")
        for p in ports:
            if p is not None and not 0 <= p <= 0xFFFF:
                raise ModelError(f"flow key: port {p} is not 0..65535")
        if self.client.version != self.service.version:
            raise ModelError("flow key: client and D-SID must be the same IP version")

    @property
    def kind(self) -> FlowKeyKind:
        return FlowKeyKind.THREE_TUPLE if self.client_port is None else FlowKeyKind.FIVE_TUPLE

    def __str__(self) -> str:
        if self.client_port is None:
            return f"{self.client} -> {self.service} proto {self.proto}"
        return (
            f"[{self.client}]:{self.client_port} -> [{self.service}]:{self.service_port} "
            f"proto {self.proto}"
        )


@dataclass(frozen=True, slots=True)
class Binding:
    """A flow pinned to an instance (the draft's Figure 3 binding table row)."""

    flow: FlowKey
    binding: BindingId
    egress: RouterId
    created: float
    last_seen: float
    timeout: float = field(default=0.0)
    packets: int | None = None
    """Packets the data plane counted for this flow, where it counts them (P4's direct
    counter); None where it does not."""
    bytes: int | None = None

    def __post_init__(self) -> None:
        if self.last_seen < self.created:
            raise ModelError("binding: last seen before it was created")
        if self.timeout < 0:
            raise ModelError("binding: timeout must not be negative")

    def expired(self, now: float) -> bool:
        return self.timeout > 0 and now - self.last_seen > self.timeout
