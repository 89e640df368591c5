"""The reference: a bare ``websockets`` fan-out relay, run as its own process.

Clients join a room by URL path; every text frame a member sends goes to every
other member of that room, unchanged. On connect the relay sends one small
``welcome`` frame, so "connect -> first server frame" is measured the same way
as against the real endpoint. No authentication, no validation, no storage, no
channel layer: this is the floor the real endpoint is compared with, measured on
the same machine in the same invocation.

    python -m bench.reference_relay --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, broadcast, serve

from telehealth.serve import PING_INTERVAL, PING_TIMEOUT

rooms: dict[str, set[ServerConnection]] = defaultdict(set)


async def relay(ws: ServerConnection) -> None:
    room_name = ws.request.path
    room = rooms[room_name]
    room.add(ws)
    try:
        await ws.send(json.dumps({"v": 1, "type": "welcome", "data": {"members": len(room)}}))
        async for frame in ws:
            if isinstance(frame, bytes):
                continue  # the real endpoint closes on binary; the load driver never sends any
            # broadcast() writes to each transport without awaiting: the cheapest correct fan-out.
            broadcast([peer for peer in room if peer is not ws], frame)
    finally:
        room.discard(ws)
        if not room:
            rooms.pop(room_name, None)


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # The transport settings of our daphne: no compression, and keepalive pings at the same interval
    # and timeout (a server for browsers must notice a dead connection; daphne pings every idle one).
    async with serve(
        relay,
        host,
        port,
        compression=None,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        max_size=1 << 20,
        backlog=1024,
    ):
        print(f"reference relay on ws://{host}:{port}/", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
