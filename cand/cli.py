"""`cand`: the daemon, its show commands, config checks, the sidecar agent and the labs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from cand import __version__, show
from cand import config as configmod
from cand.plugins import PluginNotFound

SHOW = ("status", "routes", "services", "bindings")
DEFAULT_SOCKET = Path("/run/cand/cand.sock")

RUN_EPILOG = """\
how cand ends, as peers and flows see it:
  SIGTERM, SIGINT, `cand stop`
      stop: the metric sources stop, every path is withdrawn and cand waits until the peers
      have the withdrawals, then the speaker (gobgpd, ExaBGP) is stopped. Ingresses stop
      sending new flows here at once; established flows keep going (the kernel state stays).
      A second signal stops at once, like kill -9.
  SIGUSR1, `cand restart`
      restart in place (same pid, new code): nothing is withdrawn; gobgpd keeps its sessions
      and the new cand adopts its paths and the kernel state; ExaBGP is ended without a
      NOTIFICATION, so peers keep its paths under graceful restart. No flow moves.
  SIGHUP, `cand reload`
      read the config file again and apply it in place: services added, removed or changed,
      policies, damping, costs, limits and the log level; no flow moves. A file that does
      not validate is refused and the running configuration stays. [[bgp.neighbors]] are
      changed in place with either speaker (only the sessions that changed are touched).
      Other changes to [router], [mqtt], [bgp], [dataplane], [api] and [prometheus] are
      reported as needing `cand restart`.
  kill -9
      nothing is withdrawn; gobgpd (its own session) keeps running and is adopted by the next
      cand; ExaBGP loses its process and is ended by the next cand; peers keep the paths
      under graceful restart. Established flows keep going.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cand", description="compute-aware anycast daemon")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the daemon",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=RUN_EPILOG,
    )
    run.add_argument("-c", "--config", required=True, type=Path)
    run.add_argument("--plan", action="store_true", help="validate and print the plan, then exit")

    for name, what in (
        ("stop", "stop the daemon: withdraw every path first (like SIGTERM)"),
        ("restart", "restart the daemon in place: nothing withdrawn, no flow moved (SIGUSR1)"),
        ("reload", "apply the config file again without a restart (SIGHUP)"),
    ):
        s = sub.add_parser(name, help=what)
        where = s.add_mutually_exclusive_group()
        where.add_argument("-s", "--socket", type=Path, help="the daemon's API socket")
        where.add_argument("-c", "--config", type=Path, help="take the socket from this config")

    val = sub.add_parser("validate", help="check a config file and exit (0 = OK)")
    val.add_argument("file", type=Path)

    sub.add_parser("version", help="print the version")
    sub.add_parser("schema", help="print the config file's JSON schema")

    for name in SHOW:
        s = sub.add_parser(name, help=f"show the running daemon's {name}")
        s.add_argument("--json", action="store_true", help="machine-readable output")
        where = s.add_mutually_exclusive_group()
        where.add_argument("-s", "--socket", type=Path, help="the daemon's API socket")
        where.add_argument("-c", "--config", type=Path, help="take the socket from this config")

    ag = sub.add_parser("agent", help="sidecar D-MA: report an unmodified service's load")
    ag.add_argument("--broker", required=True, help="mqtt://user:pass@host:port (or mqtts://)")
    ag.add_argument("--service", required=True, help="the D-SID")
    ag.add_argument("--binding", required=True, help="the instance's D-BID")
    target = ag.add_mutually_exclusive_group()
    target.add_argument("--pid", type=int, help="report this process's CPU and memory")
    target.add_argument("--cgroup", type=Path, help="report this cgroup v2's CPU and memory")
    ag.add_argument("--capacity", type=int, default=100)
    ag.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ag.add_argument("--expiry", type=float, default=30.0, help="MQTT message expiry, seconds")
    ag.add_argument("--password-file", type=Path, help="read the broker password from a file")

    acl = sub.add_parser("mqtt-acl", help="write the broker ACL that confines each instance")
    acl.add_argument("-c", "--config", required=True, type=Path)
    acl.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME=D-BID",
        help="a named broker credential that may report for this D-BID only (repeatable)",
    )
    acl.add_argument(
        "--cert-identity",
        action="store_true",
        help="TLS client certificates: a client reports only for the D-BID in its CN",
    )

    lab = sub.add_parser("lab", help="run containerlab topologies as network namespaces")
    lab.add_argument("action", choices=("up", "down", "exec", "list"))
    lab.add_argument("args", nargs=argparse.REMAINDER, help="PATH | NAME | NAME NODE [CMD...]")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(_dispatch(args) or 0)
    except configmod.ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except PluginNotFound as e:
        print(f"cand: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "version":
        print(f"cand {__version__}")
        return 0
    if cmd == "schema":
        print(json.dumps(configmod.json_schema(), indent=2))
        return 0
    if cmd == "validate":
        from cand.wiring import check

        cfg = configmod.load(args.file)
        check(cfg, str(args.file))
        print(f"{args.file}: OK ({len(cfg.services)} services, roles {','.join(cfg.router.roles)})")
        return 0
    if cmd == "run":
        return _run(args)
    if cmd in SHOW:
        return _show(args)
    if cmd in ("stop", "restart", "reload"):
        return _control(args)
    if cmd == "agent":
        return _agent(args)
    if cmd == "mqtt-acl":
        from cand import mqtt_acl

        try:
            named = [mqtt_acl.parse_instance(t) for t in args.instance]
            sys.stdout.write(
                mqtt_acl.render(configmod.load(args.config), named, args.cert_identity)
            )
        except mqtt_acl.AclError as e:
            print(f"cand mqtt-acl: {e}", file=sys.stderr)
            return 2
        return 0
    if cmd == "lab":
        from cand.lab.clab import main as lab_main

        return lab_main(args.action, args.args)
    raise AssertionError(cmd)


def _run(args: argparse.Namespace) -> int:
    from cand import log
    from cand.wiring import build_adapters, check, plan

    cfg = configmod.load(args.config)
    check(cfg, str(args.config))
    if args.plan:
        print(json.dumps(plan(cfg), indent=2))
        return 0
    log.configure(cfg.log.level, cfg.log.format)
    from cand.daemon import Daemon
    from cand.ports import StopMode

    async def _main() -> StopMode:
        daemon = Daemon(cfg, build_adapters(cfg), config_path=args.config)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None

        def on_signal(mode: StopMode) -> None:
            if daemon.stop_mode is not None:
                task.cancel()  # asked twice: stop now
            daemon.request_stop(mode)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, StopMode.STOP)
        loop.add_signal_handler(signal.SIGUSR1, on_signal, StopMode.RESTART)
        loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
        try:
            return await daemon.run()
        except asyncio.CancelledError:
            return StopMode.STOP

    mode = asyncio.run(_main())
    if mode is StopMode.RESTART:
        # Same pid, fresh interpreter: the new daemon adopts gobgpd and the kernel state.
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, sys.orig_argv)
    return 0


