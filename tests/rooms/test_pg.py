"""rooms.pg: timestamps loaded by psycopg's own loader where Django's gives the same."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import psycopg
import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.adapt import AdaptersMap
from psycopg.pq import Format

from rooms import pg

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]

TEXTS = [
    "2026-11-28 13:04:59.200974+00",
    "2026-03-08 07:30:00-05",  # another offset: the same instant in UTC
    "1999-12-31 23:59:59.999999+13:45",
    "2024-02-29 00:00:00+00",
]


def test_djangos_connections_load_timestamps_with_psycopgs_loader():
    connection.ensure_connection()
    loader = connection.connection.adapters.get_loader(pg.TIMESTAMPTZ_OID, Format.TEXT)
    assert loader is pg.UtcTimestamptzLoader
    with connection.cursor() as cursor:  # Django's cursor takes it as its own (same time zone)
        cursor.execute("SELECT %s::timestamptz", ["2026-01-01T10:00:00+02:00"])
        (value,) = cursor.fetchone()
    assert value.tzinfo is UTC and value.hour == 8


def test_it_loads_what_djangos_loader_loads():
    connection.ensure_connection()
    django_map = AdaptersMap(connection.connection.adapters)
    register_tzloader(connection.timezone, django_map)
    djangos = django_map.get_loader(pg.TIMESTAMPTZ_OID, Format.TEXT)(pg.TIMESTAMPTZ_OID, connection.connection)
    ours = pg.UtcTimestamptzLoader(pg.TIMESTAMPTZ_OID, connection.connection)

    for text in TEXTS:
        theirs, mine = djangos.load(text.encode()), ours.load(text.encode())
        assert (mine, mine.tzinfo, mine.utcoffset()) == (theirs, theirs.tzinfo, theirs.utcoffset()), text


def test_only_where_djangos_time_zone_is_utc():
    adapters = AdaptersMap(psycopg.adapters)
    assert not pg.load_timestamps_fast(adapters, timezone(timedelta(hours=2)))
    assert adapters.get_loader(pg.TIMESTAMPTZ_OID, Format.TEXT) is not pg.UtcTimestamptzLoader
    assert pg.load_timestamps_fast(adapters, UTC)
    assert adapters.get_loader(pg.TIMESTAMPTZ_OID, Format.TEXT) is pg.UtcTimestamptzLoader
