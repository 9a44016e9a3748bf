"""The GoBGP speaker hands a large batch to gobgpd as one `AddPathStream` (withdrawals too, as
paths marked `is_withdraw`), a small one as unary calls; the desired RIB-out and the counters
say the same either way, and a stream that fails counts nothing as sent but keeps what is
wanted (the RIB-out check sends it later)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from cand import config
from tests.helpers import route

gobgp = pytest.importorskip("cand_gobgp.speaker")
grpc = pytest.importorskip("grpc")

CFG = {
    "router": {"id": "fc00:ff::3", "roles": ["egress"], "locator": "fc00:0:3::/48"},
    "bgp": {"speaker": "gobgp", "neighbors": [{"address": "fc00:a::1", "asn": 65000}]},
}


class FakeStub:
    """Records what the speaker asks of gobgpd; `fail` makes the stream calls fail."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.unary: list[tuple[str, Any]] = []
        self.streams: list[list[Any]] = []

    async def _ok(self) -> None:
        return None

    async def _broken(self) -> None:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone"
        )

    def AddPath(self, req: Any) -> Any:
        self.unary.append(("add", req.path))
        return self._ok()

    def DeletePath(self, req: Any) -> Any:
        self.unary.append(("del", req.path))
        return self._ok()

    def AddPathStream(self, requests: Iterable[Any]) -> Any:
        self.streams.append([p for r in requests for p in r.paths])
        return self._broken() if self.fail else self._ok()


def speaker(stub: FakeStub) -> Any:
    sp = gobgp.GobgpSpeaker(config.parse(CFG), gobgp.GobgpOptions())
    sp.stub = stub
    sp._ready.set()
    return sp


def many(n: int) -> list[Any]:
    return [route(i + 1) for i in range(n)]


def test_a_large_batch_is_one_stream_and_a_small_one_unary() -> None:
    stub = FakeStub()
    sp = speaker(stub)
    big = many(gobgp.STREAM_CHUNK + 500)  # two messages in one stream

    async def main() -> None:
        await sp.advertise(big[:3])
        await sp.advertise(big)

    asyncio.run(main())
    assert [k for k, _ in stub.unary] == ["add"] * 3
    assert len(stub.streams) == 1
    sent = stub.streams[0]
    assert [p.identifier for p in sent] == [sp._path(r).identifier for r in big]
    assert sent[0] == sp._path(big[0]) and not any(p.is_withdraw for p in sent)
    st = sp.status()
    assert st["advertised"] == 3 + len(big) and st["streams"] == 1 and st["rpc_errors"] == 0
    assert st["rib_out"] == len(big)


def test_a_large_withdrawal_is_a_stream_of_withdrawn_paths() -> None:
    stub = FakeStub()
    sp = speaker(stub)
    rs = many(40)

    async def main() -> None:
        await sp.advertise(rs)
        await sp.withdraw([r.key for r in rs[:30]])
        await sp.withdraw([rs[30].key])

    asyncio.run(main())
    gone = stub.streams[1]
    assert len(gone) == 30 and all(p.is_withdraw for p in gone)
    assert [p.identifier for p in gone] == [sp._path(r).identifier for r in rs[:30]]
    assert stub.unary == [("del", sp._path(rs[30]))]
    assert sp.status()["withdrawn"] == 31 and len(sp.out) == 9


def test_a_failed_stream_is_counted_and_the_desired_state_kept() -> None:
    stub = FakeStub(fail=True)
    sp = speaker(stub)
    rs = many(50)
    asyncio.run(sp.advertise(rs))
    st = sp.status()
    assert st["advertised"] == 0 and st["rpc_errors"] == 1 and st["streams"] == 0
    assert set(sp.out.routes()) == {r.key for r in rs}  # the RIB-out check sends them later
