"""The psycopg connection under Django's, for the hot paths that send prepared statements in a
pipeline (chat batches in ``rooms.live``, the join in ``rooms.join_sql``). PostgreSQL only."""

from __future__ import annotations

from django.db import connection

# psycopg prepares a statement after this many runs; ours ask on the first (prepare=True).
ONLY_WHEN_ASKED = 1 << 30


def raw_connection():
    """Django's connection's psycopg connection, opened if needed, preparing what asks to be."""
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django connects with preparation off (psycopg then ignores prepare=True). Its own cursors
        # bind client-side and never prepare whatever this says; only statements that ask are prepared.
        raw.prepare_threshold = ONLY_WHEN_ASKED
    return raw
