"""ExaBGP speaker: cand runs ExaBGP 5 as a supervised child and talks to its process API.

ExaBGP's configured process is `python -m cand.adapters.exabgp_bridge SOCKET`, a relay that
joins ExaBGP's pipes to a unix socket this speaker serves: command lines go one way, JSON
event lines the other. Attributes cand owns are handed over as generic `attribute [code flags
value]` made by `cand.wire.bgp`, byte for byte what the GoBGP speaker sends. Received updates
are read from the raw message bytes ExaBGP reports (`receive { packets; update; }`): its parsed
JSON for a route with a Prefix-SID SRv6 TLV is not valid JSON, and one codec is better anyway.

The paths cand wants are kept in an `AdjRibOut`, beside what the running ExaBGP has been
told. ExaBGP cannot list what it announces, so the gap is closed on every connection of its
process: a new ExaBGP (it died and was started again) holds nothing and gets every wanted
path; an ExaBGP whose process relay alone reconnected gets what changed meanwhile, withdrawals
included.

Stopping: STOP (after announcing every path again with GRACEFUL_SHUTDOWN and waiting
`bgp.graceful_shutdown` seconds, when that is > 0) withdraws every path, waits until ExaBGP
has acknowledged the withdrawals and had a moment to send them, then ends it with SIGTERM (it
sends a Cease); RESTART ends it with SIGKILL, so no NOTIFICATION goes out and the peers keep
its paths under graceful restart
until the next cand announces them again. The work directory is cand's: a temporary one is
removed, in a configured one the files cand wrote are.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cand.adapters.speaker_setup import SpeakerSetup
from cand.backoff import Backoff
from cand.config import Config, NeighborConfig
from cand.engine.events import PeerDown, PeerSynced
from cand.model import InstanceKey, InstanceRoute, RouterId
from cand.plugins import parse_options
from cand.ports import Emit, StopMode
from cand.speaker.adj_rib_in import AdjRibIn
from cand.speaker.adj_rib_out import AdjRibOut
from cand.speaker.child import Child, ChildError
from cand.supervise import input_bug
from cand.wire import bgp, bgp_update

log = logging.getLogger("cand.exabgp")

SEND_CHUNK = 512
"""Commands per write to ExaBGP's process (about 100 KiB): whole batches, never one at a time."""


