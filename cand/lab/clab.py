"""containerlab topology files (`*.clab.yml`) run as network namespaces, without Docker.

What is read (containerlab's own keys): `name`; `topology.nodes.<node>` with `kind`, `exec`
(commands run once the links are up) and `cmd` (the node's long-running program, started in
the background once every node's `exec` has run: containerlab starts it first, but a program
that finds its addresses in place is simpler to write); `topology.links[].endpoints`
(`"node:ifname"` pairs) and an optional `mtu`.
Keys that only mean something to Docker (`image`, `binds`, `ports`, ...) are accepted and
ignored. Each node is a namespace named `clab-<lab>-<node>`, as containerlab names containers;
each link a veth pair with the interface names the file gives. Commands run with the lab's
folder as working directory, so node config files are referred to relative to the file.

`up` records what it made (namespaces, PIDs) in a state file; `down` removes exactly that,
also after a failed `up` (which cleans up by itself before reporting the error).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cand.lab.netns import remove_namespace

STATE_DIR = Path(os.environ.get("CAND_LAB_STATE", "/run/cand/labs"))
IGNORED_NODE_KEYS = {"image", "binds", "ports", "env", "labels", "group", "startup-config"}


class LabError(ValueError):
    """A topology file cand cannot run, or a lab that is not there."""


@dataclass(frozen=True)
class Node:
    name: str
    kind: str = "linux"
    exec: tuple[str, ...] = ()
    cmd: str | None = None


@dataclass(frozen=True)
class Link:
    a: tuple[str, str]
    b: tuple[str, str]
    mtu: int = 1500


@dataclass(frozen=True)
class Lab:
    name: str
    folder: Path
    nodes: dict[str, Node]
    links: tuple[Link, ...] = field(default=())

    def netns(self, node: str) -> str:
        return f"clab-{self.name}-{node}"


def load(path: str | Path) -> Lab:
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.clab.yml")) + sorted(p.glob("*.clab.yaml"))
        if len(found) != 1:
            raise LabError(f"{p}: expected one *.clab.yml, found {len(found)}")
        p = found[0]
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise LabError(f"{p}: {e}") from None
    if not isinstance(data, dict) or "name" not in data or "topology" not in data:
        raise LabError(f"{p}: needs `name` and `topology`")
    name = str(data["name"])
    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 20:
        raise LabError(f"{p}: name {name!r}: letters, digits, - and _, at most 20 characters")
    topo = data["topology"] or {}
    nodes: dict[str, Node] = {}
    for n, spec in (topo.get("nodes") or {}).items():
        spec = spec or {}
        unknown = set(spec) - {"kind", "exec", "cmd"} - IGNORED_NODE_KEYS
        if unknown:
            raise LabError(f"{p}: topology.nodes.{n}: unknown keys {sorted(unknown)}")
        exec_ = spec.get("exec") or []
        if not isinstance(exec_, list) or not all(isinstance(c, str) for c in exec_):
            raise LabError(f"{p}: topology.nodes.{n}.exec: a list of command strings")
        nodes[str(n)] = Node(str(n), str(spec.get("kind", "linux")), tuple(exec_), spec.get("cmd"))
    links = []
    for i, link in enumerate(topo.get("links") or []):
        ends = link.get("endpoints") if isinstance(link, dict) else None
        if not isinstance(ends, list) or len(ends) != 2:
            raise LabError(f'{p}: topology.links[{i}].endpoints: two "node:ifname" strings')
        parsed = []
        for end in ends:
            node, sep, ifname = str(end).partition(":")
            if not sep or node not in nodes or not ifname or len(ifname) > 15:
                raise LabError(f"{p}: topology.links[{i}]: bad endpoint {end!r}")
            parsed.append((node, ifname))
        links.append(Link(parsed[0], parsed[1], int(link.get("mtu", 1500))))
    return Lab(name, p.parent.resolve(), nodes, tuple(links))


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _state_file(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def up(lab: Lab) -> dict[str, Any]:
    if _state_file(lab.name).exists():
        raise LabError(f"lab {lab.name} is already up (cand lab down {lab.name})")
    state: dict[str, Any] = {"name": lab.name, "folder": str(lab.folder), "netns": [], "pids": []}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    env = lab_env(lab)
    try:
        for node_name in lab.nodes:
            ns = lab.netns(node_name)
            _sh("ip", "netns", "add", ns)
            state["netns"].append(ns)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for link in lab.links:
            (na, ia), (nb, ib) = link.a, link.b
            mtu = str(link.mtu)
            _sh("ip", "link", "add", ia, "mtu", mtu, "netns", lab.netns(na), "type", "veth",
                "peer", "name", ib, "mtu", mtu, "netns", lab.netns(nb))  # fmt: skip
            for n, i in ((na, ia), (nb, ib)):
                _sh("ip", "netns", "exec", lab.netns(n), "ip", "link", "set", i, "up")
        for node in lab.nodes.values():
            for c in node.exec:
                r = subprocess.run(
                    ["ip", "netns", "exec", lab.netns(node.name), "sh", "-c", c],
                    cwd=lab.folder,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if r.returncode != 0:
                    raise LabError(f"{node.name}: `{c}` failed: {r.stderr.strip()[:300]}")
        for node in lab.nodes.values():
            if node.cmd:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", lab.netns(node.name), "sh", "-c", node.cmd],
                    cwd=lab.folder,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                state["pids"].append(proc.pid)
    except (subprocess.CalledProcessError, LabError, OSError) as e:
        _teardown(state)
        if isinstance(e, subprocess.CalledProcessError):
            raise LabError(f"{' '.join(e.cmd)}: {e.stderr.strip()}") from None
        raise
    _state_file(lab.name).write_text(json.dumps(state, indent=2))
    return state


def lab_env(lab: Lab) -> dict[str, str]:
    """What node commands get besides the usual environment: the Python that runs cand (so a
    lab works from a virtualenv) and a run directory of the lab's own."""
    return {
        **os.environ,
        "CAND_LAB_PYTHON": sys.executable,
        "CAND_LAB_RUN": str(run_dir(lab.name)),
    }


