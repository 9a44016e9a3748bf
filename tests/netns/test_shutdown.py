"""Stop and restart of an egress cand, seen from the wire and from the ingress: a stop
withdraws every path before the session closes (after announcing it with GRACEFUL_SHUTDOWN,
when configured); a restart withdraws nothing."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cand_testbed.agent_driver import AgentProcess
from cand_testbed.routers import SERVICE, cand_toml, received, start_cand, start_mosquitto, wait_api

from cand.api import request
from cand.lab.netns import Topology
from cand.wire import bgp, bgp_update
from tests.netns.test_bgp_gobgp import BINDING, STEPS, capture, follow, view

pytestmark = pytest.mark.netns
E_ADDR, I_ADDR = "fc00:a::3", "fc00:a::1"
SPEAKERS = ["gobgp", "exabgp"]
CHILD = {"gobgp": "gobgpd", "exabgp": "cand.adapters.exabgp_run"}  # python -m ...: argv[2]
GSHUT = 1.0  # bgp.graceful_shutdown in the test that sets it, seconds


@dataclass(frozen=True)
class Sent:
    """One thing the egress sent on a session, in wire order: a BGP message or the FIN/RST."""

    kind: str  # "open", "update", "notification", "keepalive", "close"
    withdrawn: int = 0
    announced: int = 0
    gshut: bool = False  # the announcement carries GRACEFUL_SHUTDOWN (65535:0)


def sent_by(pcap: Path, src: str) -> list[list[Sent]]:
    """What `src` sent, per TCP connection, in stream order (reassembled by sequence number),
    with the connection's FIN or RST placed after the last byte it followed."""
    from scapy.all import TCP, IPv6, rdpcap

    conns: dict[int, dict[int, bytes]] = {}
    ends: dict[int, int] = {}
    for pkt in rdpcap(str(pcap)):
        if IPv6 not in pkt or TCP not in pkt or pkt[IPv6].src != src:
            continue
        tcp = pkt[TCP]
        key = int(tcp.sport) * 65536 + int(tcp.dport)
        payload = bytes(tcp.payload)
        if payload:
            conns.setdefault(key, {})[int(tcp.seq)] = payload
        if int(tcp.flags) & 0x05 and key not in ends:  # FIN or RST
            ends[key] = int(tcp.seq)
            conns.setdefault(key, {})
    out = []
    for key, segs in conns.items():
        data = b"".join(segs[s] for s in sorted(segs))
        msgs: list[Sent] = []
        i = 0
        while i + 19 <= len(data):
            length = int.from_bytes(data[i + 16 : i + 18], "big")
            assert data[i : i + 16] == b"\xff" * 16 and length >= 19, "not a BGP stream"
            msg = data[i : i + length]
            kind = {1: "open", 2: "update", 3: "notification", 4: "keepalive"}.get(msg[18], "?")
            if kind == "update":
                u = bgp_update.decode_update(msg, addpath=True)
                marked = bool(u.announced) and bgp.has_graceful_shutdown(u.attributes)
                msgs.append(Sent(kind, len(u.withdrawn), len(u.announced), marked))
            else:
                msgs.append(Sent(kind))
            i += length
        if key in ends:
            msgs.append(Sent("close"))
        out.append(msgs)
    return out


def children_in(ns: str, name: str) -> list[int]:
    """PIDs of `name` processes (by their program, or the module `python -m` runs) running in
    namespace `ns`."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    found = []
    for pid in pids.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if any(Path(a.decode(errors="replace")).name == name for a in argv[:3]):
            found.append(int(pid))
    return found


def pair(
    topo: Topology, tmp: Path, speaker: str, gshut: float = 0.0
) -> tuple[str, str, str, int, Path, Path]:
    """An egress (with its broker) and an ingress cand, both on `speaker`, one link apart;
    `gshut`: the egress's bgp.graceful_shutdown."""
    e, i = topo.ns("egress"), topo.ns("ingress")
    _ie, ii = topo.link(e, f"{E_ADDR}/64", i, f"{I_ADDR}/64")
    port = start_mosquitto(topo, e, tmp)
    econf = cand_toml(tmp, "e", E_ADDR, [I_ADDR], ["egress"], mqtt_port=port, speaker=speaker)
    if gshut:
        text = econf.read_text().replace("[bgp]\n", f"[bgp]\ngraceful_shutdown = {gshut}\n", 1)
        econf.write_text(text)
    esock = start_cand(topo, e, econf, tmp, "e")
    iconf = cand_toml(tmp, "i", I_ADDR, [E_ADDR], ["ingress"], speaker=speaker)
    isock = start_cand(topo, i, iconf, tmp, "i")
    return e, i, ii, port, esock, isock


def announcing_sessions(dump: subprocess.Popen[bytes], pcap: Path) -> list[Any]:
    """The egress's sessions in the capture, once it is complete. Connections that lost a
    collision carry no route: only those that announced count."""
    time.sleep(0.3)
    dump.terminate()
    dump.wait(5)
    sessions = [s for s in sent_by(pcap, E_ADDR) if any(m.announced for m in s)]
    assert sessions, "no announcement from the egress on the wire"
    return sessions


