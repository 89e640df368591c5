"""rooms.pg: timestamps loaded by psycopg's own loader where Django's gives the same; statements sent
below psycopg's cursors (``run``); model instances built from rows (``instance``)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.models.signals import post_init
from psycopg.adapt import AdaptersMap
from psycopg.pq import Format

from accounts.models import User
from rooms import pg
from rooms.models import AuditEvent, Seat

pytestmark = pytest.mark.django_db
postgresql = pytest.mark.usefixtures("require_postgres")

TEXTS = [
    "2026-11-28 13:04:59.200974+00",
    "2026-03-08 07:30:00-05",  # another offset: the same instant in UTC
    "1999-12-31 23:59:59.999999+13:45",
    "2024-02-29 00:00:00+00",
]


@postgresql
def test_djangos_connections_load_timestamps_with_psycopgs_loader():
    connection.ensure_connection()
    loader = connection.connection.adapters.get_loader(pg.TIMESTAMPTZ_OID, Format.TEXT)
    assert loader is pg.UtcTimestamptzLoader
    with connection.cursor() as cursor:  # Django's cursor takes it as its own (same time zone)
        cursor.execute("SELECT %s::timestamptz", ["2026-01-01T10:00:00+02:00"])
        (value,) = cursor.fetchone()
    assert value.tzinfo is UTC and value.hour == 8


@postgresql
def test_it_loads_what_djangos_loader_loads():
    connection.ensure_connection()
    django_map = AdaptersMap(connection.connection.adapters)
    register_tzloader(connection.timezone, django_map)
    djangos = django_map.get_loader(pg.TIMESTAMPTZ_OID, Format.TEXT)(pg.TIMESTAMPTZ_OID, connection.connection)
    ours = pg.UtcTimestamptzLoader(pg.TIMESTAMPTZ_OID, connection.connection)

    for text in TEXTS:
        theirs, mine = djangos.load(text.encode()), ours.load(text.encode())
        assert (mine, mine.tzinfo, mine.utcoffset()) == (theirs, theirs.tzinfo, theirs.utcoffset()), text


@postgresql
def test_only_where_djangos_time_zone_is_utc():
    adapters = AdaptersMap(psycopg.adapters)
    assert not pg.load_timestamps_fast(adapters, timezone(timedelta(hours=2)))
    assert adapters.get_loader(pg.TIMESTAMPTZ_OID, Format.TEXT) is not pg.UtcTimestamptzLoader
    assert pg.load_timestamps_fast(adapters, UTC)
    assert adapters.get_loader(pg.TIMESTAMPTZ_OID, Format.TEXT) is pg.UtcTimestamptzLoader


# --- run: statements below psycopg's cursors ------------------------------------------------------

VALUES = pg.Statement(
    "SELECT %(id)s::uuid, %(at)s::timestamptz, %(flag)s::boolean, %(n)s::integer, %(text)s::text, "
    "%(none)s::text, %(id)s::uuid = %(id)s::uuid"
)
SCRATCH = "CREATE TEMPORARY TABLE IF NOT EXISTS pg_run_scratch (k integer PRIMARY KEY, v text)"
INSERT = pg.Statement("INSERT INTO pg_run_scratch (k, v) VALUES (%(k)s, %(v)s)")
COUNT = pg.Statement("SELECT count(*) FROM pg_run_scratch")
BACKEND_PID = pg.Statement("SELECT pg_backend_pid()")
SLEEP = pg.Statement("SELECT pg_sleep(5)")


def _scratch():
    with connection.cursor() as cursor:
        cursor.execute(SCRATCH)
        cursor.execute("TRUNCATE pg_run_scratch")


def _prepared_like(fragment: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{fragment}%"])
        return cursor.fetchone()[0]


def test_named_parameters_become_numbered_once_each():
    assert VALUES.params == ("id", "at", "flag", "n", "text", "none")
    assert VALUES.text.decode().startswith("SELECT $1::uuid, $2::timestamptz, $3::boolean")
    assert VALUES.text.decode().endswith("$1::uuid = $1::uuid")
    assert pg.Statement("SELECT $1::int").params == ()


@postgresql
def test_values_come_back_as_djangos_cursor_gives_them():
    params = {
        "id": uuid.uuid4(),
        "at": datetime(2026, 11, 28, 13, 4, 59, 200974, tzinfo=UTC),
        "flag": True,
        "n": 42,
        "text": 'it\'s \\ "quoted" and ünïcode',
        "none": None,
    }
    (answer,) = pg.run([(VALUES, params)])
    with connection.cursor() as cursor:
        cursor.execute(VALUES.sql, params)
        expected = cursor.fetchall()

    assert answer.rows == expected
    (row,) = answer.rows
    assert row[:6] == tuple(params.values()) and row[6] is True
    assert row[1].tzinfo is UTC


@postgresql
def test_one_round_trip_for_every_statement_of_a_call(monkeypatch):
    _scratch()
    trips = []
    original = pg._round_trip
    monkeypatch.setattr(pg, "_round_trip", lambda pgconn: trips.append(1) or original(pgconn))

    answers = pg.run([(INSERT, {"k": 1, "v": "a"}), (INSERT, {"k": 2, "v": "b"}), (COUNT, {})])

    assert len(trips) == 1
    assert [a.rowcount for a in answers] == [1, 1, 1] and answers[2].rows == [(2,)]
    assert connection.connection.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


@postgresql
def test_each_statement_is_prepared_once_per_connection():
    _scratch()
    pg.run([(INSERT, {"k": 1, "v": "a"})])
    pg.run([(INSERT, {"k": 2, "v": "b"}), (INSERT, {"k": 3, "v": "c"})])

    assert _prepared_like("INSERT INTO pg_run_scratch") == 1


@postgresql
def test_an_error_is_djangos_after_the_round_trip_and_the_rest_is_not_run():
    _scratch()
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            pg.run([(INSERT, {"k": 1, "v": "a"}), (INSERT, {"k": 1, "v": "again"}), (INSERT, {"k": 2, "v": "b"})])

    # The connection is out of pipeline mode and usable; the atomic block rolled the first insert back.
    assert connection.connection.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    assert pg.run([(COUNT, {})])[0].rows == [(0,)]


@postgresql
@pytest.mark.django_db(transaction=True)
def test_inside_djangos_atomic_the_statements_are_its_transactions():
    _scratch()
    with pytest.raises(RuntimeError):
        with transaction.atomic():  # no statement of Django's before ours: the round trip opens it
            pg.run([(INSERT, {"k": 1, "v": "a"})])
            assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            raise RuntimeError("rolled back")
    with transaction.atomic():
        pg.run([(INSERT, {"k": 2, "v": "b"})])

    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with connection.cursor() as cursor:
        cursor.execute("SELECT k FROM pg_run_scratch")
        assert cursor.fetchall() == [(2,)]


@postgresql
@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_failed_call_keeps_nothing_and_its_own_transaction_can_be_abandoned():
    _scratch()
    with pytest.raises(IntegrityError):  # one implicit transaction: the first insert goes too
        pg.run([(INSERT, {"k": 1, "v": "a"}), (INSERT, {"k": 1, "v": "again"})])
    assert pg.run([(COUNT, {})])[0].rows == [(0,)]

    with pytest.raises(IntegrityError):  # BEGIN of its own: left aborted for the caller to abandon
        pg.run([(INSERT, {"k": 2, "v": "b"}), (INSERT, {"k": 2, "v": "again"})], begin=True)
    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    pg.rollback_open_transaction()

    pg.run([(INSERT, {"k": 3, "v": "c"})], begin=True)
    pg.run([(INSERT, {"k": 4, "v": "d"})], commit=True)
    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert pg.run([(COUNT, {})])[0].rows == [(2,)]


@postgresql
@pytest.mark.django_db(transaction=True)
def test_statements_dropped_behind_its_back_are_prepared_again():
    _scratch()
    pg.run([(INSERT, {"k": 1, "v": "a"})])
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")

    # Outside a transaction the call is sent again once prepared: nothing of the failed one was kept.
    pg.run([(INSERT, {"k": 2, "v": "b"}), (COUNT, {})], begin=True, commit=True)
    assert pg.run([(COUNT, {})])[0].rows == [(2,)]
    assert _prepared_like("INSERT INTO pg_run_scratch") == 1

    # Inside the caller's transaction the caller gets the error (its transaction is aborted) ...
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    with pytest.raises(DatabaseError):
        with transaction.atomic():
            pg.run([(INSERT, {"k": 3, "v": "c"})])
    # ... and the next call prepares again.
    pg.run([(INSERT, {"k": 3, "v": "c"})])
    assert pg.run([(COUNT, {})])[0].rows == [(3,)]


@postgresql
@pytest.mark.django_db(transaction=True)
def test_a_connection_lost_in_a_round_trip_fails_it_as_djangos_error_and_the_next_connection_works():
    pid = pg.run([(BACKEND_PID, {})])[0].rows[0][0]
    params = {k: v for k, v in connection.get_connection_params().items() if k in ("dbname", "user", "host", "port")}

    def terminate():
        time.sleep(0.3)
        with psycopg.connect(**params, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    killer = threading.Thread(target=terminate)
    killer.start()
    try:
        with pytest.raises(OperationalError):
            pg.run([(SLEEP, {})])
    finally:
        killer.join()

    connection.close_if_unusable_or_obsolete()  # what signaling.db does after a database error
    assert pg.run([(BACKEND_PID, {})])[0].rows[0][0] != pid


@postgresql
@pytest.mark.django_db(transaction=True)
def test_a_parameter_that_cannot_be_sent_fails_its_call_and_leaves_no_half_sent_round_trip():
    from django.db import ProgrammingError

    _scratch()
    with pytest.raises(ProgrammingError):  # the first statement was sent, the second cannot be
        pg.run([(INSERT, {"k": 1, "v": "a"}), (INSERT, {"k": 2, "v": object()})])

    connection.close_if_unusable_or_obsolete()
    _scratch()  # (a new connection if that one was closed: its temporary table went with it)
    assert pg.run([(COUNT, {})])[0].rows == [(0,)]
    assert connection.connection.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


# --- instance: model instances from rows ----------------------------------------------------------


def _state(instance) -> tuple:
    return instance._state.adding, instance._state.db


def test_an_instance_is_what_from_db_builds():
    user = User.objects.create_user(username="rows", password="x", first_name="Rows", last_name="Test")
    fields = pg.attnames(User)
    row = [getattr(user, f) for f in fields]

    ours, djangos = pg.instance(User, fields, row), User.from_db("default", fields, row)

    assert pg._plain(User) and pg._plain(Seat) and pg._plain(AuditEvent)
    assert ours.__dict__.keys() == djangos.__dict__.keys()
    assert {f: getattr(ours, f) for f in fields} == {f: getattr(djangos, f) for f in fields}
    assert _state(ours) == _state(djangos) == (False, "default")
    assert ours == djangos and ours.display_name == "Rows T."


def test_a_model_with_an_init_listener_goes_through_from_db():
    seen = []

    def listener(sender, instance, **kwargs):
        seen.append(instance)

    post_init.connect(listener, sender=User)
    try:
        fields = pg.attnames(User)
        user = User(username="listened")
        seen.clear()
        built = pg.instance(User, fields, [getattr(user, f) for f in fields])
    finally:
        post_init.disconnect(listener, sender=User)

    assert seen == [built]
