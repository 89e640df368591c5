"""The realtime join's statements in two round trips of prepared statements (PostgreSQL only).

A join reads the session (locked), its seats with their people, and this person's entry facts
(enrollments, roster entry, removal, therapist assignments). Through the ORM that was six
statements, each compiled again on every join and sent on its own; in a join storm, compiling and
binding them was most of the server's CPU (py-spy, docs/performance.md). Here the statements are
written once from the models' metadata, prepared once per connection, and sent together
(``rooms.pg.run``: libpq's pipeline mode, below psycopg's cursors); the rows become model instances
directly. What is decided from them is unchanged:
``rooms.services.build_entry_facts`` and ``rooms.live._join`` as before.

The lock comes first in the pipeline, so the other reads see everything committed before it was
granted (READ COMMITTED), as the ORM path's reads after ``select_for_update`` do: three statements
(the locked session with its room and program; the person's facts with the seats; the person's
enrollments), not one, because a statement's reads see what was committed when it began, and a
removal committed while this join waited for the lock must be seen. The writes (the
seat, inserted or updated with every field as ``Model.save`` does, and the audit row) go together
in a second round trip (``write``). The transaction is the caller's (an ``atomic`` block), or, when
there is none, the join's own: BEGIN goes with the reads and COMMIT with the writes, so a join is
two round trips, not three (``rooms.live.join``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connections

from accounts.models import Role, User
from rooms import pg
from rooms.access import EntryFacts
from rooms.models import (
    AuditEvent,
    Enrollment,
    Program,
    Room,
    RoomTherapist,
    RosterEntry,
    Seat,
    Session,
    SessionRemoval,
    TrackTherapist,
)
from rooms.services import build_entry_facts

_SESSION_SQL = (
    f"SELECT {pg.columns(Session, 's')}, {pg.columns(Room, 'r')}, {pg.columns(Program, 'p')} "
    f'FROM {pg.table(Session)} s JOIN {pg.table(Room)} r ON r."id" = s.{pg.column(Session, "room")} '
    f'JOIN {pg.table(Program)} p ON p."id" = r.{pg.column(Room, "program")} '
    f'WHERE s."id" = %(session)s FOR UPDATE OF s'
)
_ENROLLMENTS_SQL = (
    f"SELECT {pg.columns(Enrollment, 'e')} FROM {pg.table(Enrollment)} e "
    f"WHERE e.{pg.column(Enrollment, 'participant')} = %(user)s AND e.{pg.column(Enrollment, 'track')} = "
    f'(SELECT {pg.column(Session, "track")} FROM {pg.table(Session)} WHERE "id" = %(session)s)'
)
# The seats with their people, each row led by four facts about this person: on the session's
# explicit roster, removed from it, therapist of its room, therapist of its track. A session without
# seats yet gives one row of facts and NULLs (the LEFT JOIN), so the facts always come back.
_FACTS_AND_SEATS_SQL = f"""
    SELECT f.*, {pg.columns(Seat, "seat")}, {pg.columns(User, "u")}
    FROM (SELECT
        EXISTS (SELECT 1 FROM {pg.table(RosterEntry)} WHERE {pg.column(RosterEntry, "session")} = %(session)s
                AND {pg.column(RosterEntry, "participant")} = %(user)s),
        EXISTS (SELECT 1 FROM {pg.table(SessionRemoval)} WHERE {pg.column(SessionRemoval, "session")} = %(session)s
                AND {pg.column(SessionRemoval, "user")} = %(user)s),
        EXISTS (SELECT 1 FROM {pg.table(RoomTherapist)} rt JOIN {pg.table(Session)} s
                ON s.{pg.column(Session, "room")} = rt.{pg.column(RoomTherapist, "room")}
                WHERE s."id" = %(session)s AND rt.{pg.column(RoomTherapist, "therapist")} = %(user)s),
        EXISTS (SELECT 1 FROM {pg.table(TrackTherapist)} tt JOIN {pg.table(Session)} s
                ON s.{pg.column(Session, "track")} = tt.{pg.column(TrackTherapist, "track")}
                WHERE s."id" = %(session)s AND tt.{pg.column(TrackTherapist, "therapist")} = %(user)s)
    ) f
    LEFT JOIN ({pg.table(Seat)} seat JOIN {pg.table(User)} u ON u."id" = seat.{pg.column(Seat, "user")})
        ON seat.{pg.column(Seat, "session")} = %(session)s
