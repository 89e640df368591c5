"""signaling.joins: the realtime join sent from the event loop (PostgreSQL), against the database
thread's ``rooms.live.join`` it stands in for, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
import uuid

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone

from rooms import live
from rooms.models import AuditAction, AuditEvent, Seat, Session, SessionRemoval
from signaling import db, joins
from tests.factories import make_live_clinic

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("require_postgres", "close_worker_connection"),
]


@pytest.fixture
def clinic(live):
    return live  # the session (tests/signaling/conftest.py), under a name that leaves rooms.live alone


@pytest.fixture
def no_database_thread_join(monkeypatch):
    """Fail if the join itself goes to the database thread (its refusals' audit may)."""
    run = db.run

    async def guarded(fn, *args, **kwargs):
        assert fn is not live.join, "the join went to the database thread"
        return await run(fn, *args, **kwargs)

    monkeypatch.setattr(db, "run", guarded)


UNCOMPARABLE = ("member_id", "resume_token_hash", "previous_resume_token_hash", "session_id", "user_id")


def _comparable_seats(session) -> list[dict]:
    """The session's seats without what differs between two runs (ids, times, tokens)."""
    skipped = (datetime.datetime, uuid.UUID)
    seats = Seat.objects.filter(session=session).select_related("user").order_by("user__first_name")
    return [
        {
            f.attname: getattr(seat, f.attname)
            for f in Seat._meta.concrete_fields
            if f.attname
            not in ("member_id", "resume_token_hash", "previous_resume_token_hash", "session_id", "user_id")
            and not isinstance(getattr(seat, f.attname), skipped)
        }
        | {"who": seat.user.first_name, "left_unset": seat.left_at is None, "waiting_unset": seat.waiting_since is None}
        for seat in seats
    ]


def _audit_trail(session) -> list[tuple]:
    rows = AuditEvent.objects.filter(session=session).order_by("at", "action")
    return [(row.action, row.actor.first_name, row.code) for row in rows.select_related("actor")]


def _shape(result: live.JoinResult) -> tuple:
    return (
        result.state,
        result.capacity,
        result.epoch,
        result.replaced,
        None if result.room is None else [m.name for m in result.room.roster],
        None if result.waiting_list is None else [w.name for w in result.waiting_list],
        [m.name for m in result.changes.joined],
        [m.name for m in result.changes.updated],
    )


async def test_joins_from_the_event_loop_write_and_answer_what_the_database_thread_does(no_database_thread_join):
    # The same people join two like sessions, one through each path: a therapist, two participants,
    # one of them again on a second tab (which replaces the first).
    loop_clinic = await sync_to_async(make_live_clinic)(timezone.now())
    thread_clinic = await sync_to_async(make_live_clinic)(timezone.now())
    order = ("lead", "pat", "sam", "pat")

    by_loop = [_shape(await joins.join(loop_clinic.session.pk, getattr(loop_clinic, who))) for who in order]
    by_thread = [
        _shape(await sync_to_async(live.join)(thread_clinic.session.pk, getattr(thread_clinic, who))) for who in order
    ]

    assert by_loop == by_thread
    assert by_loop[-1][2:4] == (2, True)  # the second tab: epoch 2, replacing the first
    assert await sync_to_async(_comparable_seats)(loop_clinic.session) == await sync_to_async(_comparable_seats)(
        thread_clinic.session
    )
    trail = await sync_to_async(_audit_trail)(loop_clinic.session)
    assert trail == await sync_to_async(_audit_trail)(thread_clinic.session)
    assert [action for action, _, _ in trail].count(AuditAction.RECONNECTED) == 1


async def test_the_resume_token_answered_is_the_one_stored(no_database_thread_join, clinic):
    result = await joins.join(clinic.session.pk, clinic.pat)

    seat = await sync_to_async(Seat.objects.get)(session=clinic.session, user=clinic.pat)
    assert seat.resume_token_hash == live._hash(result.resume_token)
    assert seat.epoch == result.epoch == 1 and seat.connected
    assert seat.connected_at.tzinfo is datetime.UTC


async def test_a_refused_join_is_audited_writes_nothing_and_holds_no_lock(no_database_thread_join, clinic):
    await sync_to_async(SessionRemoval.objects.create)(session=clinic.session, user=clinic.kim, removed_by=clinic.lead)

    with pytest.raises(live.LiveError) as refused:
        await joins.join(clinic.session.pk, clinic.kim)
    with pytest.raises(live.LiveError) as unknown:
        await joins.join("not-a-session", clinic.kim)

    assert refused.value.code == "session.removed" and unknown.value.code == live.SESSION_NOT_FOUND
    assert not await sync_to_async(Seat.objects.filter(user=clinic.kim).exists)()
    refusals = await sync_to_async(list)(
        AuditEvent.objects.filter(action=AuditAction.HANDSHAKE_REFUSED, actor=clinic.kim).values_list("code", flat=True)
    )
    assert sorted(refusals) == ["session.not_found", "session.removed"]
    # The session's row lock went with the refusal's rollback: the next join is not held up.
    result = await asyncio.wait_for(joins.join(clinic.session.pk, clinic.pat), 5)
    assert result.state == "admitted"


def _admin_connection() -> psycopg.Connection:
    params = {k: v for k, v in connection.get_connection_params().items() if k in ("dbname", "user", "host", "port")}
    return psycopg.connect(**params)


async def test_a_join_waits_for_the_sessions_lock_and_sees_a_removal_committed_under_it(clinic):
    # A therapist's removal holds the session's row lock until it commits; a join arriving meanwhile
    # waits, and then reads the removal (its reads come after the lock, each seeing what was committed).
    admin = await sync_to_async(_admin_connection)()
    try:
        sessions, removals = Session._meta.db_table, SessionRemoval._meta.db_table
        await sync_to_async(admin.execute)(f'SELECT 1 FROM "{sessions}" WHERE id = %s FOR UPDATE', (clinic.session.pk,))
        await sync_to_async(admin.execute)(
            f'INSERT INTO "{removals}" (session_id, user_id, removed_by_id, removed_at, reason) '
            "VALUES (%s, %s, %s, now(), 'removed')",
            (clinic.session.pk, clinic.kim.pk, clinic.lead.pk),
        )
        joining = asyncio.create_task(joins.join(clinic.session.pk, clinic.kim))
        await asyncio.sleep(0.3)
        assert not joining.done()
        await sync_to_async(admin.commit)()
        with pytest.raises(live.LiveError) as refused:
            await asyncio.wait_for(joining, 5)
    finally:
        await sync_to_async(admin.close)()
    assert refused.value.code == "session.removed"
