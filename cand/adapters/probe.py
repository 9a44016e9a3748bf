"""The `probe` cost source and the probe responder: RTT to each egress over its SRv6 path.

How a probe takes the flows' path: one UDP socket per egress, bound to the ingress's router
address, connected to the egress's router address, with a sticky segment routing header
(`setsockopt(IPV6_RTHDR)`, type 4) whose first segment is the egress's SRv6 SID (learned from
BGP, as the tunnels' outer destination is). The packet leaves with destination = the SID, so
every router on the way forwards it by the same locator route the tunnels use; at the egress
the kernel's SRH receive path (`seg6_enabled`, as the Linux data plane turns on) takes the SID
as its own and moves on to the last segment, the responder's address there. Why this way:
on this kernel a per-packet SRH (`IPV6_RTHDR` as ancillary data to sendmsg) is refused with
EINVAL (only type 2 is accepted there), while the sticky socket option accepts type 4; and
it needs no route, rule or eBPF program of cand's own, nor the data plane adapter.

Times are kernel receive timestamps (`SO_TIMESTAMPNS`) at both ends and the wall clock just
before each send; the RTT is (t4 - t1) - (t3 - t2), so the responder's own time is taken out.
The schedule and the statistics are the pure `cand.engine.probe.ProbeBook`.

The responder (`ProbeResponder`) answers well-formed probes only (`cand.wire.probe`), from a
sender whose address is the packet's source, within a total and a per-sender rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cand.backoff import Backoff
from cand.engine.events import CostSampled
from cand.engine.probe import ProbeBook, TokenBucket
from cand.model import RouterId
from cand.ports import Emit
from cand.wire import probe as wire

if TYPE_CHECKING:
    from cand.config import Config, ProbeCostConfig

log = logging.getLogger("cand.probe")

SOURCE = "probe"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
ANCILLARY = socket.CMSG_SPACE(16)
RETRY = 2.0
"""Seconds before a socket that could not be made is tried again."""
BIND_RETRY_CAP = 30.0
"""Seconds between two tries to bind the responder, at most."""
MAX_SENDERS = 4096
"""Senders the responder keeps a rate bucket for (the oldest is forgotten first)."""

Address = ipaddress.IPv6Address


def _router_address(config: Config) -> Address:
    addr = RouterId.parse(config.router.id).address
    if not isinstance(addr, Address):
        raise ValueError(
            f"network_cost.probe: probes need an IPv6 router id (router.id), not {config.router.id}"
        )
    return addr


def _kernel_time(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("@qq", data[:16])
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


class _Target:
    def __init__(self, egress: Address, sid: Address, sock: socket.socket) -> None:
        self.egress, self.sid, self.sock = egress, sid, sock


class ProbeCostSource:
    name = SOURCE

    def __init__(self, cfg: ProbeCostConfig, me: Address, rng: random.Random | None = None):
        self.cfg = cfg
        self.me = me
        self.book = ProbeBook(cfg.params(), rng)
        self.session = (rng or random.Random()).getrandbits(32)
        self._wanted: dict[RouterId, tuple[Address, Address]] = {}
        self._targets: dict[RouterId, _Target] = {}
        self._failed_at: dict[RouterId, float] = {}
        self._wake = asyncio.Event()
        self.counters: dict[str, int] = {
            "samples": 0,
            "send_errors": 0,
            "socket_errors": 0,
            "no_sid": 0,
            "refused": 0,
        }
        self.refused: dict[str, int] = {}

    @classmethod
    def from_config(cls, config: Config) -> ProbeCostSource:
        return cls(config.network_cost.probe, _router_address(config))

    # --- the port --------------------------------------------------------------------------

    def watch(self, egresses: Mapping[RouterId, Address | None]) -> None:
        wanted: dict[RouterId, tuple[Address, Address]] = {}
        for egress, sid in egresses.items():
            if sid is None or not isinstance(egress.address, Address):
                self.counters["no_sid"] += 1  # no SRv6 path to take: no flow goes there either
                continue
            wanted[egress] = (egress.address, sid)
        self._wanted = wanted
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return {
            "kind": SOURCE,
            "watched": len(self._wanted),
            "probing": len(self._targets),
            "interval": round(self.book.interval(), 4),
            **self.book.counters,
            **self.counters,
            "refused_by_reason": dict(sorted(self.refused.items())),
        }

    def detail(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        for egress, t in sorted(self._targets.items()):
            st = self.book.stats(egress, now) or {}
            out[str(egress)] = {"sid": str(t.sid), **st}
        return out

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                now = time.monotonic()
                self._reconcile(loop, now)
                self.book.expire(now)
                for egress, seq in self.book.due_sends(now):
                    self._send(egress, seq)
                for egress, value in self.book.reports(now):
                    self.counters["samples"] += 1
                    log.debug("event=probe_cost egress=%s cost=%s", egress, value)
                    await emit(CostSampled(egress, SOURCE, value))
                deadline = self.book.next_deadline()
                wait = RETRY if deadline is None else max(0.0, deadline - time.monotonic())
                if self._failed_at:
                    wait = min(wait, RETRY)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            for egress in list(self._targets):
                self._close(loop, egress)

    # --- inside ----------------------------------------------------------------------------

    def _reconcile(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        for egress in list(self._targets):
            t = self._targets[egress]
            if self._wanted.get(egress) != (t.egress, t.sid):
                self._close(loop, egress)
        for egress, (addr, sid) in self._wanted.items():
            if egress in self._targets:
                continue
            if now < self._failed_at.get(egress, -RETRY) + RETRY:
                continue
            try:
                sock = self._socket(addr, sid)
            except OSError as e:
                self.counters["socket_errors"] += 1
                self._failed_at[egress] = now
                log.warning("event=probe_socket_failed egress=%s sid=%s error=%r", egress, sid, e)
                continue
            self._failed_at.pop(egress, None)
            self._targets[egress] = _Target(addr, sid, sock)
            loop.add_reader(sock.fileno(), self._readable, egress)
        for egress in list(self._failed_at):
            if egress not in self._wanted:
                del self._failed_at[egress]
        self.book.set_targets(self._targets, now)

    def _socket(self, egress: Address, sid: Address) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_RTHDR, wire.routing_header(sid, egress)
            )
            sock.bind((str(self.me), 0))
            sock.connect((str(egress), self.cfg.port))
        except OSError:
            sock.close()
            raise
        return sock

    def _close(self, loop: asyncio.AbstractEventLoop, egress: RouterId) -> None:
        t = self._targets.pop(egress)
        loop.remove_reader(t.sock.fileno())
        t.sock.close()

    def _send(self, egress: RouterId, seq: int) -> None:
        t = self._targets.get(egress)
        if t is None:
            self.book.unsent(egress, seq)
            return
        p = wire.Probe(wire.Kind.PROBE, self.session, seq, self.me, time.time_ns())
        try:
            t.sock.send(wire.encode(p))
        except OSError as e:
            # no route, an ICMP error from an earlier probe: not a loss, the path is not there
            self.counters["send_errors"] += 1
            self.book.unsent(egress, seq)
            log.debug("event=probe_send_failed egress=%s error=%r", egress, e)

    def _refuse(self, reason: str) -> None:
        self.counters["refused"] += 1
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _readable(self, egress: RouterId) -> None:
        t = self._targets.get(egress)
        if t is None:
            return
        for _ in range(64):  # what is queued, not for ever
            try:
                data, anc, _flags, _src = t.sock.recvmsg(wire.SIZE + 1, ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # an ICMP error queued on the connected socket (unreachable): the probe is lost
                log.debug("event=probe_recv_error egress=%s error=%r", egress, e)
                continue
            t4 = _kernel_time(anc) or time.time_ns()
            try:
                r = wire.decode(data)
            except wire.ProbeError as e:
                self._refuse(e.reason)
                continue
            if r.kind is not wire.Kind.REPLY:
                self._refuse("not_reply")
            elif r.session != self.session or r.sender != self.me:
                self._refuse("not_ours")
            elif r.responder != t.egress:
                self._refuse("responder")
            else:
                rtt_ms = ((t4 - r.t1) - (r.t3 - r.t2)) / 1e6
                self.book.reply(egress, r.seq, rtt_ms, time.monotonic())
                self._wake.set()


class ProbeResponder:
    """Answers probes at this router (`[network_cost.probe] responder`: `auto` at egresses)."""

    name = "probe-responder"

    def __init__(self, cfg: ProbeCostConfig, me: Address) -> None:
        self.cfg = cfg
        self.me = me
        self.total = TokenBucket(cfg.responder_rate, max(1.0, cfg.responder_rate / 10))
        self._senders: OrderedDict[Address, TokenBucket] = OrderedDict()
        self.counters: dict[str, int] = {
            "answered": 0,
            "refused": 0,
            "rate_limited": 0,
            "malformed": 0,
            "send_errors": 0,
            "bind_failures": 0,
        }
        self.refused: dict[str, int] = {}
        self.bound = False
        self.bind_error: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> ProbeResponder:
        return cls(config.network_cost.probe, _router_address(config))

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "listen": f"[{self.me}]:{self.cfg.port}",
            "bound": self.bound,
            "bind_error": self.bind_error,
            **self.counters,
            "refused_by_reason": dict(sorted(self.refused.items())),
        }

    async def run(self) -> None:
        """Bind, then answer until cancelled. A bind that fails (the address not configured
        yet, the port taken by another daemon in this namespace) is logged as an error when
        it first fails or fails differently, counted (`bind_failures`) and tried again with
        backoff: the responder never ends cand."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(RETRY, BIND_RETRY_CAP)
        while True:
            try:
                sock = self._bind()
            except OSError as e:
                self.counters["bind_failures"] += 1
                error = f"{errno.errorcode.get(e.errno or 0, e.errno)}: {e.strerror or e}"
                if error != self.bind_error:
                    log.error(
                        "event=probe_responder_bind_failed address=%s port=%d error=%r"
                        " (tried again with backoff; probes to this router are lost meanwhile)",
                        self.me, self.cfg.port, error,
                    )  # fmt: skip
                self.bind_error = error
                await asyncio.sleep(backoff.delay())
                continue
            break
        self.bound, self.bind_error = True, None
        log.info("event=probe_responder_listening address=%s port=%d", self.me, self.cfg.port)
        loop.add_reader(sock.fileno(), self._readable, sock)
        try:
            await asyncio.Event().wait()
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
            self.bound = False

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((str(self.me), self.cfg.port))
        except OSError:
            sock.close()
            raise
        return sock

    def _refuse(self, reason: str) -> None:
        self.counters["refused"] += 1
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _allowed(self, sender: Address, now: float) -> bool:
        bucket = self._senders.get(sender)
        if bucket is None:
            rate = self.cfg.responder_rate_per_sender
            bucket = self._senders[sender] = TokenBucket(rate, max(1.0, rate / 10), now)
            if len(self._senders) > MAX_SENDERS:
                self._senders.popitem(last=False)
        else:
            self._senders.move_to_end(sender)
        return bucket.take(now) and self.total.take(now)

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, anc, _flags, src = sock.recvmsg(wire.SIZE + 1, ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("event=probe_responder_recv_error error=%r", e)
                continue
            t2 = _kernel_time(anc) or time.time_ns()
            try:
                p = wire.decode(data)
            except wire.ProbeError as e:
                self.counters["malformed"] += 1
                self._refuse(e.reason)
                continue
            try:
                source = ipaddress.IPv6Address(src[0].split("%")[0])
            except ValueError:
                self._refuse("source")
                continue
            if p.kind is not wire.Kind.PROBE:
                self._refuse("not_probe")
                continue
            if p.sender != source:
                self._refuse("sender_not_source")
                continue
            if not self._allowed(source, time.monotonic()):
                self.counters["rate_limited"] += 1
                continue
            reply = wire.encode(p.answer(self.me, t2, max(t2, time.time_ns())))
            try:
                sock.sendto(reply, src)
            except OSError as e:
                self.counters["send_errors"] += 1
                log.debug("event=probe_reply_failed to=%s error=%r", source, e)
                continue
            self.counters["answered"] += 1
