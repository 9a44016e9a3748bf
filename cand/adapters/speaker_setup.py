"""What every speaker adapter takes from cand.toml, checked once in one place."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cand.config import BgpConfig, Config
from cand.model import RouterId


@dataclass(frozen=True)
class SpeakerSetup:
    bgp: BgpConfig
    asn: int
    router: RouterId
    locator_len: int

    @classmethod
    def from_config(cls, config: Config, speaker: str) -> SpeakerSetup:
        if config.bgp is None:
            raise ValueError(f"bgp: the {speaker} speaker needs a [bgp] table")
        loc = config.router.locator
        return cls(
            bgp=config.bgp,
            asn=config.router.asn,
            router=RouterId.parse(config.router.id),
            locator_len=ipaddress.IPv6Network(loc).prefixlen if loc else 64,
        )
