"""Chat messages stored in batches (``signaling.batches``): one call for every message that waits for one.

Stored one call at a time, each chat message paid for the hop into the database thread, a
transaction and its round trips, each of which waits for the GIL again when it comes back: at 240
messages a second (the rate20 benchmark) that thread fell behind and the queue grew to seconds
(docs/performance.md). Batched, a call stores every message that arrived while the one before ran
(``rooms.live.post_chats``: one transaction, one round trip on PostgreSQL).

On PostgreSQL the call itself goes from the event loop (``store``: ``signaling.pg_loop``, no hop
into the database thread); only what it does not store (a resend, a refusal, a therapist's private
reply) goes to the database thread's general path. Elsewhere (SQLite) the whole batch goes there.
"""

from __future__ import annotations

from django.db import IntegrityError
from django.utils import timezone

from rooms import live
from signaling import db, pg_loop
from signaling.batches import Batches, per_loop

# Most messages in one call: a bounded transaction (its session locks are held until it commits).
MAX_BATCH = 64


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


def chat_writer() -> Batches:
    """This event loop's chat batches: ``await chat_writer().submit(request)`` stores one message (see
    ``rooms.live.post_chat``) and raises its LiveError or DatabaseError."""
    return per_loop(
        "chat writer", lambda: Batches(lambda requests: store(requests), name="chat writer", max_batch=MAX_BATCH)
    )