def _control(args: argparse.Namespace) -> int:
    from cand.api import ApiError, request

    sock = args.socket
    if sock is None:
        sock = configmod.load(args.config).api.socket if args.config else DEFAULT_SOCKET

    async def _main() -> None:
        if args.command == "reload":
            done = await request(sock, "reload")
            changed = ", ".join(done["changed"]) or "nothing"
            print(f"cand: reload: applied: {changed}")
            if done["needs_restart"]:
                print(f"cand: reload: needs `cand restart`: {', '.join(done['needs_restart'])}")
            return
        before = await request(sock, "status")
        await request(sock, args.command)
        if args.command == "stop":
            return
        # the same daemon comes back after its re-exec: wait until it answers again
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            await asyncio.sleep(0.2)
            with contextlib.suppress(ApiError):
                now = await request(sock, "status")
                if now["uptime"] < before["uptime"]:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise ApiError(f"the daemon did not come back on {sock} within 30 s")

    try:
        asyncio.run(_main())
    except ApiError as e:
        print(f"cand: {e}", file=sys.stderr)
        return 1
    print(f"cand: {args.command}: done")
    return 0


def _show(args: argparse.Namespace) -> int:
    from cand.api import ApiError, request

    sock = args.socket
    if sock is None:
        sock = configmod.load(args.config).api.socket if args.config else DEFAULT_SOCKET
    try:
        data: Any = asyncio.run(request(sock, args.command))
    except ApiError as e:
        print(f"cand: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(getattr(show, args.command)(data))
    return 0


def _agent(args: argparse.Namespace) -> int:
    from cand import log
    from cand.agent import CgroupCollector, MetricAgent, ProcessCollector
    from cand.agent.collect import Collector
    from cand.mqtt_client import BrokerSettings

    log.configure("info")
    settings = BrokerSettings.from_url(args.broker)
    if args.password_file:
        settings = replace(settings, password=args.password_file.read_text().strip())
    collector: Collector | None = None
    if args.pid:
        collector = ProcessCollector(args.pid)
    elif args.cgroup:
        collector = CgroupCollector(args.cgroup)

    async def _main() -> None:
        async with MetricAgent(
            settings,
            args.service,
            args.binding,
            capacity=args.capacity,
            expiry=args.expiry,
            collector=collector,
            collect_every=args.interval,
        ) as agent:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            while not stop.is_set() and agent.state.value != "down":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    asyncio.run(_main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
