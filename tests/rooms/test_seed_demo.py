"""``manage.py seed_demo``: the demo clinic, built once however often the command runs."""

from __future__ import annotations

import zoneinfo
from datetime import time, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from accounts.models import FamilyContact, Role, User
from rooms import services
from rooms.management.commands.seed_demo import DEMO_PASSWORD, OPEN_NOW_TITLE, SERIES_TITLE
from rooms.models import (
    Enrollment,
    FacilitatorRole,
    FamilyConsent,
    Program,
    Room,
    RoomKind,
    RosterEntry,
    Session,
    SessionSeries,
    SessionStatus,
    Track,
    TrackTherapist,
)


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def snapshot() -> dict:
    return {
        model.__name__: model.objects.count()
        for model in (
            User,
            Program,
            Track,
            TrackTherapist,
            Room,
            Enrollment,
            SessionSeries,
            Session,
            RosterEntry,
            FamilyContact,
            FamilyConsent,
        )
    }


def open_now_session() -> Session:
    return Session.objects.select_related("room__program").get(title=OPEN_NOW_TITLE)


def test_seed_demo_twice_builds_the_clinic_once(db):
    seed()
    first = snapshot()

    seed()

    assert snapshot() == first
    assert first["Program"] == first["Track"] == first["SessionSeries"] == 1
    assert User.objects.filter(role=Role.PARTICIPANT).count() == 10
    assert User.objects.filter(role=Role.THERAPIST).count() == 2
    admin = User.objects.get(role=Role.ADMIN)
    assert admin.is_staff and admin.is_superuser
    assert first["Enrollment"] == 10
    roles = dict(TrackTherapist.objects.values_list("therapist__username", "role"))
    assert roles == {"demo-lead": FacilitatorRole.LEAD, "demo-co": FacilitatorRole.CO}
    assert first["FamilyContact"] == 1 and FamilyConsent.objects.filter(revoked_at__isnull=True).count() == 1


def test_seed_demo_program_and_series_follow_the_clinic_time_zone(db, settings):
    settings.CLINIC_TIME_ZONE = "America/Chicago"

    seed()

    program = Program.objects.get()
    assert program.time_zone == "America/Chicago"
    series = SessionSeries.objects.get()
    assert (series.weekday_codes, series.start_time, series.duration) == (
        ["MO", "WE", "FR"],
        time(18),
        timedelta(hours=3),
    )
    sessions = Session.objects.filter(series=series)
    assert sessions.count() > 20  # the horizon is weeks long
    zone = zoneinfo.ZoneInfo("America/Chicago")
    for session in sessions:
        local = timezone.localtime(session.starts_at, zone)
        assert (local.weekday(), local.time()) in {(0, time(18)), (2, time(18)), (4, time(18))}
        assert session.ends_at - session.starts_at == timedelta(hours=3)


def test_seed_demo_group_series_roster_is_the_ten_participants_with_two_therapists(db):
    seed()

    session = Session.objects.filter(series__title=SERIES_TITLE).select_related("room__program").first()
    assert services.roster(session).count() == 10
    lead = User.objects.get(username="demo-lead")
    co = User.objects.get(username="demo-co")
    assert services.is_session_therapist(lead, session) and services.is_session_therapist(co, session)
    assert session.room.kind == RoomKind.GROUP


def test_seed_demo_one_off_individual_and_family_sessions_have_explicit_rosters(db):
    seed()

    first = User.objects.get(username="demo-p01")
    for kind in (RoomKind.INDIVIDUAL, RoomKind.FAMILY):
        session = Session.objects.select_related("room__program").get(room__kind=kind)
        assert session.series is None
        assert list(services.roster(session)) == [first]
        assert session.starts_at > timezone.now()
    consent = FamilyConsent.objects.get()
    assert consent.contact.participant == first and consent.consented_by == first and consent.is_active


def test_seed_demo_one_group_session_is_open_now_for_every_demo_participant(db):
    seed()

    session = open_now_session()
    now = timezone.now()
    assert session.starts_at <= now < session.ends_at
    assert session.ends_at - now > timedelta(hours=2)
    assert session.room.kind == RoomKind.GROUP and session.series is None
    assert not session.overlapping().exists()
    for participant in User.objects.filter(role=Role.PARTICIPANT):
        decision = services.check_entry(participant, session)
        assert decision.allowed, (participant.username, decision.code)


def test_seed_demo_open_session_is_not_duplicated_while_it_is_open(db):
    seed()
    seed()

    assert Session.objects.filter(title=OPEN_NOW_TITLE).count() == 1


def test_seed_demo_shows_one_cancelled_occurrence(db):
    seed()
    seed()

    cancelled = Session.objects.filter(series__isnull=False, status=SessionStatus.CANCELLED)
    assert cancelled.count() == 1
    assert cancelled.get().starts_at - timezone.now() < timedelta(days=7)


def test_seed_demo_prints_the_logins_with_the_shared_password(db):
    output = seed()

    logins = output.split("Demo clinic ready")[1]
    assert "username" in logins and "password" in logins and "role" in logins
    for username in ["demo-admin", "demo-lead", "demo-co"] + [f"demo-p{n:02d}" for n in range(1, 11)]:
        line = next(line for line in logins.splitlines() if line.split()[:1] == [username])
        assert DEMO_PASSWORD in line
    assert "clinic admin" in logins and "therapist, lead" in logins and "participant" in logins


def test_seed_demo_logins_work_and_the_participant_can_join_from_home(client, db):
    seed()

    assert client.login(username="demo-p01", password=DEMO_PASSWORD)
    response = client.get(reverse("home"))

    assert response.context["next_card"].session.title == OPEN_NOW_TITLE
    assert response.context["next_card"].can_join


def test_seed_demo_custom_password_is_used(client, db):
    seed("--password", "another-long-passphrase")

    assert client.login(username="demo-lead", password="another-long-passphrase")


def test_seed_demo_refuses_a_weak_password(db):
    with pytest.raises(CommandError, match="too weak"):
        seed("--password", "12345")

    assert not User.objects.exists()
