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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Sequence

import psycopg
from django.db import connection
from psycopg import pq

from rooms.pg import error_of
from signaling.publisher import settle

log = logging.getLogger(__name__)

# Django's connection parameters that are psycopg's, not libpq's (or that this module sets itself).
_NOT_LIBPQ = ("context", "cursor_factory", "prepare_threshold", "autocommit", "row_factory")


def _raise_as_django(exc: psycopg.Error) -> None:
    """Raise ``exc`` as the Django exception Django's own connection would raise for it."""
    with connection.wrap_database_errors:
        raise exc


class LoopConnection:
    """One libpq connection, sent to and read from by one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pgconn: pq.PGconn | None = None
        self.prepared: set[bytes] = set()
        self.lock = asyncio.Lock()
        self.waiter: asyncio.Future | None = None
        self.fd: int | None = None

    # --- the connection --------------------------------------------------------------------

    async def _connected(self) -> pq.PGconn:
        if self.pgconn is not None and self.pgconn.status == pq.ConnStatus.OK:
            return self.pgconn
        self.close()
        params = {k: v for k, v in connection.get_connection_params().items() if k not in _NOT_LIBPQ}
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
        while pgconn.flush():  # only when the socket's buffer is full
            writable = self.loop.create_future()
            self.loop.add_writer(self.fd, writable.set_result, None)
            try:
                await writable
            finally:
                self.loop.remove_writer(self.fd)
        if pgconn.is_busy():
            self.waiter = self.loop.create_future()
            await self.waiter
        results = []
        while (result := pgconn.get_result()) is not None:
            results.append(result)
        return results

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
                    raise error_of(result)
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
                error = error_of(result)
        if error is not None:
            raise error
        return rows


_CONNECTIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopConnection] = weakref.WeakKeyDictionary()


def for_loop() -> LoopConnection:
    """This event loop's connection (a test runs in its own loop)."""
    loop = asyncio.get_running_loop()
    conn = _CONNECTIONS.get(loop)
    if conn is None:
        conn = _CONNECTIONS[loop] = LoopConnection(loop)
    return conn


def close_all() -> None:
    """Close every loop's connection (tests: PostgreSQL will not drop a database with one open).
    Call it when those loops are not running, or from the loop itself."""
    for conn in list(_CONNECTIONS.values()):
        conn.close()
