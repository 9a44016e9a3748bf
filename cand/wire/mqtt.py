"""Metric reports on MQTT, wire format version 1 (docs/wire-formats.md has it byte-exact).

Topic  `<prefix>/<D-SID>/<D-BID>`, addresses in canonical text form (RFC 5952 for IPv6).
Payload one compact JSON object, UTF-8, keys in this order:

    {"v":1,"seq":N,"epoch":E,"ts":T,"state":"up","metrics":{...}}

`seq` grows with every message of an instance, across restarts too (the agent starts it from
the wall clock in milliseconds); `epoch` is the `seq` the publishing session started at, and
is what the Last Will carries as its own `seq`, so a will published after newer reports is
still accepted (a `down` with `seq >= epoch` of the last accepted report). Pure: no I/O here.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cand.model import (
    BindingId,
    InstanceKey,
    InstanceState,
    Metrics,
    ModelError,
    ServiceId,
)
from cand.normalize import CATEGORIES, SCORE_MAX, Scores

VERSION = 1
VERSION_CATS = 2
"""Adds `metrics.delay` (L0) and the instance's own CATS scores `l1`/`l2`. A report that uses
none of them is still written as version 1, byte for byte what it was."""
VERSIONS = (VERSION, VERSION_CATS)
DEFAULT_PREFIX = "dyncast/v1"
MAX_SEQ = (1 << 53) - 1  # exact in every JSON implementation
AGENT_BACKOFF_CAP = 5.0
"""The agent's reconnect delay doubles up to this, then +-50 % jitter: a contract with the
daemon, whose `will_grace` must outlast the longest delay."""
AGENT_MAX_RECONNECT = AGENT_BACKOFF_CAP * 1.5

_RATIOS = ("cpu", "gpu", "memory")
_COUNTS = ("sessions", "max_sessions", "queue", "max_queue", "capacity")
_NUMBERS_V2 = ("delay",)
_TOP = ("v", "seq", "epoch", "ts", "state", "metrics")
_TOP_V2 = (*_TOP, "l1", "l2")
_STATES = frozenset(s.value for s in InstanceState)
MAX_DIGITS = 16  # enough for MAX_SEQ
MAX_NUMBER_TEXT = 32
MAX_TS = 1e11  # seconds since 1970: year 5138
MAX_TOPIC = 256


class PayloadError(ValueError):
    """A message that is dropped; `reason` is a short stable word used as a counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True, slots=True)
class Report:
    key: InstanceKey
    seq: int
    epoch: int
    ts: float
    state: InstanceState
    metrics: Metrics

    @property
    def is_will(self) -> bool:
        """A Last Will: written at connect time, so its seq is the session's epoch."""
        return self.state is InstanceState.DOWN and self.seq == self.epoch


