"""A PostgreSQL connection driven by the event loop itself, for the chat store's one statement.

Every other database call of the realtime service runs in signaling.db's thread, on Django's
connection. A chat message went there too: the hand-over into that thread (a queue, a condition
variable), the thread waiting for the GIL the loop holds, psycopg's execute machinery, and the hand
back (``call_soon_threadsafe`` and the loop's self-pipe). Measured with perf under the rate20
benchmark, that thread and the hand-overs were about a quarter of the server's CPU, ~390 us per
message against ~130 us for the same call on a quiet machine (docs/performance.md).

Here the loop sends the prepared statement itself, through libpq in nonblocking mode (psycopg's
``pq`` layer): a send, a reader that is woken when the answer arrives, no thread and no GIL hand-over.
The statement and its text parameters are ``rooms.live``'s (``CHAT_STORE_SQL``), built the same way
for the synchronous path. One connection per event loop, opened on first use with Django's settings
for the default database, in autocommit (the statement is its own transaction), prepared once per
connection. Errors come out as Django's exceptions (``IntegrityError``, ``DataError``,
``OperationalError`` ...), as from Django's own connection; a lost connection fails the call that
used it, and the next call connects again. Calls on one connection run one at a time, in order.

Transactions of several statements (the join's: ``signaling.joins``) go on connections of their own,
a few per loop (``transaction``): each holds its connection from BEGIN to COMMIT, across the turns
of the loop in which the caller decides, so one connection would queue every join, and the chat
store, behind the one being decided. Their statements go in libpq's pipeline mode, several in one
round trip, with values dumped and rows loaded as Django's connection does (its adapters, with
``rooms.pg``'s timestamp loader).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg
from django.db import connection
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

from rooms import pg
from signaling.publisher import settle

log = logging.getLogger(__name__)

# Django's connection parameters that are psycopg's, not libpq's (or that this module sets itself).
_NOT_LIBPQ = ("context", "cursor_factory", "prepare_threshold", "autocommit", "row_factory")


def _raise_as_django(exc: psycopg.Error) -> None:
    """Raise ``exc`` as the Django exception Django's own connection would raise for it."""
    with connection.wrap_database_errors:
        raise exc


def _error_of(result: pq.PGresult) -> psycopg.Error:
    state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    cls = psycopg.errors.lookup(state) if state else psycopg.DatabaseError
    return cls(result.get_error_message() or "database error")


