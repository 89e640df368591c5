"""The psycopg connection under Django's, for the hot paths that send prepared statements (chat
batches in ``rooms.live``: one call of ``rooms_store_chats()``; the join in ``rooms.join_sql`` and
the handshake's login in ``signaling.auth``): ``run`` sends them, in one round trip per call; the
pieces those statements are written from (the models' own metadata, so a renamed column or a new
field cannot leave them behind); ``instance``, a model instance from a row; and the timestamp loader
Django's connections use. PostgreSQL only."""

from __future__ import annotations

import hashlib
import re
import select
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection
from django.db.models import Model, signals
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from psycopg import pq
from psycopg.adapt import Loader, PyFormat, Transformer
from psycopg.pq import ExecStatus, Format


def raw_connection():
    """Django's connection's psycopg connection, opened if needed.

    psycopg itself prepares nothing on it (Django connects with its threshold off, and nothing here
    asks it to): the prepared statements are ``run``'s, under names of ours."""
    connection.ensure_connection()
    return connection.connection


def rollback_open_transaction() -> None:
    """Abandon a transaction a hot path opened itself (BEGIN in its pipeline, outside Django's
    ``atomic``), if it is still open: after a refusal or an error, the connection is usable again."""
    raw = connection.connection
    if raw is not None and raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with connection.wrap_database_errors:
            raw.execute("ROLLBACK")


# psycopg's own timestamptz loader: its C implementation where psycopg[binary] is installed.
TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid
_PSYCOPG_TIMESTAMPTZ = psycopg.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)


class UtcTimestamptzLoader(Loader):
    """A timestamptz as Django's loader gives it on its UTC connection (aware, ``datetime.timezone.utc``),
    by psycopg's own loader. Django's is Python (psycopg's Python parser, then ``replace(tzinfo=...)``):
    3.6 us a value against 0.2 measured here, and a join reads fifty (its seats and their people)."""

    timezone = UTC  # Django's create_cursor compares this with the connection's time zone

    def __init__(self, oid: int, context=None) -> None:
        super().__init__(oid, context)
        self.load = _PSYCOPG_TIMESTAMPTZ(oid, context).load  # the bound C method, called directly

    def load(self, data):  # replaced per instance in __init__
        raise NotImplementedError


def load_timestamps_fast(adapters, time_zone) -> bool:
    """Register ``UtcTimestamptzLoader`` on ``adapters`` (a connection's, or an adapters map) where it
    gives what Django's loader gives: Django's connection time zone is UTC, as it is with USE_TZ and no
    database TIME_ZONE. Connections elsewhere keep Django's loader."""
    if time_zone != UTC:
        return False
    adapters.register_loader("timestamptz", UtcTimestamptzLoader)
    return True


def available() -> bool:
    return connection.vendor == "postgresql"


def table(model: type[Model]) -> str:
    return f'"{model._meta.db_table}"'


def columns(model: type[Model], alias: str) -> str:
    """Every concrete column of ``model``, in field order, as ``alias."column"``."""
    return ", ".join(f'{alias}."{f.column}"' for f in model._meta.concrete_fields)


def column(model: type[Model], field: str) -> str:
    return f'"{model._meta.get_field(field).column}"'


def attnames(model: type[Model]) -> list[str]:
    """The attribute names matching ``columns(model, ...)``, for ``instance``."""
    return [f.attname for f in model._meta.concrete_fields]


def instance(model: type[Model], fields: list[str], values):
    """A model instance from a row, as the ORM builds one (``from_db``: not adding, this database).

    ``Model.__init__`` sets each field through ``setattr`` and sends ``pre_init``/``post_init``: 5-7 us
    an instance here, against 1 us for filling its ``__dict__``, and a join builds about thirty. For a
    model where that is the same thing (every field a plain attribute, nobody listening to those
    signals: ``_plain``), the dictionary is filled directly; any other model goes through ``from_db``."""
    if len(values) != len(fields) or not _plain(model):
        return model.from_db(DEFAULT_DB_ALIAS, fields, values)
    obj = model.__new__(model)
    obj.__dict__.update(zip(fields, values, strict=True))
    state = obj._state = ModelState()
    state.adding = False
    state.db = DEFAULT_DB_ALIAS
    return obj


