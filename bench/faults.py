"""Faults under load: every connection accounted for while daemons, brokers, sessions, links
and instances fail in the Figure-2 lab (root; a few minutes).

    sudo .venv/bin/python -m bench.faults [--repeat 3] [--only NAME] [--speaker gobgp]
    sudo .venv/bin/python -m bench.faults --soak 30     # minutes of random faults

While c1 keeps long-lived connections to both services (one request every 0.2 s each) and
opens new ones at a steady rate, each fault is injected at a random moment, held, repaired,
and every connection is accounted for: established ones broken, new ones failed, new ones that
went to an instance the fault made dead or draining, and how long dr1's service table was
not what the fault called for. The baseline is the same load with no fault, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cand_testbed.faults import Fault, every_fault
from cand_testbed.fig2 import APP, INSTANCES, WEB, Fig2

from bench.common import RESULTS, need_netns, save, table
from cand.api import ApiError

D_BID = {name: binding for name, (_, binding, _) in INSTANCES.items()}


@dataclass
class Trial:
    fault: str
    injected: float = 0.0
    repaired: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    tables: list[tuple[float, dict[str, set[str]]]] = field(default_factory=list)
    error: str | None = None
    injected_wall: float | None = None
    """time.time() of the injection: to find it in the daemons' logs, which have wall time."""
    wall_offset: float = field(default_factory=lambda: time.time() - time.monotonic())
    """time.time() - time.monotonic() when the trial began: a table sample's wall time."""


def wanted(unusable: frozenset[str]) -> dict[str, set[str]]:
    """dr1's table as the fault calls for: every instance but the unusable ones."""
    out: dict[str, set[str]] = {WEB: set(), APP: set()}
    for name, (svc, binding, _) in INSTANCES.items():
        if name not in unusable:
            out[svc].add(binding)
    return out


async def usable(lab: Fig2) -> dict[str, set[str]]:
    return {s: {b for b, w in bs.items() if w > 0} for s, bs in (await lab.weights("dr1")).items()}


async def trial(lab: Fig2, fault: Fault | None, duration: float, rate: float, keep: int) -> Trial:
    t = Trial(fault.name if fault else "no fault (baseline)")
    load = lab.load("c1", [WEB, APP], rate=rate, keep=keep, duration=duration, every=0.2)
    start = time.monotonic()

    stop = asyncio.Event()

    async def watch() -> None:  # ends on `stop`, never by cancel: nothing can swallow that
        while not stop.is_set():
            with contextlib.suppress(ApiError):  # dr1's cand down: its kernel state steers
                t.tables.append((time.monotonic(), await usable(lab)))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        if fault is not None:
            await asyncio.sleep(random.uniform(1.5, max(1.6, duration - fault.hold - 4.0)))
            t.injected = time.monotonic()
            t.injected_wall = t.injected + t.wall_offset
            await fault.inject(lab)
            await asyncio.sleep(fault.hold)
            await fault.repair(lab)
            t.repaired = time.monotonic()
            await until_ready(lab)
    except (RuntimeError, OSError, ApiError, TimeoutError) as e:
        t.error = repr(e)
    finally:
        out, _ = await asyncio.to_thread(load.communicate)
        stop.set()
        await watcher
    t.rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if time.monotonic() - start < duration:
        t.error = t.error or "the load ended early"
    return t


