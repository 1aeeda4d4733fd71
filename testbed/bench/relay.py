"""The baseline: a bare websockets relay doing the fork server's socket I/O and nothing else.

Per fork WebSocket: read the metadata, open one WebSocket to the connector, send it the
metadata as the first text frame, then forward every caller frame unchanged (no resampling,
framing, state machine, metrics or ESL) and read and drop everything the connector sends
(TTS, marks). Same websockets version, same options as the fork server's intake and
connector link. ``python -m testbed.bench.relay --connector ws://... [--uvloop]`` prints
``listening on <port>`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["main"]


async def _relay(ws: ServerConnection, connector: str) -> None:
    try:
        meta = await ws.recv()
        async with connect(connector, compression=None, ping_interval=10, max_size=(1 << 20) + 16, proxy=None) as c:
            await c.send(meta)

            async def drain_connector() -> None:
                async for _ in c:
                    pass

            t = asyncio.get_running_loop().create_task(drain_connector())
            try:
                async for message in ws:
                    await c.send(message)
            finally:
                t.cancel()
    except ConnectionClosed:
        pass


async def _serve(connector: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        lambda ws: _relay(ws, connector),
        "127.0.0.1",
        port,
        compression=None,
        max_size=1 << 20,
        max_queue=64,
        ping_interval=20,
        select_subprotocol=lambda conn, offered: "audio.drachtio.org" if "audio.drachtio.org" in offered else None,
    ) as server:
        print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.bench.relay", description=__doc__)
    parser.add_argument("--connector", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    runner = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    runner(_serve(args.connector, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
