"""Series materialisation, single-occurrence changes and the audit log (rooms.services).

Every call takes an explicit ``now``. The series is the evening group of the
factories: Mon/Wed/Fri 18:00 in New York, 3 hours, from Monday 5 January 2026.
Daylight saving starts on Sunday 8 March, so 18:00 is 23:00 UTC up to Friday
6 March and 22:00 UTC from Monday 9 March.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import Role, User
from rooms.models import (
    AdmissionPolicy,
    AuditAction,
    AuditEvent,
    Room,
    Session,
    SessionSeries,
    SessionStatus,
    Track,
)
from rooms.recurrence import Occurrence
from rooms.services import (
    audit,
    cancel_session,
    generate_occurrences,
    move_session,
    preview_occurrences,
    record_roster_view,
)
from tests.factories import make_program, make_room, make_series, make_session, make_track, make_user

HOURS_3 = timedelta(hours=3)
# Monday 2 March 2026, 07:00 in New York.
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HORIZON = 14  # days: 2 March .. 16 March, seven occurrences


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@dataclass
class Evening:
    room: Room
    track: Track
    series: SessionSeries
    admin: User


@pytest.fixture
def evening(db) -> Evening:
    program = make_program()
    track = make_track(program)
    room = make_room(program)
    series = make_series(room, track)
    admin = make_user(Role.ADMIN, first="Alex", last="Admin")
    return Evening(room, track, series, admin)


def schedule(series: SessionSeries) -> list[tuple[date, datetime, str]]:
    """The series' sessions as (occurrence date, UTC start, status), in date order."""
    sessions = Session.objects.filter(series=series).order_by("occurrence_date")
    return [(s.occurrence_date, s.starts_at, s.status) for s in sessions]


def occurrence(series: SessionSeries, day: date) -> Session:
    return Session.objects.get(series=series, occurrence_date=day)


SCHEDULED = SessionStatus.SCHEDULED
CANCELLED = SessionStatus.CANCELLED

INITIAL = [
    (date(2026, 3, 2), utc(2026, 3, 2, 23), SCHEDULED),
    (date(2026, 3, 4), utc(2026, 3, 4, 23), SCHEDULED),
    (date(2026, 3, 6), utc(2026, 3, 6, 23), SCHEDULED),
    (date(2026, 3, 9), utc(2026, 3, 9, 22), SCHEDULED),
    (date(2026, 3, 11), utc(2026, 3, 11, 22), SCHEDULED),
    (date(2026, 3, 13), utc(2026, 3, 13, 22), SCHEDULED),
    (date(2026, 3, 16), utc(2026, 3, 16, 22), SCHEDULED),
]


# --- generate_occurrences -------------------------------------------------------------------------


def test_generate_occurrences_creates_each_date_up_to_the_horizon(evening):
    # Act
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert
    assert schedule(evening.series) == INITIAL
    assert [s.occurrence_date for s in result.created] == [day for day, _, _ in INITIAL]
    assert result.summary() == "7 created; 0 updated; 0 cancelled"


def test_generate_occurrences_copies_the_series_settings(evening):
    # Arrange
    evening.track.admission_policy = AdmissionPolicy.THERAPIST_ADMITS
    evening.track.save()
    series = make_series(
        evening.room,
        evening.track,
        title="Relapse prevention",
        weekdays="TU",
        start_time=time(9, 30),
        duration=timedelta(hours=2),
        lobby_opens_before=timedelta(minutes=15),
        late_join_minutes=5,
    )

    # Act
    generate_occurrences(series, now=NOW, horizon_days=2)

    # Assert
    session = occurrence(series, date(2026, 3, 3))
    assert (session.room, session.track, session.title, session.starts_at, session.ends_at) == (
        evening.room,
        evening.track,
        "Relapse prevention",
        utc(2026, 3, 3, 14, 30),
        utc(2026, 3, 3, 16, 30),
    )
    assert (session.lobby_opens_before, session.late_join_minutes, session.admission_policy) == (
        timedelta(minutes=15),
        5,
        AdmissionPolicy.THERAPIST_ADMITS,
    )
    assert (session.status, session.detached) == (SCHEDULED, False)


