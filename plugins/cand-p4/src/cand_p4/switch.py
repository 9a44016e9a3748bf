"""The P4Runtime session with one switch running p4/cand.p4, over finsy.

`async with P4Switch(address, pipeline, election_id=...) as sw:` opens the stream channel,
takes part in primary arbitration with the given election id, and makes sure the device runs
this program: finsy compares the device's pipeline cookie (GetForwardingPipelineConfig,
COOKIE_ONLY) with the cookie of this P4Info + BMv2 JSON and sends
SetForwardingPipelineConfig(VERIFY_AND_COMMIT) only when they differ, so a controller that
reconnects to a switch already running cand.p4 leaves its tables (and its traffic) alone.
A backup (another controller holds a higher election id) is refused with `NotPrimary`: cand
only writes as the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import finsy as fy

from cand_p4 import names as n
from cand_p4.entries import NewFlow

log = logging.getLogger("cand.p4")


class NotPrimary(Exception):
    """Another controller is primary for the device (it holds a higher election id)."""


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The compiled program, as `p4/build` writes it."""

    json: Path  # BMv2 JSON: the device config
    p4info: Path  # P4Info, protobuf text

    @classmethod
    def in_dir(cls, build_dir: Path) -> Pipeline:
        return cls(build_dir / "cand.json", build_dir / "cand.p4info.txtpb")


class P4Switch:
    def __init__(
        self,
        address: str,
        pipeline: Pipeline,
        *,
        device_id: int = 1,
        election_id: int = 10,
        name: str = "cand",
    ) -> None:
        for path in (pipeline.json, pipeline.p4info):
            if not path.is_file():
                raise FileNotFoundError(f"P4 pipeline file {path} is missing (run p4/build)")
        if election_id < 1:
            raise ValueError("election_id must be >= 1 (0 is no election id in P4Runtime)")
        self.address = address
        self.pipeline = pipeline
        options = fy.SwitchOptions(
            p4info=pipeline.p4info,
            p4blob=pipeline.json,
            device_id=device_id,
            initial_election_id=election_id,
        )
        self._sw = fy.Switch(name, address, options)
        self._open = False
        self._flows: asyncio.Queue[NewFlow] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self._sw.__aenter__()
        self._open = True
        if not self._sw.is_primary:
            primary = self._sw.primary_id
            await self.__aexit__(None, None, None)
            raise NotPrimary(
                f"{self.address}: election id {self._sw.options.initial_election_id} is a "
                f"backup; the primary holds {primary}"
            )
        # finsy drops (with a warning, unacknowledged) every digest that arrives while no
        # reader is waiting, and its reader registers only once iterated: keep one open for
        # the whole session, before anything can switch digests on
        self._pump = asyncio.create_task(self._read_digests(), name="p4-digests")
        await asyncio.sleep(0)
        log.info(
            "p4_connected address=%s device_id=%d election_id=%d cookie=%#x",
            self.address,
            self._sw.device_id,
            self._sw.election_id,
            self.cookie,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        if self._open:
            self._open = False
            await self._sw.__aexit__(exc_type, exc, tb)

    @property
    def cookie(self) -> int:
        """The cookie of this program (what the device reports once it runs it)."""
        return self._sw.p4info.p4cookie

    @property
    def is_primary(self) -> bool:
        return self._sw.is_primary

    @property
    def election_id(self) -> int:
        """The id finsy arbitrates with now: the configured one unless it met a conflict."""
        return self._sw.election_id

    async def write(self, updates: Iterable[Any]) -> None:
        """One P4Runtime Write with all `updates` (`+entry`, `~entry`, `-entry`); raises
        finsy's P4ClientError naming each failed update."""
        await self._sw.write(list(updates))

    async def read(self, entity: Any) -> list[Any]:
        """The entities on the device that match `entity` (a wildcard read when it names only
        a table)."""
        # finsy declares read's overloads `async def ... -> AsyncGenerator`, which mypy reads
        # as a coroutine returning a generator; at run time it is the generator itself
        entities = cast(AsyncIterator[Any], self._sw.read(entity))
        return [e async for e in entities]

    async def new_flows(self) -> AsyncIterator[NewFlow]:
        """new_flow_t digests as they come, each acknowledged as it arrived (the digest must
        be switched on: entries.new_flow_digest)."""
        while True:
            yield await self._flows.get()

    async def _read_digests(self) -> None:
        digests = cast(AsyncIterator[Any], self._sw.read_digests(n.NEW_FLOW_DIGEST))
        async for batch in digests:
            await self._sw.write([batch.ack()])
            for data in batch:
                try:
                    self._flows.put_nowait(NewFlow.from_digest(data))
                except ValueError as e:
                    log.warning("p4_digest_bad error=%s", e)
