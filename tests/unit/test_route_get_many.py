"""`route_get_many` asks `ip -batch` once for every destination and matches each answer to
its question by the `dst` it names: a destination without a route prints nothing, so the
answers after it are not shifted onto the wrong destination."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cand.adapters import linux_kernel as k


def test_answers_are_matched_by_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[str, ...], str | None]] = []

    async def fake_run(*cmd: str, stdin: str | None = None, partial: bool = False) -> str:
        calls.append((cmd, stdin))
        assert partial  # some lines fail: what the others printed is still wanted
        # fc00::2 has no route: nothing printed for it; the tool spells addresses its way
        rows = [{"dst": "fc00:0::1", "dev": "a"}, {"dst": "fc00::3", "gateway": "fe80::1"}]
        return "".join(json.dumps([r]) + "\n" for r in rows)

    monkeypatch.setattr(k, "run", fake_run)
    got: dict[str, Any] = asyncio.run(k.route_get_many(["fc00::1", "fc00::2", "fc00::3"]))
    assert got == {
        "fc00::1": {"dst": "fc00:0::1", "dev": "a"},
        "fc00::2": None,
        "fc00::3": {"dst": "fc00::3", "gateway": "fe80::1"},
    }
    assert (
        len(calls) == 1
        and calls[0][1] == "route get fc00::1\nroute get fc00::2\nroute get fc00::3\n"
    )
    assert asyncio.run(k.route_get_many([])) == {} and len(calls) == 1


def test_many_destinations_are_asked_in_chunks_and_only_what_is_read_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole walk asks for every tunnel's SID: one `ip -batch` per chunk keeps the text and
    its parsed rows small, and the answers keep only the keys the data plane reads."""
    asked: list[list[str]] = []

    async def fake_run(*cmd: str, stdin: str | None = None, partial: bool = False) -> str:
        lines = [x.split()[-1] for x in (stdin or "").splitlines()]
        asked.append(lines)
        rows = [{"dst": d, "dev": "a", "flags": [], "prefsrc": "fc00::9"} for d in lines]
        return "".join(json.dumps([r]) + "\n" for r in rows)

    monkeypatch.setattr(k, "run", fake_run)
    dsts = [f"fc00::{i:x}" for i in range(1, 8)]
    got = asyncio.run(k.route_get_many(dsts, chunk=3))
    assert [len(a) for a in asked] == [3, 3, 1] and [d for a in asked for d in a] == dsts
    assert got == {d: {"dst": d, "dev": "a"} for d in dsts}
