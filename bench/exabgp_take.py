"""How fast ExaBGP takes cand's announcements: N D-SIDs x M instances as the commands cand's
ExaBGP speaker writes, from ExaBGP's own API process, until it has answered the last one.

    .venv/bin/python -m bench.exabgp_take [--services 1000] [--instances 12] [--profile]

No namespace and no session: ExaBGP's one neighbour is passive and never comes, so what is
timed is ExaBGP parsing the commands into its adj-RIB-out (what bench.route_scale's "feed"
is for ExaBGP, without the receiver). Baseline in the same run: the same ExaBGP started as
cand started it before `cand.adapters.exabgp_run` (its `exabgp` program, log level INFO).
ExaBGP's CPU time is read from /proc as well, so the per-path cost does not depend on what
else the machine runs. `--profile` records each with py-spy (flame graphs in bench/results/).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, py_spy, save, table

CONF = """process feed {{
    run {python} -m bench.exabgp_take --feeder {services} {instances} {result};
    encoder json;
}}
neighbor 127.0.0.2 {{
    router-id 10.0.0.3;
    local-address 127.0.0.1;
    local-as 65000;
    peer-as 65000;
    passive true;
    manual-eor true;
    family {{ ipv6 unicast; }}
    capability {{ add-path send/receive; }}
    api {{ processes [ feed ]; }}
}}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def feeder(services: int, instances: int, result: Path) -> None:
    """ExaBGP's API process: writes the commands 512 at a time (as the speaker does), counts
    the answers, writes the figures to `result` and waits to be ended."""
    from bench.route_feed import routes
    from cand.adapters.exabgp import SEND_CHUNK, commands

    rs = routes("fc00:a::3", services, instances)
    lines = [f"{c}\n".encode() for r in rs for c in commands(r, 65000, 48, 0, [], [])]
    time.sleep(1.0)  # ExaBGP finishes starting
    exabgp = os.getppid()
    cpu0, start = cpu_seconds(exabgp), time.monotonic()
    pending, sent, answered, errors, buf = b"", 0, 0, 0, b""
    os.set_blocking(1, False)
    while answered < len(lines):
        if not pending and sent < len(lines):
            pending = b"".join(lines[sent : sent + SEND_CHUNK])
            sent += SEND_CHUNK
        readable, writable, _ = select.select([0], [1] if pending else [], [], 5.0)
        if writable:
            with contextlib.suppress(BlockingIOError):
                pending = pending[os.write(1, pending) :]
        if readable:
            data = os.read(0, 1 << 16)
            if not data:
                break
            *done, buf = (buf + data).split(b"\n")
            answered += sum(1 for d in done if d.strip() in (b"done", b"error"))
            errors += sum(1 for d in done if d.strip() == b"error")
    took = time.monotonic() - start
    cpu = cpu_seconds(exabgp) - cpu0
    result.write_text(f"{len(lines)} {answered} {errors} {took} {cpu}\n")
    time.sleep(3600)


def one(how: str, services: int, instances: int, profile: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cand-exabgp-take-") as d:
        tmp = Path(d)
        result = tmp / "result"
        conf = tmp / "exabgp.conf"
        conf.write_text(
            CONF.format(
                python=sys.executable, services=services, instances=instances, result=result
            )
        )
        env = dict(os.environ)
        env.update(
            exabgp_api_ack="true",
            exabgp_daemon_user="root" if os.geteuid() == 0 else os.environ.get("USER", ""),
            exabgp_daemon_drop="false",
            exabgp_log_destination=str(tmp / "exabgp.log"),
            exabgp_tcp_bind="",
            exabgp_log_level="INFO" if how == "before" else "WARNING",
        )
        cwd = Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
        tuned = [sys.executable, "-m", "cand.adapters.exabgp_run"]
        program = [str(Path(sys.executable).parent / "exabgp")] if how == "before" else tuned
        with open(tmp / "exabgp.out", "wb") as out:
            proc = subprocess.Popen([*program, str(conf)], env=env, cwd=cwd, stdout=out, stderr=out)
        spy = None
        try:
            if profile is not None:
                spy = py_spy(proc.pid, profile, 100)
            deadline = time.monotonic() + 600
            while not result.exists() or not result.read_text().endswith("\n"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = (tmp / "exabgp.out").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{how}: ExaBGP ended or took too long: {said}")
                time.sleep(0.1)
        finally:
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        commands, answered, errors, took, cpu = result.read_text().split()
    n = int(commands)
    return {
        "how": how,
        "program": program,
        "commands": n,
        "answered": int(answered),
        "errors": int(errors),
        "seconds": float(took),
        "paths_per_s": n / float(took),
        "exabgp_cpu_s": float(cpu),
        "exabgp_us_per_path": float(cpu) / n * 1e6,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--feeder":
        feeder(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=12)
    ap.add_argument("--profile", action="store_true", help="py-spy flame graph of each ExaBGP")
    ap.add_argument("--out", default="exabgp_take", help="results name in bench/results/")
    a = ap.parse_args()
    rows = []
    for how in ("before", "after"):
        prof = RESULTS / f"{a.out}_{how}.svg" if a.profile else None
        rows.append(one(how, a.services, a.instances, prof))
    before, after = rows
    ratio = after["paths_per_s"] / before["paths_per_s"]
    cpu_ratio = before["exabgp_us_per_path"] / max(after["exabgp_us_per_path"], 1e-9)
    print(f"ExaBGP takes {a.services} D-SIDs x {a.instances} instances from its API process")
    print(
        table(
            ("ExaBGP", "commands", "errors", "seconds", "paths/s", "ExaBGP CPU us/path"),
            [
                [r[k] for k in ("how", "commands", "errors", "seconds", "paths_per_s")]
                + [r["exabgp_us_per_path"]]
                for r in rows
            ],
        )
    )
    print(f"ratio after/before: {ratio:.2f} (paths/s), {cpu_ratio:.2f} (CPU per path)")
    path = save(
        a.out,
        {
            "command": "python -m bench.exabgp_take " + " ".join(sys.argv[1:]),
            "rows": rows,
            "ratio_paths_per_s": ratio,
            "ratio_cpu_per_path": cpu_ratio,
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