async def until_ready(lab: Fig2, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await usable(lab) == wanted(frozenset()):
                return
        except ApiError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("dr1 did not steer to every instance again")
        await asyncio.sleep(0.1)


def empty_stretches(t: Trial) -> list[tuple[float, float]]:
    """When dr1's service table had a service steered to no instance (absent, or every
    weight 0): (first, last) sample of each such stretch, monotonic seconds."""
    out: list[tuple[float, float]] = []
    open_at: float | None = None
    last = 0.0
    for at, tab in t.tables:
        if any(not tab.get(s) for s in (WEB, APP)):
            if open_at is None:
                open_at = at
            last = at
        elif open_at is not None:
            out.append((open_at, last))
            open_at = None
    if open_at is not None:
        out.append((open_at, last))
    return out


def account(t: Trial, fault: Fault | None) -> dict[str, Any]:
    """One trial's connections, by outcome."""
    long_conns = {r["conn"] for r in t.rows if r["kind"] == "long"}
    broken = {r["conn"] for r in t.rows if r["kind"] == "long" and r["served_by"] is None}
    new = [r for r in t.rows if r["kind"] == "new"]
    failed = [r for r in new if r["served_by"] is None]
    bad_names = fault.unusable if fault else frozenset()
    # a new flow may still reach the instance until cand has noticed (the failure target)
    to_bad = [
        r for r in new
        if r["served_by"] in bad_names and t.injected <= r["at"] <= t.repaired
    ]  # fmt: skip
    want = wanted(bad_names)
    bad = {D_BID[n] for n in bad_names}

    def wrong(tab: dict[str, set[str]]) -> bool:
        """Weight on an instance the fault made unusable, or none for a service that has a
        usable one (a policy may weigh fewer than all: min-cost picks one)."""
        return any(tab.get(s, set()) & bad or (want[s] and not tab.get(s)) for s in want)

    window = [(at, tab) for at, tab in t.tables if t.injected and t.injected <= at <= t.repaired]
    right_after = None
    if bad_names:  # wrong until cand notices: how long, then it must stay right
        first = next((i for i, (_, tab) in enumerate(window) if not wrong(tab)), None)
        if first is not None:
            right_after = (window[first][0] - t.injected) * 1000
            window = window[first:]
    wrong_samples = [at for at, tab in window if wrong(tab)]
    empty = empty_stretches(t)
    since = t.injected or (t.tables[0][0] if t.tables else 0.0)
    return {
        "fault": t.fault,
        "control_plane": fault.control_plane if fault else True,
        "established": len(long_conns),
        "established_broken": len(broken),
        "new": len(new),
        "new_failed": len(failed),
        # per D-SID, [new, failed]: a service whose new connections went missing shows here
        "new_by_dsid": {
            d: [sum(r.get("dsid") == d for r in new), sum(r.get("dsid") == d for r in failed)]
            for d in (WEB, APP)
        },
        "new_to_unusable": len(to_bad),
        # when each failed new connection started, in s from the injection (its `at` is when
        # the client gave up, 3 s after a connect timed out): which part of a fault hurt
        "new_failed_at": [
            round(r["at"] - (r.get("ms") or 0) / 1000 - t.injected, 2) if t.injected else None
            for r in failed
        ],
        "ms_until_steering_right": right_after,
        "table_samples_wrong": len(wrong_samples),
        "injected_wall": round(t.injected_wall, 3) if t.injected_wall is not None else None,
        # wall time of the first sample with a service steered to nothing, or None; each
        # stretch as (from, to) in s from the injection (from the first sample: baseline)
        "empty_at": round(empty[0][0] + t.wall_offset, 3) if empty else None,
        "empty_stretches": [(round(a - since, 2), round(b - since, 2)) for a, b in empty],
        "error": t.error,
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["fault"], []).append(r)
    out = []
    for name, rs in by.items():
        ms = [r["ms_until_steering_right"] for r in rs if r["ms_until_steering_right"] is not None]
        out.append(
            {
                "fault": name,
                "control_plane": rs[0]["control_plane"],
                "runs": len(rs),
                "established_broken": sum(r["established_broken"] for r in rs),
                "established": sum(r["established"] for r in rs),
                "new_failed": sum(r["new_failed"] for r in rs),
                "new": sum(r["new"] for r in rs),
                "new_to_unusable": sum(r["new_to_unusable"] for r in rs),
                "max_ms_until_steering_right": max(ms) if ms else None,
                "runs_steered_to_none": sum(1 for r in rs if r.get("empty_at") is not None),
                "empty_stretches": sum(len(r.get("empty_stretches") or []) for r in rs),
                "errors": [r["error"] for r in rs if r["error"]],
            }
        )
    return out


def plot(t: Trial, path: Path) -> Path | None:
    """Connection outcomes over time for one trial: new connections per half second by when
    they started (served / failed), and the long-lived connections' requests (served / the
    request that found the connection broken), the fault shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return None

    def started(r: dict[str, Any]) -> float:
        return float(r["at"]) - float(r.get("ms") or 0) / 1000  # `at` is when it ended

    t0 = min(started(r) for r in t.rows)
    fig, (top, low) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    width = 0.5
    end = max(float(r["at"]) for r in t.rows) - t0
    edges = [i * width for i in range(int(end / width) + 2)]
    new = [r for r in t.rows if r["kind"] == "new"]
    ok = [started(r) - t0 for r in new if r["served_by"]]
    bad = [started(r) - t0 for r in new if not r["served_by"]]
    top.hist([ok, bad], bins=edges, stacked=True, color=["tab:green", "tab:red"],
             label=["served", "failed"])  # fmt: skip
    top.set_ylabel(f"new / {width:g} s")
    top.legend(loc="lower right", fontsize=8)
    conns = sorted({r["conn"] for r in t.rows if r["kind"] == "long"})
    row = {c: i for i, c in enumerate(conns)}
    for r in (r for r in t.rows if r["kind"] == "long"):
        x, y = started(r) - t0, row[r["conn"]]
        if r["served_by"]:
            low.plot(x, y, "|", color="tab:green", markersize=6)
        else:
            low.plot(x, y, "x", color="tab:red", markersize=8)
    low.set_yticks(range(len(conns)), [f"conn {c}" for c in conns], fontsize=7)
    low.set_ylabel("long-lived")
    low.set_xlabel("seconds (by when each connection or request started)")
    for ax in (top, low):
        if t.injected:
            ax.axvspan(t.injected - t0, t.repaired - t0, color="tab:orange", alpha=0.2)
    top.set_title(f"{t.fault}: every connection (red: failed), fault shaded")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def soak_sample(lab: Fig2, fault: str | None) -> dict[str, Any]:
    """dr1's cand now: RSS, open file descriptors, asyncio tasks (and its pid: a `kill -9
    cand (dr1)` starts a new process, whose figures start again)."""
    pid = lab.pids("dr1", "cand.cli run")[0]
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    tasks = asyncio.run(lab.api("dr1", "status")).get("tasks")
    return {
        "at": time.time(), "pid": pid, "after": fault, "rss_kb": rss, "fds": fds, "tasks": tasks,
        "load": os.getloadavg()[0],
    }  # fmt: skip


SOAK_FIGURES = ("rss_kb", "fds", "tasks")


def soak_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Start, end and max of each figure, over every sample and over the longest-lived
    process (the one a leak would show in: a restart starts from scratch)."""
    if not samples:
        return {}
    runs: dict[int, list[dict[str, Any]]] = {}
    for x in samples:
        runs.setdefault(x["pid"], []).append(x)
    longest = max(runs.values(), key=lambda r: r[-1]["at"] - r[0]["at"])

    def figures(xs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            k: {"start": xs[0][k], "end": xs[-1][k], "max": max(x[k] for x in xs)}
            for k in SOAK_FIGURES
        }

    loads = [x["load"] for x in samples]
    return {
        "minutes": round((samples[-1]["at"] - samples[0]["at"]) / 60, 1),
        "samples": len(samples),
        "processes": len(runs),
        "all": figures(samples),
        "longest_process": {
            "pid": longest[0]["pid"],
            "minutes": round((longest[-1]["at"] - longest[0]["at"]) / 60, 1),
            **figures(longest),
        },
        "load_average": {"min": min(loads), "mean": sum(loads) / len(loads), "max": max(loads)},
    }


def plot_soak(samples: list[dict[str, Any]], path: Path) -> Path | None:
    """dr1's RSS, file descriptors and tasks over the soak; a new pid is marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return None
    t0 = samples[0]["at"]
    mins = [(x["at"] - t0) / 60 for x in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True)
    labels = {"rss_kb": "RSS (MiB)", "fds": "open fds", "tasks": "asyncio tasks"}
    for ax, key in zip(axes, SOAK_FIGURES, strict=True):
        ys = [x[key] / 1024 if key == "rss_kb" else x[key] for x in samples]
        ax.plot(mins, ys, marker=".", color="tab:blue")
        ax.set_ylabel(labels[key])
        ax.set_ylim(bottom=0, top=max(ys) * 1.25 or 1)
        for i in range(1, len(samples)):
            if samples[i]["pid"] != samples[i - 1]["pid"]:
                ax.axvline(mins[i], color="tab:red", alpha=0.4, linestyle="--")
    axes[-1].set_xlabel("minutes (dashed: dr1's cand killed and restarted)")
    axes[0].set_title("dr1's cand over the soak, sampled after every fault")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(f"bench.faults: signal {signum}")  # so that `finally` takes the lab down


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", help="run only faults whose name contains one of these (a,b,..)")
    ap.add_argument("--speaker", default="gobgp", choices=("gobgp", "exabgp"))
    ap.add_argument("--duration", type=float, default=14.0, help="seconds of load per trial")
    ap.add_argument("--rate", type=float, default=10.0, help="new connections/s per D-SID")
    ap.add_argument("--keep", type=int, default=3, help="long-lived connections per D-SID")
    ap.add_argument("--soak", type=float, default=0.0, help="minutes of random faults")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--lab-name",
        help="the lab's own name (its namespaces are clab-NAME-*); default dyncast-fig2, "
        "or fig2-<random> for a soak, which then runs beside other copies of the lab",
    )
    ap.add_argument("--replot", type=Path, help="draw a results file's plotted trial again")
    a = ap.parse_args()
    if a.replot:
        got = json.loads(a.replot.read_text())["plotted"]
        again = Trial(got["fault"], got["injected"], got["repaired"], got["rows"])
        print(f"written: {plot(again, a.replot.with_suffix('.png'))}")
        return
    need_netns("bench.faults")
    random.seed(a.seed)
    only = a.only.split(",") if a.only else []
    faults = [f for f in every_fault(a.speaker) if not only or any(o in f.name for o in only)]
    name = a.lab_name or (f"fig2-{uuid.uuid4().hex[:6]}" if a.soak else None)
    signal.signal(signal.SIGTERM, _exit_on_term)
    signal.signal(signal.SIGHUP, _exit_on_term)
    lab = Fig2(a.speaker, name)
    rows: list[dict[str, Any]] = []
    soak: list[dict[str, Any]] = []
    try:
        lab.up()
        asyncio.run(lab.wait_ready())
        if a.soak:
            soak.append(soak_sample(lab, None))
        base = asyncio.run(trial(lab, None, a.duration, a.rate, a.keep))
        rows.append(account(base, None))
        shown: Trial | None = None
        plan = [f for f in faults for _ in range(a.repeat)]
        deadline = time.monotonic() + a.soak * 60
        while plan or time.monotonic() < deadline:
            f = plan.pop(0) if plan else random.choice(faults)
            t = asyncio.run(trial(lab, f, a.duration, a.rate, a.keep))
            rows.append(account(t, f))
            print(json.dumps(rows[-1]), flush=True)
            if shown is None and f.unusable and t.rows:
                shown = t
            if a.soak:
                soak.append(soak_sample(lab, f.name))
                print(json.dumps(soak[-1]), flush=True)
    finally:
        lab.down()
    summary = summarize(rows)
    print(
        table(
            (
                "fault", "runs", "established broken", "new failed", "new to dead/draining",
                "ms", "no instance",
            ),
            [
                (
                    s["fault"], s["runs"], f"{s['established_broken']}/{s['established']}",
                    f"{s['new_failed']}/{s['new']}", s["new_to_unusable"],
                    s["max_ms_until_steering_right"] or "", s["empty_stretches"] or "",
                )
                for s in summary
            ],
        )
    )  # fmt: skip
    results = Path(os.environ.get("CAND_BENCH_RESULTS", RESULTS))
    results.mkdir(parents=True, exist_ok=True)
    stem = "faults_soak" if a.soak else "faults" if a.speaker == "gobgp" else "faults_exabgp"
    png = plot(shown, results / f"{stem}.png") if shown is not None else None
    soak_png = plot_soak(soak, results / f"{stem}_daemon.png") if len(soak) > 1 else None
    soaked = soak_summary(soak)
    if soaked:
        print(json.dumps(soaked, indent=1))
    path = save(
        stem,
        {
            "command": "python -m bench.faults " + " ".join(sys.argv[1:]),
            "speaker": a.speaker,
            "repeat": a.repeat,
            "duration": a.duration,
            "rate": a.rate,
            "keep": a.keep,
            "summary": summary,
            "trials": rows,
            "lab": lab.lab.name,
            "soak": soak,
            "soak_summary": soaked,
            "plot": str(png) if png else None,
            "plotted": {  # the plotted trial's rows: `--replot` draws it again
                "fault": shown.fault,
                "injected": shown.injected,
                "repaired": shown.repaired,
                "rows": shown.rows,
            }
            if shown is not None
            else None,
            "soak_plot": str(soak_png) if soak_png else None,
        },
    )
    print(f"written: {path}")
    errors = [r for r in rows if r["error"]]
    if errors:
        sys.exit(f"bench.faults: {len(errors)} trial(s) could not run: {errors[0]['error']}")


if __name__ == "__main__":
    main()
