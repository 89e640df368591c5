"""Scheduling rules a clinic admin can break, each tried through the admin's own forms: the page
comes back with a message that says what is wrong, and nothing is saved."""

from __future__ import annotations

import zoneinfo
from datetime import date, time, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from accounts.models import FamilyContact
from rooms import services
from rooms.forms import NOT_A_PARTICIPANT, NOT_A_THERAPIST
from rooms.models import (
    AuditEvent,
    Enrollment,
    FacilitatorRole,
    FamilyConsent,
    Program,
    RoomKind,
    RosterEntry,
    Session,
    SessionSeries,
    SessionStatus,
    TrackTherapist,
)
from tests.factories import enroll, make_program, make_room, make_series, make_session, make_track, make_user
from tests.rooms.test_admin import (
    at,
    local_today,
    make_contact,
    make_superuser,
    management,
    next_monday,
    series_post,
    session_post,
)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def superuser(db):
    return make_superuser()


@pytest.fixture
def superuser_client(client, superuser):
    client.force_login(superuser)
    return client


def assert_refused(response, message: str) -> None:
    assert response.status_code == 200, "the form was accepted"
    assert escape(message) in response.content.decode()


# --- sessions ---------------------------------------------------------------------------------------


def test_session_ending_before_start_is_refused(superuser_client, clinic):
    start = at(next_monday(), time(12, 0))
    data = session_post(clinic.individual_room, starts_at=start, ends_at=start - timedelta(hours=1))

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert_refused(response, "A session must end after it starts.")
    assert not Session.objects.filter(title="Individual check-in").exists()


def test_session_overlapping_another_in_the_same_room_is_refused(superuser_client, clinic):
    # The clinic's individual session runs 13:00-14:00 New York time on Monday 2 March 2026.
    start = clinic.individual_session.starts_at + timedelta(minutes=30)
    data = session_post(clinic.individual_room, starts_at=start, ends_at=start + timedelta(hours=1))

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert_refused(response, "The room already has “Individual session” from Mon 02 Mar 13:00 to 14:00.")
    assert not Session.objects.filter(title="Individual check-in").exists()


def test_session_overlap_in_another_room_is_allowed(superuser_client, clinic):
    other_room = make_room(clinic.program, RoomKind.INDIVIDUAL, capacity=1)
    start = clinic.individual_session.starts_at
    data = session_post(other_room, starts_at=start, ends_at=start + timedelta(hours=1))

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert response.status_code == 302


def test_moving_occurrence_onto_another_session_is_refused(superuser_client, clinic):
    monday = next_monday()
    series = make_series(clinic.group_room, clinic.track, starts_on=monday, until=monday)
    services.generate_occurrences(series)
    occurrence = series.sessions.get()
    blocker = make_session(clinic.group_room, at(monday, time(12, 0)), track=clinic.track, title="Noon group")
    data = session_post(
        clinic.group_room,
        title=occurrence.title,
        track=clinic.track,
        roster_inline=False,
        starts_at=blocker.starts_at,
        ends_at=blocker.ends_at,
    )

    response = superuser_client.post(reverse("admin:rooms_session_change", args=[occurrence.pk]), data)

    assert_refused(response, "The room already has “Noon group”")
    occurrence.refresh_from_db()
    assert (occurrence.starts_at, occurrence.detached) == (at(monday, time(18, 0)), False)
    assert not AuditEvent.objects.exists()


def test_moving_a_started_session_is_refused(superuser_client, clinic):
    live = make_session(clinic.group_room, at(next_monday(), time(9, 0)), track=clinic.track, status=SessionStatus.LIVE)
    new_start = live.starts_at + timedelta(hours=1)
    data = session_post(
        clinic.group_room,
        title=live.title,
        track=clinic.track,
        roster_inline=False,
        starts_at=new_start,
        ends_at=new_start + timedelta(hours=3),
    )

    response = superuser_client.post(reverse("admin:rooms_session_change", args=[live.pk]), data)

    assert_refused(response, "A session that has started cannot be moved.")
    live.refresh_from_db()
    assert live.starts_at == new_start - timedelta(hours=1)


def test_group_session_in_a_room_smaller_than_the_track_is_refused(superuser_client, clinic):
    small = make_room(clinic.program, RoomKind.GROUP, capacity=1, name="Small group room")
    enroll(make_user(), clinic.track)
    day = next_monday()
    data = session_post(
        small, title="Extra group", track=clinic.track, starts_at=at(day, time(18, 0)), ends_at=at(day, time(21, 0))
    )

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert_refused(
        response,
        f"The room “Small group room” holds 1 participant but {clinic.track.name} has 2 active participants on {day}.",
    )
    assert not Session.objects.filter(title="Extra group").exists()