_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


def _plain(model: type[Model]) -> bool:
    """Building ``model`` by filling its ``__dict__`` is what ``__init__`` does: every concrete field is
    stored as is (no descriptor of its own that converts or keeps other state), and no receiver of
    ``pre_init``/``post_init`` (ImageField's dimensions, GenericForeignKey) would be skipped. The signals
    are asked on every call (a receiver can connect late); the fields' answer is kept per model."""
    if signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model):
        return False
    plain = _PLAIN_MODELS.get(model)
    if plain is None:
        plain = _PLAIN_MODELS[model] = all(
            type(model.__dict__.get(f.attname)) in _PLAIN_DESCRIPTORS for f in model._meta.concrete_fields
        )
    return plain


_PLAIN_MODELS: dict[type[Model], bool] = {}


# --- statements sent below psycopg's cursors ---------------------------------------------------
#
# A psycopg cursor in pipeline mode runs a few hundred lines of Python per statement (its
# generators, the pipeline's queues, result bookkeeping) and waits on the socket once per step:
# measured in a join storm, that machinery was most of the database thread's time per join
# (docs/performance.md). ``run`` sends the same prepared statements through psycopg's ``pq`` layer
# (libpq) in one pipeline, dumps the parameters and loads the rows with psycopg's C ``Transformer``
# and the connection's own adapters (so values are what a cursor gives), and waits once per round
# trip. The statements are prepared under names of ours, once per connection; psycopg never prepares
# anything on Django's connection (its threshold stays off), so its ``DEALLOCATE ALL`` after a
# rollback (which it sends only for statements it prepared itself) cannot drop them.


class Statement:
    """One SQL statement with ``%(name)s`` parameters (or ``$n`` ones), prepared per connection on first use."""

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match) -> str:
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"

        self.sql = sql
        self.text = re.sub(r"%\((\w+)\)s", number, sql).encode()
        self.params = tuple(names)
        self.name = b"th_" + hashlib.sha1(self.text).hexdigest()[:24].encode()
        self._formats = [PyFormat.TEXT] * len(names)  # as text: the server types them from the statement

    def values(self, tx: Transformer, params: Mapping | Sequence) -> Sequence[bytes | None]:
        """The parameters as text: by name for ``%(name)s``, in order for a statement written with ``$n``."""
        if self.params:
            return tx.dump_sequence([params[name] for name in self.params], self._formats)
        return tx.dump_sequence(params, [PyFormat.TEXT] * len(params))


class Answer:
    """One statement's outcome: its rows (tuples of Python values) and the rows it wrote."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list[tuple], rowcount: int) -> None:
        self.rows, self.rowcount = rows, rowcount


_BEGIN, _COMMIT, _PREPARE = b"BEGIN", b"COMMIT", object()
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # psycopg connection -> names


Call = tuple[Statement, Mapping | Sequence]  # a statement and its parameters (by name, or in order)


def run(calls: Sequence[Call], *, begin: bool = False, commit: bool = False) -> list[Answer]:
    """Send ``calls`` in one round trip (with BEGIN before and COMMIT after when asked) on Django's
    connection; one ``Answer`` per call. A statement's error is raised as Django's exception once the
    round trip is over (the ones after it were not run; an open transaction is then aborted).

    Inside Django's ``atomic`` (the connection out of autocommit) the statements belong to its
    transaction: when none is open yet, the round trip opens it, as psycopg's cursor would."""
    raw = raw_connection()
    with connection.wrap_database_errors:
        idle = raw.pgconn.transaction_status == pq.TransactionStatus.IDLE
        begin_command = _begin_command(raw) if begin or (idle and not raw.autocommit) else None
        try:
            return _run(raw, calls, begin_command, commit)
        except psycopg.errors.InvalidSqlStatementName:
            # Our statements were dropped behind our back (DEALLOCATE ALL, DISCARD ALL): prepare them
            # again. Sent in autocommit with no transaction open, nothing of the failed round trip was
            # kept (it ran as one implicit transaction, or in the one its own BEGIN opened, rolled back
            # here), so it is sent again; in the caller's transaction, the caller gets the error.
            _PREPARED.pop(raw, None)
            if not (idle and raw.autocommit):
                raise
            if raw.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                raw.execute("ROLLBACK")
            return _run(raw, calls, begin_command, commit)


