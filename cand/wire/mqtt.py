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

VERSION = 1
DEFAULT_PREFIX = "dyncast/v1"
MAX_SEQ = (1 << 53) - 1  # exact in every JSON implementation

_RATIOS = ("cpu", "gpu", "memory")
_COUNTS = ("sessions", "max_sessions", "queue", "max_queue", "capacity")
_TOP = ("v", "seq", "epoch", "ts", "state", "metrics")


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
    head = prefix + "/"
    if not name.startswith(head):
        raise PayloadError("topic", f"{name!r} is not under {prefix!r}")
    parts = name[len(head) :].split("/")
    if len(parts) != 2:
        raise PayloadError("topic", f"{name!r} is not {prefix}/<D-SID>/<D-BID>")
    try:
        key = InstanceKey(ServiceId.parse(parts[0]), BindingId.parse(parts[1]))
    except ModelError as e:
        raise PayloadError("topic", str(e)) from None
    if str(key.service) != parts[0] or str(key.binding) != parts[1]:
        raise PayloadError("topic", f"{name!r}: addresses must be in canonical form")
    if key.service.version != key.binding.version:
        raise PayloadError("topic", f"{name!r}: D-SID and D-BID differ in IP version")
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
    body = {
        "v": VERSION,
        "seq": seq,
        "epoch": seq if epoch is None else epoch,
        "ts": round(ts, 6),
        "state": state.value,
        "metrics": metrics.to_json(),
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode(key: InstanceKey, payload: bytes, max_size: int = 4096) -> Report:
    """Validate one payload; every failure is a PayloadError with a counter-friendly reason."""
    if len(payload) > max_size:
        raise PayloadError("too_large", f"{len(payload)} bytes > {max_size}")
    try:
        body = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PayloadError("not_json", str(e)[:100]) from None
    if not isinstance(body, dict):
        raise PayloadError("schema", "payload is not a JSON object")
    unknown = set(body) - set(_TOP)
    if unknown:
        raise PayloadError("schema", f"unknown keys {sorted(unknown)}")
    if body.get("v") != VERSION:
        raise PayloadError("version", f"v={body.get('v')!r}, this daemon reads v={VERSION}")
    seq = _int(body, "seq", MAX_SEQ)
    epoch = _int(body, "epoch", MAX_SEQ) if "epoch" in body else seq
    if epoch > seq:
        raise PayloadError("range", "epoch is after seq")
    ts = body.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        raise PayloadError("schema", "ts must be a non-negative number (seconds since epoch)")
    try:
        state = InstanceState(str(body.get("state")))
    except ValueError:
        raise PayloadError(
            "schema", f"state {body.get('state')!r} is not up|draining|down"
        ) from None
    raw = body.get("metrics", {})
    if not isinstance(raw, dict):
        raise PayloadError("schema", "metrics must be an object")
    bad = set(raw) - set(_RATIOS) - set(_COUNTS)
    if bad:
        raise PayloadError("schema", f"unknown metrics {sorted(bad)}")
    for k in _COUNTS:
        if k in raw and (isinstance(raw[k], bool) or not isinstance(raw[k], int)):
            raise PayloadError("schema", f"metrics.{k} must be a whole number")
    try:
        metrics = Metrics(**raw)
    except (ModelError, TypeError) as e:
        raise PayloadError("range", str(e)) from None
    return Report(key, seq, epoch, float(ts), state, metrics)


def _int(body: dict[str, Any], name: str, top: int) -> int:
    v = body.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PayloadError("schema", f"{name} must be a whole number")
    if not 0 <= v <= top:
        raise PayloadError("range", f"{name}={v} outside 0..{top}")
    return v


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Sequencer:
    """Per-instance ordering: newer reports pass, retained re-deliveries are quietly ignored,
    replays are refused, and a Last Will is honoured even though it was written first."""

    def __init__(self) -> None:
        self._last: dict[InstanceKey, tuple[int, int, bytes]] = {}

    def check(self, report: Report, payload: bytes) -> bool:
        """True: act on it. False: an exact duplicate. Raises PayloadError('replay')."""
        held = self._last.get(report.key)
        if held is not None:
            seq, epoch, raw = held
            if report.seq == seq and payload == raw:
                return False
            newer = report.seq > seq
            will = report.state is InstanceState.DOWN and report.seq >= epoch
            if not (newer or will):
                raise PayloadError("replay", f"seq {report.seq} <= last {seq}")
            if not newer:
                # a will: keep the high-water mark so the dead session's late reports stay out
                self._last[report.key] = (seq, report.epoch, payload)
                return True
        self._last[report.key] = (report.seq, report.epoch, payload)
        return True

    def forget(self, key: InstanceKey) -> None:
        self._last.pop(key, None)
