"""Run a rooms.live function from the consumer, in the thread that owns Django's database connection.

Channels' ``database_sync_to_async`` calls ``close_old_connections()`` before and
after every call. With ``CONN_HEALTH_CHECKS`` that is an extra ``SELECT 1`` round
trip per call, on the one thread every database call of the process queues for:
measured as a large share of a signaling consumer's CPU (docs/performance.md). A
WebSocket is not a request, so the per-request cleanup buys nothing per frame.

Here the cleanup runs when it can matter: after a database error (the connection
may be broken: PostgreSQL restarted), and at least every ``CLEANUP_SECONDS`` (so
``CONN_MAX_AGE`` still recycles connections).

On PostgreSQL, calls run in this module's one thread (so one connection, and calls in the
order they were made), handed over with the event loop's ``run_in_executor``. asgiref's
``sync_to_async`` did the same with more machinery per call (context copies, its
thread-sensitive executor lookup, a future chained through another): measured in
interleaved join storms, 8 % of the server's CPU per join (docs/performance.md). Nothing
the database calls do needs the caller's context variables (the consumer activates no time
zone or translation). Django's HTTP views keep asgiref's thread and their own connection.

On SQLite (the embedded default) calls stay in asgiref's shared thread, with the HTTP views:
SQLite takes one writer at a time, and a test database in memory (shared cache) refuses a
second connection's write at once ("database table is locked") instead of waiting.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections, connection, connections

from signaling import pg_loop

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
_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signaling-db")
_thread_used = False  # set by the first call that runs there: nothing to close before it
_shared_thread = sync_to_async(_hygiene.run, thread_sensitive=True)


@functools.cache
def on_postgresql() -> bool:
    """Calls run in this module's own thread (and the chat store on the event loop: signaling.pg_loop)."""
    return connection.vendor == "postgresql"


async def run(fn, /, *args, **kwargs):
    """``await run(live.post_chat, actor, ...)``: ``fn(*args, **kwargs)`` in the database thread."""
    call = functools.partial(fn, *args, **kwargs)
    if on_postgresql():
        global _thread_used
        _thread_used = True
        return await asyncio.get_running_loop().run_in_executor(_thread, _hygiene.run, call)
    return await _shared_thread(call)


def close_connections() -> None:
    """Close the database thread's connections and the event loops' (signaling.pg_loop) now, and
    wait (tests: PostgreSQL will not drop a test database while a connection to it is open). Starts
    no thread where none ran."""
    pg_loop.close_all()
    if _thread_used:
        _thread.submit(connections.close_all).result()