"""
_FACTS = 4
_SESSION, _FACTS_AND_SEATS, _ENROLLMENTS = (
    pg.Statement(sql) for sql in (_SESSION_SQL, _FACTS_AND_SEATS_SQL, _ENROLLMENTS_SQL)
)

_SESSION_FIELDS, _ROOM_FIELDS, _PROGRAM_FIELDS = pg.attnames(Session), pg.attnames(Room), pg.attnames(Program)
_SEAT_FIELDS, _USER_FIELDS, _ENROLLMENT_FIELDS = pg.attnames(Seat), pg.attnames(User), pg.attnames(Enrollment)


@dataclass
class JoinReads:
    user: User
    session: Session  # with room and room.program
    seats: list[Seat]  # every seat of the session, each with its user
    facts: dict  # this person's entry-fact rows, as services.build_entry_facts takes them

    def entry_facts(self, *, participants_present: int) -> EntryFacts:
        return build_entry_facts(self.user, self.session, participants_present=participants_present, **self.facts)


def read(session_id, user: User, *, begin: bool = False) -> JoinReads | None:
    """``read_many`` for one join."""
    return read_many([(session_id, user)], begin=begin)[0]


def read_many(joins: list[tuple[object, User]], *, begin: bool = False) -> list[JoinReads | None]:
    """For each (session id, person): the locked session, its seats and the person's entry-fact rows;
    None where the session does not exist (or the id is not one). All in one round trip: every
    session's lock first, in id order (as every other lock taker here and the chat store take them,
    so two processes' batches cannot deadlock), then each join's reads. Joins of one session share
    its ``session`` and ``seats`` objects: deciding them in order on that one list, each sees the ones
    before it. Call inside the joins' transaction, or with ``begin`` to open one in the same round
    trip (``write_many(commit=True)`` ends it, ``pg.rollback_open_transaction`` abandons it)."""
    ids: list[uuid.UUID | None] = []
    for session_id, _ in joins:
        try:
            ids.append(uuid.UUID(str(session_id)))
        except ValueError:
            ids.append(None)
    sessions = sorted({i for i in ids if i is not None})
    calls: list[pg.Call] = [(_SESSION, {"session": i}) for i in sessions]
    asked = [(i, user) for i, (_, user) in zip(ids, joins, strict=True) if i is not None]
    for session_id, user in asked:
        params = {"session": session_id, "user": user.pk}
        calls += [(_FACTS_AND_SEATS, params), (_ENROLLMENTS, params)]
    answers = pg.run(calls, begin=begin) if calls else []
    locked = zip(sessions, answers[: len(sessions)], strict=True)
    found_sessions = {i: _session_of(answer.rows[0]) for i, answer in locked if answer.rows}
    seats_of: dict[uuid.UUID, list[Seat]] = {}
    per_join = iter(answers[len(sessions) :])
    reads: list[JoinReads | None] = []
    for session_id, (_, user) in zip(ids, joins, strict=True):
        if session_id is None:
            reads.append(None)
            continue
        rows, enrollment_rows = next(per_join).rows, next(per_join).rows
        session = found_sessions.get(session_id)
        if session is None:
            reads.append(None)
            continue
        if session_id not in seats_of:
            seats_of[session_id] = _seats_of(session, rows)
        reads.append(JoinReads(user, session, seats_of[session_id], _facts_of(user, rows[0], enrollment_rows)))
    return reads


def _session_of(row) -> Session:
    n_session, n_room = len(_SESSION_FIELDS), len(_ROOM_FIELDS)
    session = pg.instance(Session, _SESSION_FIELDS, row[:n_session])
    room = pg.instance(Room, _ROOM_FIELDS, row[n_session : n_session + n_room])
    room.program = pg.instance(Program, _PROGRAM_FIELDS, row[n_session + n_room :])
    session.room = room
    return session


def _seats_of(session: Session, rows) -> list[Seat]:
    seats = []
    n_seat = len(_SEAT_FIELDS)
    for row in rows:
        if row[_FACTS] is None:
            continue  # no seats: the facts' row alone
        seat = pg.instance(Seat, _SEAT_FIELDS, row[_FACTS : _FACTS + n_seat])
        seat.user = pg.instance(User, _USER_FIELDS, row[_FACTS + n_seat :])
        seat.session = session
        seats.append(seat)
    return seats


def _facts_of(user: User, first_row, enrollment_rows) -> dict:
    on_roster, removed, room_therapist, track_therapist = first_row[:_FACTS]
    participant = user.role == Role.PARTICIPANT
    return {
        "enrollments": [pg.instance(Enrollment, _ENROLLMENT_FIELDS, r) for r in enrollment_rows] if participant else [],
        "on_explicit_roster": participant and on_roster,
        "removed": removed,
        "is_session_therapist": user.role == Role.THERAPIST and (room_therapist or track_therapist),
    }


def _insert_sql(model) -> str:
    fields = model._meta.concrete_fields
    columns = ", ".join(f'"{f.column}"' for f in fields)
    values = ", ".join(f"%({f.attname})s" for f in fields)
    return f"INSERT INTO {pg.table(model)} ({columns}) VALUES ({values})"


def _update_sql(model) -> str:
    assignments = ", ".join(f'"{f.column}" = %({f.attname})s' for f in model._meta.concrete_fields if not f.primary_key)
    return f'UPDATE {pg.table(model)} SET {assignments} WHERE "{model._meta.pk.column}" = %({model._meta.pk.attname})s'


_SEAT_INSERT = pg.Statement(_insert_sql(Seat))
_SEAT_UPDATE = pg.Statement(_update_sql(Seat))
_AUDIT_INSERT = pg.Statement(_insert_sql(AuditEvent))


def _values(instance) -> dict:
    """Every concrete field as ``Model.save`` would send it."""
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: each use of the proxy looks it up again
    return {
        f.attname: f.get_db_prep_save(f.pre_save(instance, instance._state.adding), db)
        for f in type(instance)._meta.concrete_fields
    }


@dataclass
class JoinWrite:
    """A decided join's seat and audit row, as ``Model.save`` would send them at the moment of the
    decision (a second join of the same person in one batch then updates the seat the first inserted)."""

    seat: Seat
    inserting: bool
    seat_values: dict
    audit: AuditEvent
    audit_values: dict

    @classmethod
    def of(cls, seat: Seat, audit: AuditEvent) -> JoinWrite:
        write = cls(seat, seat._state.adding, _values(seat), audit, _values(audit))
        for instance in (seat, audit):
            instance._state.adding = False
            instance._state.db = DEFAULT_DB_ALIAS
        return write


def write_many(writes: list[JoinWrite], *, commit: bool = False) -> None:
    """Every seat (inserted when new, else every field updated) and audit row, in order, in one round
    trip; with ``commit``, the transaction ``read_many(begin=True)`` opened ends in it too."""
    calls: list[pg.Call] = []
    for w in writes:
        calls += [(_SEAT_INSERT if w.inserting else _SEAT_UPDATE, w.seat_values), (_AUDIT_INSERT, w.audit_values)]
    answers = pg.run(calls, commit=commit)
    for w, seat_written in zip(writes, answers[::2], strict=True):
        if not w.inserting and seat_written.rowcount != 1:
            raise RuntimeError("a seat to update is gone (its session row lock should have kept it)")
