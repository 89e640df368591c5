"""The psycopg connection under Django's, for the hot paths that send prepared statements (chat
batches in ``rooms.live``: one call of ``rooms_store_chats()``; the join in ``rooms.join_sql`` and
the handshake's login in ``signaling.auth``, in pipelines), and the pieces those statements are
written from (the models' own metadata, so a renamed column or a new field cannot leave them
behind). PostgreSQL only."""

from __future__ import annotations

import psycopg
from django.db import connection
from django.db.models import Model

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
