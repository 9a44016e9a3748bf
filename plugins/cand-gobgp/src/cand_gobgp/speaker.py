"""GoBGP speaker: cand drives gobgpd (v3) through its gRPC API on a unix socket.

Sending: each local instance is one path, handed over as raw attribute bytes made by
`cand.wire.bgp` (`pattrs_binary`), so GoBGP, ExaBGP and the tests share one encoder.

Receiving: `WatchEvent(ADJIN)` says *which* prefixes of *which* peer changed; the speaker then
reads those prefixes back from that peer's adj-RIB-in with `ListPath(enable_only_binary)`
in one call per batch and reconciles: what is new or changed becomes `RouteLearned`, what is
gone `RouteWithdrawn`. Reading the per-peer adj-RIB-in (not the best-path stream) keeps every
ADD-PATH alternative and its withdrawal visible; reading bytes lets one codec decode them.

gobgpd is started and supervised here (`manage = true`, default), or attached to when it
already runs on the socket: then its paths are adopted, and those cand does not confirm
within `adopt_grace` seconds are withdrawn. A gobgpd that an earlier cand started (found by
its pid file) is adopted as cand's own: a later stop ends it.

The paths cand wants are kept in an `AdjRibOut`; every `rib_out_check` seconds the speaker
lists gobgpd's local RIB (`ListPath`, table GLOBAL, the paths with no neighbour) and puts any
drift right: a path of cand's deleted behind its back (`gobgp global rib del`) is added again,
a Dyncast path cand does not want (added by hand, or a second copy) is deleted, one with other
attributes is replaced. Paths that do not decode as Dyncast routes are not cand's: left alone.

Stopping (`stop`): STOP first, with `bgp.graceful_shutdown` > 0, announces every path again
with GRACEFUL_SHUTDOWN (RFC 8326) and waits that long (receivers move new flows elsewhere);
then it withdraws every path and waits until no peer's adj-RIB-out holds one
of them any more, then ends gobgpd; RESTART leaves gobgpd and its sessions as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from cand.adapters.speaker_setup import SpeakerSetup
from cand.backoff import Backoff
from cand.config import Config, NeighborConfig
from cand.engine.events import PathsAdopted, PeerDown, PeerSynced, RouteLearned
from cand.model import InstanceKey, InstanceRoute, ServiceId
from cand.plugins import parse_options
from cand.ports import Emit, StopMode
from cand.speaker.adj_rib_in import AdjRibIn, PathId
from cand.speaker.adj_rib_out import AdjRibOut, reconcile
from cand.speaker.child import Child, ChildError
from cand.supervise import input_bug
from cand.wire import bgp, bgp_update
from cand_gobgp.api import attr_pb, pb, pb_grpc

log = logging.getLogger("cand.gobgp")

FAMILIES = {
    6: (pb.Family.AFI_IP6, pb.Family.SAFI_UNICAST),
    4: (pb.Family.AFI_IP, pb.Family.SAFI_UNICAST),
}
ESTABLISHED = 6  # pb.PeerState.SessionState.ESTABLISHED


@dataclass(frozen=True)
class GobgpOptions:
    """`[bgp.options]` for speaker = "gobgp"."""

    socket: str = "/run/cand/gobgpd.sock"
    binary: str = "gobgpd"
    manage: bool = True
    log_level: str = "warn"
    log_file: str = ""
    """gobgpd's own log; empty: beside the socket, `<socket>.log`."""
    adopt_grace: float = 30.0
    sync_quiet: float = 1.0
    rib_out_check: float = 30.0
    """Seconds between checks of gobgpd's local RIB against the paths cand wants; 0: never."""

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> GobgpOptions:
        opts = parse_options(cls, raw, "bgp.options", "gobgp")
        for name in ("adopt_grace", "sync_quiet"):
            if not 0 <= getattr(opts, name) <= 3600:
                raise ValueError(f"bgp.options.{name}: between 0 and 3600 seconds")
        check = opts.rib_out_check
        if isinstance(check, bool) or not isinstance(check, int | float):
            raise ValueError("bgp.options.rib_out_check: a number of seconds")
        if check != 0 and not RIB_OUT_CHECK_MIN <= check <= RIB_OUT_CHECK_MAX:
            raise ValueError(
                f"bgp.options.rib_out_check: 0 (off) or between {RIB_OUT_CHECK_MIN:g} and "
                f"{RIB_OUT_CHECK_MAX:g} seconds, got {check!r}"
            )
        return opts


