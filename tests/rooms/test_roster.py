"""Who is expected in a session: rosters, roster counts, and each person's sessions (rooms.services).

Group kinds (group, education, holistic) take their roster from the track's
active enrollments that cover the session's LOCAL date (rolling admission);
individual, family and medication sessions list people explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from accounts.models import Role, User
from rooms.models import EnrollmentStatus, Room, RoomKind, RosterEntry, Session, Track
from rooms.services import roster, roster_counts, sessions_for_participant, sessions_for_therapist
from tests.factories import enroll, make_program, make_room, make_session, make_track, make_user


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Monday 9 March 2026, 21:00 in New York (EDT) is Tuesday 10 March 01:00 UTC.
MONDAY_9PM = utc(2026, 3, 10, 1, 0)
ACTIVE = EnrollmentStatus.ACTIVE


@dataclass
class Evening:
    track: Track
    other_track: Track
    group_room: Room
    individual_room: Room


@pytest.fixture
def evening(db) -> Evening:
    program = make_program()
    return Evening(
        track=make_track(program),
        other_track=make_track(program, name="Morning track", part_of_day="morning"),
        group_room=make_room(program, RoomKind.GROUP),
        individual_room=make_room(program, RoomKind.INDIVIDUAL, capacity=1),
    )


def participant(last: str) -> User:
    return make_user(Role.PARTICIPANT, first="Pat", last=last)


def enrolled(
    track: Track, last: str, start: date = date(2026, 1, 5), end: date | None = None, status: str = ACTIVE
) -> User:
    person = participant(last)
    enroll(person, track, start=start, end=end, status=status)
    return person


def test_roster_group_uses_enrollments_covering_the_local_date(evening):
    # Arrange
    session = make_session(evening.group_room, MONDAY_9PM, track=evening.track)
    adams = enrolled(evening.track, "Adams")  # open-ended
    baker = enrolled(evening.track, "Baker", end=date(2026, 3, 9))  # last day is the local date (UTC says the 10th)
    enrolled(evening.track, "Clark", end=date(2026, 3, 8))  # ended the day before
    davis = enrolled(evening.track, "Davis", start=date(2026, 3, 9))  # rolling start that day
    enrolled(evening.track, "Evans", start=date(2026, 3, 10))  # starts on the UTC date only
    enrolled(evening.track, "Foster", status=EnrollmentStatus.ON_HOLD)
    enrolled(evening.track, "Garcia", end=date(2026, 3, 20), status=EnrollmentStatus.DISCHARGED)
    enrolled(evening.track, "Hughes", end=date(2026, 3, 20), status=EnrollmentStatus.COMPLETED)
    enrolled(evening.other_track, "Irwin")
    RosterEntry.objects.create(session=session, participant=participant("Jones"))  # ignored for group kinds

    # Act
    people = list(roster(session))

    # Assert
    assert people == [adams, baker, davis]


@pytest.mark.parametrize("kind", [RoomKind.GROUP, RoomKind.EDUCATION, RoomKind.HOLISTIC])
def test_roster_track_kinds_follow_the_track(evening, kind):
    # Arrange
    room = make_room(evening.track.program, kind)
    session = make_session(room, MONDAY_9PM, track=evening.track)
    adams = enrolled(evening.track, "Adams")

    # Act
    people = list(roster(session))

    # Assert
    assert people == [adams]


@pytest.mark.parametrize("kind", [RoomKind.INDIVIDUAL, RoomKind.FAMILY, RoomKind.MEDICATION])
def test_roster_explicit_kinds_list_people_not_enrollments(evening, kind):
    # Arrange: the session names a track, yet its roster is the explicit list
    room = make_room(evening.track.program, kind)
    session = make_session(room, MONDAY_9PM, track=evening.track, duration=timedelta(hours=1))
    listed = enrolled(evening.other_track, "Listed")
    enrolled(evening.track, "Enrolled")
    RosterEntry.objects.create(session=session, participant=listed)

    # Act
    people = list(roster(session))

    # Assert
    assert people == [listed]


# --- roster_counts -------------------------------------------------------------------------------


def test_roster_counts_equals_roster_length_for_a_mix(evening):
    # Arrange: members come and go; group sessions on four dates, two explicit sessions
    enrolled(evening.track, "Adams")
    enrolled(evening.track, "Baker", end=date(2026, 3, 9))
    enrolled(evening.track, "Davis", start=date(2026, 3, 9))
    enrolled(evening.track, "Foster", status=EnrollmentStatus.ON_HOLD)
    enrolled(evening.other_track, "Irwin")
    groups = [
        make_session(evening.group_room, utc(2026, 3, 6, 23), track=evening.track),  # Adams, Baker
        make_session(evening.group_room, MONDAY_9PM, track=evening.track),  # Adams, Baker, Davis
        make_session(evening.group_room, utc(2026, 3, 11, 22), track=evening.track),  # Adams, Davis
        make_session(evening.group_room, utc(2026, 3, 12, 22), track=evening.other_track),  # Irwin
    ]
    individual = make_session(evening.individual_room, utc(2026, 3, 9, 14), duration=timedelta(hours=1))
    RosterEntry.objects.create(session=individual, participant=participant("Solo"))
    empty = make_session(evening.individual_room, utc(2026, 3, 10, 14), duration=timedelta(hours=1))
    sessions = [*groups, individual, empty]

    # Act
    counts = roster_counts(sessions)

    # Assert
    assert counts == {s.id: len(roster(s)) for s in sessions}
    assert [counts[s.id] for s in sessions] == [2, 3, 2, 1, 1, 0]


def test_roster_counts_empty_input_is_empty(db):
    # Act / Assert
    assert roster_counts([]) == {}


def _sessions_with_rosters(evening: Evening, n: int) -> list:
    """``n`` sessions alternating group (two members) and individual (one listed), on separate days."""
    enrolled(evening.track, "Adams")
    enrolled(evening.track, "Baker")
    ids = []
    for i in range(n):
        day = utc(2026, 3, 2, 23) + timedelta(days=i)
        if i % 2 == 0:
            ids.append(make_session(evening.group_room, day, track=evening.track).id)
        else:
            session = make_session(evening.individual_room, day, duration=timedelta(hours=1))
            RosterEntry.objects.create(session=session, participant=participant(f"Solo{i}"))
            ids.append(session.id)
    return ids


@pytest.mark.parametrize("n", [2, 6])
def test_roster_counts_queryset_uses_constant_queries(evening, django_assert_num_queries, n):
    # Arrange: a plain queryset, as a list page would pass it
    ids = _sessions_with_rosters(evening, n)
    sessions = Session.objects.filter(id__in=ids)

    # Act: sessions (with room and program), enrollments, roster entries
    with django_assert_num_queries(3):
        counts = roster_counts(sessions)

    # Assert
    assert sorted(counts.values()) == sorted([2] * ((n + 1) // 2) + [1] * (n // 2))


@pytest.mark.parametrize("n", [2, 6])
def test_roster_counts_loaded_instances_use_constant_queries(evening, django_assert_num_queries, n):
    # Arrange: instances loaded without their rooms
    ids = _sessions_with_rosters(evening, n)
    sessions = list(Session.objects.filter(id__in=ids))

    # Act: rooms, programs, enrollments, roster entries
    with django_assert_num_queries(4):
        counts = roster_counts(sessions)

    # Assert
    assert set(counts) == set(ids)


# --- sessions_for_participant --------------------------------------------------------------------


@dataclass
class Week:
    person: User
    friday: Session
    monday: Session
    individual: Session
    friday_13: Session
    next_monday: Session


def _week(evening: Evening, status: str = ACTIVE) -> Week:
    """A participant enrolled Monday 9 to Friday 13 March, a listed individual session, and others' sessions."""
    person = enrolled(evening.track, "Pat", start=date(2026, 3, 9), end=date(2026, 3, 13), status=status)
    friday = make_session(evening.group_room, utc(2026, 3, 6, 23), track=evening.track)  # before the enrollment
    monday = make_session(evening.group_room, MONDAY_9PM, track=evening.track)
    individual = make_session(evening.individual_room, utc(2026, 3, 11, 14), duration=timedelta(hours=1))
    RosterEntry.objects.create(session=individual, participant=person)
    friday_13 = make_session(evening.group_room, utc(2026, 3, 13, 22), track=evening.track)
    next_monday = make_session(evening.group_room, utc(2026, 3, 16, 22), track=evening.track)  # after it
    make_session(evening.individual_room, utc(2026, 3, 12, 14), duration=timedelta(hours=1))  # someone else's
    make_session(evening.group_room, utc(2026, 3, 11, 13), track=evening.other_track)  # another track
    return Week(person, friday, monday, individual, friday_13, next_monday)


