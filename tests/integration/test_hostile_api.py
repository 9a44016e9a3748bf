"""Nothing a local API client sends, or fails to send, stops the daemon or its API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cand import api
from cand.api import ApiError, request

from .harness import daemon_config, running


async def ask(path: Path, raw: bytes, eof: bool = True) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(raw)
    if eof:
        writer.write_eof()
    await writer.drain()
    async with asyncio.timeout(10):
        line = await reader.readline()
    writer.close()
    answer: dict[str, Any] = json.loads(line)
    return answer


GARBAGE = [
    b"[" * 3000 + b"\n",
    b"\xff\xfe\n",
    b'{"cmd": "status", "all": true}\n',
    b'{"cmd": ["status"]}\n',
    b"null\n",
    b"\n",
]


def test_garbage_gets_an_error_and_the_api_keeps_answering(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = daemon_config(tmp_path)
        async with running(cfg):
            for raw in GARBAGE:
                answer = await ask(cfg.api.socket, raw)
                assert answer["ok"] is False and answer["error"], raw[:20]
            # far past the stream limit: the daemon answers and closes without reading the
            # rest, so the client may see the answer or a reset; either way it is counted
            try:
                answer = await ask(cfg.api.socket, b"x" * (1 << 20) + b"\n")
                assert "too long" in answer["error"]
            except ConnectionResetError:
                pass
            status = await request(cfg.api.socket, "status")
            assert status["api"]["bad_request"] == len(GARBAGE) + 1
            # a request without its newline, closed at once, is still one request
            assert (await ask(cfg.api.socket, b'{"cmd": "rib"}'))["ok"] is True

    asyncio.run(main())


def test_silent_clients_time_out_and_excess_ones_are_told_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "REQUEST_TIMEOUT", 1.0)

    async def main() -> None:
        cfg = daemon_config(tmp_path)
        async with running(cfg):
            silent = [
                await asyncio.open_unix_connection(str(cfg.api.socket))
                for _ in range(api.MAX_CLIENTS)
            ]
            await asyncio.sleep(0.2)  # all accepted and waiting for their line
            busy = await ask(cfg.api.socket, b'{"cmd": "status"}\n')
            assert busy == {"ok": False, "error": "busy: too many API clients"}
            answers = [json.loads(await r.readline()) for r, _ in silent]
            assert all("no request line" in a["error"] for a in answers)
            for _, w in silent:
                w.close()
            status = await request(cfg.api.socket, "status")
            assert status["api"]["timeout"] == api.MAX_CLIENTS
            assert status["api"]["busy"] == 1

    asyncio.run(main())


def test_a_failing_handler_answers_an_error_not_silence(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = daemon_config(tmp_path)
        async with running(cfg) as (daemon, _):

            async def broken() -> list[dict[str, Any]]:
                raise OSError(5, "conntrack dump failed")  # what a data plane read can raise

            daemon.bindings_json = broken  # type: ignore[method-assign]
            with pytest.raises(ApiError, match="bindings failed in the daemon"):
                await request(cfg.api.socket, "bindings")
            assert (await request(cfg.api.socket, "status"))["api"]["failed"] == 1

    asyncio.run(main())


@pytest.mark.parametrize("reply", [b"", b"<html>\n", b"[1, 2]\n", b"[" * 3000 + b"\n"])
def test_the_client_turns_a_bad_answer_into_api_error(tmp_path: Path, reply: bytes) -> None:
    async def main() -> None:
        path = tmp_path / "not-cand.sock"

        async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readline()
            w.write(reply)
            await w.drain()
            w.close()

        server = await asyncio.start_unix_server(answer, path=str(path))
        async with server:
            with pytest.raises(ApiError, match="instead of a JSON answer"):
                await request(path, "status", timeout=5)

    asyncio.run(main())