def test_generate_occurrences_skips_occurrences_already_started(evening):
    # Arrange: exactly Monday's start
    now = utc(2026, 3, 2, 23, 0)

    # Act
    generate_occurrences(evening.series, now=now, horizon_days=HORIZON)

    # Assert
    assert schedule(evening.series) == INITIAL[1:]


def test_generate_occurrences_twice_creates_nothing_new(evening):
    # Arrange
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Act
    second = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert
    assert (second.created, second.updated, second.cancelled, second.conflicts) == ([], [], [], [])
    assert schedule(evening.series) == INITIAL


def test_generate_occurrences_later_run_adds_only_new_dates(evening):
    # Arrange
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Act: a week later, same horizon
    result = generate_occurrences(evening.series, now=NOW + timedelta(days=7), horizon_days=HORIZON)

    # Assert
    assert [s.occurrence_date for s in result.created] == [date(2026, 3, 18), date(2026, 3, 20), date(2026, 3, 23)]
    assert (result.updated, result.cancelled) == ([], [])
    assert Session.objects.filter(series=evening.series).count() == 10


def test_generate_occurrences_shorter_horizon_keeps_later_occurrences(evening):
    # Arrange: four weeks generated
    generate_occurrences(evening.series, now=NOW, horizon_days=28)

    # Act: a run with a shorter horizon (e.g. the setting was lowered)
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert: the rule still produces the later dates, so nothing is cancelled
    assert (result.created, result.updated, result.cancelled) == ([], [], [])
    assert Session.objects.filter(series=evening.series).count() == 13  # 2 March .. 30 March
    assert not Session.objects.filter(series=evening.series, status=CANCELLED).exists()


def test_generate_occurrences_series_edit_updates_future_occurrences_only(evening):
    # Arrange: generated, then one occurrence moved by hand, then a new start time and title
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    move_session(
        occurrence(evening.series, date(2026, 3, 11)),
        starts_at=utc(2026, 3, 11, 21),
        ends_at=utc(2026, 3, 12, 0),
        by=evening.admin,
    )
    evening.series.start_time = time(19, 0)
    evening.series.title = "Evening group (new time)"
    evening.series.save()
    thursday = utc(2026, 3, 5, 12, 0)

    # Act
    result = generate_occurrences(evening.series, now=thursday, horizon_days=HORIZON)

    # Assert: past ones and the hand-moved one keep their time and title
    titles = dict(Session.objects.filter(series=evening.series).values_list("occurrence_date", "title"))
    assert schedule(evening.series) == [
        (date(2026, 3, 2), utc(2026, 3, 2, 23), SCHEDULED),
        (date(2026, 3, 4), utc(2026, 3, 4, 23), SCHEDULED),
        (date(2026, 3, 6), utc(2026, 3, 7, 0), SCHEDULED),
        (date(2026, 3, 9), utc(2026, 3, 9, 23), SCHEDULED),
        (date(2026, 3, 11), utc(2026, 3, 11, 21), SCHEDULED),
        (date(2026, 3, 13), utc(2026, 3, 13, 23), SCHEDULED),
        (date(2026, 3, 16), utc(2026, 3, 16, 23), SCHEDULED),
        (date(2026, 3, 18), utc(2026, 3, 18, 23), SCHEDULED),
    ]
    assert [s.occurrence_date for s in result.updated] == [
        date(2026, 3, 6),
        date(2026, 3, 9),
        date(2026, 3, 13),
        date(2026, 3, 16),
    ]
    assert [s.occurrence_date for s in result.created] == [date(2026, 3, 18)]
    assert titles[date(2026, 3, 2)] == titles[date(2026, 3, 4)] == titles[date(2026, 3, 11)] == "Evening process group"
    assert titles[date(2026, 3, 6)] == titles[date(2026, 3, 18)] == "Evening group (new time)"


def test_generate_occurrences_leaves_live_occurrence_alone(evening):
    # Arrange: Monday's group is running when the series changes
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    Session.objects.filter(series=evening.series, occurrence_date=date(2026, 3, 2)).update(status=SessionStatus.LIVE)
    evening.series.title = "Renamed"
    evening.series.save()

    # Act
    generate_occurrences(evening.series, now=utc(2026, 3, 2, 23, 30), horizon_days=HORIZON)

    # Assert
    monday = occurrence(evening.series, date(2026, 3, 2))
    assert (monday.title, monday.status) == ("Evening process group", SessionStatus.LIVE)


