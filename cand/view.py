"""What the local API and the Prometheus exporter may see of a running daemon, and all they
may ask of it: a read-only view plus the two stop requests and a reload. They depend on this, not on
`Daemon`, so neither can reach into the engine or an adapter (and nothing imports back)."""

from __future__ import annotations

from typing import Any, Protocol

from cand.ports import StopMode


class DaemonView(Protocol):
    def status(self) -> dict[str, Any]:
        """Counters and state of the daemon, the engine and every adapter (`cand status`)."""
        ...

    def rib_json(self) -> dict[str, Any]:
        """Local instances and the paths learned from peers."""
        ...

    def services_json(self) -> list[dict[str, Any]]:
        """The service table: per D-SID, each instance with its weight."""
        ...

    def routes_json(self) -> dict[str, Any]:
        """Advertised, received and local routes."""
        ...

    def cost_json(self) -> list[dict[str, Any]]:
        """Per egress: the network cost in force, its source, age, samples and measurements."""
        ...

    async def bindings_json(self) -> list[dict[str, Any]]:
        """The data plane's flow bindings (empty without a data plane)."""
        ...

    def eligible(self) -> dict[str, int]:
        """Per D-SID, how many instances may take new flows."""
        ...

    async def reload(self) -> dict[str, Any]:
        """Apply the config file again; raises `cand.reload.ReloadRefused` with the reason."""
        ...

    def request_stop(self, mode: StopMode) -> None:
        """Stop (withdraw everything) or restart in place (withdraw nothing)."""
        ...
