"""Personas and factories: real model instances, no mocks.

The personas mirror the people of an IOP (see ../shared/IOP.md): a clinic
admin, a lead therapist and a co-facilitator of the evening track, an enrolled
participant, and the outsider (a participant of another track, and a therapist
of another room) that every endpoint must refuse.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from accounts.models import Role, User
from rooms.models import (
    Enrollment,
    EnrollmentStatus,
    FacilitatorRole,
    Program,
    Room,
    RoomKind,
    RoomTherapist,
    RosterEntry,
    Session,
    SessionSeries,
    Track,
    TrackTherapist,
)

_counter = itertools.count(1)
PASSWORD = "correct-horse-battery-staple"


def make_user(role: str = Role.PARTICIPANT, *, first: str = "Pat", last: str | None = None, **extra) -> User:
    n = next(_counter)
    last = last if last is not None else f"Tester{n}"
    user = User(
        username=f"{role}{n}", first_name=first, last_name=last, email=f"{role}{n}@example.org", role=role, **extra
    )
    user.set_password(PASSWORD)
    user.save()
    return user


def make_program(**extra) -> Program:
    values = {"name": f"Evening IOP {next(_counter)}", "time_zone": "America/New_York", "starts_on": date(2026, 1, 1)}
    values.update(extra)
    return Program.objects.create(**values)


def make_track(program: Program | None = None, **extra) -> Track:
    values = {"program": program or make_program(), "name": f"Evening track {next(_counter)}", "part_of_day": "evening"}
    values.update(extra)
    return Track.objects.create(**values)


def make_room(program: Program, kind: str = RoomKind.GROUP, **extra) -> Room:
    values = {"program": program, "name": f"Room {next(_counter)}", "kind": kind, "capacity": 15}
    values.update(extra)
    return Room.objects.create(**values)


def enroll(
    participant: User,
    track: Track,
    start: date = date(2026, 1, 5),
    end: date | None = None,
    status: str = EnrollmentStatus.ACTIVE,
) -> Enrollment:
    return Enrollment.objects.create(
        participant=participant, track=track, start_date=start, end_date=end, status=status
    )


def make_session(
    room: Room, starts_at: datetime, *, track: Track | None = None, duration=timedelta(hours=3), **extra
) -> Session:
    values = {
        "room": room,
        "track": track,
        "title": "Evening process group",
        "starts_at": starts_at,
        "ends_at": starts_at + duration,
    }
    values.update(extra)
    return Session.objects.create(**values)


def make_series(room: Room, track: Track | None, **extra) -> SessionSeries:
    values = {
        "room": room,
        "track": track,
        "title": "Evening process group",
        "weekdays": "MO,WE,FR",
        "start_time": time(18, 0),
        "duration": timedelta(hours=3),
        "starts_on": date(2026, 1, 5),
    }
    values.update(extra)
    return SessionSeries.objects.create(**values)


@dataclass
class Clinic:
    """One program with an evening group (lead + co therapist, one enrolled participant),
    an individual room, and the outsiders."""

    program: Program
    track: Track
    group_room: Room
    individual_room: Room
    admin: User
    lead: User
    co: User
    participant: User
    outsider_participant: User
    outsider_therapist: User
    group_session: Session
    individual_session: Session


# A Monday evening 18:00 in New York (EST, UTC-5): 23:00 UTC.
GROUP_START = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)


def make_clinic(group_start: datetime = GROUP_START) -> Clinic:
    program = make_program()
    track = make_track(program)
    group_room = make_room(program, RoomKind.GROUP)
    individual_room = make_room(program, RoomKind.INDIVIDUAL, capacity=1)
    admin = make_user(Role.ADMIN, first="Alex", last="Admin")
    lead = make_user(Role.THERAPIST, first="Lee", last="Lead")
    co = make_user(Role.THERAPIST, first="Cory", last="Cofacilitator")
    participant = make_user(Role.PARTICIPANT, first="Pat", last="Participant")
    outsider_participant = make_user(Role.PARTICIPANT, first="Oscar", last="Outsider")
    outsider_therapist = make_user(Role.THERAPIST, first="Olga", last="Otherroom")
    TrackTherapist.objects.create(track=track, therapist=lead, role=FacilitatorRole.LEAD)
    TrackTherapist.objects.create(track=track, therapist=co, role=FacilitatorRole.CO)
    RoomTherapist.objects.create(room=group_room, therapist=lead, role=FacilitatorRole.LEAD)
    RoomTherapist.objects.create(room=individual_room, therapist=lead, role=FacilitatorRole.LEAD)
    enroll(participant, track)
    other_track = make_track(program, name="Morning track", part_of_day="morning")
    enroll(outsider_participant, other_track)
    group_session = make_session(group_room, group_start, track=track)
    individual_session = make_session(
        individual_room, group_start - timedelta(hours=5), duration=timedelta(hours=1), title="Individual session"
    )
    RosterEntry.objects.create(session=individual_session, participant=participant)
    return Clinic(
        program,
        track,
        group_room,
        individual_room,
        admin,
        lead,
        co,
        participant,
        outsider_participant,
        outsider_therapist,
        group_session,
        individual_session,
    )


@dataclass
class LiveClinic:
    """A group session around ``now`` for the realtime service: two therapists, an observer (clinic
    admin), three enrolled participants, and the outsiders (a participant of another track, the
    therapist of another room) with their own session at the same time."""

    session: Session
    other_session: Session
    lead: User
    co: User
    admin: User
    pat: User
    sam: User
    kim: User
    outsider: User
    outsider_therapist: User


def make_live_clinic(
    now: datetime, *, starts_in: timedelta = timedelta(minutes=-1), duration: timedelta = timedelta(hours=3), **extra
) -> LiveClinic:
    """Dates follow ``now`` (the realtime tests run on the real clock), so enrollments always cover it."""
    today = now.date()
    program = make_program(starts_on=today - timedelta(days=60))
    track = make_track(program)
    other_track = make_track(program, name=f"Morning track {next(_counter)}", part_of_day="morning")
    room = make_room(program)
    other_room = make_room(program)
    lead = make_user(Role.THERAPIST, first="Lee", last="Lead")
    co = make_user(Role.THERAPIST, first="Cory", last="Cofacilitator")
    admin = make_user(Role.ADMIN, first="Alex", last="Admin")
    pat = make_user(Role.PARTICIPANT, first="Pat", last="Participant")
    sam = make_user(Role.PARTICIPANT, first="Sam", last="Second")
    kim = make_user(Role.PARTICIPANT, first="Kim", last="Third")
    outsider = make_user(Role.PARTICIPANT, first="Oscar", last="Outsider")
    outsider_therapist = make_user(Role.THERAPIST, first="Olga", last="Otherroom")
    TrackTherapist.objects.create(track=track, therapist=lead, role=FacilitatorRole.LEAD)
    TrackTherapist.objects.create(track=track, therapist=co, role=FacilitatorRole.CO)
    RoomTherapist.objects.create(room=room, therapist=lead, role=FacilitatorRole.LEAD)
    TrackTherapist.objects.create(track=other_track, therapist=outsider_therapist, role=FacilitatorRole.LEAD)
    for person in (pat, sam, kim):
        enroll(person, track, start=today - timedelta(days=30))
    enroll(outsider, other_track, start=today - timedelta(days=30))
    session = make_session(room, now + starts_in, track=track, duration=duration, **extra)
    other_session = make_session(other_room, now + starts_in, track=other_track, duration=duration)
    return LiveClinic(session, other_session, lead, co, admin, pat, sam, kim, outsider, outsider_therapist)