def test_generate_occurrences_exception_cancels_then_restores(evening):
    # Arrange
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    evening.series.exception_dates = "2026-03-11"
    evening.series.save()

    # Act: add the exception, then take it back
    added = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    status_with_exception = occurrence(evening.series, date(2026, 3, 11)).status
    evening.series.exception_dates = ""
    evening.series.save()
    removed = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert
    assert [s.occurrence_date for s in added.cancelled] == [date(2026, 3, 11)]
    assert status_with_exception == CANCELLED
    assert [s.occurrence_date for s in removed.updated] == [date(2026, 3, 11)]
    assert removed.created == []
    assert schedule(evening.series) == INITIAL


def test_generate_occurrences_exception_leaves_hand_moved_occurrence(evening):
    # Arrange: the 11th was moved by hand; then the 11th becomes a holiday in the series
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    move_session(
        occurrence(evening.series, date(2026, 3, 11)),
        starts_at=utc(2026, 3, 12, 14),
        ends_at=utc(2026, 3, 12, 17),
        by=evening.admin,
    )
    evening.series.exception_dates = "2026-03-11"
    evening.series.save()

    # Act
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert: staff own that occurrence now; the series does not cancel it
    assert result.cancelled == []
    moved = occurrence(evening.series, date(2026, 3, 11))
    assert (moved.starts_at, moved.status) == (utc(2026, 3, 12, 14), SCHEDULED)


def test_generate_occurrences_exception_on_past_date_keeps_it(evening):
    # Arrange: Monday 2 March happened; a holiday is entered for it afterwards
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    evening.series.exception_dates = "2026-03-02"
    evening.series.save()

    # Act
    result = generate_occurrences(evening.series, now=utc(2026, 3, 3, 12), horizon_days=HORIZON)

    # Assert
    assert result.cancelled == []
    assert occurrence(evening.series, date(2026, 3, 2)).status == SCHEDULED


def test_generate_occurrences_shortened_until_cancels_later_occurrences(evening):
    # Arrange
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    evening.series.until = date(2026, 3, 11)
    evening.series.save()

    # Act
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert
    assert [s.occurrence_date for s in result.cancelled] == [date(2026, 3, 13), date(2026, 3, 16)]
    assert [status for _, _, status in schedule(evening.series)] == [SCHEDULED] * 5 + [CANCELLED] * 2


def test_generate_occurrences_hand_cancelled_occurrence_stays_cancelled(evening):
    # Arrange
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    cancel_session(occurrence(evening.series, date(2026, 3, 9)), by=evening.admin)

    # Act
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert
    assert (result.created, result.updated, result.cancelled) == ([], [], [])
    assert occurrence(evening.series, date(2026, 3, 9)).status == CANCELLED


def test_generate_occurrences_room_conflict_is_skipped_and_reported(evening):
    # Arrange: a one-off family session in the same room on Monday 9 March, 18:30-19:30 local
    one_off = make_session(
        evening.room, utc(2026, 3, 9, 22, 30), track=evening.track, duration=timedelta(hours=1), title="Family session"
    )

    # Act
    first = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    second = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert: skipped both times, reported both times, the one-off untouched
    assert first.conflicts == second.conflicts == [(date(2026, 3, 9), one_off)]
    assert first.summary() == "6 created; 0 updated; 0 cancelled; 1 skipped because the room is taken (2026-03-09)"
    assert second.created == []
    assert [day for day, _, _ in schedule(evening.series)] == [day for day, _, _ in INITIAL if day != date(2026, 3, 9)]
    assert Session.objects.get(pk=one_off.pk).starts_at == utc(2026, 3, 9, 22, 30)


@pytest.mark.parametrize("where", ["other-room", "cancelled", "just-before"])
def test_generate_occurrences_no_conflict_without_overlap(evening, where):
    # Arrange
    other_room = make_room(evening.room.program)
    if where == "other-room":
        make_session(other_room, utc(2026, 3, 9, 22, 30), track=evening.track)
    elif where == "cancelled":
        make_session(evening.room, utc(2026, 3, 9, 22, 30), track=evening.track, status=CANCELLED)
    else:  # ends exactly when the group starts
        make_session(evening.room, utc(2026, 3, 9, 21), track=evening.track, duration=timedelta(hours=1))

    # Act
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert
    assert result.conflicts == []
    assert schedule(evening.series) == INITIAL


