"""Test tool: a user-space delay relay between two interfaces of one namespace.

This kernel has no netem, so the probe tests put this in a path instead: every Ethernet
frame that arrives on interface A is sent out of interface B `a_to_b` ms later, and the other
way round after `b_to_a` ms (AF_PACKET sockets; frames unchanged, with their checksum
offload state, so IPv6, neighbour discovery and SRH packets pass as on a wire). The relay's
namespace gives its two interfaces no addresses and IPv6 off, so its kernel neither answers
nor forwards anything itself.

A unix datagram socket (`--control`) takes one command per datagram:
    delay A_TO_B_MS B_TO_A_MS     change the delays (frames already held keep theirs)
    drop 1 | drop 0               black-hole everything, both ways | stop doing so

    python -m cand_testbed.delay_relay --a IF --b IF --a-to-b 10 --b-to-a 0 --control PATH
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import os
import signal
import socket
import struct
import sys
import threading
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_VNET_HDR = 15
SO_TIMESTAMPNS = 35  # asm-generic; SCM_TIMESTAMPNS has the same number
MAX_FRAME = 65536
TIMESPEC = struct.Struct("@qq")


def arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    """When the kernel took the frame in (CLOCK_REALTIME), not when this thread got the GIL
    back to read it: on a loaded machine the reader is late by a millisecond or more, and a
    delay counted from the read would add that to every frame."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            return float(sec + nsec / 1e9)
    return time.time()


class Direction:
    def __init__(self, name: str, rx: socket.socket, tx: socket.socket, delay_ms: float) -> None:
        self.name, self.rx, self.tx = name, rx, tx
        self.delay = delay_ms / 1000
        self.drop = False
        self.heap: list[tuple[float, int, bytes]] = []
        self.cond = threading.Condition()
        self.count = itertools.count()
        self.relayed = 0

    def read(self) -> None:
        while True:
            frame, ancdata, _, _ = self.rx.recvmsg(MAX_FRAME, 64)
            now = arrival(ancdata)
            with self.cond:
                if self.drop:
                    continue
                heapq.heappush(self.heap, (now + self.delay, next(self.count), frame))
                self.cond.notify()

    def write(self) -> None:
        while True:
            with self.cond:
                while not self.heap:
                    self.cond.wait()
                due = self.heap[0][0]
                wait = due - time.time()  # the arrival times are the kernel's wall clock
                if wait > 0:
                    # short waits are slept outright: a condition wait overshoots them
                    if wait > 0.002:
                        self.cond.wait(wait - 0.001)
                        continue
                else:
                    _, _, frame = heapq.heappop(self.heap)
                    wait = 0
            if wait > 0:
                time.sleep(wait)
                continue
            with contextlib.suppress(OSError):
                self.tx.send(frame)
                self.relayed += 1


def precise() -> None:
    """A delay element must hold frames for their delay and not for as long as the machine is
    busy: real-time scheduling (root only; otherwise as it is) so that other processes do not
    make the writer late, and a short GIL switch interval so that the other direction's
    threads do not hold it for the default 5 ms."""
    sys.setswitchinterval(0.0002)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))


def packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    # frames come with a virtio-net header and go out with the same one: a veth hands over
    # packets whose checksum is still to be filled in (CHECKSUM_PARTIAL), and the header
    # carries that, so the next hop does not drop them for a bad checksum
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((ifname, ETH_P_ALL))
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--a-to-b", type=float, default=0.0, help="ms")
    ap.add_argument("--b-to-a", type=float, default=0.0, help="ms")
    ap.add_argument("--control", required=True)
    args = ap.parse_args()
    precise()
    sa, sb = packet_socket(args.a), packet_socket(args.b)
    ways = [Direction("a>b", sa, sb, args.a_to_b), Direction("b>a", sb, sa, args.b_to_a)]
    for d in ways:
        threading.Thread(target=d.read, daemon=True).start()
        threading.Thread(target=d.write, daemon=True).start()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.control)
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ctl.bind(args.control)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"relay up {args.a}<->{args.b} delays {args.a_to_b} {args.b_to_a} ms", flush=True)
    while True:
        words = ctl.recv(256).decode(errors="replace").split()
        if len(words) == 3 and words[0] == "delay":
            for d, ms in zip(ways, words[1:], strict=True):
                with d.cond:
                    d.delay = float(ms) / 1000
        elif len(words) == 2 and words[0] == "drop":
            for d in ways:
                with d.cond:
                    d.drop = words[1] == "1"
                    if d.drop:
                        d.heap.clear()
        print(f"control {words} relayed {[d.relayed for d in ways]}", flush=True)


def control(path: str, command: str) -> None:
    """Send one command to a running relay (from the namespace's side or the host's: the
    socket is a file, not bound to a network namespace)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(command.encode(), path)


if __name__ == "__main__":
    main()
