"""How every reconnecting client of cand waits between tries (MQTT broker, gobgpd, ExaBGP).

The agent's longest wait is part of a contract: `mqtt.will_grace` must outlast it
(`cand.wire.mqtt.AGENT_MAX_RECONNECT`).
"""

from __future__ import annotations

import random


class Backoff:
    """Jittered exponential backoff for reconnects: 0.1 s doubling to `cap`, +-50 %."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.next = first, cap, first

    def delay(self) -> float:
        d = self.next * random.uniform(0.5, 1.5)
        self.next = min(self.cap, self.next * 2)
        return d

    def reset(self) -> None:
        self.next = self.first