RIB_OUT_CHECK_MIN, RIB_OUT_CHECK_MAX = 1.0, 3600.0


REFUSED_MEMORY = 4096
PATH_MEMO = 8192
"""Decoded paths remembered by their bytes (about 600 B each with the key: 5 MB)."""
STREAM_MIN = 16
"""From this many paths in one batch on, `AddPathStream` instead of one `AddPath` each."""
STREAM_CHUNK = 1000
"""Paths per message of a stream (about 150 bytes each: far below gRPC's 4 MiB limit)."""


@dataclass
class _PeerView:
    """What cand last read of one peer's adj-RIB-in (keyed by (D-SID, D-BID, egress)), and
    the session's state."""

    rib: AdjRibIn
    established: bool = False
    ups: int = 0  # sessions established (a reset shows as one more)
    # a PeerDown was emitted since the last whole-table read: the engine holds every path
    # of this peer stale, so that read may leave what it lacks to the PeerSynced
    held_stale: bool = False
    # paths refused on an earlier read (by their bytes): each is counted and logged once
    refused: set[tuple[bytes, int, tuple[bytes, ...]]] = field(default_factory=set)


class GobgpSpeaker:
    def __init__(self, config: Config, options: GobgpOptions) -> None:
        setup = SpeakerSetup.from_config(config, "gobgp")
        self.config = config
        self.bgp = setup.bgp
        self.opts = options
        self.asn = setup.asn
        self.locator_len = setup.locator_len
        self.edge_capability = setup.bgp.edge_metadata_capability
        self.stub: Any = None
        self.child: Child | None = None
        self.out = AdjRibOut()  # the paths cand wants gobgpd to announce
        self.adopted: dict[InstanceKey, Any] = {}
        self.peers: dict[str, _PeerView] = {}
        self.rejected: dict[str, int] = {}  # malformed received paths, by reason
        self.counters = {
            "advertised": 0,
            "withdrawn": 0,
            "learned": 0,
            "paths_read": 0,  # every path ListPath handed back, re-reads included
            "malformed": 0,
            "rpc_errors": 0,
            "streams": 0,
            "rib_out_checks": 0,
            "drift_announced": 0,
            "drift_withdrawn": 0,
            "graceful_shutdown": 0,
        }
        # a path read again with the same bytes (the re-read of a D-SID after a watch event,
        # or of a whole table after a session came back) is the route decoded before, the same
        # object; keyed on all its bytes, so any change decodes afresh; errors are not kept
        self._decode_bytes = functools.lru_cache(maxsize=PATH_MEMO)(self._decode_raw)
        self._dirty: dict[str, set[ServiceId]] = {}
        self._resync: set[str] = set()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopping = False
        self._emit: Emit | None = None
        self._peers_lock = asyncio.Lock()  # neighbour changes vs. reads of a peer's table
        # advertise, withdraw and the RIB-out check, one at a time: a check must never send
        # a route that a later advertise has already replaced
        self._out_lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: Config) -> GobgpSpeaker:
        assert config.bgp is not None
        return cls(config, GobgpOptions.parse(dict(config.bgp.options)))

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        channel = grpc.aio.insecure_channel(f"unix://{self.opts.socket}")
        self.stub = pb_grpc.GobgpApiStub(channel)
        try:
            fresh = await self._ensure_gobgpd()
            if fresh:
                await self._configure()
            else:
                await self._adopt()
            self._ready.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(emit), name="gobgp-watch")
                tg.create_task(self._reconcile_loop(emit), name="gobgp-read")
                if self.adopted:  # the engine withdraws what nobody confirms in time
                    await emit(PathsAdopted(frozenset(self.adopted), self.opts.adopt_grace))
                if self.child is not None:
                    tg.create_task(self._supervise(), name="gobgp-supervise")
                if self.opts.rib_out_check > 0:
                    tg.create_task(self._check_loop(), name="gobgp-rib-out")
        finally:
            await channel.close()

    async def _ensure_gobgpd(self) -> bool:
        """True when a new gobgpd was started (to be configured); False when one was running."""
        child = self._child()
        if await self._alive():
            log.info("event=gobgp_attach socket=%s", self.opts.socket)
            pid = child.left_running() if self.opts.manage else None
            if pid is not None:
                child.adopt(pid)  # an earlier cand started it: it is ours to stop
                self.child = child
            return False
        if not self.opts.manage:
            raise RuntimeError(f"gobgp: nothing answers on {self.opts.socket} and manage=false")
        sock = Path(self.opts.socket)
        sock.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()  # gobgpd does not remove a stale socket itself
        try:
            await child.start(self._alive, timeout=5.0)
        except ChildError as e:
            raise RuntimeError(str(e)) from None
        self.child = child
        return True

    def _child(self) -> Child:
        binary = shutil.which(self.opts.binary)
        if binary is None:
            raise RuntimeError(f"gobgp: {self.opts.binary} not found (apt-get install gobgpd)")
        sock = self.opts.socket
        return Child(
            name="gobgpd",
            argv=[
                binary,
                "--api-hosts",
                f"unix://{sock}",
                "-l",
                self.opts.log_level,
                "--pprof-disable",
            ],
            log_path=Path(self.opts.log_file or f"{sock}.log"),
            pid_path=Path(f"{sock}.pid"),
            marker=f"unix://{sock}",
            # its own session: a crash of cand, or ^C in cand's terminal, leaves gobgpd (and
            # the routes) up for the next cand to adopt
            new_session=True,
        )

    async def _alive(self) -> bool:
        try:
            await self.stub.GetBgp(pb.GetBgpRequest(), timeout=0.5)
            return True
        except grpc.aio.AioRpcError:
            return False

    async def _configure(self) -> None:
        b = self.bgp
        rid = b.router_id or _router_id(self.config.router.id)
        await self.stub.StartBgp(
            pb.StartBgpRequest(
                **{
                    "global": pb.Global(
                        asn=self.asn, router_id=rid, listen_port=b.listen_port or -1
                    )
                }
            )
        )
        for n in b.neighbors:
            await self._add_peer(n)

    def _peer(self, n: NeighborConfig) -> Any:
        b = self.bgp
        rid = b.router_id or _router_id(self.config.router.id)
        fams = [pb.Family(afi=a, safi=s) for a, s in FAMILIES.values()]
        return pb.Peer(
            conf=pb.PeerConf(
                neighbor_address=n.address,
                peer_asn=n.asn,
                auth_password=n.password or "",
                description=n.description,
            ),
            timers=pb.Timers(
                config=pb.TimersConfig(hold_time=n.hold_time, keepalive_interval=n.keepalive)
            ),
            transport=pb.Transport(passive_mode=n.passive),
            route_reflector=pb.RouteReflector(
                route_reflector_client=n.route_reflector_client,
                route_reflector_cluster_id=rid if n.route_reflector_client else "",
            ),
            graceful_restart=pb.GracefulRestart(
                enabled=b.graceful_restart > 0, restart_time=b.graceful_restart
            ),
            afi_safis=[
                pb.AfiSafi(
                    config=pb.AfiSafiConfig(family=f, enabled=True),
                    add_paths=pb.AddPaths(config=pb.AddPathsConfig(receive=True, send_max=255)),
                    mp_graceful_restart=pb.MpGracefulRestart(
                        config=pb.MpGracefulRestartConfig(enabled=b.graceful_restart > 0)
                    ),
                )
                for f in fams
            ],
        )

    async def _add_peer(self, n: NeighborConfig) -> None:
        if n.bfd:
            log.warning(
                "event=gobgp_no_bfd peer=%s (gobgpd has no BFD; hold time applies)", n.address
            )
        await self.stub.AddPeer(pb.AddPeerRequest(peer=self._peer(n)))
        self.peers[n.address] = _PeerView(AdjRibIn(n.address))
        log.info("event=gobgp_peer_added peer=%s asn=%d", n.address, n.asn)

    # --- neighbours changed by `cand reload` ------------------------------------------------

    def live_neighbors(self) -> bool:
        return True

    async def set_neighbors(self, neighbors: Sequence[NeighborConfig]) -> None:
        """Gone: DeletePeer (gobgpd sends a NOTIFICATION) and the routes learned from it are
        withdrawn at once (no graceful restart: the operator removed it). New: AddPeer, and
        gobgpd sends it every path cand announces. Changed: UpdatePeer, which resets the
        session only when the change needs it (gobgpd decides). The rest is left alone.
        Each step is idempotent and recorded as it succeeds, so a reload that failed half-way
        is finished by the next one; reads of a peer's table wait (`_peers_lock`), so no path
        of a deleted peer is emitted after its withdrawal."""
        try:
            await asyncio.wait_for(self._ready.wait(), 10.0)
        except TimeoutError:
            raise RuntimeError("gobgpd is not configured yet (starting?): try again") from None
        have = {n.address: n for n in self.bgp.neighbors}
        new = {n.address: n for n in neighbors}

        def record() -> None:
            self.bgp = self.bgp.model_copy(update={"neighbors": tuple(have.values())})

        async with self._peers_lock:
            for addr in sorted(set(have) - set(new)):
                try:
                    await self.stub.DeletePeer(pb.DeletePeerRequest(address=addr))
                except grpc.aio.AioRpcError as e:
                    if (
                        e.code() is not grpc.StatusCode.NOT_FOUND
                        and "not found" not in str(e.details()).lower()
                    ):
                        raise
                view = self.peers.pop(addr, None)
                self._dirty.pop(addr, None)
                self._resync.discard(addr)
                del have[addr]
                record()
                log.info("event=gobgp_peer_deleted peer=%s", addr)
                if view is not None and self._emit is not None:
                    await self._emit(PeerDown(addr, 0.0))
            for addr in sorted(new):
                if addr in have and new[addr] == have[addr]:
                    continue
                await self._put_peer(new[addr], update=addr in have)
                have[addr] = new[addr]
                record()

    async def _put_peer(self, n: NeighborConfig, update: bool) -> None:
        """UpdatePeer or AddPeer, whichever gobgpd's state needs (it may already have what a
        failed reload half applied)."""
        if update:
            try:
                await self.stub.UpdatePeer(
                    pb.UpdatePeerRequest(peer=self._peer(n), do_soft_reset_in=True)
                )
                log.info("event=gobgp_peer_updated peer=%s", n.address)
                self.peers.setdefault(n.address, _PeerView(AdjRibIn(n.address)))
                return
            except grpc.aio.AioRpcError as e:
                if "not found" not in str(e.details()).lower():
                    raise
        try:
            await self._add_peer(n)
        except grpc.aio.AioRpcError as e:
            if "already exists" not in str(e.details()).lower():
                raise
            await self._put_peer(n, update=True)

    async def _adopt(self) -> None:
        """cand restarted, gobgpd did not: keep its paths until cand confirms or drops them.
        Its sessions are kept; neighbours the config no longer names are deleted, new ones
        added, and one whose settings differ from the file's is updated (gobgpd resets that
        session only if the change needs it)."""
        running: dict[str, Any] = {}
        async for r in self.stub.ListPeer(pb.ListPeerRequest()):
            running[r.peer.conf.neighbor_address] = r.peer
        wanted = {n.address: n for n in self.bgp.neighbors}
        for addr in sorted(set(running) - set(wanted)):
            with contextlib.suppress(grpc.aio.AioRpcError):  # gone meanwhile
                await self.stub.DeletePeer(pb.DeletePeerRequest(address=addr))
            log.info("event=gobgp_peer_deleted peer=%s (not in the config)", addr)
        for addr, n in wanted.items():
            if addr not in running:
                await self._add_peer(n)
                continue
            self.peers[addr] = _PeerView(AdjRibIn(addr))
            if _settings(running[addr]) != _settings(self._peer(n)):
                await self._put_peer(n, update=True)
        for route, p in await self._local_paths():
            self.adopted[route.key] = p
        log.info("event=gobgp_adopted paths=%d", len(self.adopted))

    async def _local_paths(self) -> list[tuple[InstanceRoute, Any]]:
        """What gobgpd itself originates in cand's families (no neighbour), as Dyncast routes
        with their gRPC paths; paths that do not decode are not cand's and are left out."""
        out = []
        for afi, safi in FAMILIES.values():
            req = pb.ListPathRequest(
                table_type=pb.GLOBAL,
                family=pb.Family(afi=afi, safi=safi),
                enable_nlri_binary=True,
                enable_attribute_binary=True,
            )
            async for d in self.stub.ListPath(req):
                for p in d.destination.paths:
                    if p.neighbor_ip not in ("", "<nil>", "0.0.0.0", "::"):
                        continue
                    try:
                        route = self._decode(p, p.nlri_binary)
                    except bgp.CodecError:
                        continue
                    out.append((route, p))
        return out

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.opts.rib_out_check)
            if not self._stopping:
                await self.check_rib_out()

    async def check_rib_out(self) -> None:
        """List gobgpd's local RIB and send what closes the gap to the wanted one."""
        async with self._out_lock:
            if self._stopping:
                return
            try:
                held = await self._local_paths()
            except grpc.aio.AioRpcError as e:
                # gobgpd is away (being restarted): the restart re-announces everything
                self.counters["rpc_errors"] += 1
                log.warning("event=gobgp_rib_out_list_failed code=%s", e.code())
                return
            self.counters["rib_out_checks"] += 1
            actual: dict[InstanceKey, InstanceRoute] = {}
            listed: dict[InstanceKey, Any] = {}
            extra: list[tuple[InstanceKey, Any]] = []
            for route, p in held:
                if route.key in self.adopted:
                    continue  # kept until cand confirms or drops it (adopt_grace)
                if route.key in actual or p.identifier != bgp.path_id(route.key):
                    extra.append((route.key, p))  # a second copy, under another identifier
                    continue
                actual[route.key] = route
                listed[route.key] = p
            diff = reconcile(self.out.routes(), actual)
            if not diff and not extra:
                return
            missing = sum(k not in actual for k, _ in diff.announce)
            log.warning(
                "event=gobgp_rib_out_drift missing=%d changed=%d unwanted=%d copies=%d",
                missing,
                len(diff.announce) - missing,
                len(diff.withdraw),
                len(extra),
            )
            self.counters["drift_announced"] += await self._add_paths(
                [self._path(route) for _key, route in diff.announce]
            )
            for key, p in [*((k, listed[k]) for k in diff.withdraw), *extra]:
                log.info("event=gobgp_rib_out_unwanted instance=%s id=%d", key, p.identifier)
                req = pb.DeletePathRequest(table_type=pb.GLOBAL, family=p.family, path=p)
                if await self._rpc(self.stub.DeletePath(req)):
                    self.counters["drift_withdrawn"] += 1

    async def _supervise(self) -> None:
        """gobgpd died: start it again and re-announce everything (peers' graceful restart
        keeps their copies meanwhile)."""
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            assert self.child is not None
            rc = await self.child.wait()
            if self._stopping:
                return
            log.error("event=gobgp_died rc=%s", rc)
            await asyncio.sleep(backoff.delay())
            try:
                await self._ensure_gobgpd()
                await self._configure()
                await self.advertise(list(self.out.routes().values()))
            except (RuntimeError, grpc.aio.AioRpcError) as e:
                # it did not come back: try again later; established flows do not depend on
                # it (the kernel keeps steering them) and peers keep our paths meanwhile
                self.counters["restart_failures"] = self.counters.get("restart_failures", 0) + 1
                log.error("event=gobgp_restart_failed error=%r", str(e)[:300])
                if self.child is not None:
                    await self.child.kill()  # half-configured: start from scratch next time
                continue
            backoff.reset()

    async def stop(self, mode: StopMode) -> None:
        """STOP: withdraw every path, wait until the peers have the withdrawals, end gobgpd.
        RESTART: leave gobgpd, its sessions and its paths to the next cand."""
        self._stopping = True
        if mode is StopMode.RESTART:
            log.info("event=gobgp_left_running pid=%s", self.child.pid if self.child else None)
            return
        if self.stub is not None and self._ready.is_set():
            if self.bgp.graceful_shutdown > 0 and len(self.out):
                await self._graceful_shutdown(self.bgp.graceful_shutdown)
            keys = list(self.out) + list(self.adopted)
            if keys:
                before = await self._sent()
                await self.withdraw(keys)
                await self._flushed(before, timeout=5.0)
        if self.child is not None:
            await self.child.stop()
            with contextlib.suppress(FileNotFoundError):
                Path(self.opts.socket).unlink()

    async def _graceful_shutdown(self, wait: float) -> None:
        """Every wanted path once more with GRACEFUL_SHUTDOWN; until the peers have it, and
        at least `wait` seconds, before the withdrawals follow."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        before = await self._sent()
        async with self._out_lock:
            self.counters["graceful_shutdown"] += await self._add_paths(
                [self._path(route) for route in self.out.graceful_shutdown().values()]
            )
        log.info(
            "event=bgp_graceful_shutdown paths=%d wait=%gs",
            self.counters["graceful_shutdown"],
            wait,
        )
        await self._flushed(before, timeout=wait)
        await asyncio.sleep(max(0.0, wait - (loop.time() - start)))

    async def _sent(self) -> dict[str, tuple[int, int]]:
        """Per established peer: UPDATEs gobgpd has written to the session, and its output
        queue."""
        out: dict[str, tuple[int, int]] = {}
        try:
            async for r in self.stub.ListPeer(pb.ListPeerRequest(), timeout=1.0):
                st = r.peer.state
                if st.session_state == ESTABLISHED:
                    out[st.neighbor_address] = (st.messages.sent.update, st.queues.output)
        except grpc.aio.AioRpcError as e:
            log.warning("event=gobgp_list_peer_failed code=%s", e.code())
        return out

    async def _flushed(self, before: dict[str, tuple[int, int]], timeout: float) -> None:
        """Until every peer that was established has been sent at least one more UPDATE (the
        withdrawals) and its output queue is empty: then the peers have them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            now = await self._sent()
            if all(
                addr not in now or (now[addr][0] > sent and now[addr][1] == 0)
                for addr, (sent, _) in before.items()
            ):
                log.info("event=gobgp_withdrawals_flushed peers=%d", len(before))
                return
            await asyncio.sleep(0.02)
        log.warning("event=gobgp_flush_incomplete timeout=%gs", timeout)

    # --- sending ---------------------------------------------------------------------------

    def _path(self, route: InstanceRoute) -> Any:
        attrs = [
            bgp.mp_reach(route, addpath=False),
            *bgp.encode_attributes(route, self.asn, self.locator_len),
        ]
        afi, safi = FAMILIES[route.service.version]
        return pb.Path(
            family=pb.Family(afi=afi, safi=safi),
            nlri_binary=bgp.host_prefix(route.service),
            pattrs_binary=[a.to_bytes() for a in attrs],
            identifier=bgp.path_id(route.key),
        )

    async def advertise(self, routes: Sequence[InstanceRoute]) -> None:
        await self._ready.wait()
        async with self._out_lock:
            for route in routes:
                # desired state first: if gobgpd is down, the restarted one gets it from here
                self.out.set(route)
                self.adopted.pop(route.key, None)
            self.counters["advertised"] += await self._add_paths(
                [self._path(route) for route in routes]
            )

    async def _add_paths(self, paths: Sequence[Any]) -> int:
        """Hand `paths` to gobgpd's global RIB; how many it took. A few go one `AddPath` each;
        more go in one `AddPathStream` (one round trip and one RIB operation per chunk instead
        of per path). A stream that fails is all-or-unknown: it counts as nothing taken, and
        the RIB-out check (or gobgpd's restart) sends what is missing from the desired state."""
        if len(paths) < STREAM_MIN:
            taken = 0
            for path in paths:
                req = pb.AddPathRequest(table_type=pb.GLOBAL, path=path)
                taken += await self._rpc(self.stub.AddPath(req))
            return taken
        chunks = [
            pb.AddPathStreamRequest(table_type=pb.GLOBAL, paths=paths[i : i + STREAM_CHUNK])
            for i in range(0, len(paths), STREAM_CHUNK)
        ]
        if await self._rpc(self.stub.AddPathStream(iter(chunks))):
            self.counters["streams"] += 1
            return len(paths)
        return 0

    async def withdraw(self, keys: Sequence[InstanceKey]) -> None:
        await self._ready.wait()
        async with self._out_lock:
            paths = []
            for key in keys:
                held = self.out.remove(key)
                path = self._path(held) if held is not None else self.adopted.pop(key, None)
                if path is not None:
                    paths.append(path)
            if len(paths) < STREAM_MIN:
                for path in paths:
                    req = pb.DeletePathRequest(table_type=pb.GLOBAL, family=path.family, path=path)
                    if await self._rpc(self.stub.DeletePath(req)):
                        self.counters["withdrawn"] += 1
                return
            gone = []
            for path in paths:  # the same withdrawal DeletePath makes, as a stream
                p = pb.Path()
                p.CopyFrom(path)
                p.is_withdraw = True
                gone.append(p)
            self.counters["withdrawn"] += await self._add_paths(gone)

    async def _rpc(self, call: Any) -> bool:
        """One gRPC call; a failure is logged and counted, and the periodic state (desired
        paths kept here) lets the restarted gobgpd get everything again."""
        try:
            await call
            return True
        except grpc.aio.AioRpcError as e:
            self.counters["rpc_errors"] += 1
            log.error("event=gobgp_rpc_failed code=%s detail=%r", e.code(), e.details())
            return False

    # --- receiving -------------------------------------------------------------------------

    async def _watch(self, emit: Emit) -> None:
        F = pb.WatchEventRequest.Table.Filter
        req = pb.WatchEventRequest(
            peer=pb.WatchEventRequest.Peer(),
            table=pb.WatchEventRequest.Table(filters=[F(type=F.ADJIN, init=True)]),
        )
        backoff = Backoff(first=0.2, cap=5.0)
        while True:
            try:
                async for ev in self.stub.WatchEvent(req):
                    backoff.reset()
                    if ev.HasField("peer"):
                        await self._peer_event(ev.peer, emit)
                    elif ev.HasField("table"):
                        self._table_event(ev.table)
            except grpc.aio.AioRpcError as e:
                # gobgpd gone (it is being restarted): its sessions are down, the paths the
                # peers gave us go stale (graceful restart) until the new one has them again
                log.warning("event=gobgp_watch_lost code=%s", e.code())
                for addr, view in list(self.peers.items()):
                    if view.established:
                        view.established = False
                        await emit(PeerDown(addr, float(self.bgp.graceful_restart)))
            await asyncio.sleep(backoff.delay())

    def _table_event(self, table: Any) -> None:
        for p in table.paths:
            if p.neighbor_ip not in self.peers:
                continue
            svc = _prefix_service(p)
            if svc is not None:
                self._dirty.setdefault(p.neighbor_ip, set()).add(svc)
        self._wake.set()

    async def _peer_event(self, ev: Any, emit: Emit) -> None:
        addr = ev.peer.state.neighbor_address or ev.peer.conf.neighbor_address
        view = self.peers.get(addr)
        if view is None:
            return
        up = ev.peer.state.session_state == ESTABLISHED
        if up and not view.established:
            view.established = True
            view.ups += 1
            log.info("event=gobgp_peer_up peer=%s", addr)
            self._resync.add(addr)
            self._wake.set()
        elif not up and view.established:
            view.established = False
            view.held_stale = True
            log.warning("event=gobgp_peer_down peer=%s", addr)
            await emit(PeerDown(addr, float(self.bgp.graceful_restart)))

    async def _reconcile_loop(self, emit: Emit) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            resync, self._resync = self._resync, set()
            if resync:
                await asyncio.sleep(self.opts.sync_quiet)  # let the initial table arrive
            dirty, self._dirty = self._dirty, {}
            for peer in sorted(resync):
                await self._read(peer, None, emit)
                await emit(PeerSynced(peer))
            for peer, services in dirty.items():
                view = self.peers.get(peer)
                # a peer seen up and now down: the engine holds its paths stale, and what
                # gobgpd drops meanwhile is no withdrawal (the resync at its return decides)
                down = view is not None and view.ups > 0 and not view.established
                if peer not in resync and not down:
                    await self._read(peer, services, emit)

    async def _read(self, peer: str, services: set[ServiceId] | None, emit: Emit) -> None:
        async with self._peers_lock:
            view = self.peers.get(peer)
            if view is not None:  # not deleted meanwhile (`cand reload`)
                await self._read_view(peer, view, services, emit)

    async def _read_view(
        self, peer: str, view: _PeerView, services: set[ServiceId] | None, emit: Emit
    ) -> None:
        seen: dict[PathId, InstanceRoute] = {}  # keyed by (instance, egress)
        for version, (afi, safi) in FAMILIES.items():
            wanted = [s for s in services or () if s.version == version]
            if services is not None and not wanted:
                continue
            req = pb.ListPathRequest(
                table_type=pb.ADJ_IN,
                name=peer,
                family=pb.Family(afi=afi, safi=safi),
                prefixes=[
                    pb.TableLookupPrefix(prefix=f"{s}/{s.address.max_prefixlen}") for s in wanted
                ],
                # bytes only: gobgpd skips marshalling every attribute into an Any, and the
                # stream is a third of the size (the codec reads the bytes, nothing else)
                # (with the two older flags too: a gobgpd before 3.9 knows only those, and
                # would otherwise send no bytes at all)
                enable_nlri_binary=True,
                enable_attribute_binary=True,
                enable_only_binary=True,
            )
            try:
                async for d in self.stub.ListPath(req):
                    self.counters["paths_read"] += len(d.destination.paths)
                    for p in d.destination.paths:
                        try:
                            route = self._decode(p, p.nlri_binary)
                        except bgp.CodecError as e:
                            # treat-as-withdraw: not in `seen`, so a path held before goes
                            ident = (bytes(p.nlri_binary), p.identifier, tuple(p.pattrs_binary))
                            if ident in view.refused:
                                continue
                            if len(view.refused) >= REFUSED_MEMORY:
                                view.refused.clear()  # bounded: a flood is counted again
                            view.refused.add(ident)
                            self.counters["malformed"] += 1
                            self.rejected[e.reason] = self.rejected.get(e.reason, 0) + 1
                            log.warning(
                                "event=bgp_path_ignored peer=%s reason=%s detail=%r",
                                peer,
                                e.reason,
                                str(e)[:200],
                            )
                            continue
                        except Exception as e:  # a bug, not bad input: see cand.supervise
                            input_bug(log, self.counters, f"gobgp path from {peer}", e)
                            continue
                        seen[(route.key, route.egress)] = route
            except grpc.aio.AioRpcError as e:
                self.counters["rpc_errors"] += 1
                log.error("event=gobgp_list_failed peer=%s code=%s", peer, e.code())
                return
        if services is None and view.held_stale:
            # back from a PeerDown: no withdrawal for what is missing (PeerSynced decides);
            # a whole-table read without one (a first session, a flap cand never saw go
            # down) withdraws what is missing, or nothing would
            view.held_stale = False
            changes = view.rib.resync(seen)
        else:
            changes = view.rib.replace(seen, services)
        for change in changes:
            if isinstance(change, RouteLearned):
                self.counters["learned"] += 1
            await emit(change)

    def _decode(self, p: Any, nlri: bytes) -> InstanceRoute:
        afi = bgp_update.AFI_IP6 if p.family.afi == pb.Family.AFI_IP6 else bgp_update.AFI_IP
        return self._decode_bytes(nlri, tuple(p.pattrs_binary), afi, self.edge_capability)

    def _decode_raw(
        self, nlri: bytes, attrs: tuple[bytes, ...], afi: int, edge_capability: int
    ) -> InstanceRoute:
        return bgp_update.decode_path(nlri, attrs, afi, self.asn, edge_capability)

    # --- views -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "speaker": "gobgp",
            "socket": self.opts.socket,
            "managed": self.child is not None,
            "gobgpd_pid": self.child.pid if self.child is not None else None,
            "peers_established": sum(v.established for v in self.peers.values()),
            "peers": len(self.peers),
            "neighbors": {a: v.established for a, v in sorted(self.peers.items())},
            "session_ups": {a: v.ups for a, v in sorted(self.peers.items())},
            "rib_out": len(self.out),
            **self.counters,
            "rejected": dict(self.rejected),
        }

    def routes(self) -> dict[str, Any]:
        return {"advertised": [r.to_json() for r in self.out.routes().values()]}