def _canonical(address: str) -> str:
    """An address as ExaBGP spells its peers (`fc00::1`, not `fc00:0::1`)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


@dataclass(frozen=True)
class ExabgpOptions:
    """`[bgp.options]` for speaker = "exabgp"."""

    binary: str = ""
    workdir: str = ""
    local_address: str = ""
    eor_defer: float = 5.0

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> ExabgpOptions:
        opts = parse_options(cls, raw, "bgp.options", "exabgp")
        if not 0 <= opts.eor_defer <= 600:
            raise ValueError("bgp.options.eor_defer: between 0 and 600 seconds")
        return opts


def command(
    route: InstanceRoute,
    asn: int,
    locator_len: int,
    edge_capability: int | None = None,
    neighbors: Sequence[str] = (),
) -> str:
    """The process-API line that announces one instance path (no control characters: one
    command can never become two): to every peer, or only to `neighbors`; with
    `edge_capability`, the path carries the Edge Metadata attribute (42) as well."""
    attrs = bgp.encode_attributes(route, asn, locator_len, edge_capability)
    generic = " ".join(
        f"attribute [ 0x{a.type:02x} 0x{a.flags:02x} 0x{a.value.hex()} ]"
        for a in attrs
        if a.type != bgp.ORIGIN
    )
    pid = ipaddress.IPv4Address(bgp.path_id(route.key))
    plen = route.service.address.max_prefixlen
    selector = ", ".join(f"neighbor {ipaddress.ip_address(n)}" for n in neighbors)
    return (
        (f"{selector} " if selector else "")
        + f"announce route {route.service}/{plen} next-hop {route.egress} "
        f"path-information {pid} origin igp {generic}"
    )


def commands(
    route: InstanceRoute, asn: int, locator_len: int, edge_capability: int, edge: Sequence[str],
    others: Sequence[str], *, everyone: bool = True,
) -> list[str]:  # fmt: skip
    """The lines that announce one path to the peers `edge` (with attribute 42) and `others`
    (without): when they are `everyone` and none takes attribute 42, one line to all peers;
    else one line per group, each naming its peers (ExaBGP sends a generic attribute to
    whoever the command names)."""
    if everyone and not edge:
        return [command(route, asn, locator_len)]
    out = []
    if edge:
        out.append(command(route, asn, locator_len, edge_capability, edge))
    if others:
        out.append(command(route, asn, locator_len, None, others))
    return out


def withdraw_command(key: InstanceKey, egress: RouterId) -> str:
    pid = ipaddress.IPv4Address(bgp.path_id(key))
    plen = key.service.address.max_prefixlen
    return f"withdraw route {key.service}/{plen} next-hop {egress} path-information {pid}"


class ExabgpSpeaker:
    def __init__(self, config: Config, options: ExabgpOptions) -> None:
        setup = SpeakerSetup.from_config(config, "exabgp")
        self.config = config
        self.bgp = setup.bgp
        self.opts = options
        self.asn = setup.asn
        self.egress = setup.router
        self.locator_len = setup.locator_len
        self.edge_capability = setup.bgp.edge_metadata_capability
        self.edge_peers: list[str] = []
        self.plain_peers: list[str] = []
        self._set_peer_lists()
        self.out = AdjRibOut()  # the paths cand wants announced
        self.held: dict[InstanceKey, InstanceRoute] = {}  # what the running ExaBGP was told
        self._held_by: int | None = None  # the pid of the ExaBGP `held` is about
        self.received: dict[str, AdjRibIn] = {}
        self.up: set[str] = set()
        self.ups: dict[str, int] = {}  # sessions established, by peer (a reset shows here)
        self.rejected: dict[str, int] = {}  # malformed received paths, by reason
        self.counters = {
            "advertised": 0,
            "withdrawn": 0,
            "learned": 0,
            "malformed": 0,
            "restarts": 0,
            "reannounced": 0,
            "graceful_shutdown": 0,
            "command_errors": 0,
        }
        self._writer: asyncio.StreamWriter | None = None
        self._emit: Emit | None = None
        self.child: Child | None = None
        self._stopping = False
        self._sent = 0  # commands written to ExaBGP since it connected
        self._acked = 0  # "done"/"error" answers to them
        self._answered = asyncio.Event()
        # End-of-RIB is ours to send (manual-eor): a peer that gets it drops the stale
        # graceful-restart paths we did not announce again, so it waits `eor_defer` after
        # ExaBGP starts, time for the instances' reports to come back after a restart
        self._eor_after = 0.0
        self._eor_due: set[str] = set()
        self._conf: Path | None = None  # ExaBGP's configuration file and cand's socket
        self._sock: Path | None = None
        self._shown: asyncio.Future[list[Any]] | None = None  # a `show neighbor json` answer
        self._neighbors_lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: Config) -> ExabgpSpeaker:
        assert config.bgp is not None
        return cls(config, ExabgpOptions.parse(dict(config.bgp.options)))

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        temporary = not self.opts.workdir
        workdir = Path(self.opts.workdir or tempfile.mkdtemp(prefix="cand-exabgp-"))
        workdir.mkdir(parents=True, exist_ok=True)
        sock, conf = workdir / "api.sock", workdir / "exabgp.conf"
        child = Child(
            name="exabgp",
            argv=[*self._program(), str(conf)],
            log_path=workdir / "exabgp.out",
            pid_path=workdir / "exabgp.pid",
            marker=str(conf),
            env=self._env(workdir),
        )
        stale = child.left_running()
        if stale is not None:
            # an earlier cand was killed and left its ExaBGP without a process: useless now
            child.adopt(stale)
            await child.kill()
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        # an UPDATE of 64 KiB (RFC 8654) is 128 KiB of hex in one JSON line
        server = await asyncio.start_unix_server(self._bridge, path=str(sock), limit=1 << 20)
        conf.write_text(self.render(sock))
        self._conf, self._sock = conf, sock
        backoff = Backoff(first=0.5, cap=10.0)
        self.child = child
        try:
            async with server:
                while not self.stopping():
                    try:
                        self._eor_after = time.monotonic() + self.opts.eor_defer
                        await child.start()
                    except ChildError as e:
                        log.error("event=exabgp_start_failed error=%s", e)
                    else:
                        rc = await child.wait()
                        if self.stopping():
                            break
                        self.counters["restarts"] += 1
                        log.error("event=exabgp_died rc=%s log=%s", rc, child.log_path)
                    for peer in sorted(self.up):
                        await emit(PeerDown(peer, float(self.bgp.graceful_restart)))
                    self.up.clear()
                    await asyncio.sleep(backoff.delay())
                await asyncio.Event().wait()  # stopped: wait to be cancelled
        finally:
            # never outlive cand: an ExaBGP whose cand is gone has nobody to talk to
            await asyncio.shield(child.kill())
            for f in (sock, conf, child.pid_path):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
            if temporary:
                shutil.rmtree(workdir, ignore_errors=True)

    def stopping(self) -> bool:
        """`stop` was called (a method, so that a wait in between reads it anew)."""
        return self._stopping

    def _program(self) -> list[str]:
        """How ExaBGP is started: `bgp.options.binary` as given; else the ExaBGP this Python
        has, through `cand.adapters.exabgp_run` (its API parsing tuned); else one on PATH."""
        if self.opts.binary:
            return [self.opts.binary]
        if importlib.util.find_spec("exabgp") is not None:
            return [sys.executable, "-m", "cand.adapters.exabgp_run"]
        beside = Path(sys.executable).parent / "exabgp"
        found = str(beside) if beside.exists() else shutil.which("exabgp")
        if found is None:
            raise RuntimeError("exabgp: not installed (pip install exabgp==5.0.15)")
        return [found]

    def _env(self, workdir: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "exabgp_daemon_user": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
                "exabgp_daemon_drop": "false",
                "exabgp_log_destination": str(workdir / "exabgp.log"),
                "exabgp_api_ack": "true",
            }
        )
        # INFO is a line per announced path (about 700 bytes, 15 % of ExaBGP's time per path):
        # warnings and errors, unless cand's environment asks for more
        env.setdefault("exabgp_log_level", "WARNING")
        if self.bgp.listen_port:
            # ExaBGP only connects unless told where to listen: two ExaBGP routers would
            # then never meet, each closing the other's connection attempts.
            env["exabgp_tcp_bind"] = self.opts.local_address or str(self.config.router.id)
            env["exabgp_tcp_port"] = str(self.bgp.listen_port)
        return env

    def render(self, sock: Path) -> str:
        """ExaBGP's configuration, generated from cand.toml."""
        b = self.bgp
        rid = b.router_id or str(ipaddress.IPv4Address(int(self.egress.address) & 0xFFFFFFFF))
        bridge = f"{sys.executable} -m cand.adapters.exabgp_bridge {sock}"
        out = [f"process cand {{\n    run {bridge};\n    encoder json;\n}}\n"]
        for n in b.neighbors:
            fam = "ipv6 unicast;" if ":" in n.address else "ipv4 unicast;"
            gr = f"graceful-restart {b.graceful_restart};" if b.graceful_restart else ""
            local = self.opts.local_address or self.config.router.id
            out.append(
                f"neighbor {n.address} {{\n"
                f"    router-id {rid};\n"
                f"    local-address {local};\n"
                f"    local-as {self.asn};\n"
                f"    peer-as {n.asn};\n"
                f"    hold-time {n.hold_time};\n"
                + (f"    md5-password '{n.password}';\n" if n.password else "")
                + ("    passive true;\n" if n.passive else "")
                + "    manual-eor true;\n"
                + f"    family {{ {fam} }}\n"
                f"    capability {{ add-path send/receive; {gr} }}\n"
                "    api { processes [ cand ]; receive { packets; update; } "
                "neighbor-changes; }\n"
                "}\n"
            )
        return "\n".join(out)

    def _set_peer_lists(self) -> None:
        self.edge_peers = [n.address for n in self.bgp.neighbors if n.edge_metadata]
        self.plain_peers = [n.address for n in self.bgp.neighbors if not n.edge_metadata]

    def live_neighbors(self) -> bool:
        return True

    async def set_neighbors(self, neighbors: Sequence[NeighborConfig]) -> None:
        """`cand reload`: ExaBGP's own reload (the `reload` command, as SIGUSR1) re-reads its
        configuration in place: a neighbour that is gone is closed, a new one started, a
        changed one reset, the others and cand's process are left alone and keep what they
        were sent. A removed session is closed without a NOTIFICATION (so the peer would keep
        cand's paths under graceful restart): they are withdrawn from it first. A new or
        changed neighbour may start with nothing: every path cand announces is sent to it."""
        async with self._neighbors_lock:
            await self._set_neighbors(neighbors)

    async def _set_neighbors(self, neighbors: Sequence[NeighborConfig]) -> None:
        if self._writer is None or self._conf is None or self._sock is None:
            raise RuntimeError("exabgp is not running yet (starting?): try again")
        have = {n.address: n for n in self.bgp.neighbors}
        new = {n.address: n for n in neighbors}
        gone = sorted(set(have) - set(new))
        fresh = sorted(a for a in new if have.get(a) != new[a])
        if not gone and not fresh:
            return
        applied = self.bgp
        # the new lists first: a path advertised from here on (the speaker lane runs beside
        # this) no longer goes to a removed peer, after its withdrawals below
        self.bgp = self.bgp.model_copy(update={"neighbors": tuple(neighbors)})
        self._set_peer_lists()
        if gone and self.held:
            selector = ", ".join(f"neighbor {a}" for a in gone)
            self._send_many([f"{selector} {withdraw_command(k, self.egress)}" for k in self.held])
            await self._flush(timeout=5.0)
        spelt = [_canonical(a) for a in gone]  # as ExaBGP names its peers
        was_up = [a for a in spelt if a in self.up]
        self.up.difference_update(spelt)  # their "down" is a removal: not kept stale
        self._eor_due.difference_update(spelt)
        for addr in spelt:
            self.received.pop(addr, None)
            self.ups.pop(addr, None)
            log.info("event=exabgp_peer_removed peer=%s", addr)
        if self._emit is not None:
            for addr in was_up:
                await self._emit(PeerDown(addr, 0.0))
        self._conf.write_text(self.render(self._sock))
        self._send("reload")
        await self._flush(timeout=5.0)
        try:
            await self._until_peers(set(new), timeout=10.0)
        except Exception:
            # not taken: the next `cand reload` must see the whole difference again (and
            # send the new peers their paths), not an already-recorded set
            self.bgp = applied
            self._set_peer_lists()
            raise
        lines = [line for r in self.held.values() for line in self._lines_to(r, fresh)]
        self._send_many(lines)
        await self._flush(timeout=5.0)
        log.info(
            "event=exabgp_neighbors_set removed=%s new_or_changed=%s paths_sent=%d",
            ",".join(gone) or "-",
            ",".join(fresh) or "-",
            len(lines),
        )

    async def _flush(self, timeout: float) -> None:
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()
        await self._acknowledged(timeout=timeout)

    async def _until_peers(self, want: set[str], timeout: float) -> None:
        """Ask ExaBGP for its peers until they are `want` (its reload runs on a later turn
        of its loop than the command, and waits for pending updates to leave first)."""
        norm = {str(ipaddress.ip_address(a)) for a in want}
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            self._shown = asyncio.get_running_loop().create_future()
            if not self._send("show neighbor json"):
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    got = await self._shown
                    seen = {str(p.get("peer", {}).get("address", "")) for p in got}
                    if seen == norm:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"exabgp did not take the new neighbours (it has {sorted(seen)})")

    def _lines_to(self, route: InstanceRoute, peers: Sequence[str]) -> list[str]:
        """The commands that announce `route` to `peers` only, each with or without
        attribute 42 as its neighbour asks."""
        edge = [p for p in peers if p in self.edge_peers]
        plain = [p for p in peers if p not in self.edge_peers]
        return commands(
            route, self.asn, self.locator_len, self.edge_capability, edge, plain, everyone=False
        )

    async def stop(self, mode: StopMode) -> None:
        """STOP: withdraw every path, wait for ExaBGP's acknowledgements and a moment for the
        UPDATEs to leave, then SIGTERM. RESTART: SIGKILL, no NOTIFICATION, peers keep the
        paths under graceful restart."""
        self._stopping = True
        if self.child is None:
            return
        if mode is StopMode.RESTART:
            await self.child.kill()
            return
        wait = self.bgp.graceful_shutdown
        if self._writer is not None and wait > 0 and len(self.out):
            # RFC 8326: every path once more, least preferred, then the withdrawals
            gshut = self.out.graceful_shutdown().values()
            self._send_many([line for route in gshut for line in self._lines(route)])
            self.counters["graceful_shutdown"] += len(gshut)
            log.info("event=bgp_graceful_shutdown paths=%d wait=%gs", len(self.out), wait)
            start = time.monotonic()
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()
            await self._acknowledged(timeout=min(wait, 3.0))
            await asyncio.sleep(max(0.0, wait - (time.monotonic() - start)))
        if self._writer is not None:
            keys = dict.fromkeys([*self.held, *self.out])
            self._send_many([withdraw_command(key, self.egress) for key in keys])
            self.held = {}
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()
            await self._acknowledged(timeout=3.0)
            await asyncio.sleep(0.3)  # ExaBGP sends on its next reactor turn
        await self.child.stop()

    async def caught_up(self, timeout: float) -> bool:
        """Wait until ExaBGP has answered every command written to it since it connected
        (it has taken them into its adj-RIB-out), at most `timeout` s; whether it has."""
        await self._acknowledged(timeout)
        return self._writer is not None and self._acked >= self._sent

    async def _acknowledged(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._acked < self._sent and self._writer is not None:
            self._answered.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("event=exabgp_ack_missing sent=%d acked=%d", self._sent, self._acked)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._answered.wait()

    # --- the bridge connection -------------------------------------------------------------

    async def _bridge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """ExaBGP (re)started, or its process relay reconnected: close the gap between what
        it announces and what cand wants (everything, after a restart)."""
        self._writer = writer
        self._sent = self._acked = 0
        pid = self.child.pid if self.child is not None else None
        if pid != self._held_by:
            self.held, self._held_by = {}, pid  # a new ExaBGP announces nothing yet
        diff = self.out.diff(self.held)
        log.info(
            "event=exabgp_connected paths=%d announce=%d withdraw=%d",
            len(self.out),
            len(diff.announce),
            len(diff.withdraw),
        )
        self._send_many([withdraw_command(key, self.egress) for key in diff.withdraw])
        for key in diff.withdraw:
            del self.held[key]
        self._send_many([line for _, route in diff.announce for line in self._lines(route)])
        self.held.update(diff.announce)
        self.counters["reannounced"] += len(diff.announce)
        try:
            while True:
                wait = self._eor_after - time.monotonic() if self._eor_due else None
                try:
                    async with asyncio.timeout(wait):
                        line = await reader.readline()
                except TimeoutError:
                    await self._end_of_rib()
                    continue
                if not line:
                    break
                try:
                    await self._event(line)
                except Exception as e:  # a bug, not bad input: see cand.supervise
                    input_bug(log, self.counters, f"exabgp {line[:120]!r}", e)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    async def _end_of_rib(self) -> None:
        """Send End-of-RIB to every peer that came up, once the deferral is over."""
        if time.monotonic() < self._eor_after:
            return
        for peer in sorted(self._eor_due & self.up):
            afi = "ipv6" if ":" in peer else "ipv4"
            self._send(f"neighbor {peer} announce eor {afi} unicast")
        self._eor_due.clear()
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    def _send(self, line: str) -> bool:
        """Write one command to ExaBGP; False when it is not connected (the next connection
        sends what is missing)."""
        return self._send_many([line])

    def _send_many(self, lines: Sequence[str]) -> bool:
        """Write commands to ExaBGP in one write (ExaBGP reads its pipe 16 KiB at a time and
        takes every whole line in it); False when it is not connected."""
        for line in lines:
            if "\n" in line or "\r" in line:
                raise ValueError("exabgp: a command may not contain a line break")
        if self._writer is None:
            return False
        if lines:
            self._writer.write("".join(f"{line}\n" for line in lines).encode())
            self._sent += len(lines)
        return True

    def _lines(self, route: InstanceRoute) -> list[str]:
        """The commands that announce `route` (two when only some neighbours take attribute 42)."""
        return commands(
            route, self.asn, self.locator_len, self.edge_capability, self.edge_peers,
            self.plain_peers,
        )  # fmt: skip

    async def advertise(self, routes: Sequence[InstanceRoute]) -> None:
        for r in routes:
            self.out.set(r)
            self.counters["advertised"] += 1
        for i in range(0, len(routes), SEND_CHUNK):  # chunks of routes: `held` stays exact
            chunk = routes[i : i + SEND_CHUNK]
            if self._send_many([line for r in chunk for line in self._lines(r)]):
                self.held.update((r.key, r) for r in chunk)
            if self._writer is not None:  # ExaBGP takes them at its pace: hold on to the rest
                with contextlib.suppress(ConnectionError):
                    await self._writer.drain()

    async def withdraw(self, keys: Sequence[InstanceKey]) -> None:
        gone = [k for k in keys if self.out.remove(k) is not None or k in self.held]
        self.counters["withdrawn"] += len(gone)
        if self._send_many([withdraw_command(k, self.egress) for k in gone]):
            for k in gone:
                self.held.pop(k, None)
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    # --- receiving -------------------------------------------------------------------------

    async def _event(self, line: bytes) -> None:
        assert self._emit is not None
        text = line.strip()
        if text in (b"done", b"error"):
            self._acked += 1
            self._answered.set()
            if text == b"error":
                self.counters["command_errors"] += 1
            return
        if text.startswith(b"[") and self._shown is not None and not self._shown.done():
            try:  # the answer to `show neighbor json`
                shown = json.loads(text)
            except (ValueError, RecursionError):
                shown = None
            if isinstance(shown, list) and all(isinstance(p, dict) for p in shown):
                self._shown.set_result(shown)
            return
        if not text.startswith(b"{"):
            return  # anything else that is not an event
        try:
            ev = json.loads(text)
            kind, peer, neighbor = _event_parts(ev)
            if kind == "update" and neighbor.get("direction", "receive") == "receive":
                msg = neighbor.get("message", {})
                raw = bytes.fromhex(str(msg.get("header", ""))[2:] + str(msg.get("body", ""))[2:])
        except (ValueError, TypeError, RecursionError):
            self.counters["malformed"] += 1
            log.warning("event=exabgp_bad_json line=%r", text[:200])
            return
        if kind == "state":
            await self._state(peer, str(neighbor.get("state", "")))
        elif kind == "update" and neighbor.get("direction", "receive") == "receive":
            await self._update(peer, raw)

    async def _state(self, peer: str, state: str) -> None:
        assert self._emit is not None
        if state == "up":
            self.up.add(peer)
            self.ups[peer] = self.ups.get(peer, 0) + 1
            self._eor_due.add(peer)
            log.info("event=exabgp_peer_up peer=%s", peer)
            await self._end_of_rib()
        elif state in ("down", "connected") and peer in self.up:
            self.up.discard(peer)
            log.warning("event=exabgp_peer_down peer=%s", peer)
            await self._emit(PeerDown(peer, float(self.bgp.graceful_restart)))

    async def _update(self, peer: str, raw: bytes) -> None:
        """One received UPDATE into RouteLearned/RouteWithdrawn against this peer's paths;
        anything malformed is counted by reason and treated as withdrawn (RFC 7606)."""
        assert self._emit is not None
        table = self.received.setdefault(peer, AdjRibIn(peer))
        try:
            upd = bgp_update.decode_update(raw, addpath=True)
        except bgp.CodecError as e:
            self._reject(peer, e.reason, str(e))
            return
        if upd.end_of_rib:
            await self._emit(PeerSynced(peer))
            return
        if upd.error is not None:
            self._reject(peer, upd.error, "malformed attributes: treated as withdrawn")
        changes = [c for pid, svc in upd.withdrawn for c in table.withdraw((pid, svc))]
        for pid, svc, egress in upd.announced:
            try:
                route = bgp.decode_route(
                    svc, egress, upd.attributes, self.asn, self.edge_capability
                )
            except bgp.CodecError as e:
                self._reject(peer, e.reason, str(e))
                changes += table.withdraw((pid, svc))  # treat-as-withdraw
                continue
            self.counters["learned"] += 1
            changes += table.announce((pid, svc), route)
        for change in changes:
            await self._emit(change)

    def _reject(self, peer: str, reason: str, why: str) -> None:
        self.counters["malformed"] += 1
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        log.warning("event=bgp_path_ignored peer=%s reason=%s detail=%r", peer, reason, why[:200])

    # --- views -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "speaker": "exabgp",
            "connected": self._writer is not None,
            "peers_up": len(self.up),
            "peers": len(self.bgp.neighbors),
            "exabgp_pid": self.child.pid if self.child is not None else None,
            "neighbors": {n.address: _canonical(n.address) in self.up for n in self.bgp.neighbors},
            "session_ups": {
                n.address: self.ups.get(_canonical(n.address), 0) for n in self.bgp.neighbors
            },
            "rib_out": len(self.out),
            **self.counters,
            "rejected": dict(self.rejected),
        }

    def routes(self) -> dict[str, Any]:
        return {"advertised": [r.to_json() for r in self.out.routes().values()]}


def _event_parts(ev: Any) -> tuple[str, str, dict[str, Any]]:
    """(type, peer address, neighbor object) of one ExaBGP JSON event; TypeError if the
    event does not have that shape."""
    if not isinstance(ev, dict) or not isinstance(ev.get("neighbor", {}), dict):
        raise TypeError("not an ExaBGP event object")
    neighbor: dict[str, Any] = ev.get("neighbor", {})
    address = neighbor.get("address", {})
    if not isinstance(address, dict) or not isinstance(neighbor.get("message", {}), dict):
        raise TypeError("not an ExaBGP neighbor object")
    return str(ev.get("type", "")), str(address.get("peer", "")), neighbor