class LoopConnection:
    """One libpq connection, sent to and read from by one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pgconn: pq.PGconn | None = None
        self.prepared: set[bytes] = set()
        self.lock = asyncio.Lock()
        self.waiter: asyncio.Future | None = None
        self.fd: int | None = None
        self.adapters = None  # Django's for this database (its time zone's timestamps ...)

    # --- the connection --------------------------------------------------------------------

    async def _connected(self) -> pq.PGconn:
        if self.pgconn is not None and self.pgconn.status == pq.ConnStatus.OK:
            return self.pgconn
        self.close()
        django_params = connection.get_connection_params()
        self.adapters = django_params.get("context")
        if self.adapters is not None:
            pg.load_timestamps_fast(self.adapters, connection.timezone)
        params = {k: v for k, v in django_params.items() if k not in _NOT_LIBPQ}
        try:
            opened = await psycopg.AsyncConnection.connect(autocommit=True, **params)
        except psycopg.Error as exc:
            _raise_as_django(exc)
        pgconn = opened.pgconn
        pgconn.nonblocking = 1
        self.pgconn, self.fd = pgconn, pgconn.socket
        # Registered for the connection's life: an answer wakes the waiting call, and a connection the
        # server ends (a restart) is noticed at once, not at the next call.
        self.loop.add_reader(self.fd, self._readable)
        return pgconn

    def close(self, error: BaseException | None = None) -> None:
        """Close the connection now (the next call opens a new one); a call waiting on it fails."""
        pgconn, self.pgconn = self.pgconn, None
        self.prepared = set()
        if self.fd is not None and not self.loop.is_closed():
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.fd)
        self.fd = None
        if pgconn is not None:
            pgconn.finish()
        self._wake(error or psycopg.OperationalError("the connection was closed"))

    def _readable(self) -> None:
        pgconn = self.pgconn
        if pgconn is None:
            return
        try:
            pgconn.consume_input()
        except psycopg.OperationalError as exc:  # the server went away
            log.warning("database connection of the event loop lost")
            self.close(exc)
            return
        if not pgconn.is_busy():
            self._wake(None)

    def _wake(self, error: BaseException | None) -> None:
        waiter, self.waiter = self.waiter, None
        settle(waiter, error)

    async def _results(self, pgconn: pq.PGconn) -> list[pq.PGresult]:
        """Every result of what was just sent, once the server has answered it all."""
        await self._flushed(pgconn)
        if pgconn.is_busy():
            self.waiter = self.loop.create_future()
            await self.waiter
        results = []
        while (result := pgconn.get_result()) is not None:
            results.append(result)
        return results

    async def _flushed(self, pgconn: pq.PGconn) -> None:
        while pgconn.flush():  # only when the socket's buffer is full
            writable = self.loop.create_future()
            self.loop.add_writer(self.fd, writable.set_result, None)
            try:
                await writable
            finally:
                self.loop.remove_writer(self.fd)

    # --- calls -----------------------------------------------------------------------------

    async def execute(self, name: str, sql: str, parameters: Sequence[str]) -> list[tuple[str | None, ...]]:
        """Run prepared statement ``name`` (``sql``, prepared on first use) with text ``parameters``;
        its rows, every value as text (None for NULL)."""
        async with self.lock:
            try:
                return await self._execute(name.encode(), sql, parameters)
            except psycopg.Error as exc:
                if self.pgconn is not None and self.pgconn.status != pq.ConnStatus.OK:
                    self.close()
                _raise_as_django(exc)
            except asyncio.CancelledError:
                # The answer may still come: this connection cannot tell it from the next call's.
                self.close()
                raise

    async def _execute(self, name: bytes, sql: str, parameters: Sequence[str]) -> list[tuple[str | None, ...]]:
        pgconn = await self._connected()
        if name not in self.prepared:
            pgconn.send_prepare(name, sql.encode())
            for result in await self._results(pgconn):
                if result.status != pq.ExecStatus.COMMAND_OK:
                    raise _error_of(result)
            self.prepared.add(name)
        pgconn.send_query_prepared(name, [p.encode() for p in parameters])
        rows: list[tuple[str | None, ...]] = []
        error = None
        for result in await self._results(pgconn):
            if result.status == pq.ExecStatus.TUPLES_OK:
                width = result.nfields
                for row in range(result.ntuples):
                    values = (result.get_value(row, col) for col in range(width))
                    rows.append(tuple(None if v is None else v.decode() for v in values))
            elif result.status != pq.ExecStatus.COMMAND_OK and error is None:
                error = _error_of(result)
        if error is not None:
            raise error
        return rows

    # --- transactions of several statements, typed ----------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """This connection for one transaction (other calls wait): ``run`` sends statements in one
        round trip, BEGIN with the first and, with ``commit``, COMMIT with the last. Left any other
        way (an exception, a refusal the caller raises) the transaction is rolled back; cancelled,
        the connection is closed (an answer still on its way cannot be told from the next call's)."""
        async with self.lock:
            tx = Transaction(self)
            try:
                yield tx
            except asyncio.CancelledError:
                self.close()
                raise
            except BaseException:
                await tx.abandon()
                raise
            if tx.open:
                await tx.abandon()
                raise RuntimeError("a transaction of the event loop's connection ended without a commit")

    async def _pipeline(self, statements: Sequence[Statement], *, begin: bool, commit: bool) -> list[Ran]:
        pgconn = await self._connected()
        dump = Transformer(self.adapters)
        preparing = [s for s in dict.fromkeys(s.name for s in statements) if s.encode() not in self.prepared]
        sql_of = {s.name: s.sql for s in statements}
        pgconn.enter_pipeline_mode()
        try:
            if begin:
                pgconn.send_query_params(b"BEGIN", None)
            for name in preparing:
                pgconn.send_prepare(name.encode(), sql_of[name].encode())
            for statement in statements:
                values = dump.dump_sequence(statement.values, [PyFormat.TEXT] * len(statement.values))
                pgconn.send_query_prepared(statement.name.encode(), values)
            if commit:
                pgconn.send_query_params(b"COMMIT", None)
            pgconn.pipeline_sync()
            answers = await self._pipeline_results(pgconn)
        finally:
            if pgconn.pipeline_status != pq.PipelineStatus.OFF and not pgconn.is_busy():
                with contextlib.suppress(psycopg.Error):
                    pgconn.exit_pipeline_mode()
        failed = (r for answer in answers for r in answer if r.status == pq.ExecStatus.FATAL_ERROR)
        error = next((_error_of(r) for r in failed), None)
        answers = answers[int(begin) :]
        for name, answer in zip(preparing, answers, strict=False):
            if answer and answer[-1].status == pq.ExecStatus.COMMAND_OK:
                self.prepared.add(name.encode())
        if error is not None:
            raise error
        ran = []
        for answer in answers[len(preparing) : len(preparing) + len(statements)]:
            result = answer[-1]
            load = Transformer(self.adapters)
            load.set_pgresult(result)
            rows = load.load_rows(0, result.ntuples, tuple) if result.status == pq.ExecStatus.TUPLES_OK else []
            ran.append(Ran(rows=rows, rowcount=result.command_tuples or 0))
        return ran

    async def _pipeline_results(self, pgconn: pq.PGconn) -> list[list[pq.PGresult]]:
        """The results of what was just sent in pipeline mode, one list per query, up to the sync."""
        await self._flushed(pgconn)
        answers: list[list[pq.PGresult]] = []
        current: list[pq.PGresult] = []
        while True:
            if pgconn.is_busy():
                self.waiter = self.loop.create_future()
                await self.waiter
                continue
            result = pgconn.get_result()
            if result is None:
                answers.append(current)
                current = []
            elif result.status == pq.ExecStatus.PIPELINE_SYNC:
                return answers
            else:
                current.append(result)


class Transaction:
    """One transaction on a loop connection (``LoopConnection.transaction``)."""

    def __init__(self, conn: LoopConnection) -> None:
        self.conn = conn
        self.open = False

    async def run(self, statements: Sequence[Statement], *, commit: bool = False) -> list[Ran]:
        """Send ``statements`` (prepared on first use; values dumped as Django's connection would)
        in one round trip; each one's typed rows and row count. With ``commit`` the transaction ends."""
        begin = not self.open
        self.open = True
        try:
            ran = await self.conn._pipeline(statements, begin=begin, commit=commit)
        except psycopg.Error as exc:
            if self.conn.pgconn is None or self.conn.pgconn.status != pq.ConnStatus.OK:
                self.conn.close()
                self.open = False  # gone with the connection
            _raise_as_django(exc)
        if commit:
            self.open = False
        return ran

    async def abandon(self) -> None:
        """Roll back what this transaction did, if it is still open (a failed ROLLBACK closes the connection)."""
        if not self.open:
            return
        self.open = False
        pgconn = self.conn.pgconn
        if pgconn is None or pgconn.status != pq.ConnStatus.OK:
            return
        try:
            pgconn.send_query_params(b"ROLLBACK", None)
            for result in await self.conn._results(pgconn):
                if result.status != pq.ExecStatus.COMMAND_OK:
                    raise _error_of(result)
        except (psycopg.Error, asyncio.CancelledError):
            self.conn.close()
            raise


class Statement(Protocol):
    name: str  # the prepared statement's name on this connection
    sql: str  # with numbered parameters ($1 ..)
    values: list  # Python values, dumped as Django's connection would


@dataclass(frozen=True)
class Ran:
    rows: list[tuple]
    rowcount: int


_CONNECTIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopConnection] = weakref.WeakKeyDictionary()


