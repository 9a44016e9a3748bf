"""`cand reload` and SIGHUP against a real daemon and a real mosquitto: what changed is applied
in place, a bad file changes nothing, what needs a restart is named."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cand import config as configmod
from cand.agent import MetricAgent
from cand.api import ApiError, request
from cand.engine import Advertise, InstanceReported, RemoveService, Withdraw
from tests.conftest import Broker, stop
from tests.integration.harness import running

pytestmark = pytest.mark.broker

WEB, APP = "2001:db8:5::1", "2001:db8:5::2"
B1, B2 = "2001:db8:a::1", "2001:db8:a::2"


def toml(tmp: Path, broker: Broker, services: list[str], extra: str = "", policy: str = "") -> str:
    svc = "".join(
        f'[[services]]\nsid = "{s}"\nname = "s{i}"\n{policy}\n' for i, s in enumerate(services)
    )
    return f"""
[router]
id = "fc00:ff::2"
roles = ["ingress", "egress"]
locator = "fc00:0:2::/48"

[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive = 5

[api]
socket = "{tmp / "cand.sock"}"

[prometheus]
listen = ""

[log]
level = "info"
{extra}
{svc}"""


def local(daemon, service: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(k.binding) for k in daemon.engine.rib.local if str(k.service) == service]


def test_services_added_and_removed_in_place(broker: Broker, tmp_path: Path) -> None:
    conf = tmp_path / "cand.toml"
    conf.write_text(toml(tmp_path, broker, [WEB]))

    async def main() -> None:
        cfg = configmod.load(conf)
        async with running(cfg, conf) as (daemon, rec):
            sock = cfg.api.socket
            async with (
                MetricAgent(broker.url, WEB, B1) as web,
                MetricAgent(broker.url, APP, B2) as app,
            ):
                await web.report(cpu=0.2)
                await app.report(cpu=0.3)  # not configured yet: not heard
                await rec.wait_for(lambda r: local(daemon, WEB))
                assert local(daemon, APP) == []
                conf.write_text(toml(tmp_path, broker, [WEB, APP]))
                done = await request(sock, "reload")
                assert done["changed"] == ["services"] and done["needs_restart"] == []
                # subscribed on reload: the retained report arrives without a new one
                await rec.wait_for(lambda r: local(daemon, APP), what="app heard after reload")
                assert APP in {e["service"] for e in await request(sock, "services")}

                conf.write_text(toml(tmp_path, broker, [APP]))
                await request(sock, "reload")
                await rec.wait_for(
                    lambda r: [w for w in r.of(Withdraw) if str(w.key.service) == WEB],
                    timeout=15,
                    what="web's instance withdrawn",
                )
                assert local(daemon, WEB) == [] and local(daemon, APP) == [B2]
                assert [r for r in rec.of(RemoveService) if str(r.service) == WEB]
                n = len(rec.of(InstanceReported))
                await web.report(cpu=0.4)  # unsubscribed: this never reaches the engine
                await app.report(cpu=0.5)
                await rec.wait_for(lambda r: len(r.of(InstanceReported)) > n)
                await asyncio.sleep(0.3)
                assert all(str(e.key.service) == APP for e in rec.of(InstanceReported)[n:])
                assert daemon.counters["reloads"] == 2

    asyncio.run(main())


def test_changed_metric_weights_rescore_at_once(broker: Broker, tmp_path: Path) -> None:
    """A reload that changes `[services.metrics]` scores the instances already known again,
    from their last report: the new L2 is in the RIB and advertised with no new report."""
    conf = tmp_path / "cand.toml"
    metrics = '\n[services.metrics]\ncomposition = "mean"\n'
    conf.write_text(toml(tmp_path, broker, [WEB]) + metrics)

    def l2(daemon) -> list[int]:  # type: ignore[no-untyped-def]
        return [e.route.metrics.l2 for e in daemon.engine.rib.local.values()]

    async def main() -> None:
        cfg = configmod.load(conf)
        async with running(cfg, conf) as (daemon, rec):
            # no heartbeat during the test: whatever changes, no report of the agent did it
            async with MetricAgent(broker.url, WEB, B1, expiry=600.0, heartbeat=300.0) as web:
                # computing t 0.1, service t 0.9: their mean 0.5 scores 5
                await web.report(cpu=0.1, sessions=9, max_sessions=10)
                await rec.wait_for(lambda r: l2(daemon) == [5], what="scored 5")
                reports = len(rec.of(InstanceReported))
                conf.write_text(
                    toml(tmp_path, broker, [WEB]) + metrics + "weights = { computing = 3 }\n"
                )
                done = await request(cfg.api.socket, "reload")
                assert done["changed"] == ["services"]
                # (3 * 0.1 + 0.9) / 4 = 0.3 scores 7: same band, same load, only the reload
                await rec.wait_for(
                    lambda r: [a for a in r.of(Advertise) if a.route.metrics.l2 == 7],
                    what="the re-scored instance advertised",
                )
                assert l2(daemon) == [7] and daemon.engine.counters["rescored"] == 1
                assert len(rec.of(InstanceReported)) == reports  # no new report did it

    asyncio.run(main())


def test_a_bad_file_is_refused_and_what_needs_a_restart_is_named(
    broker: Broker, tmp_path: Path
) -> None:
    conf = tmp_path / "cand.toml"
    good = toml(tmp_path, broker, [WEB])
    conf.write_text(good)

    async def main() -> None:
        cfg = configmod.load(conf)
        async with running(cfg, conf) as (daemon, _):
            sock = cfg.api.socket
            conf.write_text(good.replace('name = "s0"', 'name = "s0"\npolicy = "fastest"'))
            with pytest.raises(ApiError, match=r"(?s)reload refused.*services\[0\]\.policy"):
                await request(sock, "reload")
            conf.write_text(good.replace("keepalive = 5", "keepalive = 5000000"))
            with pytest.raises(ApiError, match=r"mqtt\.keepalive"):
                await request(sock, "reload")
            assert daemon.config == cfg and daemon.counters["reloads_refused"] == 2
            changed = good.replace("keepalive = 5", "keepalive = 7").replace(
                "[log]", "[damping]\nhalf_life = 30.0\n\n[log]"
            )
            conf.write_text(changed)
            done = await request(sock, "reload")
            assert done == {"changed": ["damping"], "needs_restart": ["mqtt"], "services": [WEB]}
            assert daemon.config.mqtt == cfg.mqtt  # kept as it runs
            assert daemon.engine.damper.params.half_life == 30.0

    asyncio.run(main())


def test_sighup_reloads_a_running_cand(broker: Broker, tmp_path: Path) -> None:
    conf = tmp_path / "cand.toml"
    conf.write_text(toml(tmp_path, broker, [WEB]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cand.cli", "run", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    sock = tmp_path / "cand.sock"

    async def status() -> dict[str, object]:
        for _ in range(100):
            try:
                got: dict[str, object] = await request(sock, "status")
                return got
            except ApiError:
                await asyncio.sleep(0.1)
        raise AssertionError("cand did not answer")

    try:
        asyncio.run(status())
        conf.write_text(toml(tmp_path, broker, [WEB, APP]))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = asyncio.run(status())
            if st["daemon"]["reloads"] == 1:  # type: ignore[index]
                break
            time.sleep(0.1)
        assert st["services"] == 2 and proc.poll() is None
    finally:
        stop(proc)
