"""Chat messages stored in batches: one database call for every message that waits for one.

Every database call of a process runs in one thread (Django's connection belongs to it), so the
calls queue. Stored one call at a time, each chat message paid for the hop into that thread, a
transaction and its round trips, each of which waits for the GIL again when it comes back: at 240
messages a second (the rate20 benchmark) that thread fell behind and the queue grew to seconds
(docs/performance.md). Here the first message goes at once; those that arrive while its call is
running wait for the next call, which stores all of them (``rooms.live.post_chats``: one
transaction, one round trip on PostgreSQL). Under light load nothing waits; under heavy load
batches grow instead of the queue.

On PostgreSQL the call itself goes from the event loop (``store``: ``signaling.pg_loop``, no hop
into the database thread); only what it does not store (a resend, a refusal, a therapist's private
reply) goes to the database thread's general path. Elsewhere (SQLite) the whole batch goes there.
"""

from __future__ import annotations

import asyncio
import weakref

from django.db import IntegrityError
from django.utils import timezone

from rooms import live
from signaling import db, pg_loop

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
                results = await store([request for request, _ in batch])
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


async def store(requests: list[live.ChatRequest]) -> list[live.ChatPosted | live.LiveError]:
    """``rooms.live.post_chats`` for a batch: on PostgreSQL its one-pass store is sent from the event
    loop, and only the messages it did not store go to the database thread."""
    if not db.on_postgresql():
        return await db.run(live.post_chats, requests)
    now = timezone.now()
    views: list[live.ChatView | None] = [None] * len(requests)
    call = live.chat_store_call(requests, now)
    if call is not None:
        try:
            rows = await pg_loop.for_loop().execute(live.CHAT_STORE_NAME, live.CHAT_STORE_SQL, call.parameters)
            views = call.views(rows)
        except IntegrityError:
            pass  # a race the checks could not see: nothing of the batch was kept; each answered below
    if None in views:
        return await db.run(live.answer_chats, requests, views, now=now)
    return [live.ChatPosted(message=view, created=True) for view in views]


_WRITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ChatWriter] = weakref.WeakKeyDictionary()


def chat_writer() -> ChatWriter:
    """This event loop's writer (a test runs in its own loop)."""
    loop = asyncio.get_running_loop()
    writer = _WRITERS.get(loop)
    if writer is None:
        writer = _WRITERS[loop] = ChatWriter()
    return writer
