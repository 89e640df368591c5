"""Run a rooms.live function from the consumer, in the thread that owns Django's database connection.

Channels' ``database_sync_to_async`` calls ``close_old_connections()`` before and
after every call. With ``CONN_HEALTH_CHECKS`` that is an extra ``SELECT 1`` round
trip per call, on the one thread every database call of the process queues for:
measured as a large share of a signaling consumer's CPU (docs/performance.md). A
WebSocket is not a request, so the per-request cleanup buys nothing per frame.

Here the cleanup runs when it can matter: after a database error (the connection
may be broken: PostgreSQL restarted), and at least every ``CLEANUP_SECONDS`` (so
``CONN_MAX_AGE`` still recycles connections). Calls run in asgiref's shared
thread, as ``database_sync_to_async`` does, so the connection is the same one.
"""

from __future__ import annotations

import functools
import time

from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections

CLEANUP_SECONDS = 10.0


class _Hygiene:
    def __init__(self) -> None:
        self.next_cleanup = 0.0
        self.dirty = False

    def run(self, call):
        now = time.monotonic()
        if self.dirty or now >= self.next_cleanup:
            close_old_connections()
            self.dirty = False
            self.next_cleanup = now + CLEANUP_SECONDS
        try:
            return call()
        except DatabaseError:
            self.dirty = True  # closed (if unusable) before the next call, which then reconnects
            raise


_hygiene = _Hygiene()
_hop = sync_to_async(_hygiene.run, thread_sensitive=True)


async def run(fn, /, *args, **kwargs):
    """``await run(live.post_chat, actor, ...)``: ``fn(*args, **kwargs)`` in the database thread."""
    return await _hop(functools.partial(fn, *args, **kwargs))