def test_generate_occurrences_series_edit_into_taken_slot_is_skipped_and_reported(evening):
    # Arrange: after the group on Wednesday 11 March, a one-off 21:30-22:30 local
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    one_off = make_session(
        evening.room, utc(2026, 3, 12, 1, 30), track=evening.track, duration=timedelta(hours=1), title="Family session"
    )
    evening.series.start_time = time(19, 0)  # 19:00-22:00 would overlap it on the 11th
    evening.series.save()

    # Act
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert: the 11th keeps its old time and is reported; the others move
    assert result.conflicts == [(date(2026, 3, 11), one_off)]
    assert occurrence(evening.series, date(2026, 3, 11)).starts_at == utc(2026, 3, 11, 22)
    assert occurrence(evening.series, date(2026, 3, 13)).starts_at == utc(2026, 3, 13, 23)
    assert not Session.objects.get(pk=one_off.pk).overlapping().exists()


def test_generate_occurrences_restore_into_taken_slot_is_skipped_and_reported(evening):
    # Arrange: a holiday cancels the 11th, the room is booked for that evening, the holiday is taken back
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    evening.series.exception_dates = "2026-03-11"
    evening.series.save()
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    one_off = make_session(evening.room, utc(2026, 3, 11, 22), track=evening.track, title="Workshop")
    evening.series.exception_dates = ""
    evening.series.save()

    # Act
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert
    assert result.conflicts == [(date(2026, 3, 11), one_off)]
    assert result.updated == []
    assert occurrence(evening.series, date(2026, 3, 11)).status == CANCELLED


# --- preview_occurrences ----------------------------------------------------------------------------


def test_preview_occurrences_lists_next_ones_without_writing(evening):
    # Arrange: Friday is a holiday; now is Monday's start, so Monday is no longer "next"
    evening.series.exception_dates = "2026-03-06"
    evening.series.save()

    # Act
    preview = preview_occurrences(evening.series, count=3, now=utc(2026, 3, 2, 23, 0))

    # Assert
    assert preview == [
        Occurrence(date(2026, 3, 4), utc(2026, 3, 4, 23), utc(2026, 3, 5, 2)),
        Occurrence(date(2026, 3, 9), utc(2026, 3, 9, 22), utc(2026, 3, 10, 1)),
        Occurrence(date(2026, 3, 11), utc(2026, 3, 11, 22), utc(2026, 3, 12, 1)),
    ]
    assert not Session.objects.exists()


def test_preview_occurrences_uses_the_program_local_today(evening):
    # Arrange: 03:00 UTC on Tuesday is still Monday 22:00 in New York; Monday's group has started
    now = utc(2026, 3, 3, 3, 0)

    # Act
    preview = preview_occurrences(evening.series, count=1, now=now)

    # Assert
    assert [o.occurrence_date for o in preview] == [date(2026, 3, 4)]


# --- cancel_session and move_session ----------------------------------------------------------------


def audit_rows(session: Session) -> list[tuple[str, object, object]]:
    return list(AuditEvent.objects.filter(session=session).values_list("action", "actor_id", "subject_id"))


def test_cancel_session_cancels_detaches_and_audits(evening):
    # Arrange
    session = make_session(evening.room, utc(2026, 3, 9, 22), track=evening.track)

    # Act
    cancel_session(session, by=evening.admin)

    # Assert
    session.refresh_from_db()
    assert (session.status, session.detached) == (CANCELLED, True)
    assert audit_rows(session) == [(AuditAction.SESSION_CANCELLED, evening.admin.id, None)]


@pytest.mark.parametrize("status", [SessionStatus.CANCELLED, SessionStatus.ENDED])
def test_cancel_session_finished_session_is_left_alone(evening, status):
    # Arrange
    session = make_session(evening.room, utc(2026, 3, 9, 22), track=evening.track, status=status)

    # Act
    cancel_session(session, by=evening.admin)

    # Assert
    session.refresh_from_db()
    assert (session.status, session.detached) == (status, False)
    assert audit_rows(session) == []