def topic(key: InstanceKey, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/{key.service}/{key.binding}"


def subscription(prefix: str = DEFAULT_PREFIX, service: ServiceId | None = None) -> str:
    return f"{prefix}/{service if service is not None else '+'}/+"


def parse_topic(name: str, prefix: str = DEFAULT_PREFIX) -> InstanceKey:
    """The instance a topic names. Addresses must be canonical and plain (no zone index);
    the D-BID must be an address other routers can reach (see `BindingId`)."""
    if len(name) > MAX_TOPIC:
        raise PayloadError("topic", f"{len(name)} characters > {MAX_TOPIC}")
    head = prefix + "/"
    if not name.startswith(head):
        raise PayloadError("topic", f"{_short(name)} is not under {prefix!r}")
    parts = name[len(head) :].split("/")
    if len(parts) != 2:
        raise PayloadError("topic", f"{_short(name)} is not {prefix}/<D-SID>/<D-BID>")
    try:
        key = InstanceKey(ServiceId.parse(parts[0]), BindingId.parse(parts[1]))
    except ModelError as e:
        raise PayloadError("address", str(e)[:200]) from None
    if str(key.service) != parts[0] or str(key.binding) != parts[1]:
        raise PayloadError("address", f"{_short(name)}: addresses must be in canonical form")
    if key.service.version != key.binding.version:
        raise PayloadError("address", f"{_short(name)}: D-SID and D-BID differ in IP version")
    if key.service.address == key.binding.address:
        raise PayloadError("address", f"{_short(name)}: the D-BID is the D-SID")
    return key


def encode(
    state: InstanceState,
    metrics: Metrics,
    seq: int,
    ts: float,
    epoch: int | None = None,
) -> bytes:
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq {seq} out of range")
    cats = metrics.scores is not None or metrics.delay is not None
    body: dict[str, Any] = {
        "v": VERSION_CATS if cats else VERSION,
        "seq": seq,
        "epoch": seq if epoch is None else epoch,
        "ts": round(ts, 6),
        "state": state.value,
        "metrics": metrics.to_json(),
    }
    if metrics.scores is not None:
        if metrics.scores.l1():
            body["l1"] = metrics.scores.l1()
        body["l2"] = metrics.scores.l2
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode(key: InstanceKey, payload: bytes, max_size: int = 4096) -> Report:
    """Validate one payload; every failure is a PayloadError with a counter-friendly reason.

    Strict where the format is: exact types (`true` is not 1, `1.0` is not 1, `null` is no
    number), no duplicate keys, numbers checked for size while they are still text, so no
    input can make a conversion raise anything but PayloadError."""
    if len(payload) > max_size:
        raise PayloadError("too_large", f"{len(payload)} bytes > {max_size}")
    try:
        body = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_int=_bounded_int,
            parse_float=_bounded_float,
            parse_constant=_no_constant,
        )
    except PayloadError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PayloadError("not_json", str(e)[:100]) from None
    if not isinstance(body, dict):
        raise PayloadError("schema", "payload is not a JSON object")
    v = body.get("v")
    if type(v) is not int or v not in VERSIONS:
        raise PayloadError("version", f"v={_short(v)}, this daemon reads v=1 and v=2")
    unknown = set(body) - set(_TOP_V2 if v == VERSION_CATS else _TOP)
    if unknown:
        raise PayloadError("schema", f"unknown keys {_names(unknown)} (for v={v})")
    seq = _int(body, "seq", MAX_SEQ)
    epoch = _int(body, "epoch", MAX_SEQ) if "epoch" in body else seq
    if epoch > seq:
        raise PayloadError("range", "epoch is after seq")
    ts = body.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not 0 <= ts <= MAX_TS:
        raise PayloadError("schema", f"ts must be a number 0..{MAX_TS} (seconds since epoch)")
    state_text = body.get("state")
    if type(state_text) is not str or state_text not in _STATES:
        raise PayloadError("schema", f"state {_short(state_text)} is not up|draining|down")
    raw = body.get("metrics", {})
    if type(raw) is not dict:
        raise PayloadError("schema", "metrics must be an object")
    bad = set(raw) - set(_RATIOS) - set(_COUNTS) - set(_NUMBERS_V2 if v == VERSION_CATS else ())
    if bad:
        raise PayloadError("schema", f"unknown metrics {_names(bad)} (for v={v})")
    for k, value in raw.items():
        if k in _COUNTS and type(value) is not int:
            raise PayloadError("schema", f"metrics.{k} must be a whole number")
        if k not in _COUNTS and type(value) not in (int, float):
            raise PayloadError("schema", f"metrics.{k} must be a number")
    scores = _scores(body) if v == VERSION_CATS else None
    try:
        metrics = Metrics(**raw, scores=scores)
    except (ModelError, TypeError) as e:
        raise PayloadError("range", str(e)[:200]) from None
    return Report(key, seq, epoch, float(ts), InstanceState(state_text), metrics)


