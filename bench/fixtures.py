"""The telehealth target's data: a fresh database, then sessions open now with their people.

Everything is created through the project's own models in this process (``django.setup()``
with the same environment the daphne processes get), never through HTTP. Each run gets
its own program, so runs in one invocation never share a session, a seat or a group.

A client authenticates the way a browser does: a Django session row holding the user's
id, backend and auth hash, sent as the ``sessionid`` cookie with a same-origin Origin.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
_django_ready = False
_runs = itertools.count(1)


def bench_environment(database_url: str, redis_url: str | None) -> dict[str, str]:
    """The environment of the daphne processes and of this process's Django.

    ``redis_url`` None selects the in-memory channel layer (an empty REDIS_URL, whatever the
    caller's shell has).
    """
    return {
        "DJANGO_SETTINGS_MODULE": "telehealth.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url or "",
        "DEBUG": "false",
        # A fresh random key per invocation: the session auth hashes below are made with it.
        "SECRET_KEY": secrets.token_urlsafe(45)[:60],
        "ALLOWED_HOSTS": "127.0.0.1",
    }


def reset_database(database_url: str) -> None:
    """Drop and create the bench database (refusing any name that does not say 'bench')."""
    import psycopg

    url = urlparse(database_url)
    name = url.path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"refusing to drop {name!r}: the bench database name must contain 'bench'")
    admin = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        timeout=300,
    )


def setup_django(env: dict[str, str]) -> None:
    global _django_ready
    if _django_ready:
        return
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    _django_ready = True


@dataclass
class Seat:
    user_id: str
    role: str  # "therapist" or "participant"
    cookie: str  # the Django session key


@dataclass
class RoomFixture:
    session_id: str
    seats: list[Seat]  # the therapist first


def create_rooms(rooms: int, members: int) -> list[RoomFixture]:
    """``rooms`` sessions open now, each with one lead therapist and ``members - 1`` participants.

    Participants are enrolled in the session's track; the session started a minute ago
    with the "auto then knock" policy and a late-join window longer than any run, so a
    participant is admitted on arrival.
    """
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session as DjangoSession
    from django.db import transaction
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from accounts.models import Role, User
    from rooms.models import (
        AdmissionPolicy,
        Enrollment,
        FacilitatorRole,
        Program,
        Room,
        RoomKind,
        RoomTherapist,
        Session,
        SessionStatus,
        Track,
        TrackTherapist,
    )

    if members < 2:
        raise ValueError("a room needs at least a therapist and one participant")
    run = f"{next(_runs)}-{secrets.token_hex(3)}"
    now = timezone.now()
    today = timezone.localdate()
    backend = "django.contrib.auth.backends.ModelBackend"
    with transaction.atomic():
        program = Program.objects.create(name=f"Bench {run}", time_zone="UTC", starts_on=today - timedelta(days=30))
        users: list[User] = []
        for r in range(rooms):
            for m in range(members):
                role = Role.THERAPIST if m == 0 else Role.PARTICIPANT
                user = User(
                    username=f"bench-{run}-r{r}-m{m}",
                    first_name=f"M{m}",
                    last_name=f"Room{r}",
                    role=role,
                    time_zone="UTC",
                )
                user.set_unusable_password()  # no login form: the session row below is the login
                users.append(user)
        User.objects.bulk_create(users, batch_size=1000)
        tracks = Track.objects.bulk_create(
            [Track(program=program, name=f"Track {r}", part_of_day="evening") for r in range(rooms)]
        )
        room_rows = Room.objects.bulk_create(
            [
                Room(program=program, name=f"Room {r}", kind=RoomKind.GROUP, capacity=max(15, members))
                for r in range(rooms)
            ]
        )
        sessions = Session.objects.bulk_create(
            [
                Session(
                    room=room_rows[r],
                    track=tracks[r],
                    title=f"Bench group {r}",
                    starts_at=now - timedelta(minutes=1),
                    ends_at=now + timedelta(hours=3),
                    status=SessionStatus.OPEN,
                    late_join_minutes=600,
                    admission_policy=AdmissionPolicy.AUTO_THEN_KNOCK,
                )
                for r in range(rooms)
            ]
        )
        therapist_links, room_links, enrollments = [], [], []
        start = today - timedelta(days=7)
        for r in range(rooms):
            lead = users[r * members]
            therapist_links.append(TrackTherapist(track=tracks[r], therapist=lead, role=FacilitatorRole.LEAD))
            room_links.append(RoomTherapist(room=room_rows[r], therapist=lead, role=FacilitatorRole.LEAD))
            for m in range(1, members):
                participant = users[r * members + m]
                enrollments.append(Enrollment(participant=participant, track=tracks[r], start_date=start))
        TrackTherapist.objects.bulk_create(therapist_links)
        RoomTherapist.objects.bulk_create(room_links)
        Enrollment.objects.bulk_create(enrollments, batch_size=1000)

        store = SessionStore()
        rows, fixtures = [], []
        expire = now + timedelta(days=1)
        for r in range(rooms):
            seats = []
            for m in range(members):
                user = users[r * members + m]
                key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
                data = {
                    SESSION_KEY: user._meta.pk.value_to_string(user),
                    BACKEND_SESSION_KEY: backend,
                    HASH_SESSION_KEY: user.get_session_auth_hash(),
                }
                rows.append(DjangoSession(session_key=key, session_data=store.encode(data), expire_date=expire))
                seats.append(Seat(str(user.pk), "therapist" if m == 0 else "participant", key))
            fixtures.append(RoomFixture(str(sessions[r].pk), seats))
        DjangoSession.objects.bulk_create(rows, batch_size=1000)
    from django.db import connections

    connections.close_all()  # no idle connection of ours held through the measured window
    return fixtures
