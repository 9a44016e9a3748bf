"""How cand's MQTT clients (the daemon's ingestion and the metric agent) reach a broker.

One place for credentials, TLS and the MQTT v5 options, so the agent and the daemon cannot
drift apart. Kept free of the daemon's config so services can import the agent alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
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


def read_in_bursts(client: aiomqtt.Client, received: Callable[[], int], limit: int) -> bool:
    """Make each wake-up of the client's socket take up to `limit` messages, not one.

    aiomqtt reads one MQTT packet each time the event loop finds the socket readable, so a
    flood costs a loop iteration, a selector call and a reader wake-up per message, and
    whoever reads the queue never finds more than one message in it. Here paho's
    `loop_read` reads again for as long as each read delivered a message (`received()`
    counts them, whether queued or refused) and the socket still holds one: a burst that
    has arrived is taken at once, bounded by `limit` so that other tasks still run. Returns
    False, and the client reads one packet per wake-up as before, when the aiomqtt in use
    does not hold a paho client where this expects it. The acknowledgements of a burst are
    written corked (`_corked`), so they leave as one segment."""
    inner = getattr(client, "_client", None)
    if not isinstance(inner, paho.Client):
        return False
    read_one = inner.loop_read

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        for _ in range(limit):
            before = received()
            rc = read_one(max_packets)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or received() == before:
                break  # an error, a packet that was no message, or nothing left to read
        return rc

    inner.loop_read = loop_read  # type: ignore[method-assign]
    write_all = inner.loop_write

    def loop_write() -> MQTTErrorCode:
        # the acknowledgements of a burst leave as one segment: on loopback every segment
        # sent is also received, in the sender's own system call
        with _corked(inner.socket()):
            return write_all()

    inner.loop_write = loop_write  # type: ignore[method-assign]
    return True


@contextlib.contextmanager
def _corked(sock: object) -> Iterator[None]:
    """TCP_CORK (Linux) around a run of small writes, so they go out as one segment."""
    cork = getattr(socket, "TCP_CORK", None)
    setsockopt = getattr(sock, "setsockopt", None)
    if cork is None or setsockopt is None:
        yield
        return
    try:
        setsockopt(socket.IPPROTO_TCP, cork, 1)
    except OSError:  # not a TCP socket, or closed: write as is
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            setsockopt(socket.IPPROTO_TCP, cork, 0)


def read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text().strip()
