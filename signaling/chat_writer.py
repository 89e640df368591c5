"""Chat messages stored in batches: one database call for every message that waits for one.

Every database call of a process runs in one thread (Django's connection belongs to it), so the
calls queue. Stored one call at a time, each chat message paid for the hop into that thread, a
transaction and its round trips, each of which waits for the GIL again when it comes back: at 240
messages a second (the rate20 benchmark) that thread fell behind and the queue grew to seconds
(docs/performance.md). Here the first message goes at once; those that arrive while its call is
running wait for the next call, which stores all of them (``rooms.live.post_chats``: one
transaction, one round trip on PostgreSQL). Under light load nothing waits; under heavy load
batches grow instead of the queue.
"""

from __future__ import annotations

import asyncio
import weakref

from rooms import live
from signaling import db

# Most messages in one call: a bounded transaction (its session locks are held until it commits).
MAX_BATCH = 64


class ChatWriter:
    def __init__(self) -> None:
        self.waiting: list[tuple[live.ChatRequest, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def post(self, request: live.ChatRequest) -> live.ChatPosted:
        """Store one message (see ``rooms.live.post_chat``); raises its LiveError or DatabaseError."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((request, future))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._drain(), name="chat writer")
        result = await future
        if isinstance(result, live.LiveError):
            raise result
        return result

    async def _drain(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
            try:
                results = await db.run(live.post_chats, [request for request, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"post_chats answered {len(results)} of {len(batch)} messages")
            except Exception as exc:  # noqa: BLE001 - a database error: each sender answers it (server.retry)
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its connection went away meanwhile; the message is stored anyway
                    continue
                if isinstance(result, BaseException) and not isinstance(result, live.LiveError):
                    future.set_exception(result)
                else:
                    future.set_result(result)


_WRITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ChatWriter] = weakref.WeakKeyDictionary()


def chat_writer() -> ChatWriter:
    """This event loop's writer (a test runs in its own loop)."""
    loop = asyncio.get_running_loop()
    writer = _WRITERS.get(loop)
    if writer is None:
        writer = _WRITERS[loop] = ChatWriter()
    return writer