@pytest.mark.parametrize("speaker", SPEAKERS)
def test_stop_withdraws_on_the_wire_before_the_session_closes(
    topo: Topology, tmp_path: Path, speaker: str
) -> None:
    e, i, ii, port, esock, isock = pair(topo, tmp_path, speaker)
    egress_cand = topo.procs[-2]
    pcap = tmp_path / "i.pcap"
    dump = capture(topo, i, ii, pcap)

    async def main() -> float:
        await wait_api(isock)
        await wait_api(esock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await follow(isock, STEPS[:1], agent)
        assert children_in(e, CHILD[speaker]), f"no {CHILD[speaker]} running in the egress"
        t0 = time.monotonic()
        egress_cand.send_signal(signal.SIGTERM)
        while view(await received(isock)):
            # graceful restart is 30 s in these configs: a path kept as stale would stay that long
            assert time.monotonic() - t0 < 10, "the ingress still holds the stopped egress's path"
            await asyncio.sleep(0.02)
        return time.monotonic() - t0

    took = asyncio.run(main())
    rc = egress_cand.wait(20)
    print(f"{speaker}: ingress dropped the path {took * 1000:.0f} ms after SIGTERM")
    assert rc == 0, (tmp_path / "e.log").read_text()[-3000:]
    assert children_in(e, CHILD[speaker]) == [], f"{CHILD[speaker]} outlived a stopped cand"
    sessions = announcing_sessions(dump, pcap)
    for s in sessions:
        end = next((k for k, m in enumerate(s) if m.kind in ("notification", "close")), None)
        assert end is not None, f"the egress never closed its session: {s}"
        assert any(m.withdrawn for m in s[:end]), f"no withdrawal before the session closed: {s}"


@pytest.mark.parametrize("speaker", SPEAKERS)
def test_stop_announces_graceful_shutdown_before_withdrawing(
    topo: Topology, tmp_path: Path, speaker: str
) -> None:
    """With bgp.graceful_shutdown, a stop marks every path GRACEFUL_SHUTDOWN first: on the
    wire the marked announcement comes before the withdrawal, which comes before the
    session ends, and the ingress held the marked path before it dropped it."""
    e, i, ii, port, esock, isock = pair(topo, tmp_path, speaker, gshut=GSHUT)
    egress_cand = topo.procs[-2]
    pcap = tmp_path / "i.pcap"
    dump = capture(topo, i, ii, pcap)

    async def main() -> list[bool]:
        await wait_api(isock)
        await wait_api(esock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await follow(isock, STEPS[:1], agent)
        t0 = time.monotonic()
        egress_cand.send_signal(signal.SIGTERM)
        marks = []
        while routes := await received(isock):
            marks.append(any(r.get("graceful_shutdown") for r in routes))
            assert time.monotonic() - t0 < 20, "the ingress still holds the stopped egress's path"
            await asyncio.sleep(0.02)
        return marks

    marks = asyncio.run(main())
    rc = egress_cand.wait(30)
    assert rc == 0, (tmp_path / "e.log").read_text()[-3000:]
    assert any(marks), "the ingress never held the path marked GRACEFUL_SHUTDOWN"
    assert not marks[0], "marked before the stop"
    assert "event=bgp_graceful_shutdown" in (tmp_path / "e.log").read_text()
    sessions = announcing_sessions(dump, pcap)
    for s in sessions:
        kinds = [m.kind + ("+gshut" if m.gshut else "") for m in s if m.kind != "keepalive"]
        print(f"{speaker}: the egress sent {kinds}")
        marked = next((k for k, m in enumerate(s) if m.gshut), None)
        gone = next((k for k, m in enumerate(s) if m.withdrawn), None)
        end = next((k for k, m in enumerate(s) if m.kind in ("notification", "close")), None)
        assert marked is not None, f"no GRACEFUL_SHUTDOWN announcement: {s}"
        assert gone is not None and end is not None, f"no withdrawal, or no end: {s}"
        assert marked < gone < end, s
        assert any(m.announced and not m.gshut for m in s[:marked]), "first announced unmarked"


@pytest.mark.parametrize("speaker", SPEAKERS)
def test_restart_withdraws_nothing_and_the_new_daemon_takes_over(
    topo: Topology, tmp_path: Path, speaker: str
) -> None:
    e, i, ii, port, esock, isock = pair(topo, tmp_path, speaker)
    egress_cand = topo.procs[-2]
    pcap = tmp_path / "i.pcap"
    dump = capture(topo, i, ii, pcap)
    views: list[Any] = []

    async def watch_until(done: asyncio.Task[Any]) -> None:
        while not done.done():
            views.append(view(await received(isock)))
            await asyncio.sleep(0.05)

    async def main() -> tuple[int | None, int | None]:
        await wait_api(isock)
        await wait_api(esock)
        agent = AgentProcess(topo, e, port, SERVICE, BINDING)
        await follow(isock, STEPS[:1], agent)
        before = (await request(esock, "status"))["speaker"].get("gobgpd_pid")
        restart = asyncio.create_task(
            asyncio.to_thread(topo.exec, e, *_cand("restart", "--socket", str(esock)), check=True)
        )
        await watch_until(restart)
        await restart
        settle = asyncio.create_task(asyncio.sleep(3))
        await watch_until(settle)
        st = await request(esock, "status")
        assert st["uptime"] < 30
        await asyncio.to_thread(agent.say, "report cpu=0.5")
        await follow(isock, [("report cpu=0.5", (("up", 500, 5, BINDING),))], agent)
        return before, st["speaker"].get("gobgpd_pid")

    before, after = asyncio.run(main())
    assert egress_cand.poll() is None, "cand did not come back in place"
    assert views
    assert all(v == (("up", 300, 7, BINDING),) for v in views), set(views)
    if speaker == "gobgp":
        assert before is not None and after == before, "gobgpd did not survive the restart"
    time.sleep(0.3)
    dump.terminate()
    dump.wait(5)
    sent = [m for s in sent_by(pcap, E_ADDR) for m in s]
    assert any(m.announced for m in sent)
    assert not any(m.withdrawn for m in sent), f"a restart withdrew on the wire: {sent}"


def _cand(*args: str) -> list[str]:
    from cand_testbed.routers import CAND

    return [*CAND, *args]
