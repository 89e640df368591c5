"""The scheduling admin: every page opens for a superuser and refuses a participant, changelists cost
a fixed number of queries, and the admin's state changes go through the domain (generate, cancel,
move, revoke) with their audit rows."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import FamilyContact, Role, User
from rooms import services
from rooms.models import (
    AuditAction,
    AuditEvent,
    FacilitatorRole,
    FamilyConsent,
    RoomKind,
    RoomTherapist,
    Session,
    SessionSeries,
    SessionStatus,
    TrackTherapist,
)
from tests.factories import (
    GROUP_START,
    enroll,
    make_program,
    make_room,
    make_series,
    make_session,
    make_track,
    make_user,
)

NEW_YORK = "America/New_York"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The factories set a password on every persona; the default hasher makes that the slowest part.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- helpers shared with test_validation.py -------------------------------------------------------


def make_superuser() -> User:
    return make_user(Role.ADMIN, first="Sam", last="Super", is_staff=True, is_superuser=True)


@pytest.fixture
def superuser(db) -> User:
    return make_superuser()


@pytest.fixture
def superuser_client(client, superuser):
    client.force_login(superuser)
    return client


def local_today(zone: str = NEW_YORK) -> date:
    return timezone.localdate(timezone=zoneinfo.ZoneInfo(zone))


def next_monday(zone: str = NEW_YORK, weeks: int = 1) -> date:
    today = local_today(zone)
    return today + timedelta(days=(7 - today.weekday()) % 7 or 7) + timedelta(weeks=weeks - 1)


def at(day: date, clock: time, zone: str = NEW_YORK) -> datetime:
    return datetime.combine(day, clock, tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(UTC)


def management(prefix: str, total: int = 0, initial: int = 0) -> dict:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def session_post(
    room,
    *,
    starts_at: datetime,
    ends_at: datetime,
    title: str = "Individual check-in",
    track=None,
    roster=(),
    roster_inline: bool = True,
    **extra,
) -> dict:
    """The admin form of a session, with the times written in the room's program zone."""
    zone = zoneinfo.ZoneInfo(room.program.time_zone)
    start, end = timezone.localtime(starts_at, zone), timezone.localtime(ends_at, zone)
    data = {
        "title": title,
        "room": str(room.pk),
        "track": str(track.pk) if track else "",
        "starts_at_0": start.date().isoformat(),
        "starts_at_1": start.strftime("%H:%M:%S"),
        "ends_at_0": end.date().isoformat(),
        "ends_at_1": end.strftime("%H:%M:%S"),
        "lobby_opens_before": "00:10:00",
        "late_join_minutes": "10",
        "admission_policy": "auto_then_knock",
    }
    if roster_inline:
        data.update(management("roster_entries", total=len(roster)))
        for i, participant in enumerate(roster):
            data[f"roster_entries-{i}-participant"] = str(participant.pk)
    data.update(extra)
    return data


def series_post(
    room,
    track,
    *,
    starts_on: date,
    weekdays=("MO", "WE", "FR"),
    until: date | None = None,
    title: str = "Evening process group",
    **extra,
) -> dict:
    data = {
        "title": title,
        "room": str(room.pk),
        "track": str(track.pk) if track else "",
        "weekdays": list(weekdays),
        "start_time": "18:00",
        "duration": "03:00:00",
        "starts_on": starts_on.isoformat(),
        "until": until.isoformat() if until else "",
        "exception_dates": "",
        "lobby_opens_before": "00:10:00",
        "late_join_minutes": "10",
        "admission_policy": "",
    }
    data.update(extra)
    return data


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def make_contact(participant: User, **extra) -> FamilyContact:
    values = {"participant": participant, "name": "Jordan Doe", "relationship": "spouse", "email": "jordan@example.org"}
    values.update(extra)
    return FamilyContact.objects.create(**values)


# --- pages open for a superuser, not for a participant ---------------------------------------------