def _begin_command(raw) -> bytes:
    """BEGIN with the connection's transaction characteristics, as psycopg starts a transaction."""
    parts = [b"BEGIN"]
    if raw.isolation_level is not None:
        parts += [b"ISOLATION LEVEL", raw.isolation_level.name.replace("_", " ").encode()]
    if raw.read_only is not None:
        parts.append(b"READ ONLY" if raw.read_only else b"READ WRITE")
    if raw.deferrable is not None:
        parts.append(b"DEFERRABLE" if raw.deferrable else b"NOT DEFERRABLE")
    return b" ".join(parts)


def _run(raw, calls, begin_command: bytes | None, commit: bool) -> list[Answer]:
    pgconn = raw.pgconn
    prepared = _PREPARED.setdefault(raw, set())
    tx = Transformer(raw)
    sent: list = []
    pgconn.enter_pipeline_mode()
    try:
        if begin_command:
            pgconn.send_query_params(begin_command, None)
            sent.append(_BEGIN)
        preparing = set()
        for statement, params in calls:
            if statement.name not in prepared and statement.name not in preparing:
                pgconn.send_prepare(statement.name, statement.text)
                preparing.add(statement.name)
                sent.append((_PREPARE, statement))
            pgconn.send_query_prepared(statement.name, statement.values(tx, params))
            sent.append(statement)
        if commit:
            pgconn.send_query_params(_COMMIT, None)
            sent.append(_COMMIT)
        pgconn.pipeline_sync()
        results = _round_trip(pgconn)
    finally:
        if pgconn.pipeline_status != pq.PipelineStatus.OFF:
            try:
                if pgconn.is_busy():
                    raise psycopg.OperationalError("answers still due")
                pgconn.exit_pipeline_mode()
            except psycopg.Error:
                # Interrupted with answers still due (the connection lost, a parameter that could
                # not be sent): nothing can follow them on it. Closed, the next call fails as on a
                # lost connection and Django opens a new one; the error that interrupted goes on.
                raw.close()
    answers, error = [], None
    for what, result in zip(sent, results, strict=True):
        status = result.status
        if status == ExecStatus.FATAL_ERROR:
            error = error or error_of(result)
        elif status == ExecStatus.PIPELINE_ABORTED or error is not None:
            continue
        elif isinstance(what, tuple):
            prepared.add(what[1].name)
        elif isinstance(what, Statement):
            rows = []
            if status == ExecStatus.TUPLES_OK and result.ntuples:
                tx.set_pgresult(result)
                rows = tx.load_rows(0, result.ntuples, tuple)
            answers.append(Answer(rows, result.command_tuples or 0))
    if error is not None:
        raise error
    return answers


def error_of(result: pq.PGresult) -> psycopg.Error:
    """The psycopg exception for a failed result, by its SQLSTATE (``IntegrityError`` ...)."""
    state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    cls = psycopg.errors.lookup(state) if state else psycopg.DatabaseError
    return cls(result.get_error_message() or "database error")


def _round_trip(pgconn: pq.PGconn) -> list[pq.PGresult]:
    """Flush what was sent, then every result up to the pipeline's sync, waiting (without the GIL)
    only while libpq has nothing to hand out."""
    poll = select.poll()
    fd = pgconn.socket
    while pgconn.flush():  # the socket's buffer is full (large parameters): wait until it drains
        poll.register(fd, select.POLLIN | select.POLLOUT)
        if any(event & select.POLLIN for _, event in poll.poll()):
            pgconn.consume_input()
    poll.register(fd, select.POLLIN)
    results = []
    while True:
        while pgconn.is_busy():
            poll.poll()
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            continue  # the end of one statement's results
        if result.status == ExecStatus.PIPELINE_SYNC:
            return results
        results.append(result)
