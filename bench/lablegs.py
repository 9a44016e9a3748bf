"""What the reaction and failure benchmarks watch in the Figure-2 lab, each stamped with the
monotonic clock that every namespace shares: the kernel's nftables rules at the ingress
(`nft monitor`, event-driven, no polling), a bare MQTT subscriber on the egress's broker, and
the daemons' own timestamps (rib `updated_at` / `learned_at`, each lane's `last_started`)."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from typing import Any

from cand_testbed.fig2 import INSTANCES, WEB, Fig2

from cand.adapters.linux_nft import chain_name
from cand.model import ServiceId

WEB_CHAIN = chain_name(ServiceId.parse(WEB))
_RANGE = re.compile(r"(\d+)(?:-(\d+))? : (0x[0-9a-f]+)")


class Lines:
    """A process's stdout, one stamped line at a time, read by a thread of its own."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.q: queue.Queue[tuple[float, str]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.q.put((time.monotonic(), line.strip()))

    def get(self, timeout: float) -> tuple[float, str] | None:
        try:
            return self.q.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def drain(self) -> list[tuple[float, str]]:
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out


def web_weights(rule: str) -> dict[int, int] | None:
    """mark -> weight of the web service's pick rule, from one `nft monitor` line (None: not
    that rule; {} : the chain picks nothing)."""
    if f" {WEB_CHAIN} " not in rule or not rule.startswith("add rule"):
        return None
    if "numgen random" not in rule:
        return {} if ("drop" in rule or "return" in rule) and "saddr" not in rule else None
    return {int(m, 16): int(hi or lo) - int(lo) + 1 for lo, hi, m in _RANGE.findall(rule)}


class Kernel:
    """dr1's web pick rule as the kernel gets it."""

    def __init__(self, lab: Fig2) -> None:
        self.lines = Lines(lab.spawn("dr1", "stdbuf", "-oL", "nft", "monitor", "rules"))
        time.sleep(0.3)

    def until(self, ok: Any, timeout: float) -> tuple[float, dict[int, int]]:
        """The first web rule that `ok(weights)` accepts: when the kernel had it."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.lines.get(deadline - time.monotonic())
            if got is None:
                raise TimeoutError("dr1's kernel did not get the expected web weights")
            w = web_weights(got[1])
            if w is not None and ok(w):
                return got[0], w


class Watch:
    """A bare subscriber to one instance's topic on its egress's broker (in the egress)."""

    def __init__(self, lab: Fig2, instance: str) -> None:
        service, binding, router = INSTANCES[instance]
        topic = f"dyncast/v1/{service}/{binding}"
        self.lines = Lines(lab.probe(router, "mqtt-watch", topic))
        first = self.lines.get(10.0)
        if first is None or first[1] != "subscribed":
            raise RuntimeError(f"mqtt-watch on {router} did not subscribe: {first}")

    def next(self, timeout: float, state: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.lines.get(deadline - time.monotonic())
            if got is None:
                raise TimeoutError("no MQTT message on the watched topic")
            row: dict[str, Any] = json.loads(got[1])
            if state is None or row["state"] == state:
                return row


def lane_started(status: dict[str, Any], lane: str) -> float | None:
    got = status.get("lanes", {}).get(lane, {}).get("last_started")
    return float(got) if got is not None else None
