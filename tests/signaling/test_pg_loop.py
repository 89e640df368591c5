"""signaling.pg_loop: prepared statements sent from the event loop, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import DataError, IntegrityError, OperationalError, connection

from rooms import join_sql
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


# --- transactions (the join's: signaling.joins) ----------------------------------------------------


def _statement(name: str, sql: str, *values) -> join_sql.Statement:
    return join_sql.Statement(name, sql, list(values))


@pytest.fixture
def probe_table():
    """A committed table every connection sees (a temporary one is the creating connection's only)."""
    with _admin_connection() as admin:
        admin.execute("DROP TABLE IF EXISTS pg_loop_probe")
        admin.execute("CREATE TABLE pg_loop_probe (k int PRIMARY KEY, at timestamptz, tag uuid, flag bool, note text)")
    yield "pg_loop_probe"
    with _admin_connection() as admin:
        admin.execute("DROP TABLE IF EXISTS pg_loop_probe")


def _committed_keys() -> list[int]:
    with _admin_connection() as admin:
        return [k for (k,) in admin.execute("SELECT k FROM pg_loop_probe ORDER BY k")]


PUT = ("probe_put", "INSERT INTO pg_loop_probe VALUES ($1, $2, $3, $4, $5)")
GET = ("probe_get", "SELECT k, at, tag, flag, note, NULL::timestamptz FROM pg_loop_probe WHERE k = $1")
BACKEND = ("probe_backend", "SELECT pg_backend_pid()")


async def test_a_transaction_sends_its_statements_together_and_commits_with_the_last(probe_table):
    at = datetime(2026, 11, 28, 13, 0, 0, 123456, tzinfo=UTC)
    tag = uuid.uuid4()

    async with pg_loop.transaction() as tx:
        put, got = await tx.run([_statement(*PUT, 1, at, tag, True, 'a "note"'), _statement(*GET, 1)])
        assert put.rowcount == 1 and put.rows == []
        assert await sync_to_async(_committed_keys)() == []  # not before the commit
        await tx.run([_statement(*PUT, 2, at, tag, False, None)], commit=True)

    # Typed as Django's own connection types them: aware UTC datetimes, UUIDs, booleans, NULLs.
    assert got.rows == [(1, at, tag, True, 'a "note"', None)]
    assert got.rows[0][1].tzinfo is UTC
    assert await sync_to_async(_committed_keys)() == [1, 2]


async def test_a_transaction_left_by_an_exception_is_rolled_back_and_its_connection_kept(probe_table):
    with pytest.raises(LookupError):
        async with pg_loop.transaction() as tx:
            _, backend = await tx.run([_statement(*PUT, 1, None, None, None, None), _statement(*BACKEND)])
            ((pid,),) = backend.rows
            raise LookupError("refused, as a join refuses")

    assert await sync_to_async(_committed_keys)() == []
    async with pg_loop.transaction() as tx:  # the same connection, usable: not left inside a transaction
        backend, _ = await tx.run([_statement(*BACKEND), _statement(*PUT, 3, None, None, None, None)], commit=True)
    ((again,),) = backend.rows
    assert again == pid
    assert await sync_to_async(_committed_keys)() == [3]


async def test_an_error_in_a_transaction_is_djangos_and_the_transaction_is_rolled_back(probe_table):
    with pytest.raises(IntegrityError):
        async with pg_loop.transaction() as tx:
            await tx.run([_statement(*PUT, 1, None, None, None, None)])
            await tx.run([_statement(*PUT, 2, None, None, None, None), _statement(*PUT, 1, None, None, None, None)])
    with pytest.raises(DataError):  # a value the column's type refuses; nothing after it runs
        async with pg_loop.transaction() as tx:
            await tx.run([_statement("probe_bad", "SELECT $1::int", "x"), _statement(*PUT, 5, None, None, None, None)])

    assert await sync_to_async(_committed_keys)() == []
    async with pg_loop.transaction() as tx:
        await tx.run([_statement(*PUT, 1, None, None, None, None)], commit=True)
    assert await sync_to_async(_committed_keys)() == [1]


async def test_a_transaction_that_ends_without_its_commit_is_rolled_back_and_said_to_be_a_bug(probe_table):
    with pytest.raises(RuntimeError, match="without a commit"):
        async with pg_loop.transaction() as tx:
            await tx.run([_statement(*PUT, 1, None, None, None, None)])

    assert await sync_to_async(_committed_keys)() == []


async def test_a_cancelled_transaction_drops_its_connection_and_the_server_rolls_it_back(probe_table):
    entered = asyncio.Event()
    connections = []

    async def slow() -> None:
        async with pg_loop.transaction() as tx:
            connections.append(tx.conn)
            await tx.run([_statement(*PUT, 1, None, None, None, None)])
            entered.set()
            await tx.run([_statement("probe_sleep", "SELECT pg_sleep(0.5)")])

    task = asyncio.create_task(slow())
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert connections[0].pgconn is None  # its late answer can reach no later call
    # The insert goes with the connection (the server rolls back once its statement ends): the key is
    # free again.
    async with pg_loop.transaction() as tx:
        await asyncio.wait_for(tx.run([_statement(*PUT, 1, None, None, None, None)], commit=True), 5)
    assert await sync_to_async(_committed_keys)() == [1]


async def test_transactions_run_side_by_side_on_connections_of_their_own(probe_table):
    # A join holds its connection while the loop decides; the next join must not wait for that,
    # and neither must the chat store (pg_loop.for_loop's connection).
    holding = asyncio.Event()
    release = asyncio.Event()
    pids = []

    async def hold() -> None:
        async with pg_loop.transaction() as tx:
            backend, _ = await tx.run([_statement(*BACKEND), _statement(*PUT, 1, None, None, None, None)])
            ((pid,),) = backend.rows
            pids.append(pid)
            holding.set()
            await release.wait()
            await tx.run([], commit=True)

    holder = asyncio.create_task(hold())
    await asyncio.wait_for(holding.wait(), 5)

    async def meanwhile() -> int:
        async with pg_loop.transaction() as tx:
            (backend,) = await tx.run([_statement(*BACKEND)], commit=True)
        ((pid,),) = backend.rows
        return pid

    try:
        pids.append(await asyncio.wait_for(meanwhile(), 5))  # not behind the transaction still open
        pids.append(await asyncio.wait_for(_backend_pid(pg_loop.for_loop()), 5))
    finally:
        release.set()
    await asyncio.wait_for(holder, 5)

    assert len(set(pids)) == 3
    assert await sync_to_async(_committed_keys)() == [1]
