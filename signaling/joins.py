"""A WebSocket's join (``rooms.live.join``), sent from the event loop on PostgreSQL.

A join storm queued every join for the one database thread (signaling.db): the hop into it and
back, psycopg's cursor and pipeline machinery around two round trips, and the thread and the event
loop taking the GIL from each other at every wait. Profiled under the 240-join storm
(docs/performance.md), the database thread held the GIL for more of each join than the event loop
did, and the joins' latency follows that one queue.

Here the same statements (``rooms.join_sql``) go through the event loop's own connection
(``signaling.pg_loop``), in the same transaction shape: the session's row lock and the reads in
one round trip, the decision (``rooms.live.plan_join``, no I/O) on the loop, the seat, the audit row
and the COMMIT in a second. The loop's connection is held for the transaction, so the chat store
waits behind it for that long. A refusal is audited as before (``refuse_handshake``, in the
database thread: refusals are rare and leave the join's transaction rolled back first).
Elsewhere (SQLite) the join runs in the database thread as it always did.
"""

from __future__ import annotations

import uuid

from django.utils import timezone

from accounts.models import User
from rooms import join_sql, live
from signaling import db, pg_loop


async def join(session_id, user: User) -> live.JoinResult:
    """``rooms.live.join`` for this connection: raises its ``LiveError`` or ``DatabaseError``."""
    if not db.on_postgresql():
        return await db.run(live.join, session_id, user)
    try:
        plan = await _join_on_loop(session_id, user)
    except live.LiveError as exc:
        await db.run(live.refuse_handshake, session_id, user.pk, exc.code)
        raise
    return plan.result


async def _join_on_loop(session_id, user: User) -> live.JoinPlan:
    try:
        session_uuid = uuid.UUID(str(session_id))
    except ValueError:
        raise live.LiveError(live.SESSION_NOT_FOUND) from None
    now = timezone.now()
    async with pg_loop.transaction() as tx:
        reads = await tx.run(join_sql.read_statements(session_uuid, user))
        found = join_sql.reads_from_rows(user, *(r.rows for r in reads))
        if found is None:
            raise live.LiveError(live.SESSION_NOT_FOUND)
        plan = live.plan_join(found.session, found.seats, found.entry_facts, user, now)
        seat, _ = await tx.run(join_sql.write_statements(plan.seat, plan.audit), commit=True)
    join_sql.check_seat_written(seat.rowcount)
    join_sql.written(plan.seat, plan.audit)
    return plan