def for_loop() -> LoopConnection:
    """This event loop's connection (a test runs in its own loop)."""
    loop = asyncio.get_running_loop()
    conn = _CONNECTIONS.get(loop)
    if conn is None:
        conn = _CONNECTIONS[loop] = LoopConnection(loop)
    return conn


# Transactions (a join's: rooms.join_sql) hold their connection across a turn of the loop, so they
# get connections of their own, a few per loop: one would make every join wait for the one before
# to be decided and committed, and the chat store behind them all.
TRANSACTION_CONNECTIONS = 4


class TransactionPool:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.connections = [LoopConnection(loop) for _ in range(TRANSACTION_CONNECTIONS)]
        self.next = 0

    def pick(self) -> LoopConnection:
        """An idle connection if there is one, else the next in turn (its lock queues the caller)."""
        for conn in self.connections:
            if not conn.lock.locked():
                return conn
        self.next = (self.next + 1) % len(self.connections)
        return self.connections[self.next]


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TransactionPool] = weakref.WeakKeyDictionary()


def transaction():
    """``LoopConnection.transaction`` on one of this event loop's transaction connections."""
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = TransactionPool(loop)
    return pool.pick().transaction()


def close_all() -> None:
    """Close every loop's connections (tests: PostgreSQL will not drop a database with one open).
    Call it when those loops are not running, or from the loop itself."""
    for conn in list(_CONNECTIONS.values()):
        conn.close()
    for pool in list(_POOLS.values()):
        for conn in pool.connections:
            conn.close()