CHANGELISTS = [
    "admin:rooms_program_changelist",
    "admin:rooms_track_changelist",
    "admin:rooms_enrollment_changelist",
    "admin:rooms_room_changelist",
    "admin:rooms_sessionseries_changelist",
    "admin:rooms_session_changelist",
    "admin:rooms_familyconsent_changelist",
    "admin:rooms_auditevent_changelist",
    "admin:accounts_user_changelist",
    "admin:accounts_familycontact_changelist",
]
ADD_PAGES = [name.replace("_changelist", "_add") for name in CHANGELISTS if "auditevent" not in name]


@pytest.fixture
def full_clinic(clinic, superuser):
    """The clinic persona plus one of everything the admin lists."""
    series = make_series(clinic.group_room, clinic.track, starts_on=next_monday())
    services.generate_occurrences(series)
    contact = make_contact(clinic.participant)
    consent = FamilyConsent.objects.create(contact=contact, program=clinic.program, consented_by=clinic.participant)
    services.cancel_session(clinic.individual_session, by=superuser)
    return clinic, series, contact, consent


@pytest.mark.parametrize("url_name", CHANGELISTS)
def test_changelist_opens_for_superuser(superuser_client, full_clinic, url_name):
    response = superuser_client.get(reverse(url_name))

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


@pytest.mark.parametrize("url_name", ADD_PAGES)
def test_add_page_opens_for_superuser(superuser_client, full_clinic, url_name):
    assert superuser_client.get(reverse(url_name)).status_code == 200


def test_change_pages_open_for_superuser(superuser_client, full_clinic):
    clinic, series, contact, consent = full_clinic
    objects = [
        clinic.program,
        clinic.track,
        clinic.track.enrollments.first(),
        clinic.group_room,
        series,
        clinic.group_session,
        clinic.individual_session,
        consent,
        AuditEvent.objects.first(),
        clinic.participant,
        contact,
    ]

    for obj in objects:
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
        assert superuser_client.get(url).status_code == 200, url


@pytest.mark.parametrize("url_name", CHANGELISTS + ADD_PAGES)
def test_admin_pages_redirect_participant_to_login(client, clinic, url_name):
    client.force_login(clinic.participant)

    response = client.get(reverse(url_name))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("role", [Role.THERAPIST, Role.ADMIN])
def test_staff_without_admin_access_are_redirected(client, db, role):
    client.force_login(make_user(role))

    response = client.get(reverse("admin:rooms_session_add"))

    assert response.status_code == 302


