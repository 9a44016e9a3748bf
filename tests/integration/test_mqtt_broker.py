"""Metric agent -> mosquitto -> daemon, with every process real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cand.agent import MetricAgent, SyncMetricAgent
from cand.api import request
from cand.engine import Advertise, InstanceReported, MetricsReachable, Withdraw
from cand.model import InstanceState
from cand.wire import mqtt as wire
from tests.conftest import Broker, stop
from tests.helpers import SVC, bid, key
from tests.integration.harness import daemon_config, running

pytestmark = pytest.mark.broker

SERVICE, BINDING = "2001:db8:5::1", "2001:db8:a::1"


def reports(rec, state=None):  # type: ignore[no-untyped-def]
    return [e for e in rec.of(InstanceReported) if state is None or e.state is state]


def mqtt_table(b: Broker, **extra: object) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": b.port, "keepalive": 5, **extra}


def test_report_reaches_the_rib_and_the_api(broker: Broker, tmp_path: Path) -> None:
    async def main() -> None:
        cfg = daemon_config(tmp_path, mqtt=mqtt_table(broker))
        async with running(cfg) as (daemon, rec):
            async with MetricAgent(broker.url, SERVICE, BINDING, capacity=50) as agent:
                await agent.report(cpu=0.4, sessions=3)
                await rec.wait_for(lambda r: any(e.metrics.cpu == 0.4 for e in reports(r)))
                assert key(1) in daemon.engine.rib.local
                adv = [e for e in rec.of(Advertise) if e.route.metrics.cpu == 0.4]
                assert adv and adv[0].route.sid is not None
                services = await request(cfg.api.socket, "services")
                assert services[0]["instances"][0]["binding"] == BINDING
                assert services[0]["instances"][0]["weight"] == 1000
                status = await request(cfg.api.socket, "status")
                assert status["metric_sources"][0]["accepted"] >= 1
            # clean exit: `down` published by the agent itself
            await rec.wait_for(lambda r: reports(r, InstanceState.DOWN))
            assert key(1) not in daemon.engine.rib.local
            assert rec.of(Withdraw)

    asyncio.run(main())


AGENT = """
import asyncio, sys
from cand.agent import MetricAgent
async def main():
    async with MetricAgent(sys.argv[1], sys.argv[2], sys.argv[3], expiry=60) as a:
        await a.report(cpu=0.3)
        await a.wait_published(1)
        print("ready", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_kill_9_fires_the_last_will(broker: Broker, tmp_path: Path) -> None:
    async def main() -> None:
        cfg = daemon_config(tmp_path, mqtt=mqtt_table(broker))
        async with running(cfg) as (daemon, rec):
            proc = subprocess.Popen(
                [sys.executable, "-c", AGENT, broker.url, SERVICE, BINDING],
                stdout=subprocess.PIPE,
            )
            try:
                assert proc.stdout is not None
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line.strip() == b"ready"
                await rec.wait_for(lambda r: reports(r, InstanceState.UP))
                killed = time.monotonic()
                os.kill(proc.pid, signal.SIGKILL)
                await rec.wait_for(lambda r: r.of(Withdraw), timeout=5)
                took = next(t for t, e in rec.effects if isinstance(e, Withdraw)) - killed
                print(f"kill -9 -> withdraw: {took * 1000:.1f} ms")
                assert key(1) not in daemon.engine.rib.local
            finally:
                stop(proc, signal.SIGKILL)

    asyncio.run(main())


def test_broker_restart_resyncs_without_flapping(broker: Broker, tmp_path: Path) -> None:
    async def main() -> None:
        cfg = daemon_config(tmp_path, mqtt=mqtt_table(broker, default_expiry=30))
        async with running(cfg) as (daemon, rec):
            async with MetricAgent(broker.url, SERVICE, BINDING, heartbeat=0.5) as agent:
                await agent.report(cpu=0.2)
                await rec.wait_for(lambda r: reports(r, InstanceState.UP))
                broker.stop()
                await rec.wait_for(lambda r: [e for e in r.of(MetricsReachable) if not e.reachable])
                await asyncio.sleep(1.0)
                broker.start()  # same port, same persistence directory
                await rec.wait_for(
                    lambda r: len([e for e in r.of(MetricsReachable) if e.reachable]) >= 2,
                    timeout=15,
                )
                n = len(reports(rec))
                await agent.report(cpu=0.6)
                await rec.wait_for(
                    lambda r: len(reports(r)) > n and reports(r)[-1].metrics.cpu == 0.6, timeout=15
                )
                # never withdrawn, never down, during the outage and after it
                assert rec.of(Withdraw) == []
                # the only downs are wills held back by the engine, never a plain down
                assert [r for r in reports(rec, InstanceState.DOWN) if r.hold == 0] == []
                assert key(1) in daemon.engine.rib.local
                # the broker did publish our will on shutdown: it was recognised and not applied
                st = daemon.engine.counters
                assert st["wills_discarded"] + st["wills_cancelled"] >= 1, st
                assert st["wills_applied"] == 0

    asyncio.run(main())


def test_acl_stops_a_rogue_instance(broker_factory: type[Broker], tmp_path: Path) -> None:
    web1 = wire.topic(key(1))
    web2 = wire.topic(key(2))
    b = broker_factory(
        users={"cand": "daemon-pw", "web-1": "pw1", "web-2": "pw2"},
        acl=[
            "user cand",
            "topic read dyncast/v1/#",
            "user web-1",
            f"topic write {web1}",
            "user web-2",
            f"topic write {web2}",
        ],
    )
    b.start()

    async def main() -> None:
        cfg = daemon_config(tmp_path, mqtt=mqtt_table(b, username="cand", password="daemon-pw"))
        async with running(cfg) as (daemon, rec):
            async with MetricAgent(b.url_for("web-1"), SERVICE, BINDING) as honest:
                await honest.report(cpu=0.1)
                await rec.wait_for(lambda r: reports(r))
                # web-2 tries to publish web-1's metrics (and a fake will) with a huge seq
                from cand.model import Metrics
                from cand.mqtt_client import BrokerSettings, make_client

                rogue = BrokerSettings.from_url(b.url_for("web-2"))
                async with make_client(rogue) as c:
                    fake = wire.encode(InstanceState.UP, Metrics(cpu=0.99), wire.MAX_SEQ, 1.0)
                    await c.publish(web1, fake, qos=1, retain=True)
                    await c.publish(web1, b"garbage", qos=1)
                # and the daemon's own credential cannot write
                async with make_client(BrokerSettings.from_url(b.url_for("cand"))) as c:
                    await c.publish(web1, fake, qos=1, retain=True)
                await honest.report(cpu=0.2)  # a marker that comes after the rogue attempts
                await rec.wait_for(lambda r: any(e.metrics.cpu == 0.2 for e in reports(r)))
                assert all(e.metrics.cpu in (0.1, 0.2) for e in reports(rec))
                assert daemon.engine.rib.local[key(1)].route.metrics.cpu == 0.2
                assert daemon.adapters.sources[0].status()["dropped"] == 0

    asyncio.run(main())


def test_sync_agent_and_draining(broker: Broker, tmp_path: Path) -> None:
    async def main() -> None:
        cfg = daemon_config(tmp_path, mqtt=mqtt_table(broker))
        async with running(cfg) as (daemon, rec):

            def service_thread() -> None:
                with SyncMetricAgent(broker.url, SERVICE, str(bid(2))) as agent:
                    agent.report(cpu=0.5)
                    agent.draining()
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline and agent.published < 2:
                        time.sleep(0.02)

            await asyncio.to_thread(service_thread)
            await rec.wait_for(lambda r: reports(r, InstanceState.DOWN))
            states = [e.state for e in reports(rec) if e.key == key(2)]
            assert InstanceState.DRAINING in states
            assert states[-1] is InstanceState.DOWN

    asyncio.run(main())


def test_garbage_on_the_bus_is_counted_never_fatal(broker: Broker, tmp_path: Path) -> None:
    async def main() -> None:
        from cand.mqtt_client import BrokerSettings, make_client

        cfg = daemon_config(tmp_path, mqtt=mqtt_table(broker))
        async with running(cfg) as (daemon, rec):
            async with make_client(BrokerSettings.from_url(broker.url)) as c:
                t = wire.topic(key(3))
                for raw in (b"{", b"[]", b'{"v":9}', b"\x00" * 5000, json.dumps({"v": 1}).encode()):
                    await c.publish(t, raw, qos=1)
                await c.publish(f"dyncast/v1/{SVC}/not-an-ip", b"{}", qos=1)
            async with MetricAgent(broker.url, SERVICE, str(bid(3))) as agent:
                await agent.report(cpu=0.3)
                await rec.wait_for(lambda r: reports(r))
            st = daemon.adapters.sources[0].status()
            assert st["dropped"] == 6, st
            assert st["dropped_too_large"] == 1 and st["dropped_address"] == 1

    asyncio.run(main())


def test_prometheus_endpoint_counts_drops(broker: Broker, tmp_path: Path) -> None:
    import urllib.request

    from tests.conftest import free_port

    port = free_port()

    async def main() -> None:
        cfg = daemon_config(
            tmp_path, mqtt=mqtt_table(broker), prometheus={"listen": f"127.0.0.1:{port}"}
        )
        async with running(cfg) as (daemon, rec):
            from cand.mqtt_client import BrokerSettings, make_client

            async with make_client(BrokerSettings.from_url(broker.url)) as c:
                await c.publish(wire.topic(key(4)), b"nope", qos=1)
            async with MetricAgent(broker.url, SERVICE, str(bid(4))) as agent:
                await agent.report(cpu=0.1)
                await rec.wait_for(lambda r: reports(r))
            url = f"http://127.0.0.1:{port}/metrics"
            text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())).decode()
            assert 'cand_metric_messages_dropped_total{reason="not_json",source="0"} 1.0' in text
            assert "cand_engine_events_total" in text

    asyncio.run(main())
