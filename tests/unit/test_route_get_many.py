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