def run_dir(name: str) -> Path:
    return Path(os.environ.get("CAND_LAB_RUN_BASE", "/run/cand")) / name


def _teardown(state: dict[str, Any]) -> None:
    for pid in state.get("pids", []):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    for ns in state.get("netns", []):
        remove_namespace(ns)


def down(name: str) -> None:
    f = _state_file(name)
    if not f.exists():
        raise LabError(f"lab {name} is not up")
    _teardown(json.loads(f.read_text()))
    f.unlink()


def running() -> list[dict[str, Any]]:
    if not STATE_DIR.exists():
        return []
    return [json.loads(f.read_text()) for f in sorted(STATE_DIR.glob("*.json"))]


def exec_in(name: str, node: str, argv: list[str]) -> int:
    state = next((s for s in running() if s["name"] == name), None)
    if state is None:
        raise LabError(f"lab {name} is not up")
    ns = f"clab-{name}-{node}"
    if ns not in state["netns"]:
        raise LabError(f"lab {name} has no node {node}")
    return subprocess.call(["ip", "netns", "exec", ns, *(argv or ["sh"])], cwd=state["folder"])


def main(action: str, args: list[str]) -> int:
    """`cand lab up PATH | down NAME|PATH | exec NAME NODE [CMD...] | list`."""
    try:
        if action == "list":
            for s in running():
                print(f"{s['name']}  {len(s['netns'])} nodes  {s['folder']}")
            return 0
        if not args:
            raise LabError(f"cand lab {action}: which lab?")
        if action == "up":
            lab = load(args[0])
            up(lab)
            print(f"lab {lab.name} up: {', '.join(lab.netns(n) for n in lab.nodes)}")
            return 0
        if action == "down":
            target = args[0]
            name = load(target).name if Path(target).exists() else target
            down(name)
            print(f"lab {name} down")
            return 0
        if action == "exec":
            if len(args) < 2:
                raise LabError("cand lab exec NAME NODE [COMMAND ...]")
            return exec_in(args[0], args[1], [a for a in args[2:] if a != "--"] or [])
    except LabError as e:
        print(f"cand lab: {e}", file=sys.stderr)
        return 2
    raise LabError(action)


__all__ = ["Lab", "LabError", "down", "load", "main", "running", "up"]