def test_sessions_for_participant_lists_roster_sessions_by_local_date(evening):
    # Arrange
    week = _week(evening)

    # Act
    sessions = sessions_for_participant(week.person, utc(2026, 3, 1), utc(2026, 4, 1))

    # Assert
    assert sessions == [week.monday, week.individual, week.friday_13]


def test_sessions_for_participant_window_is_half_open(evening):
    # Arrange
    week = _week(evening)

    # Act: from the end of Monday's session to the start of Friday's
    sessions = sessions_for_participant(week.person, week.monday.ends_at, week.friday_13.starts_at)

    # Assert
    assert sessions == [week.individual]


@pytest.mark.parametrize("status", [EnrollmentStatus.DISCHARGED, EnrollmentStatus.COMPLETED])
def test_sessions_for_participant_closed_enrollment_drops_group_sessions(evening, status):
    # Arrange
    week = _week(evening, status=status)

    # Act
    sessions = sessions_for_participant(week.person, utc(2026, 3, 1), utc(2026, 4, 1))

    # Assert: the explicit roster still counts
    assert sessions == [week.individual]


def test_sessions_for_participant_outsider_sees_nothing(evening):
    # Arrange
    _week(evening)
    outsider = enrolled(evening.other_track, "Outsider", start=date(2026, 4, 1))

    # Act
    sessions = sessions_for_participant(outsider, utc(2026, 3, 1), utc(2026, 4, 1))

    # Assert
    assert sessions == []


# --- sessions_for_therapist -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        pytest.param("lead", ["individual_session", "group_session"], id="lead-of-room-and-track-once-each"),
        pytest.param("co", ["group_session"], id="co-facilitator-of-the-track"),
        pytest.param("outsider_therapist", [], id="therapist-of-no-room"),
        pytest.param("admin", [], id="admin-facilitates-nothing"),
    ],
)
def test_sessions_for_therapist_room_or_track_assignment(clinic, persona, expected):
    # Arrange
    user = getattr(clinic, persona)

    # Act
    sessions = list(sessions_for_therapist(user))

    # Assert
    assert sessions == [getattr(clinic, name) for name in expected]