def test_group_session_without_track_is_refused(superuser_client, clinic):
    day = next_monday()
    data = session_post(
        clinic.group_room, title="Extra group", starts_at=at(day, time(9, 0)), ends_at=at(day, time(12, 0))
    )

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert_refused(response, "A group therapy session needs a track (its roster).")
    assert not Session.objects.filter(title="Extra group").exists()


def test_explicit_roster_larger_than_room_is_refused(superuser_client, clinic):
    start = at(next_monday(), time(12, 0))
    data = session_post(
        clinic.individual_room,
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        roster=[clinic.participant, clinic.outsider_participant],
    )

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert_refused(response, f"The room “{clinic.individual_room.name}” holds 1 participant; the roster lists 2.")
    assert not Session.objects.filter(title="Individual check-in").exists()
    assert RosterEntry.objects.count() == 1  # the clinic's own individual session


def test_explicit_roster_on_a_group_session_is_refused(superuser_client, clinic):
    day = next_monday()
    data = session_post(
        clinic.group_room,
        title="Extra group",
        track=clinic.track,
        starts_at=at(day, time(9, 0)),
        ends_at=at(day, time(12, 0)),
        roster=[clinic.participant],
    )

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert_refused(response, "A group therapy session takes its roster from the track's enrollments")
    assert not Session.objects.filter(title="Extra group").exists()


def test_roster_of_a_therapist_is_refused(superuser_client, clinic):
    start = at(next_monday(), time(12, 0))
    data = session_post(
        clinic.individual_room, starts_at=start, ends_at=start + timedelta(hours=1), roster=[clinic.lead]
    )

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert_refused(response, NOT_A_PARTICIPANT)
    assert not Session.objects.filter(title="Individual check-in").exists()


# --- rooms --------------------------------------------------------------------------------------------


def room_post(room, *, capacity: int, facilitators=(), new_therapist=None) -> dict:
    data = {
        "name": room.name,
        "program": str(room.program_id),
        "kind": room.kind,
        "capacity": str(capacity),
        "media_preference": room.media_preference,
        **management("facilitators", total=len(facilitators) + (1 if new_therapist else 0), initial=len(facilitators)),
    }
    for i, facilitator in enumerate(facilitators):
        data.update(
            {
                f"facilitators-{i}-id": str(facilitator.pk),
                f"facilitators-{i}-room": str(room.pk),
                f"facilitators-{i}-therapist": str(facilitator.therapist_id),
                f"facilitators-{i}-role": facilitator.role,
            }
        )
    if new_therapist is not None:
        i = len(facilitators)
        data.update({f"facilitators-{i}-therapist": str(new_therapist.pk), f"facilitators-{i}-role": "co"})
    return data


def test_room_capacity_below_its_tracks_roster_is_refused(superuser_client, clinic):
    make_series(clinic.group_room, clinic.track, starts_on=next_monday())
    enroll(make_user(), clinic.track)
    enroll(make_user(), clinic.track)
    data = room_post(clinic.group_room, capacity=2, facilitators=list(clinic.group_room.facilitators.all()))

    response = superuser_client.post(reverse("admin:rooms_room_change", args=[clinic.group_room.pk]), data)

    assert_refused(
        response,
        f"{clinic.track.name} meets in this room and has 3 active participants on "
        f"{local_today()}; the capacity cannot be lower than that.",
    )
    clinic.group_room.refresh_from_db()
    assert clinic.group_room.capacity == 15


def test_room_capacity_counts_the_busiest_day_not_every_enrollment(superuser_client, clinic):
    make_series(clinic.group_room, clinic.track, starts_on=next_monday())
    # Two more stays that never meet: one ends before the other starts.
    today = local_today()
    enroll(make_user(), clinic.track, start=today, end=today + timedelta(days=6))
    enroll(make_user(), clinic.track, start=today + timedelta(days=7), end=today + timedelta(days=20))
    data = room_post(clinic.group_room, capacity=2, facilitators=list(clinic.group_room.facilitators.all()))

    response = superuser_client.post(reverse("admin:rooms_room_change", args=[clinic.group_room.pk]), data)

    assert response.status_code == 302
    clinic.group_room.refresh_from_db()
    assert clinic.group_room.capacity == 2