def _settings(peer: Any) -> tuple[Any, ...]:
    """What of a neighbour cand configures, as gobgpd shows it (ListPeer) or as cand would
    send it: a difference means gobgpd runs another config than the file's."""
    return (
        peer.conf.peer_asn,
        peer.conf.auth_password,
        peer.conf.description,
        peer.timers.config.hold_time,
        peer.timers.config.keepalive_interval,
        peer.transport.passive_mode,
        peer.route_reflector.route_reflector_client,
    )


def _prefix_service(p: Any) -> ServiceId | None:
    """The D-SID a watch event is about (from GoBGP's decoded NLRI), or None if not a host route."""
    if not p.nlri.Is(attr_pb.IPAddressPrefix.DESCRIPTOR):
        return None
    return _service_of(p.nlri.value)


@functools.lru_cache(maxsize=bgp.MEMO_SIZE)
def _service_of(value: bytes) -> ServiceId | None:
    """An IPAddressPrefix's bytes as a D-SID: every path of a D-SID in a watch event has the
    same ones (12 at 10k x 12), so each is parsed once and the paths share one ServiceId."""
    prefix = attr_pb.IPAddressPrefix.FromString(value)
    try:
        addr = ipaddress.ip_address(prefix.prefix)
        if prefix.prefix_len != addr.max_prefixlen:
            return None
        return ServiceId(addr)
    except ValueError:
        return None


def _router_id(router: str) -> str:
    """A BGP identifier from the router address when none is configured: IPv4 as is, IPv6 by
    its last 32 bits (configure `bgp.router_id` when those collide)."""
    addr = ipaddress.ip_address(router)
    return str(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))


if TYPE_CHECKING:  # the plugin satisfies cand's speaker port, from_config included (mypy)
    from cand.ports import SpeakerPlugin

    _plugin: SpeakerPlugin = GobgpSpeaker
