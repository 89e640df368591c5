"""signaling.db: the realtime service's database calls, one thread, in order, connections closable."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection

from signaling import db

pytestmark = pytest.mark.django_db(transaction=True)


def _where(tag: str) -> tuple[str, str]:
    return tag, threading.current_thread().name


async def test_calls_run_in_one_thread_in_the_order_they_were_made():
    answers = await asyncio.gather(*(db.run(_where, f"call-{n}") for n in range(20)))

    assert [tag for tag, _ in answers] == [f"call-{n}" for n in range(20)]
    threads = {name for _, name in answers}
    assert len(threads) == 1 and threading.current_thread().name not in threads
    # PostgreSQL: this module's own thread (no asgiref machinery per call); SQLite: asgiref's,
    # shared with the HTTP views (one writer at a time).
    assert next(iter(threads)).startswith("signaling-db") == (connection.vendor == "postgresql")


def _open_connection() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.connection is not None


def _still_open() -> bool:
    return connection.connection is not None


async def test_close_connections_closes_the_database_threads_connection(require_postgres):
    assert await db.run(_open_connection)

    db.close_connections()

    assert not await db.run(_still_open)