def test_room_therapist_who_is_not_a_therapist_is_refused(superuser_client, clinic):
    data = room_post(
        clinic.group_room,
        capacity=15,
        facilitators=list(clinic.group_room.facilitators.all()),
        new_therapist=clinic.participant,
    )

    response = superuser_client.post(reverse("admin:rooms_room_change", args=[clinic.group_room.pk]), data)

    assert_refused(response, NOT_A_THERAPIST)
    assert clinic.group_room.facilitators.count() == 1


# --- tracks ---------------------------------------------------------------------------------------------


def track_post(track, rows) -> dict:
    """rows: (existing TrackTherapist or None, therapist, role)."""
    initial = sum(1 for existing, _, _ in rows if existing is not None)
    data = {
        "name": track.name,
        "program": str(track.program_id),
        "part_of_day": track.part_of_day,
        "admission_policy": track.admission_policy,
        **management("facilitators", len(rows), initial),
    }
    for i, (existing, therapist, role) in enumerate(rows):
        if existing is not None:
            data[f"facilitators-{i}-id"] = str(existing.pk)
            data[f"facilitators-{i}-track"] = str(track.pk)
        data[f"facilitators-{i}-therapist"] = str(therapist.pk)
        data[f"facilitators-{i}-role"] = role
    return data


def test_track_therapist_who_is_not_a_therapist_is_refused(superuser_client, clinic):
    lead, co = TrackTherapist.objects.filter(track=clinic.track).order_by("-role")
    data = track_post(
        clinic.track, [(lead, clinic.lead, "lead"), (co, clinic.co, "co"), (None, clinic.participant, "co")]
    )

    response = superuser_client.post(reverse("admin:rooms_track_change", args=[clinic.track.pk]), data)

    assert_refused(response, NOT_A_THERAPIST)
    assert clinic.track.facilitators.count() == 2


def test_track_with_two_leads_is_refused(superuser_client, clinic):
    lead, co = TrackTherapist.objects.filter(track=clinic.track).order_by("-role")
    data = track_post(clinic.track, [(lead, clinic.lead, "lead"), (co, clinic.co, "lead")])

    response = superuser_client.post(reverse("admin:rooms_track_change", args=[clinic.track.pk]), data)

    assert_refused(response, "A track has one lead therapist; make the others co-facilitators.")
    assert TrackTherapist.objects.get(pk=co.pk).role == FacilitatorRole.CO


def test_new_track_with_a_therapist_is_saved(superuser_client, clinic):
    data = {
        "name": "Afternoon track",
        "program": str(clinic.program.pk),
        "part_of_day": "afternoon",
        "admission_policy": "auto_then_knock",
        **management("facilitators", 1),
        "facilitators-0-therapist": str(clinic.co.pk),
        "facilitators-0-role": "lead",
    }

    response = superuser_client.post(reverse("admin:rooms_track_add"), data)

    assert response.status_code == 302
    assert TrackTherapist.objects.get(track__name="Afternoon track").therapist == clinic.co


# --- programs ---------------------------------------------------------------------------------------------


def program_post(**extra) -> dict:
    data = {
        "name": "Morning IOP",
        "level_of_care": "iop",
        "time_zone": "America/Chicago",
        "starts_on": "2027-01-04",
        "ends_on": "",
        "typical_length_weeks": "10",
        "weekly_hours_min": "09:00:00",
        "weekly_hours_max": "15:00:00",
        **management("tracks"),
    }
    data.update(extra)
    return data


def test_program_ending_before_it_starts_is_refused(superuser_client, db):
    response = superuser_client.post(reverse("admin:rooms_program_add"), program_post(ends_on="2026-12-01"))

    assert_refused(response, "The program cannot end before it starts.")
    assert not Program.objects.exists()


def test_program_weekly_minimum_above_maximum_is_refused(superuser_client, db):
    response = superuser_client.post(reverse("admin:rooms_program_add"), program_post(weekly_hours_min="16:00:00"))

    assert_refused(response, "The weekly minimum cannot exceed the weekly maximum.")
    assert not Program.objects.exists()


def test_program_with_unknown_time_zone_is_refused(superuser_client, db):
    response = superuser_client.post(reverse("admin:rooms_program_add"), program_post(time_zone="Mars/Olympus"))

    assert response.status_code == 200
    assert "Mars/Olympus is not one of the available choices." in response.content.decode()
    assert not Program.objects.exists()


