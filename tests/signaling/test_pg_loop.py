"""signaling.pg_loop: prepared statements sent from the event loop, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import DataError, IntegrityError, OperationalError, connection

from signaling import db, pg_loop

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("require_postgres")]

PID = ("backend_pid", "SELECT pg_backend_pid()::text")
PREPARED = ("prepared_here", "SELECT count(*) FROM pg_prepared_statements WHERE name = $1")


def _admin_connection() -> psycopg.Connection:
    params = {k: v for k, v in connection.get_connection_params().items() if k in ("dbname", "user", "host", "port")}
    return psycopg.connect(**params, autocommit=True)


async def _backend_pid(conn: pg_loop.LoopConnection) -> int:
    ((pid,),) = await conn.execute(*PID, [])
    return int(pid)


async def test_a_statement_is_prepared_once_and_answers_its_rows_as_text():
    conn = pg_loop.for_loop()
    statement = ("echo", "SELECT $1::int + 1, $2::text, NULL::text UNION ALL SELECT 0, 'two', 'x'")

    first = await conn.execute(*statement, ["41", 'a "quoted" \\ text'])
    second = await conn.execute(*statement, ["1", "é"])

    assert first == [("42", 'a "quoted" \\ text', None), ("0", "two", "x")]
    assert second[0] == ("2", "é", None)
    assert await conn.execute(*PREPARED, ["echo"]) == [("1",)]
    assert pg_loop.for_loop() is conn  # one connection per event loop


async def test_errors_are_djangos_and_leave_the_connection_usable():
    conn = pg_loop.for_loop()
    pid = await _backend_pid(conn)

    with pytest.raises(DataError):
        await conn.execute("divide", "SELECT 1 / $1::int", ["0"])
    with pytest.raises(DataError):  # bad input for the type: refused by the server, nothing sent twice
        await conn.execute("as_int", "SELECT $1::int", ["not a number"])
    await conn.execute("make_table", "CREATE TEMP TABLE IF NOT EXISTS once (k int PRIMARY KEY)", [])
    await conn.execute("put", "INSERT INTO once VALUES ($1::int)", ["1"])
    with pytest.raises(IntegrityError):
        await conn.execute("put", "INSERT INTO once VALUES ($1::int)", ["1"])

    assert await conn.execute("divide", "SELECT 1 / $1::int", ["2"]) == [("0",)]
    assert await _backend_pid(conn) == pid  # the same connection throughout


async def test_calls_run_one_at_a_time_in_the_order_made():
    conn = pg_loop.for_loop()
    await conn.execute("make_log", "CREATE TEMP TABLE IF NOT EXISTS log (n int, at timestamptz)", [])

    await asyncio.gather(
        *(conn.execute("log", "INSERT INTO log VALUES ($1::int, clock_timestamp())", [str(n)]) for n in range(30))
    )

    rows = await conn.execute("read_log", "SELECT n::text FROM log ORDER BY at", [])
    assert [int(n) for (n,) in rows] == list(range(30))


async def test_a_connection_the_server_ends_is_noticed_and_the_next_call_opens_another():
    conn = pg_loop.for_loop()
    pid = await _backend_pid(conn)

    with _admin_connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 5
    while conn.pgconn is not None and time.monotonic() < deadline:  # the reader sees the end by itself
        await asyncio.sleep(0.02)

    assert conn.pgconn is None
    assert await _backend_pid(conn) != pid


async def test_a_call_in_flight_when_the_server_ends_the_connection_fails_as_operational_error():
    conn = pg_loop.for_loop()
    pid = await _backend_pid(conn)
    sleeping = asyncio.create_task(conn.execute("sleep", "SELECT pg_sleep(10)", []))
    await asyncio.sleep(0.3)

    with _admin_connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    with pytest.raises(OperationalError):
        await asyncio.wait_for(sleeping, 5)
    assert await _backend_pid(conn) != pid  # and the next call works


async def test_a_cancelled_call_drops_its_connection_so_its_late_answer_reaches_nobody():
    conn = pg_loop.for_loop()
    pid = await _backend_pid(conn)
    sleeping = asyncio.create_task(conn.execute("sleep", "SELECT pg_sleep(0.5)", []))
    await asyncio.sleep(0.1)

    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping

    assert await conn.execute("one", "SELECT 1", []) == [("1",)]
    assert await _backend_pid(conn) != pid


async def test_close_connections_closes_the_loops_connection_too():
    pid = await _backend_pid(pg_loop.for_loop())

    db.close_connections()

    def alive() -> bool:
        with _admin_connection() as admin:
            return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 1

    deadline = time.monotonic() + 5
    while await sync_to_async(alive)() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not await sync_to_async(alive)()
