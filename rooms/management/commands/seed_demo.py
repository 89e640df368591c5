"""``manage.py seed_demo``: a small demo clinic that can be tried straight away.

Idempotent: people, the program, track, rooms and series are found by their
names and kept in shape; one-off sessions are created only when no upcoming
one exists. So running it twice changes nothing, and running it again on a
later day tops the demo up (a new open-now session, the series extended)
without duplicating anything that is still current.

What it builds: one IOP program in ``settings.CLINIC_TIME_ZONE``; an evening
group track on Monday, Wednesday and Friday 18:00-21:00 with ten participants,
a lead therapist and a co-facilitator; its series materialised with
``rooms.services.generate_occurrences``; an individual and a family one-off
session with explicit rosters; a family contact with recorded consent; a
clinic admin; and one group session that is open right now, in its own room so
it never clashes with the series.

Every demo account shares one password, printed at the end with the logins.
Do not run this against a clinic's real database: it resets the demo
accounts' passwords on every run, so that the printed logins always work.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, time, timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import FamilyContact, Role, User
from rooms import services
from rooms.models import (
    Enrollment,
    FacilitatorRole,
    FamilyConsent,
    LevelOfCare,
    PartOfDay,
    Program,
    Room,
    RoomKind,
    RoomTherapist,
    RosterEntry,
    Session,
    SessionSeries,
    SessionStatus,
    Track,
    TrackTherapist,
)

DEMO_PASSWORD = "calm-harbor-demo"

ADMIN = ("demo-admin", "Morgan", "Reyes")
LEAD = ("demo-lead", "Dana", "Whitfield")
CO = ("demo-co", "Sam", "Okafor")
# (username, first, last, alias, alias approved): one approved alias and one waiting, to show the policy.
PARTICIPANTS = [
    ("demo-p01", "Jordan", "Avery", "", False),
    ("demo-p02", "Casey", "Brooks", "", False),
    ("demo-p03", "Riley", "Chen", "", False),
    ("demo-p04", "Taylor", "Diaz", "", False),
    ("demo-p05", "Jamie", "Ellis", "", False),
    ("demo-p06", "Alex", "Foster", "", False),
    ("demo-p07", "Quinn", "Garcia", "River", True),
    ("demo-p08", "Drew", "Harper", "", False),
    ("demo-p09", "Skyler", "Irwin", "Sky", False),
    ("demo-p10", "Reese", "Jordan", "", False),
]

PROGRAM_NAME = "Demo intensive outpatient program"
TRACK_NAME = "Evening track"
SERIES_TITLE = "Evening process group"
OPEN_NOW_TITLE = "Coping skills group"
INDIVIDUAL_TITLE = "Individual session"
FAMILY_TITLE = "Family session"


class Command(BaseCommand):
    help = "Create (or top up) a demo clinic with one group session open now, and print the demo logins."

    def add_arguments(self, parser):
        parser.add_argument(
            "--password",
            default=DEMO_PASSWORD,
            help=f"The password every demo account gets (default: {DEMO_PASSWORD}).",
        )

    def handle(self, *args, **options):
        password = options["password"]
        try:
            validate_password(password)
        except ValidationError as exc:
            raise CommandError(f"--password is too weak: {' '.join(exc.messages)}") from None
        with transaction.atomic():
            people = self._seed(password, timezone.now())
        self._print_logins(people, password)

    # --- building blocks ----------------------------------------------------------------------

    def _user(self, username: str, first: str, last: str, role: str, password_hash: str, **extra) -> User:
        user, created = User.objects.get_or_create(username=username, defaults={"role": role})
        user.first_name, user.last_name, user.role = first, last, role
        user.email = user.email or f"{first}.{last}@example.org".lower()
        user.time_zone = user.time_zone or settings.CLINIC_TIME_ZONE
        user.is_active = True
        user.password = password_hash
        for name, value in extra.items():
            setattr(user, name, value)
        user.save()
        return user

    def _room(self, program: Program, name: str, kind: str, capacity: int) -> Room:
        room, _ = Room.objects.get_or_create(program=program, name=name, defaults={"kind": kind, "capacity": capacity})
        return room

    def _one_off(
        self,
        *,
        room: Room,
        title: str,
        starts_at: datetime,
        duration: timedelta,
        now: datetime,
        track: Track | None = None,
        participants=(),
        **extra,
    ) -> Session:
        """An upcoming (or current) session of this title in this room; created only when there is none."""
        session = (
            Session.objects.filter(room=room, title=title, series__isnull=True, ends_at__gt=now)
            .exclude(status__in=[SessionStatus.CANCELLED, SessionStatus.ENDED])
            .order_by("starts_at")
            .first()
        )
        if session is None:
            session = Session(
                room=room, title=title, track=track, starts_at=starts_at, ends_at=starts_at + duration, **extra
            )
            session.full_clean()
            session.save()
        for participant in participants:
            RosterEntry.objects.get_or_create(session=session, participant=participant)
        return session

    # --- the clinic ------------------------------------------------------------------------------

    def _seed(self, password: str, now: datetime) -> list[tuple[User, str]]:
        zone = zoneinfo.ZoneInfo(settings.CLINIC_TIME_ZONE)
        today = timezone.localtime(now, zone).date()
        hashed = make_password(password)  # one hash for all: PBKDF2 is slow on purpose

        admin = self._user(*ADMIN, Role.ADMIN, hashed, is_staff=True, is_superuser=True)
        lead = self._user(*LEAD, Role.THERAPIST, hashed)
        co = self._user(*CO, Role.THERAPIST, hashed)
        participants = []
        for n, (username, first, last, alias, approved) in enumerate(PARTICIPANTS, start=1):
            participants.append(
                self._user(
                    username,
                    first,
                    last,
                    Role.PARTICIPANT,
                    hashed,
                    alias=alias,
                    alias_approved=approved,
                    phone=f"+1 202 555 01{n:02d}",
                )
            )

        program, _ = Program.objects.get_or_create(
            name=PROGRAM_NAME,
            defaults={
                "level_of_care": LevelOfCare.IOP,
                "time_zone": settings.CLINIC_TIME_ZONE,
                "starts_on": today - timedelta(weeks=8),
            },
        )
        track, _ = Track.objects.get_or_create(
            program=program, name=TRACK_NAME, defaults={"part_of_day": PartOfDay.EVENING}
        )
        TrackTherapist.objects.get_or_create(track=track, therapist=lead, defaults={"role": FacilitatorRole.LEAD})
        TrackTherapist.objects.get_or_create(track=track, therapist=co, defaults={"role": FacilitatorRole.CO})

        group_room = self._room(program, "Evening group room", RoomKind.GROUP, 15)
        # The open-now session gets a room of its own so it can never clash with the series.
        drop_in_room = self._room(program, "Drop-in group room", RoomKind.GROUP, 15)
        individual_room = self._room(program, "Individual room", RoomKind.INDIVIDUAL, 1)
        family_room = self._room(program, "Family room", RoomKind.FAMILY, 4)
        for room in (group_room, drop_in_room, individual_room, family_room):
            RoomTherapist.objects.get_or_create(room=room, therapist=lead, defaults={"role": FacilitatorRole.LEAD})
        for room in (group_room, drop_in_room):
            RoomTherapist.objects.get_or_create(room=room, therapist=co, defaults={"role": FacilitatorRole.CO})

        # Rolling admission: each participant started on their own day, all before today.
        for n, participant in enumerate(participants):
            if not Enrollment.objects.filter(participant=participant, track=track).exists():
                enrollment = Enrollment(
                    participant=participant, track=track, start_date=program.starts_on + timedelta(days=3 * n)
                )
                enrollment.full_clean()
                enrollment.save()

        series = SessionSeries.objects.filter(room=group_room, title=SERIES_TITLE).first()
        if series is None:
            series = SessionSeries(
                room=group_room,
                track=track,
                title=SERIES_TITLE,
                weekdays="MO,WE,FR",
                start_time=time(18, 0),
                duration=timedelta(hours=3),
                starts_on=program.starts_on,
            )
            series.full_clean()
            series.save()
        generated = services.generate_occurrences(series, now=now)
        self.stdout.write(f"Series “{series.title}”: {generated.summary()}.")

        # One cancelled occurrence this week, so the demo shows what a cancellation looks like.
        upcoming = list(Session.objects.filter(series=series, starts_at__gt=now).order_by("starts_at")[:2])
        already = Session.objects.filter(series=series, starts_at__gt=now, status=SessionStatus.CANCELLED).exists()
        if len(upcoming) == 2 and not already:
            services.cancel_session(upcoming[1], by=admin)

        open_now = self._one_off(
            room=drop_in_room,
            track=track,
            title=OPEN_NOW_TITLE,
            now=now,
            starts_at=(now - timedelta(minutes=5)).replace(second=0, microsecond=0),
            duration=timedelta(hours=3),
            # The realtime room is not here yet; a long auto-admit window keeps the demo simple.
            late_join_minutes=60,
        )
        first = participants[0]
        tomorrow_10 = datetime.combine(today + timedelta(days=1), time(10, 0), tzinfo=zone)
        individual = self._one_off(
            room=individual_room,
            title=INDIVIDUAL_TITLE,
            now=now,
            starts_at=tomorrow_10,
            duration=timedelta(minutes=50),
            participants=[first],
        )
        in_two_days_16 = datetime.combine(today + timedelta(days=2), time(16, 0), tzinfo=zone)
        family = self._one_off(
            room=family_room,
            title=FAMILY_TITLE,
            now=now,
            starts_at=in_two_days_16,
            duration=timedelta(hours=1),
            participants=[first],
        )

        contact, _ = FamilyContact.objects.get_or_create(
            participant=first,
            name="Robin Avery",
            defaults={"relationship": "spouse", "email": "robin.avery@example.org", "recorded_by": admin},
        )
        if not FamilyConsent.objects.filter(contact=contact, program=program, revoked_at__isnull=True).exists():
            FamilyConsent.objects.create(contact=contact, program=program, consented_by=first, recorded_by=admin)

        for label, session in (("Open now", open_now), ("Individual", individual), ("Family", family)):
            local = timezone.localtime(session.starts_at, zone)
            self.stdout.write(f"{label}: “{session.title}” {local:%a %d %b %H:%M} {settings.CLINIC_TIME_ZONE}.")

        return [
            (admin, "clinic admin (and Django admin)"),
            (lead, "therapist, lead of the evening track"),
            (co, "therapist, co-facilitator of the evening track"),
        ] + [(p, "participant" + (", family session" if p == first else "")) for p in participants]

    def _print_logins(self, people: list[tuple[User, str]], password: str) -> None:
        width = max(len(user.username) for user, _ in people)
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("Demo clinic ready. Log in at /accounts/login/ with:"))
        self.stdout.write(f"  {'username':<{width}}  {'password':<{len(password)}}  role")
        for user, role in people:
            self.stdout.write(f"  {user.username:<{width}}  {password}  {role}")