def test_program_with_tracks_is_saved(superuser_client, db):
    data = program_post(
        **management("tracks", 1),
        **{
            "tracks-0-name": "Evening",
            "tracks-0-part_of_day": "evening",
            "tracks-0-admission_policy": "auto_then_knock",
        },
    )

    response = superuser_client.post(reverse("admin:rooms_program_add"), data)

    assert response.status_code == 302
    assert Program.objects.get().tracks.get().name == "Evening"


# --- enrollments --------------------------------------------------------------------------------------------


def enrollment_post(participant, track, *, start: date, end: date | None = None, status: str = "active") -> dict:
    return {
        "participant": str(participant.pk),
        "track": str(track.pk),
        "start_date": start.isoformat(),
        "end_date": end.isoformat() if end else "",
        "status": status,
    }


def test_enrollment_starting_before_the_program_is_refused(superuser_client, clinic):
    data = enrollment_post(make_user(), clinic.track, start=date(2025, 12, 1))

    response = superuser_client.post(reverse("admin:rooms_enrollment_add"), data)

    assert_refused(response, "The program runs from 2026-01-01; the enrollment starts outside it.")
    assert Enrollment.objects.filter(track=clinic.track).count() == 1


def test_enrollment_ending_after_the_program_is_refused(superuser_client, db):
    program = make_program(starts_on=date(2026, 1, 1), ends_on=date(2026, 6, 30))
    track = make_track(program)
    data = enrollment_post(make_user(), track, start=date(2026, 5, 1), end=date(2026, 8, 1))

    response = superuser_client.post(reverse("admin:rooms_enrollment_add"), data)

    assert_refused(response, "The program ends on 2026-06-30; the enrollment ends after it.")
    assert not Enrollment.objects.exists()


def test_enrollment_ending_before_it_starts_is_refused(superuser_client, clinic):
    data = enrollment_post(make_user(), clinic.track, start=date(2026, 5, 1), end=date(2026, 4, 1))

    response = superuser_client.post(reverse("admin:rooms_enrollment_add"), data)

    assert_refused(response, "An enrollment cannot end before it starts.")
    assert Enrollment.objects.filter(track=clinic.track).count() == 1


def test_enrollment_of_a_therapist_is_refused(superuser_client, clinic):
    data = enrollment_post(clinic.co, clinic.track, start=local_today())

    response = superuser_client.post(reverse("admin:rooms_enrollment_add"), data)

    assert_refused(response, NOT_A_PARTICIPANT)
    assert Enrollment.objects.filter(track=clinic.track).count() == 1


def test_enrollment_beyond_the_group_rooms_capacity_is_refused(superuser_client, clinic):
    room = make_room(clinic.program, RoomKind.GROUP, capacity=1, name="Small group room")
    make_series(room, clinic.track, starts_on=next_monday())
    start = local_today()
    data = enrollment_post(make_user(), clinic.track, start=start)

    response = superuser_client.post(reverse("admin:rooms_enrollment_add"), data)

    assert_refused(
        response,
        f"The room “Small group room” holds 1 participant; with this enrollment "
        f"{clinic.track.name} would have 2 active participants on {start}.",
    )
    assert Enrollment.objects.filter(track=clinic.track).count() == 1


def test_enrollment_is_saved(superuser_client, clinic):
    newcomer = make_user()

    response = superuser_client.post(
        reverse("admin:rooms_enrollment_add"), enrollment_post(newcomer, clinic.track, start=local_today())
    )

    assert response.status_code == 302
    assert Enrollment.objects.get(participant=newcomer).track == clinic.track


# --- series -------------------------------------------------------------------------------------------------


def test_series_without_occurrences_is_refused(superuser_client, clinic):
    monday = next_monday()
    data = series_post(clinic.group_room, clinic.track, starts_on=monday, until=monday, weekdays=("TU",))

    response = superuser_client.post(reverse("admin:rooms_sessionseries_add"), data)

    assert_refused(response, "This series has no occurrences: check the weekdays, dates and exceptions.")
    assert not SessionSeries.objects.exists()


def test_series_whose_only_day_is_an_exception_is_refused(superuser_client, clinic):
    monday = next_monday()
    data = series_post(
        clinic.group_room,
        clinic.track,
        starts_on=monday,
        until=monday,
        weekdays=("MO",),
        exception_dates=monday.isoformat(),
    )

    response = superuser_client.post(reverse("admin:rooms_sessionseries_add"), data)

    assert_refused(response, "This series has no occurrences")
    assert not SessionSeries.objects.exists()


