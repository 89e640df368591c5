"""The psycopg connection under Django's, for the hot paths that send prepared statements (chat
batches in ``rooms.live``: one call of ``rooms_store_chats()``; the join in ``rooms.join_sql`` and
the handshake's login in ``signaling.auth``, in pipelines), and the pieces those statements are
written from (the models' own metadata, so a renamed column or a new field cannot leave them
behind). PostgreSQL only."""

from __future__ import annotations

from datetime import UTC

import psycopg
from django.db import connection
from django.db.models import Model
from psycopg.adapt import Loader
from psycopg.pq import Format

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
    """A model instance from a row, as the ORM builds one (``from_db``: not adding, this database)."""
    return model.from_db(connection.alias, fields, values)