def test_move_session_moves_detaches_and_audits(evening):
    # Arrange
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    session = occurrence(evening.series, date(2026, 3, 9))

    # Act: to Tuesday 10 March, 17:00-20:00 local
    move_session(session, starts_at=utc(2026, 3, 10, 21), ends_at=utc(2026, 3, 11, 0), by=evening.admin)

    # Assert
    session.refresh_from_db()
    assert (session.occurrence_date, session.starts_at, session.ends_at, session.detached) == (
        date(2026, 3, 9),
        utc(2026, 3, 10, 21),
        utc(2026, 3, 11, 0),
        True,
    )
    assert audit_rows(session) == [(AuditAction.SESSION_MOVED, evening.admin.id, None)]


def test_move_session_overlap_raises_and_changes_nothing(evening):
    # Arrange
    session = make_session(evening.room, utc(2026, 3, 9, 22), track=evening.track)
    other = make_session(evening.room, utc(2026, 3, 10, 22), track=evening.track, title="Tuesday group")

    # Act
    with pytest.raises(ValidationError, match="Tuesday group"):
        move_session(session, starts_at=utc(2026, 3, 10, 23), ends_at=utc(2026, 3, 11, 2), by=evening.admin)

    # Assert: neither the row, nor the caller's instance, nor the audit log changed
    assert (session.starts_at, session.detached) == (utc(2026, 3, 9, 22), False)
    session.refresh_from_db()
    assert (session.starts_at, session.ends_at, session.detached) == (utc(2026, 3, 9, 22), utc(2026, 3, 10, 1), False)
    assert audit_rows(session) == []
    assert Session.objects.get(pk=other.pk).starts_at == utc(2026, 3, 10, 22)


def test_move_session_end_before_start_raises(evening):
    # Arrange
    session = make_session(evening.room, utc(2026, 3, 9, 22), track=evening.track)

    # Act / Assert
    with pytest.raises(ValidationError):
        move_session(session, starts_at=utc(2026, 3, 10, 22), ends_at=utc(2026, 3, 10, 21), by=evening.admin)
    session.refresh_from_db()
    assert session.starts_at == utc(2026, 3, 9, 22)


def test_move_session_generation_does_not_recreate_its_date(evening):
    # Arrange
    generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)
    move_session(
        occurrence(evening.series, date(2026, 3, 9)),
        starts_at=utc(2026, 3, 10, 21),
        ends_at=utc(2026, 3, 11, 0),
        by=evening.admin,
    )

    # Act
    result = generate_occurrences(evening.series, now=NOW, horizon_days=HORIZON)

    # Assert
    assert (result.created, result.updated, result.cancelled) == ([], [], [])
    assert Session.objects.filter(series=evening.series).count() == 7


# --- audit log -------------------------------------------------------------------------------------


def test_record_roster_view_appends_an_audit_row(evening):
    # Arrange
    session = make_session(evening.room, utc(2026, 3, 9, 22), track=evening.track)

    # Act
    record_roster_view(evening.admin, session)

    # Assert
    assert audit_rows(session) == [(AuditAction.ROSTER_VIEWED, evening.admin.id, None)]


def _save_changed(event: AuditEvent) -> None:
    event.code = "tampered"
    event.save()


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_save_changed, id="instance-save"),
        pytest.param(lambda event: event.delete(), id="instance-delete"),
        pytest.param(
            lambda event: AuditEvent.objects.filter(pk=event.pk).update(code="tampered"), id="queryset-update"
        ),
        pytest.param(lambda event: AuditEvent.objects.update(code="tampered"), id="manager-update"),
        pytest.param(lambda event: AuditEvent.objects.filter(pk=event.pk).delete(), id="queryset-delete"),
        pytest.param(lambda event: AuditEvent.objects.all().delete(), id="delete-all"),
        pytest.param(lambda event: AuditEvent.objects.bulk_update([event], ["code"]), id="bulk-update"),
    ],
)
def test_audit_event_is_append_only(evening, tamper):
    # Arrange
    session = make_session(evening.room, utc(2026, 3, 9, 22), track=evening.track)
    event = audit(AuditAction.ENTRY_REFUSED, actor=evening.admin, session=session, code="room.locked")

    # Act / Assert (in a savepoint: bulk_update fails inside its own atomic block)
    with pytest.raises(PermissionError, match="append-only"), transaction.atomic():
        tamper(event)
    assert list(AuditEvent.objects.values_list("pk", "code")) == [(event.pk, "room.locked")]