def test_group_series_without_track_is_refused(superuser_client, clinic):
    data = series_post(clinic.group_room, None, starts_on=next_monday())

    response = superuser_client.post(reverse("admin:rooms_sessionseries_add"), data)

    assert_refused(response, "A group therapy series needs a track (its roster).")
    assert not SessionSeries.objects.exists()
    assert Session.objects.count() == 2


def test_series_without_weekdays_is_refused(superuser_client, clinic):
    data = series_post(clinic.group_room, clinic.track, starts_on=next_monday(), weekdays=())

    response = superuser_client.post(reverse("admin:rooms_sessionseries_add"), data)

    assert_refused(response, "Choose at least one weekday.")
    assert not SessionSeries.objects.exists()


def test_series_ending_before_it_starts_is_refused(superuser_client, clinic):
    monday = next_monday()
    data = series_post(clinic.group_room, clinic.track, starts_on=monday, until=monday - timedelta(days=1))

    response = superuser_client.post(reverse("admin:rooms_sessionseries_add"), data)

    assert_refused(response, "The series cannot end before it starts.")
    assert not SessionSeries.objects.exists()


def test_series_in_a_room_smaller_than_the_track_is_refused(superuser_client, clinic):
    small = make_room(clinic.program, RoomKind.GROUP, capacity=1, name="Small group room")
    enroll(make_user(), clinic.track)
    monday = next_monday()
    data = series_post(small, clinic.track, starts_on=monday)

    response = superuser_client.post(reverse("admin:rooms_sessionseries_add"), data)

    assert_refused(
        response,
        f"The room “Small group room” holds 1 participant but {clinic.track.name} "
        f"has 2 active participants on {monday}.",
    )
    assert not SessionSeries.objects.exists()


def test_series_with_track_of_another_program_is_refused(superuser_client, clinic):
    foreign_track = make_track(make_program())
    data = series_post(clinic.group_room, foreign_track, starts_on=next_monday())

    response = superuser_client.post(reverse("admin:rooms_sessionseries_add"), data)

    assert_refused(response, "The track belongs to another program than the room.")
    assert not SessionSeries.objects.exists()


# --- family consent -------------------------------------------------------------------------------------------


def consent_post(contact: FamilyContact, program, consented_at) -> dict:
    # Typed in the admin's own zone (the superuser persona's, New York): consent is not tied to a program clock.
    local = timezone.localtime(consented_at, zoneinfo.ZoneInfo("America/New_York"))
    return {
        "contact": str(contact.pk),
        "program": str(program.pk),
        "consented_by": str(contact.participant_id),
        "consented_at_0": local.date().isoformat(),
        "consented_at_1": local.strftime("%H:%M:%S"),
    }


def test_consent_for_a_program_the_participant_is_not_in_is_refused(superuser_client, clinic):
    contact = make_contact(clinic.participant)
    other = make_program(name="Another IOP")

    response = superuser_client.post(
        reverse("admin:rooms_familyconsent_add"), consent_post(contact, other, timezone.now())
    )

    assert_refused(response, "Pat Participant has no enrollment in this program.")
    assert not FamilyConsent.objects.exists()


def test_consent_dated_in_the_future_is_refused(superuser_client, clinic):
    contact = make_contact(clinic.participant)

    response = superuser_client.post(
        reverse("admin:rooms_familyconsent_add"),
        consent_post(contact, clinic.program, timezone.now() + timedelta(days=2)),
    )

    assert_refused(response, "Consent cannot be recorded ahead of time: use the date it was given.")
    assert not FamilyConsent.objects.exists()


def test_second_active_consent_for_the_same_program_is_refused(superuser_client, clinic):
    contact = make_contact(clinic.participant)
    FamilyConsent.objects.create(contact=contact, program=clinic.program, consented_by=clinic.participant)

    response = superuser_client.post(
        reverse("admin:rooms_familyconsent_add"), consent_post(contact, clinic.program, timezone.now())
    )

    assert_refused(response, "This contact already has an active consent for this program.")
    assert FamilyConsent.objects.count() == 1


def test_consent_is_recorded_with_who_recorded_it(superuser_client, superuser, clinic):
    contact = make_contact(clinic.participant)

    response = superuser_client.post(
        reverse("admin:rooms_familyconsent_add"),
        consent_post(contact, clinic.program, timezone.now() - timedelta(hours=1)),
    )

    assert response.status_code == 302
    assert FamilyConsent.objects.get().recorded_by == superuser