def test_admin_pages_redirect_anonymous_to_login(client, db):
    response = client.get(reverse("admin:rooms_session_changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# --- no N+1 on changelists ------------------------------------------------------------------------


def _therapist() -> User:
    return make_user(Role.THERAPIST, first="Theo")


def build_programs(n: int) -> None:
    for _ in range(n):
        make_track(make_program())


def build_tracks(n: int) -> None:
    for _ in range(n):
        track = make_track(make_program())
        TrackTherapist.objects.create(track=track, therapist=_therapist(), role=FacilitatorRole.LEAD)
        TrackTherapist.objects.create(track=track, therapist=_therapist(), role=FacilitatorRole.CO)
        enroll(make_user(), track)


def build_enrollments(n: int) -> None:
    for _ in range(n):
        enroll(make_user(), make_track(make_program()))


def build_rooms(n: int) -> None:
    for _ in range(n):
        room = make_room(make_program())
        RoomTherapist.objects.create(room=room, therapist=_therapist(), role=FacilitatorRole.LEAD)


def build_series(n: int) -> None:
    for _ in range(n):
        program = make_program()
        make_series(make_room(program), make_track(program))


def build_sessions(n: int) -> None:
    for i in range(n):
        program = make_program()
        make_session(make_room(program), GROUP_START + timedelta(days=40 * i), track=make_track(program))


def build_consents(n: int) -> None:
    for _ in range(n):
        participant, track = make_user(), make_track(make_program())
        enroll(participant, track)
        contact = make_contact(participant)
        FamilyConsent.objects.create(contact=contact, program=track.program, consented_by=participant)


def build_audit_events(n: int) -> None:
    for i in range(n):
        session = make_session(make_room(make_program()), GROUP_START + timedelta(days=40 * i))
        services.audit(AuditAction.SESSION_CANCELLED, actor=_therapist(), subject=make_user(), session=session)


QUERY_GUARDS = [
    ("admin:rooms_program_changelist", build_programs),
    ("admin:rooms_track_changelist", build_tracks),
    ("admin:rooms_enrollment_changelist", build_enrollments),
    ("admin:rooms_room_changelist", build_rooms),
    ("admin:rooms_sessionseries_changelist", build_series),
    ("admin:rooms_session_changelist", build_sessions),
    ("admin:rooms_familyconsent_changelist", build_consents),
    ("admin:rooms_auditevent_changelist", build_audit_events),
]


def changelist_queries(client, url: str) -> tuple[int, int]:
    """Queries one changelist page costs, and how many rows it lists."""
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200
    return len(context.captured_queries), response.context["cl"].result_count


@pytest.mark.parametrize("url_name, build", QUERY_GUARDS)
def test_changelist_queries_do_not_grow_with_rows(superuser_client, django_assert_max_num_queries, url_name, build):
    url = reverse(url_name)
    build(3)
    superuser_client.get(url)  # warm the per-process caches (content types, session)
    few, few_rows = changelist_queries(superuser_client, url)

    build(9)
    many, many_rows = changelist_queries(superuser_client, url)

    assert many_rows >= few_rows + 9
    assert many == few
    with django_assert_max_num_queries(12):
        superuser_client.get(url)


# --- series: preview, generation on save, the action --------------------------------------------------


def test_series_save_generates_occurrences(superuser_client, clinic):
    monday = next_monday()
    data = series_post(clinic.group_room, clinic.track, starts_on=monday, until=monday + timedelta(days=13))

    response = superuser_client.post(reverse("admin:rooms_sessionseries_add"), data, follow=True)

    series = SessionSeries.objects.get(title="Evening process group")
    sessions = list(series.sessions.order_by("starts_at"))
    assert len(sessions) == 6  # MO, WE, FR for two weeks
    assert sessions[0].starts_at == at(monday, time(18, 0))
    assert "Occurrences of “Evening process group”: 6 created; 0 updated; 0 cancelled." in messages_of(response)


def test_series_change_regenerates_and_reports(superuser_client, clinic):
    monday = next_monday()
    series = make_series(clinic.group_room, clinic.track, starts_on=monday, until=monday + timedelta(days=6))
    services.generate_occurrences(series)
    data = series_post(
        clinic.group_room, clinic.track, starts_on=monday, until=monday + timedelta(days=6), weekdays=("MO", "WE")
    )

    response = superuser_client.post(reverse("admin:rooms_sessionseries_change", args=[series.pk]), data, follow=True)

    assert "Occurrences of “Evening process group”: 0 created; 0 updated; 1 cancelled." in messages_of(response)
    assert series.sessions.filter(status=SessionStatus.CANCELLED).count() == 1


def test_series_change_page_previews_local_times_and_rrule(superuser_client, clinic):
    monday = next_monday()
    series = make_series(clinic.group_room, clinic.track, starts_on=monday, until=monday + timedelta(days=27))

    response = superuser_client.get(reverse("admin:rooms_sessionseries_change", args=[series.pk]))

    body = response.content.decode()
    assert "RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;UNTIL=" in body
    first = services.preview_occurrences(series)[0]
    local = timezone.localtime(first.starts_at, zoneinfo.ZoneInfo(NEW_YORK))
    assert f"{local:%a %d %b %Y, %H:%M}–21:00" in body
    assert "18:00" in body and "Times in America/New_York." in body


def test_series_preview_uses_program_zone_not_admin_zone(superuser_client, superuser):
    program = make_program(time_zone="Asia/Tokyo")
    track = make_track(program)
    series = make_series(make_room(program), track, starts_on=next_monday("Asia/Tokyo"))
    assert superuser.time_zone == NEW_YORK

    body = superuser_client.get(reverse("admin:rooms_sessionseries_change", args=[series.pk])).content.decode()

    assert ", 18:00–21:00 JST" in body


def test_generate_occurrences_action(superuser_client, clinic):
    monday = next_monday()
    series = make_series(clinic.group_room, clinic.track, starts_on=monday, until=monday + timedelta(days=6))

    response = superuser_client.post(
        reverse("admin:rooms_sessionseries_changelist"),
        {"action": "generate", "_selected_action": [str(series.pk)]},
        follow=True,
    )

    assert series.sessions.count() == 3
    assert "Occurrences of “Evening process group”: 3 created; 0 updated; 0 cancelled." in messages_of(response)


# --- sessions: cancel, move -------------------------------------------------------------------------


def test_cancel_action_cancels_and_audits(superuser_client, superuser, clinic):
    ended = make_session(
        clinic.group_room, GROUP_START - timedelta(days=7), track=clinic.track, status=SessionStatus.ENDED
    )
    selected = [clinic.group_session, clinic.individual_session, ended]

    response = superuser_client.post(
        reverse("admin:rooms_session_changelist"),
        {"action": "cancel_sessions", "_selected_action": [str(s.pk) for s in selected]},
        follow=True,
    )

    for session in (clinic.group_session, clinic.individual_session):
        session.refresh_from_db()
        assert (session.status, session.detached) == (SessionStatus.CANCELLED, True)
    ended.refresh_from_db()
    assert ended.status == SessionStatus.ENDED
    audited = AuditEvent.objects.filter(action=AuditAction.SESSION_CANCELLED)
    assert sorted((e.session_id, e.actor_id) for e in audited) == sorted(
        [(clinic.group_session.pk, superuser.pk), (clinic.individual_session.pk, superuser.pk)]
    )
    assert messages_of(response) == ["Cancelled 2 sessions.", "1 left as they were: already live, ended or cancelled."]


@pytest.fixture
def occurrence(clinic):
    monday = next_monday()
    series = make_series(clinic.group_room, clinic.track, starts_on=monday, until=monday)
    services.generate_occurrences(series)
    return series.sessions.get()


def test_moving_occurrence_detaches_and_audits(superuser_client, superuser, clinic, occurrence):
    new_start = occurrence.starts_at + timedelta(hours=1)
    data = session_post(
        clinic.group_room,
        title=occurrence.title,
        track=clinic.track,
        roster_inline=False,
        starts_at=new_start,
        ends_at=new_start + timedelta(hours=3),
    )

    response = superuser_client.post(reverse("admin:rooms_session_change", args=[occurrence.pk]), data)

    assert response.status_code == 302
    occurrence.refresh_from_db()
    assert (occurrence.starts_at, occurrence.detached) == (new_start, True)
    event = AuditEvent.objects.get(action=AuditAction.SESSION_MOVED)
    assert (event.session_id, event.actor_id) == (occurrence.pk, superuser.pk)


def test_moved_occurrence_is_left_alone_by_regeneration(superuser_client, clinic, occurrence):
    new_start = occurrence.starts_at + timedelta(hours=1)
    data = session_post(
        clinic.group_room,
        title=occurrence.title,
        track=clinic.track,
        roster_inline=False,
        starts_at=new_start,
        ends_at=new_start + timedelta(hours=3),
    )
    superuser_client.post(reverse("admin:rooms_session_change", args=[occurrence.pk]), data)

    services.generate_occurrences(occurrence.series)

    occurrence.refresh_from_db()
    assert occurrence.starts_at == new_start


def test_editing_occurrence_title_detaches_without_move_audit(superuser_client, clinic, occurrence):
    data = session_post(
        clinic.group_room,
        title="Relapse prevention",
        track=clinic.track,
        roster_inline=False,
        starts_at=occurrence.starts_at,
        ends_at=occurrence.ends_at,
    )

    response = superuser_client.post(reverse("admin:rooms_session_change", args=[occurrence.pk]), data)

    assert response.status_code == 302
    occurrence.refresh_from_db()
    assert (occurrence.title, occurrence.detached) == ("Relapse prevention", True)
    assert not AuditEvent.objects.filter(action=AuditAction.SESSION_MOVED).exists()


def test_locking_an_occurrence_keeps_it_in_the_series(superuser_client, clinic, occurrence):
    data = session_post(
        clinic.group_room,
        title=occurrence.title,
        track=clinic.track,
        roster_inline=False,
        starts_at=occurrence.starts_at,
        ends_at=occurrence.ends_at,
        locked="on",
    )

    response = superuser_client.post(reverse("admin:rooms_session_change", args=[occurrence.pk]), data)

    assert response.status_code == 302
    occurrence.refresh_from_db()
    assert (occurrence.locked, occurrence.detached) == (True, False)


def test_session_times_are_typed_in_program_zone(superuser_client, superuser):
    program = make_program(time_zone="America/Los_Angeles")
    room = make_room(program, RoomKind.INDIVIDUAL, capacity=1)
    day = next_monday("America/Los_Angeles")
    start = at(day, time(9, 0), "America/Los_Angeles")
    assert superuser.time_zone == NEW_YORK
    data = session_post(room, starts_at=start, ends_at=start + timedelta(hours=1))

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert response.status_code == 302
    session = Session.objects.get(room=room)
    assert session.starts_at == start
    page = superuser_client.get(reverse("admin:rooms_session_change", args=[session.pk])).content.decode()
    assert 'value="09:00:00"' in page


def test_session_add_with_roster(superuser_client, clinic):
    start = at(next_monday(), time(12, 0))
    data = session_post(
        clinic.individual_room, starts_at=start, ends_at=start + timedelta(hours=1), roster=[clinic.participant]
    )

    response = superuser_client.post(reverse("admin:rooms_session_add"), data)

    assert response.status_code == 302
    session = Session.objects.get(title="Individual check-in")
    assert list(session.participants.all()) == [clinic.participant]


def test_session_changelist_shows_program_local_start(superuser_client, clinic):
    response = superuser_client.get(reverse("admin:rooms_session_changelist"))

    # 23:00 UTC on 2 March 2026 is 18:00 in New York.
    assert "Mon 02 Mar 2026 18:00 EST" in response.content.decode()


def test_viewing_explicit_roster_is_audited(superuser_client, superuser, clinic):
    superuser_client.get(reverse("admin:rooms_session_change", args=[clinic.individual_session.pk]))
    superuser_client.get(reverse("admin:rooms_session_change", args=[clinic.group_session.pk]))

    viewed = AuditEvent.objects.filter(action=AuditAction.ROSTER_VIEWED)
    assert [(e.session_id, e.actor_id) for e in viewed] == [(clinic.individual_session.pk, superuser.pk)]


def test_group_session_has_no_explicit_roster_inline(superuser_client, clinic):
    response = superuser_client.get(reverse("admin:rooms_session_change", args=[clinic.group_session.pk]))

    assert response.context["inline_admin_formsets"] == []


def test_participant_autocomplete_offers_participants_only(superuser_client, clinic):
    response = superuser_client.get(
        reverse("admin:autocomplete"),
        {
            "app_label": "rooms",
            "model_name": "enrollment",
            "field_name": "participant",
            "term": "",
        },
    )

    ids = {row["id"] for row in response.json()["results"]}
    assert str(clinic.participant.pk) in ids
    assert str(clinic.lead.pk) not in ids and str(clinic.admin.pk) not in ids


def test_enrollment_search_by_participant_name(superuser_client, clinic):
    response = superuser_client.get(reverse("admin:rooms_enrollment_changelist"), {"q": "Pat Participant"})

    assert [e.participant for e in response.context["cl"].result_list] == [clinic.participant]


# --- consent ------------------------------------------------------------------------------------------


def test_revoke_consent_action_sets_revoked_at_and_audits(superuser_client, superuser, clinic):
    contact = make_contact(clinic.participant)
    consent = FamilyConsent.objects.create(contact=contact, program=clinic.program, consented_by=clinic.participant)
    before = timezone.now()

    response = superuser_client.post(
        reverse("admin:rooms_familyconsent_changelist"),
        {"action": "revoke", "_selected_action": [str(consent.pk)]},
        follow=True,
    )

    consent.refresh_from_db()
    assert consent.revoked_at >= before
    event = AuditEvent.objects.get(action=AuditAction.CONSENT_REVOKED)
    assert (event.actor_id, event.subject_id) == (superuser.pk, clinic.participant.pk)
    assert messages_of(response) == ["Revoked 1 consent."]


def test_revoke_leaves_already_revoked_consent_alone(superuser_client, clinic):
    contact = make_contact(clinic.participant)
    revoked_at = timezone.now() - timedelta(days=1)
    consent = FamilyConsent.objects.create(
        contact=contact,
        program=clinic.program,
        consented_by=clinic.participant,
        consented_at=revoked_at - timedelta(days=1),
        revoked_at=revoked_at,
    )

    superuser_client.post(
        reverse("admin:rooms_familyconsent_changelist"), {"action": "revoke", "_selected_action": [str(consent.pk)]}
    )

    consent.refresh_from_db()
    assert consent.revoked_at == revoked_at
    assert not AuditEvent.objects.filter(action=AuditAction.CONSENT_REVOKED).exists()


def test_consent_added_on_contact_page_records_who_recorded_it(superuser_client, superuser, clinic):
    contact = make_contact(clinic.participant)
    data = {
        "participant": str(clinic.participant.pk),
        "name": contact.name,
        "relationship": contact.relationship,
        "email": contact.email,
        "phone": "",
        **management("consents", total=1),
        "consents-0-program": str(clinic.program.pk),
        "consents-0-consented_by": str(clinic.participant.pk),
        "consents-0-consented_at_0": local_today().isoformat(),
        "consents-0-consented_at_1": "00:00:00",
    }

    response = superuser_client.post(reverse("admin:accounts_familycontact_change", args=[contact.pk]), data)

    assert response.status_code == 302
    consent = FamilyConsent.objects.get(contact=contact)
    assert (consent.recorded_by, consent.program, consent.revoked_at) == (superuser, clinic.program, None)


# --- audit log is read-only -----------------------------------------------------------------------------


def test_audit_log_cannot_be_added_changed_or_deleted(superuser_client, superuser, clinic):
    event = services.audit(AuditAction.SESSION_CANCELLED, actor=superuser, session=clinic.group_session)

    add = superuser_client.post(reverse("admin:rooms_auditevent_add"), {"action": "x"})
    change = superuser_client.post(reverse("admin:rooms_auditevent_change", args=[event.pk]), {"code": "x"})
    delete = superuser_client.post(reverse("admin:rooms_auditevent_delete", args=[event.pk]), {"post": "yes"})
    changelist = superuser_client.get(reverse("admin:rooms_auditevent_changelist"))

    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert changelist.context["action_form"] is None
    assert AuditEvent.objects.get().code == ""


def test_audit_log_filters_by_action(superuser_client, superuser, clinic):
    services.audit(AuditAction.SESSION_CANCELLED, actor=superuser, session=clinic.group_session)
    services.audit(AuditAction.ROSTER_VIEWED, actor=superuser, session=clinic.individual_session)

    response = superuser_client.get(reverse("admin:rooms_auditevent_changelist"), {"action": "roster.viewed"})

    assert [e.action for e in response.context["cl"].result_list] == ["roster.viewed"]
    assert "Roster viewed" in response.content.decode()


def test_audit_log_shows_no_contact_details(superuser_client, superuser, clinic):
    services.audit(
        AuditAction.ENTRY_REFUSED, actor=clinic.participant, session=clinic.group_session, code="session.not_open"
    )

    body = superuser_client.get(reverse("admin:rooms_auditevent_changelist")).content.decode()

    assert "Pat Participant (participant)" in body
    assert clinic.participant.email not in body
