"""The process ExaBGP runs: joins its stdin/stdout to cand's unix socket.

    python -m cand.adapters.exabgp_bridge /path/to/api.sock

ExaBGP writes events to our stdin and reads commands from our stdout; the cand speaker on the
other end of the socket does the rest. Commands are relayed as they arrive, many per write
(ExaBGP takes the whole lines out of what it reads), and so are events and answers (one
"done" per command: 12,000 of them for 12,000 paths were 12,000 writes when relayed line by
line; and no line is too long to relay). Exits when either side closes, and ExaBGP restarts it.
"""

from __future__ import annotations

import asyncio
import sys


async def main(path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def events() -> None:  # ExaBGP -> cand, whatever has arrived in one write
        while chunk := await stdin.read(1 << 16):
            writer.write(chunk)  # cand reads lines on its side: no need to split them here
            await writer.drain()

    async def commands() -> None:  # cand -> ExaBGP, whatever has arrived in one write
        out = sys.stdout.buffer
        while chunk := await reader.read(1 << 16):
            out.write(chunk)  # ExaBGP keeps a partial last line until the rest comes
            out.flush()

    _, pending = await asyncio.wait(
        [asyncio.create_task(events()), asyncio.create_task(commands())],
        return_when=asyncio.FIRST_COMPLETED,
    )
    for t in pending:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
