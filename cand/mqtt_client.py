"""How cand's MQTT clients (the daemon's ingestion and the metric agent) reach a broker.

One place for credentials, TLS and the MQTT v5 options, so the agent and the daemon cannot
drift apart. Kept free of the daemon's config so services can import the agent alone.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 10
    client_id: str | None = None

    @classmethod
    def from_url(cls, url: str, **extra: object) -> BrokerSettings:
        """`mqtt://user:pass@host:port` or `mqtts://...` (TLS); bare `host[:port]` works too."""
        if "://" not in url:
            url = "mqtt://" + url
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt or mqtts")
        if not u.hostname:
            raise ValueError(f"broker URL {url!r}: no host")
        tls = u.scheme == "mqtts"
        return cls(
            host=u.hostname,
            port=u.port or (8883 if tls else 1883),
            username=urllib.parse.unquote(u.username) if u.username else None,
            password=urllib.parse.unquote(u.password) if u.password else None,
            tls=tls,
            **extra,  # type: ignore[arg-type]
        )


def publish_properties(expiry: float | None) -> Properties | None:
    if expiry is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = max(1, round(expiry))
    return props


def make_client(
    s: BrokerSettings,
    will: aiomqtt.Will | None = None,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
    max_queued: int = 0,
) -> aiomqtt.Client:
    """A client for `s`. `max_queued` bounds the messages received but not yet read (0: no
    bound); `queue_type` lets the caller count what a full queue refuses."""
    tls = None
    if s.tls:
        tls = aiomqtt.TLSParameters(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
    return aiomqtt.Client(
        s.host,
        s.port,
        username=s.username,
        password=s.password,
        identifier=s.client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        keepalive=s.keepalive,
        tls_params=tls,
        timeout=5.0,
        queue_type=queue_type,
        max_queued_incoming_messages=max_queued,
    )


def read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text().strip()