def _scores(body: dict[str, Any]) -> Scores | None:
    """The instance's own CATS scores (v=2): `l2` 0..10, `l1` an object of category scores
    0..10 that needs `l2` beside it."""
    if "l2" not in body:
        if "l1" in body:
            raise PayloadError("schema", "l1 without l2")
        return None
    l2 = body["l2"]
    if type(l2) is not int:
        raise PayloadError("schema", "l2 must be a whole number")
    l1 = body.get("l1", {})
    if type(l1) is not dict:
        raise PayloadError("schema", "l1 must be an object")
    bad = set(l1) - set(CATEGORIES)
    if bad:
        raise PayloadError(
            "schema", f"l1: unknown categories {_names(bad)} (known: {', '.join(CATEGORIES)})"
        )
    for k, value in l1.items():
        if type(value) is not int:
            raise PayloadError("schema", f"l1.{k} must be a whole number")
    for name, value in (("l2", l2), *((f"l1.{k}", x) for k, x in l1.items())):
        if not 0 <= value <= SCORE_MAX:
            raise PayloadError("range", f"{name}={value} outside 0..{SCORE_MAX}")
    return Scores(l2=l2, **l1)


def _int(body: dict[str, Any], name: str, top: int) -> int:
    v = body.get(name)
    if type(v) is not int:
        raise PayloadError("schema", f"{name} must be a whole number")
    if not 0 <= v <= top:
        raise PayloadError("range", f"{name}={v} outside 0..{top}")
    return v


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise PayloadError("schema", "a key appears twice")
    return out


def _bounded_int(text: str) -> int:
    # 2^53 has 16 digits; converting is quadratic in the digits, so look before converting
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise PayloadError("range", f"integer of {len(text)} digits")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_TEXT:
        raise PayloadError("range", f"number of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError("range", "number out of range")
    return value


def _no_constant(name: str) -> Any:
    raise PayloadError("not_json", f"{name} is not JSON")


def _short(value: object) -> str:
    """Attacker-controlled text, made safe and short for a log line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(keys: set[str]) -> str:
    listed = sorted(keys)
    return ", ".join(_short(k) for k in listed[:5]) + (" ..." if len(listed) > 5 else "")


@dataclass(slots=True)
class _Last:
    seq: int
    epoch: int
    payload: bytes
    at: float  # when it was accepted (the source's monotonic clock)


class Sequencer:
    """Per-instance ordering: newer reports pass, retained re-deliveries are quietly ignored,
    replays are refused, and a Last Will is honoured even though it was written first.

    Bounded: an instance not heard of for `forget_after` seconds is forgotten (its routes
    have long expired by then), and at most `capacity` instances are tracked; a report of a
    new instance beyond that is refused (`limit`). The entries are kept in the order they
    were last accepted, so forgetting costs nothing per report, however many instances were
    ever seen. Within one publisher session (one epoch) `seq` grows by exactly one per
    report, so a larger step means the broker (or our own outage) lost reports: counted."""

    def __init__(self, capacity: int = 4096, forget_after: float = 3600.0) -> None:
        self.capacity = capacity
        self.forget_after = forget_after
        self._last: OrderedDict[InstanceKey, _Last] = OrderedDict()
        self.forgotten = 0
        self.gaps = 0
        self.missing = 0

    def __len__(self) -> int:
        return len(self._last)

    def check(self, report: Report, payload: bytes, now: float = 0.0) -> bool:
        """True: act on it. False: an exact duplicate. Raises PayloadError('replay'|'limit')."""
        self._expire(now)
        held = self._last.get(report.key)
        if held is None:
            if len(self._last) >= self.capacity:
                raise PayloadError("limit", f"already {self.capacity} instances tracked")
            self._last[report.key] = _Last(report.seq, report.epoch, payload, now)
            return True
        if report.seq == held.seq and payload == held.payload:
            return False
        newer = report.seq > held.seq
        will = report.state is InstanceState.DOWN and report.seq >= held.epoch
        if not (newer or will):
            raise PayloadError("replay", f"seq {report.seq} <= last {held.seq}")
        if newer:
            if report.epoch == held.epoch and report.seq > held.seq + 1:
                self.gaps += 1
                self.missing += report.seq - held.seq - 1
            held.seq = report.seq
        # a will keeps the high-water mark, so the dead session's late reports stay out
        held.epoch, held.payload, held.at = report.epoch, payload, now
        self._last.move_to_end(report.key)
        return True

    def forget(self, key: InstanceKey) -> None:
        self._last.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._last:
            key, oldest = next(iter(self._last.items()))
            if now - oldest.at < self.forget_after:
                return
            del self._last[key]
            self.forgotten += 1
