"""The Linux data plane's I/O: iproute2, nftables, conntrack and sysctl, each one subprocess.

Batched on purpose: `ip -batch` installs 10k routes in a quarter of a second where one netlink
call per route from Python manages about a thousand a second, and one `nft -f` is one atomic
transaction. Every function raises `KernelError` (a RuntimeError, so the daemon's guard counts
and logs it) with the tool's own message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class KernelError(RuntimeError):
    pass


async def run(*cmd: str, stdin: str | None = None, partial: bool = False) -> str:
    """The tool's output; KernelError if it fails (`partial`: what it printed, even then)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise KernelError(f"{cmd[0]}: not installed (scripts/setup installs it)") from None
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0 and not partial:
        what = " ".join(cmd) if stdin is None else f"{cmd[0]} (batch of {stdin.count(chr(10))})"
        raise KernelError(f"{what}: {err.decode().strip() or out.decode().strip()}")
    return out.decode()


async def ip(*args: str) -> str:
    return await run("ip", *args)


async def ip_json(*args: str) -> Any:
    out = await run("ip", "-json", *args)
    return json.loads(out) if out.strip() else []


async def ip_batch(lines: Sequence[str]) -> None:
    """IPv6 routes and rules; all lines, even past a failing one (`-force`), and the first
    error is raised at the end."""
    if lines:
        await run("ip", "-6", "-force", "-batch", "-", stdin="\n".join(lines) + "\n")


ROUTE_GET_CHUNK = 8192
"""Destinations per `ip -batch`: a whole walk asks for 120,000, whose answers as one text and
its parsed rows took over 100 MB at once."""
ROUTE_KEYS = ("dst", "dev", "gateway", "type")
"""What the data plane reads of an answer; the rest (flags, prefsrc, cache...) is not kept."""


async def route_get_many(
    dsts: Sequence[str], chunk: int = ROUTE_GET_CHUNK
) -> dict[str, dict[str, Any] | None]:
    """`ip route get` for many destinations, `chunk` per `ip -batch`; None where there is no
    route. A destination with no route prints nothing (its error goes to stderr), so each
    answer is matched to its question by the `dst` it names, not by its place."""
    out: dict[str, dict[str, Any] | None] = dict.fromkeys(dsts)
    for i in range(0, len(dsts), chunk):
        await _route_get(dsts[i : i + chunk], out)
    return out


async def _route_get(dsts: Sequence[str], out: dict[str, dict[str, Any] | None]) -> None:
    wanted: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] | None = None
    text = await run(
        "ip", "-json", "-6", "-force", "-batch", "-",
        stdin="".join(f"route get {d}\n" for d in dsts), partial=True,
    )  # fmt: skip
    for line in text.splitlines():
        if not line.strip():
            continue
        for row in json.loads(line):
            r = {k: row[k] for k in ROUTE_KEYS if k in row}
            dst = str(r.get("dst", "")).split("/")[0]
            if dst in out:  # spelled as asked (nearly always): no address to parse
                out[dst] = r
                continue
            with contextlib.suppress(ValueError, TypeError):
                if wanted is None:  # spelled its own way: compare as addresses
                    wanted = {ipaddress.ip_address(d): d for d in dsts}
                d = wanted.get(ipaddress.ip_address(dst))
                if d is not None:
                    out[d] = r


async def nft(script: Sequence[str]) -> None:
    """One nftables transaction: all of it applies, or none of it."""
    if script:
        await run("nft", "-f", "-", stdin="\n".join(script) + "\n")


async def nft_json(*args: str) -> list[dict[str, Any]]:
    out = await run("nft", "-j", *args)
    items: list[dict[str, Any]] = json.loads(out).get("nftables", [])
    return items


async def conntrack_rows(mark: int, mask: int) -> list[str]:
    """The IPv6 conntrack entries whose mark is in cand's range, one text line each."""
    out = await run("conntrack", "-L", "-f", "ipv6", "-m", f"{mark:#x}/{mask:#x}")
    return [line for line in out.splitlines() if "src=" in line]


def sysctl(name: str, value: str) -> bool:
    """Write one sysctl (dotted name) if it differs; False if this kernel has no such switch."""
    return write_proc(Path("/proc/sys") / name.replace(".", "/"), value)


def seg6_enable_all() -> int:
    """Accept SRH packets on every interface (the receive path checks the one it came in on);
    returns how many switches had to be turned on."""
    changed = 0
    for conf in Path("/proc/sys/net/ipv6/conf").iterdir():
        path = conf / "seg6_enabled"
        try:
            if path.read_text().strip() != "1":
                path.write_text("1")
                changed += 1
        except OSError:
            continue
    return changed


def write_proc(path: Path, value: str) -> bool:
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
        return True
    except OSError:
        return False
